"""`alarmgw demo`: the whole system in one command, for a first look on a fresh machine.

What runs (all in ONE process and ONE event loop, under one anyio task group,
STYLE.md 7):

1. the gateway (`gateway.app.Gateway`) on the demo deployment
   (`config/examples/demo.toml`: one township, three villages, sixty households,
   four checkpoints), with its embedded broker (amqtt, MQTT 3.1.1) on
   127.0.0.1:1883, or on a free port when 1883 is taken (the demo says which);
   its store lives in a temporary folder that is removed at the end, so every
   demo starts from nothing;
2. a district simulator (`alarmgw sim district` as a coroutine, handed in by
   the CLI, since only the front door may import `simulators/`, DESIGN.md): every
   phone's periodic test, checkpoint traffic, and real alarms. The embedded
   broker peaks near 600 events/s in one loop (PROTOCOLS.md), so the default load
   is far below: speed 10 (about 15 events/s on the demo district) and an alarm
   every 4 s (`--alarm-rate 15` per minute, whatever the speed);
3. the operator's live view (`gateway.tail`), from which alarms are
   acknowledged; an alarm nobody acknowledges escalates after the config's
   deadline (30 s for life safety in the demo), which the view shows.

Logs (the gateway's structlog JSON lines, and the libraries' warnings) go to a
file, named at start, so they never tear the view. Ctrl-C (SIGINT) and SIGTERM
stop everything in order: the view, then the simulator (which waits briefly for
its PUBACKs), then the gateway (which says `offline` on its state topic and stops
the broker). amqtt's shutdown reports connections it is closing as errors; those
are only noise and go to the log file, never to the terminal.

Without a terminal (or with `--no-view`) there is no live view: with `--no-view`
a status line every 10 s, otherwise one line per alarm. `--duration S` ends the
demo by itself (scripts and tests).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import getpass
import importlib.resources
import logging
import math
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final, Protocol

import anyio
import structlog
from prometheus_client import CollectorRegistry

from config import arguments
from config.loader import ConfigError, load_config
from config.model import Config, Priority
from gateway.adapters.embedded_broker import EmbeddedBroker
from gateway.app import Gateway
from gateway.tail import Tail, Update, plain_line, run_view

__all__ = [
    "DEFAULT_ALARM_RATE",
    "DEFAULT_SPEED",
    "DistrictSimulator",
    "add_demo_parser",
    "default_config",
    "main",
    "run_demo",
]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2

DEFAULT_SPEED: Final = 10.0
"""Background traffic at ten times the demo district's: about 15 events/s."""
DEFAULT_ALARM_RATE: Final = 15.0
"""Alarms per minute, district-wide: one every 4 s on average."""
_READY_TIMEOUT_S: Final = 15.0
_DISTRICT_STOP_S: Final = 4.0
_STATUS_EVERY_S: Final = 10.0
_INTRO_S: Final = 3.0
_NOISY: Final = ("amqtt", "transitions", "gmqtt", "asyncio")


class DistrictSimulator(Protocol):
    """The district simulator the CLI hands in (`simulators.cli.drive_district`)."""

    def __call__(
        self,
        config: Config,
        *,
        host: str,
        port: int,
        speed: float,
        alarm_rate_per_min: float,
        seed: int,
        stop: asyncio.Event,
    ) -> Awaitable[object]:
        """Publish the district's traffic to host:port until `stop` is set."""
        ...


def default_config() -> Path:
    """The packaged demo deployment, `config/examples/demo.toml`."""
    return Path(str(importlib.resources.files("config").joinpath("examples", "demo.toml")))


# ------------------------------------------------------------------ the command


def add_demo_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add `demo` to the `alarmgw` parser; returns its parser."""
    parser = subparsers.add_parser(
        "demo",
        help="the whole system in one command: broker, gateway, district simulator, live view",
        description=(
            "Start the embedded broker, the gateway on the demo deployment, a district "
            "simulator and the operator's live view, in one process. Acknowledge alarms "
            "in the view (↑/↓ then a, or the row number then a); unacknowledged "
            "life-safety alarms escalate after the deployment's deadline. Ctrl-C stops "
            "everything."
        ),
        epilog=(
            "examples:\n"
            "  alarmgw demo\n"
            "  alarmgw demo --alarm-rate 30 --speed 5\n"
            "  alarmgw demo --no-view --duration 60"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config", metavar="FILE", help="deployment file (default: the packaged demo.toml)"
    )
    parser.add_argument(
        "--speed",
        type=arguments.positive,
        default=DEFAULT_SPEED,
        metavar="X",
        help=f"background traffic at X times the district's (default {DEFAULT_SPEED:g})",
    )
    parser.add_argument(
        "--alarm-rate",
        type=arguments.non_negative,
        default=DEFAULT_ALARM_RATE,
        metavar="PER_MIN",
        help=f"alarms per minute, district-wide (default {DEFAULT_ALARM_RATE:g})",
    )
    parser.add_argument("--seed", type=int, metavar="N", help="simulator seed (default: fresh)")
    parser.add_argument(
        "--no-view",
        action="store_true",
        help=f"no live view: a status line every {_STATUS_EVERY_S:g} s",
    )
    parser.add_argument(
        "--duration",
        type=arguments.positive,
        metavar="S",
        help="stop after S seconds (default: Ctrl-C)",
    )
    parser.add_argument(
        "--port",
        type=arguments.port,
        metavar="PORT",
        help="embedded broker port (default: the config's, 1883, or a free one if taken; "
        "0 = any free port)",
    )
    parser.add_argument(
        "--http-port",
        type=arguments.port,
        metavar="PORT",
        help="metrics port (default: the config's, 9108, or a free one if taken)",
    )
    parser.add_argument(
        "--log",
        metavar="FILE",
        help="where the logs go (default: alarmgw-demo.log in the temporary folder)",
    )
    parser.add_argument(
        "--operator", metavar="NAME", help="who acknowledges (default: your login name)"
    )
    return parser


def _free(host: str, port: int) -> bool:
    """Whether `port` can be bound on `host` now (as asyncio.start_server would)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


@dataclass(frozen=True, slots=True)
class _Plan:
    config: Config
    notes: tuple[str, ...]
    """What the demo changed on its own (a busy port), to say at start."""
    store_dir: Path
    log_path: Path
    seed: int
    operator: str


def _plan(args: argparse.Namespace, err: IO[str]) -> _Plan | None:
    path = Path(args.config) if args.config else default_config()
    try:
        config = load_config(path)
    except ConfigError as error:
        err.write(f"alarmgw demo: refusing configuration {path}: ")
        err.write(f"{len(error.problems)} problem(s)\n")
        for problem in error.problems:
            err.write(f"  {problem}\n")
        return None
    notes: list[str] = []
    mqtt = config.mqtt
    if mqtt.embedded:
        port = mqtt.port if args.port is None else args.port
        if args.port is None and not _free("127.0.0.1", port):
            notes.append(f"port {port} is taken: the embedded broker uses a free port instead")
            port = 0
        mqtt = dataclasses.replace(mqtt, port=port)
    elif args.port is not None:
        err.write(
            f"alarmgw demo: --port is for the embedded broker; {path} uses {mqtt.broker_url}\n"
        )
        return None
    http = config.http
    http_port = http.port if args.http_port is None else args.http_port
    if args.http_port is None and http_port and not _free(http.host, http_port):
        notes.append(f"port {http_port} is taken: metrics are served on a free port instead")
        http_port = 0
    store_dir = Path(tempfile.mkdtemp(prefix="alarmgw-demo-"))
    config = dataclasses.replace(
        config,
        mqtt=mqtt,
        http=dataclasses.replace(http, port=http_port),
        store=dataclasses.replace(config.store, path=str(store_dir / "demo.sqlite")),
    )
    log_path = Path(args.log) if args.log else Path(tempfile.gettempdir()) / "alarmgw-demo.log"
    seed = args.seed if args.seed is not None else int(time.time() * 1000) % 1_000_000
    operator = args.operator or _login()
    return _Plan(config, tuple(notes), store_dir, log_path, seed, operator)


def _login() -> str:
    with contextlib.suppress(Exception):  # getpass raises whatever the platform gives
        return getpass.getuser()
    return "operator"


def run_demo(
    args: argparse.Namespace,
    out: IO[str],
    err: IO[str],
    *,
    district: DistrictSimulator,
) -> int:
    """Run `alarmgw demo` as parsed by `add_demo_parser`; returns the exit code."""
    plan = _plan(args, err)
    if plan is None:
        return EXIT_USAGE
    view = not args.no_view and _terminal(out)
    try:
        with _logs_to(plan.log_path):
            demo = _Demo(plan, args, out, district=district, view=view)
            try:
                anyio.run(demo.run)
            except KeyboardInterrupt:  # Ctrl-C outside the loop's own handler
                pass
            except Exception as error:  # noqa: BLE001 - told to the user; traceback in the log
                structlog.get_logger("alarmgw.demo").exception("demo failed")
                err.write(
                    f"alarmgw demo: failed: {_first_cause(error)} (details in {plan.log_path})\n"
                )
                return EXIT_FAILED
    except OSError as error:
        err.write(f"alarmgw demo: cannot write the log {plan.log_path}: {error.strerror}\n")
        return EXIT_USAGE
    finally:
        shutil.rmtree(plan.store_dir, ignore_errors=True)
    out.write(demo.summary() + "\n")
    return EXIT_OK


def _first_cause(error: BaseException) -> str:
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return str(error) or type(error).__name__


def _terminal(out: IO[str]) -> bool:
    try:
        return out.isatty() and sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


@contextlib.contextmanager
def _logs_to(path: Path) -> Iterator[None]:
    """structlog and the standard library's logging into `path`; everything put back after."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as file:
        old_structlog = structlog.get_config()
        structlog.configure(
            processors=[
                structlog.contextvars.merge_contextvars,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(),
            ],
            wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
            logger_factory=structlog.PrintLoggerFactory(file),
            cache_logger_on_first_use=False,
        )
        root = logging.getLogger()
        handler = logging.StreamHandler(file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.addFilter(_not_cancellation)
        old_root = (root.level, list(root.handlers))
        root.handlers = [handler]
        root.setLevel(logging.WARNING)
        noisy = {name: logging.getLogger(name) for name in _NOISY}
        old_levels = {name: logger.level for name, logger in noisy.items()}
        old_propagate = {name: logger.propagate for name, logger in noisy.items()}
        for logger in noisy.values():
            # amqtt logs a shutdown's closing connections as errors: noise, but
            # kept in the file in case it is not.
            logger.setLevel(logging.WARNING)
            logger.propagate = True
        try:
            yield
        finally:
            for name, logger in noisy.items():
                logger.setLevel(old_levels[name])
                logger.propagate = old_propagate[name]
            root.setLevel(old_root[0])
            root.handlers = old_root[1]
            structlog.configure(**old_structlog)


def _not_cancellation(record: logging.LogRecord) -> bool:
    """Drop a report whose exception is a cancellation: at shutdown amqtt and asyncio log
    the tasks the demo cancelled as errors, with tracebacks that say nothing."""
    exc = record.exc_info[0] if record.exc_info else None
    return not (exc is not None and issubclass(exc, asyncio.CancelledError))


# ------------------------------------------------------------------ the run


class _Demo:
    """One demo run: the task group, and what to say at the start and the end."""

    def __init__(
        self,
        plan: _Plan,
        args: argparse.Namespace,
        out: IO[str],
        *,
        district: DistrictSimulator,
        view: bool,
    ) -> None:
        self.plan = plan
        self.args = args
        self.out = out
        self.district = district
        self.view = view
        self.registry = CollectorRegistry()
        self.gateway = Gateway(plan.config, registry=self.registry)
        self.district_report: object = None
        self.district_error: str | None = None
        self.started = time.monotonic()
        self.log = structlog.get_logger("alarmgw.demo")
        self._interrupt: anyio.CancelScope | None = None

    async def run(self) -> None:
        """Everything under one task group; a signal cancels what is running now."""
        config = self.plan.config
        async with anyio.create_task_group() as tg:
            # Until the session starts, Ctrl-C cancels everything; during it, only
            # the session (the rest then stops in order); after it, everything again.
            self._interrupt = tg.cancel_scope
            tg.start_soon(self._signals, name="signals")
            gateway: Gateway = await tg.start(self.gateway.run, name="gateway")
            link = gateway.link
            assert link is not None
            with anyio.fail_after(_READY_TIMEOUT_S):
                await link.wait_connected()
            port = gateway.broker_port
            assert port is not None
            host = "127.0.0.1" if config.mqtt.embedded else config.mqtt.host
            self._intro(host, port)
            stop = asyncio.Event()
            done = anyio.Event()
            tg.start_soon(self._district, host, port, stop, done, name="district")
            tail = Tail(
                host=host,
                port=port,
                topics=gateway.topics,
                operator=self.plan.operator,
                client_id=f"alarmgw-demo-tail-{id(self) % 100_000}",
                mqtt_version=EmbeddedBroker.mqtt_version if config.mqtt.embedded else None,
                username=config.mqtt.username,
                password=config.mqtt.password,
            )
            async with tail:
                with anyio.CancelScope() as session:
                    self._interrupt = session
                    await self._session(tail, host, port)
                self._interrupt = tg.cancel_scope
            stop.set()
            with anyio.move_on_after(_DISTRICT_STOP_S):
                await done.wait()
            tg.cancel_scope.cancel()

    async def _signals(self) -> None:
        """SIGINT (Ctrl-C) and SIGTERM cancel `_interrupt`, whatever it is at the time."""
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                self.log.info("stopping", signal=signal.Signals(signum).name)
                if self._interrupt is not None:
                    self._interrupt.cancel()

    async def _session(self, tail: Tail, host: str, port: int) -> None:
        duration = self.args.duration
        if self.view:
            # Time to read the introduction before the view takes the screen.
            await tail.wait_connected(_INTRO_S)
            await anyio.sleep(_INTRO_S)
            title = (
                f"alarmgw demo · {self.plan.config.district_name} · broker {host}:{port} · "
                f"operator {self.plan.operator} · Ctrl-C stops"
            )
            await run_view(tail, self.out, keys_fd=sys.stdin.fileno(), title=title,
                           duration_s=duration)  # fmt: skip
            return
        with anyio.move_on_after(math.inf if duration is None else duration):
            if self.args.no_view:
                while True:
                    await anyio.sleep(_STATUS_EVERY_S)
                    self._say(self._status())
            tail.on_update = self._print_update
            await anyio.sleep_forever()

    def _print_update(self, update: Update) -> None:
        if update.what != "copy":
            self._say(plain_line(update))

    async def _district(self, host: str, port: int, stop: asyncio.Event, done: anyio.Event) -> None:
        args = self.args
        try:
            self.district_report = await self.district(
                self.plan.config,
                host=host,
                port=port,
                speed=args.speed,
                # The simulator multiplies its alarm rate by the speed; the demo's
                # --alarm-rate is what the operator sees, whatever the speed.
                alarm_rate_per_min=args.alarm_rate / args.speed,
                seed=self.plan.seed,
                stop=stop,
            )
        except Exception as error:  # the demo goes on without it; logged with its traceback
            self.district_error = str(error) or type(error).__name__
            self.log.exception("district simulator failed")
        finally:
            done.set()

    def _say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def _intro(self, host: str, port: int) -> None:
        plan = self.plan
        config = plan.config
        args = self.args
        http = self.gateway.http
        metrics = f"http://{config.http.host}:{http.port}/metrics" if http is not None else "-"
        deadline = config.escalation.deadline_s.get(Priority.LIFE_SAFETY)
        broker = (
            f"embedded (amqtt, MQTT 3.1.1) on {host}:{port}"
            if config.mqtt.embedded
            else f"{config.mqtt.broker_url}"
        )
        every = f"about every {60 / args.alarm_rate:.0f} s" if args.alarm_rate else "none"
        size = (
            f"{len(config.townships)} township(s), {len(config.villages)} villages, "
            f"{len(config.households)} households, {len(config.checkpoints)} checkpoints"
        )
        load = f"speed {args.speed:g}; alarms {every} ({args.alarm_rate:g}/min); seed {plan.seed}"
        lines = [
            f"alarmgw demo · {config.district_name}: {size}",
            *(f"  note: {note}" for note in plan.notes),
            f"  broker     {broker}",
            f"  gateway    metrics {metrics}; store {plan.store_dir} (removed at the end)",
            f"  simulator  {load}",
            f"  logs       {plan.log_path}",
        ]
        escalation = (
            f"Unacknowledged life-safety alarms escalate after {deadline:g} s. " if deadline else ""
        )
        if self.view:
            lines += [
                (
                    "You will see each dispatched alarm once, newest first, coloured by "
                    "priority (red life safety, orange property, cyan trouble), with the sinks "
                    "it reached and the latency of each hop (device → gateway → dispatch → "
                    "this screen)."
                ),
                (
                    "Acknowledge: ↑/↓ then a, or type its number then a, or :ack 12. "
                    f"{escalation}q or Ctrl-C stops everything."
                ),
                f"The live view starts in {_INTRO_S:g} s.",
            ]
        else:
            lines.append("Running without the live view; Ctrl-C stops everything.")
        household = config.households[0].id if config.households else "h001"
        lines.append(
            f"Send your own:  alarmgw sim phone --config {config.source} "
            f"--broker mqtt://{host}:{port} --household {household} --event panic --wait"
        )
        self._say("\n".join(lines))

    def _total(self, name: str) -> float:
        return sum(
            sample.value
            for metric in self.registry.collect()
            for sample in metric.samples
            if sample.name == name
        )

    def _status(self) -> str:
        return (
            f"demo: {self._total('alarmgw_events_received_total'):,.0f} events in · "
            f"{self._total('alarmgw_dispatched_total'):,.0f} dispatches · "
            f"{self._total('alarmgw_escalations_total'):,.0f} escalations · "
            f"{self._total('alarmgw_acks_total'):,.0f} acknowledgements"
        )

    def summary(self) -> str:
        """What happened, for the end of the run."""
        elapsed = time.monotonic() - self.started
        line = f"{self._status()} in {elapsed:.0f} s; logs in {self.plan.log_path}"
        if self.district_error is not None:
            line += f"\ndemo: the district simulator stopped: {self.district_error}"
        return line


def main(argv: Sequence[str] | None = None, *, district: DistrictSimulator) -> int:
    """`alarmgw demo ...` without the rest of the CLI (the district simulator handed in)."""
    parser = argparse.ArgumentParser(prog="alarmgw")
    add_demo_parser(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    try:
        args = parser.parse_args(["demo", *(sys.argv[1:] if argv is None else argv)])
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return run_demo(args, sys.stdout, sys.stderr, district=district)
