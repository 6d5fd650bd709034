"""The benchmark's coordinator: one session per system, steps of offered load, the figures.

A *session* is one system under test with a broker of its own: a fresh
mosquitto, the system (the gateway from its CLI, durable or `--volatile`, or a
bare relay), the sink process and the generator process. Every session runs a
short *prime* step first (connections, first sight of the checkpoints); the
gateway sessions then run the *district* phase (docs/benchmark.md): start-up
time and RSS with the district loaded, idle CPU, first contact of all 130,000
phones (one heartbeat each: every first sight publishes a retained `online`),
and steady supervision (every phone heartbeating once per
`heartbeat_interval_s`). Then the *sweep*: steps of rising offered load until
one fails (anything lost, or p99 at or above the target), and one bisection
step between the last pass and the first failure. The durable gateway then
runs the *overload* step: checkpoint passes at twice its sustainable rate plus
a trickle of panics.

A step: the generator gets a `StepSpec` and starts at `t0` (far enough ahead for
it and the coordinator to build the schedule); CPU times are read at `t0`, at
the end of the load and after the drain (until every owed message arrived, or
nothing arrived for `quiet_s`, or `drain_max_s`; for the gateway also until its
metrics show every event received and its outbox empty). Then the sink's
messages are collected and accounted (`bench.stats`).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Final

from bench.acker import acker_main, should_ack
from bench.district import ConfigVariant, District
from bench.generator import generator_main
from bench.load import (
    ID_SPAN,
    Kind,
    Mix,
    Population,
    Scenario,
    StepSpec,
    expected_count,
    schedule,
)
from bench.procs import (
    Child,
    RssSampler,
    cpu_seconds,
    free_port,
    http_get,
    metric_total,
    peak_rss_bytes,
    rss_bytes,
    start_mosquitto,
    thread_cpu_seconds,
)
from bench.profile import summarise_raw
from bench.report import commit
from bench.scenarios import escalations_owed
from bench.sink import sink_main
from bench.stats import Received, account
from config.loader import load_config

__all__ = ["DEFAULT_RATES", "SYSTEMS", "Bench", "Plan", "SystemDef", "smoke_plan"]

Json = dict[str, Any]

REPO: Final = Path(__file__).resolve().parent.parent
DEFAULT_RATES: Final = (
    500,
    1000,
    2000,
    3000,
    4000,
    5000,
    6000,
    7000,
    8000,
    10000,
    12000,
    14000,
    17000,
    20000,
    24000,
    28000,
    32000,
)
_MB: Final = 1024 * 1024
_PROCESS_TIMEOUT_S: Final = 60.0
_KEPT_UP_S: Final = 1.0
"""A step kept up if its last message arrived within this long after the load ended."""


@dataclass(frozen=True, slots=True)
class SystemDef:
    """A system under test."""

    name: str
    label: str
    gateway: bool
    durable: bool = True
    module: str = ""


SYSTEMS: Final[dict[str, SystemDef]] = {
    s.name: s
    for s in (
        SystemDef("gateway", "gateway (durable)", gateway=True),
        SystemDef("gateway-volatile", "gateway (--volatile)", gateway=True, durable=False),
        SystemDef("relay-gmqtt", "bare relay, gmqtt", gateway=False, module="bench.relay_gmqtt"),
        SystemDef(
            "relay-aiomqtt", "bare relay, aiomqtt", gateway=False, module="bench.relay_aiomqtt"
        ),
    )
}
REFERENCE: Final = "relay-gmqtt"


@dataclass(frozen=True, slots=True)
class Plan:
    """What to run; the defaults are the full benchmark (about 15 minutes)."""

    systems: tuple[str, ...] = ("gateway", "gateway-volatile", "relay-gmqtt", "relay-aiomqtt")
    rates: tuple[int, ...] = DEFAULT_RATES
    step_s: float = 8.0
    warm_s: float = 2.0
    p99_target_ms: float = 50.0
    drain_quiet_s: float = 3.0
    drain_max_s: float = 30.0
    bisect: bool = True
    prime_rate: float = 500.0
    prime_s: float = 2.0
    district: bool = True
    supervision_rate: float = 4000.0
    heartbeat_interval_s: float = 300.0
    supervision_s: float = 10.0
    overload: bool = True
    overload_s: float = 10.0
    overload_rate: float | None = None
    panic_rate: float = 20.0
    inflight: int = 1000
    seed: int = 1
    profile_rate: float | None = None
    profile_s: float = 15.0
    smoke: bool = False
    main: bool = True
    """Run the main benchmark (the systems' sweeps and phases); False: scenarios only."""
    scenarios: tuple[str, ...] = ()
    """Scenarios to run after the main benchmark (`bench.scenarios.NAMES`)."""
    scenario_rates: tuple[int, ...] = (
        250,
        500,
        1000,
        1500,
        2000,
        3000,
        4000,
        6000,
        8000,
        10000,
        12000,
        14000,
        17000,
        20000,
    )
    power_cut_s: float = 60.0
    """Each half of the power cut (troubles, then restores), seconds."""
    power_cut_phones: int | None = None
    """Phones that lose power (None: every one, or in proportion to `power_cut_s`)."""
    power_cut_panic_rate: float = 20.0
    storm_rate: float = 2000.0
    storm_s: float = 10.0
    storm_deadline_s: float = 15.0
    storm_linger_s: float = 3.0
    """After the storm's escalations came, listen this long for a second one."""
    ack_delay_s: float = 0.002
    extra: Json = field(default_factory=dict)

    def as_dict(self) -> Json:
        """Plain values for the result file."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "extra"}


def smoke_plan() -> Plan:
    """~20 s: gateway and bare gmqtt relay, one low-rate step each, accounting checked."""
    return Plan(
        systems=("gateway", "relay-gmqtt"),
        rates=(300,),
        step_s=4.0,
        warm_s=1.0,
        bisect=False,
        prime_rate=100.0,
        prime_s=1.0,
        district=False,
        overload=False,
        drain_max_s=15.0,
        smoke=True,
    )


class _Worker:
    """A generator or sink process driven over a pipe."""

    def __init__(self, name: str, target: Callable[..., None], *args: object) -> None:
        context = multiprocessing.get_context("spawn")
        self.name = name
        self.conn, child = context.Pipe()
        self.process: BaseProcess = context.Process(
            target=target, args=(child, *args), name=name, daemon=True
        )
        self.process.start()
        child.close()
        self.info = self.expect("ready", _PROCESS_TIMEOUT_S)

    @property
    def pid(self) -> int:
        pid = self.process.pid
        assert pid is not None
        return pid

    def expect(self, what: str, timeout_s: float) -> Any:  # noqa: ANN401 - pipe payloads
        if not self.conn.poll(timeout_s):
            raise RuntimeError(f"{self.name}: no {what!r} within {timeout_s:.0f} s")
        tag, payload = self.conn.recv()
        if tag != what:
            raise RuntimeError(f"{self.name}: expected {what!r}, got {tag!r}")
        return payload

    def send(self, *command: object) -> None:
        self.conn.send(command)

    def stop(self) -> None:
        with contextlib.suppress(OSError, BrokenPipeError):
            self.conn.send(("stop",))
        self.process.join(timeout=10.0)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=5.0)
        self.conn.close()


class Session:
    """One system under test with its own broker, sink and generator."""

    def __init__(
        self,
        bench: Bench,
        system: SystemDef,
        variant: ConfigVariant | None = None,
        *,
        acker: bool = False,
    ) -> None:
        self.bench = bench
        self.system = system
        self.variant = variant
        """A scenario's configuration (None: the main benchmark's)."""
        self.with_acker = acker
        """Run an acker (`bench.acker`) playing the operators; a relay then takes acks."""
        self.name = system.name if variant is None else f"{variant.name}-{system.name}"
        self.folder = bench.workdir / self.name
        restart = 1
        while self.folder.exists():  # a restarted system starts afresh, store included
            restart += 1
            self.folder = bench.workdir / f"{self.name}-{restart}"
        self.startup: Json = {}
        self._stack = contextlib.ExitStack()
        self.http_port: int | None = None
        self.sut: Child | None = None
        self.gc_path: Path | None = None

    # -- lifecycle ---------------------------------------------------------------
    def __enter__(self) -> Session:
        try:
            self._open()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stack.close()

    def _open(self) -> None:
        plan = self.bench.plan
        stack = self._stack
        broker, port = start_mosquitto(self.folder / "mosquitto", plan.inflight)
        stack.callback(broker.stop)
        self.broker = broker
        self.broker_port = port
        self.http_port = free_port()
        store = self.folder / "store"
        # Runs after the system stopped (callbacks unwind last in, first out): the
        # store is hundreds of MB after a full sweep and is not a result; its size is.
        stack.callback(self._drop_store, store)
        config = self.bench.district.write_config(
            self.name,
            broker_port=port,
            http_port=self.http_port,
            store_dir=store,
            variant=self.variant,
        )
        base = self.bench.population.base_topic
        # The sink subscribes before the system starts: nothing it owes can be missed.
        self.sink = _Worker("bench-sink", sink_main, "127.0.0.1", port, f"{base}/out/#")
        stack.callback(self.sink.stop)
        self.acker: _Worker | None = None
        if self.with_acker:
            self.acker = _Worker("bench-acker", acker_main, "127.0.0.1", port, base)
            stack.callback(self.acker.stop)
        self.sut = self._start_sut(config, port)
        stack.callback(self._stop_sut)
        self.generator = _Worker(
            "bench-generator", generator_main, "127.0.0.1", port, self.bench.population
        )
        stack.callback(self.generator.stop)
        self._alarm_generator: _Worker | None = None
        self.rss = RssSampler(self.sut.pid)
        stack.callback(self.rss.stop)

    def _start_sut(self, config: Path, port: int) -> Child:
        system = self.system
        log = self.folder / f"{system.name}.log"
        if system.gateway:
            # The gateway's own CLI, run through bench.gcwatch to record GC pauses.
            self.gc_path = self.folder / "gc-pauses.jsonl"
            argv = [sys.executable, "-m", "bench.gcwatch", str(self.gc_path)]
            argv += ["run", "--config", str(config), "--log-format", "json"]
            if not system.durable:
                argv.append("--volatile")
            started = time.monotonic()
            child = Child(system.name, argv, log, cwd=REPO)
            assert self.http_port is not None
            while time.monotonic() - started < _PROCESS_TIMEOUT_S and child.running:
                status, _ = http_get(self.http_port, "/readyz", timeout_s=0.5)
                if status == 200:
                    break
                time.sleep(0.02)
            else:
                child.stop()
                raise RuntimeError(f"{system.name} did not become ready: {child.tail()}")
        else:
            argv = [sys.executable, "-m", system.module, "--config", str(config)]
            argv += ["--port", str(port), "--inflight", str(self.bench.plan.inflight)]
            if self.acker is not None:
                argv.append("--acks")
            started = time.monotonic()
            child = Child(system.name, argv, log, cwd=REPO, stdout_pipe=True)
            if not child.wait_line("ready", _PROCESS_TIMEOUT_S):
                child.stop()
                raise RuntimeError(f"{system.name} did not become ready: {child.tail()}")
        ready = time.monotonic()
        self.startup = {
            "commit": commit(),
            "startup_s": round(ready - started, 3),
            "rss_mb_at_ready": round(rss_bytes(child.pid) / _MB, 1),
            "cpu_s_to_ready": round(cpu_seconds(child.pid), 3),
        }
        return child

    def _drop_store(self, store: Path) -> None:
        if self.system.gateway and self.system.durable:
            size = sum(p.stat().st_size for p in store.glob("*") if p.is_file())
            self.startup["store_mb_at_end"] = round(size / _MB, 1)
        shutil.rmtree(store, ignore_errors=True)

    def _stop_sut(self) -> None:
        if self.sut is not None:
            self.startup["exit_code"] = self.sut.stop()

    @property
    def alarm_generator(self) -> _Worker:
        """A second generator with its own connection, for alarms sent apart (on demand)."""
        if self._alarm_generator is None:
            worker = _Worker(
                "bench-generator-alarms",
                generator_main,
                "127.0.0.1",
                self.broker_port,
                self.bench.population,
                "bench-generator-alarms",
            )
            self._stack.callback(worker.stop)
            self._alarm_generator = worker
        return self._alarm_generator

    # -- measuring -----------------------------------------------------------------
    def _cpu(self) -> dict[str, float]:
        assert self.sut is not None
        main, others = thread_cpu_seconds(self.sut.pid)
        return {
            "sut": cpu_seconds(self.sut.pid),
            "sut_main_thread": main,
            "sut_other_threads": others,
            "mosquitto": cpu_seconds(self.broker.pid),
            "generator": cpu_seconds(self.generator.pid)
            + (0.0 if self._alarm_generator is None else cpu_seconds(self._alarm_generator.pid)),
            "sink": cpu_seconds(self.sink.pid),
        } | ({} if self.acker is None else {"acker": cpu_seconds(self.acker.pid)})

    def metrics(self) -> str:
        """The gateway's /metrics text ('' for a relay)."""
        if not self.system.gateway or self.http_port is None:
            return ""
        return http_get(self.http_port, "/metrics")[1]

    def _store_counts(self) -> tuple[float, float] | None:
        """The gateway's store commits and ops so far (None for a relay or no store)."""
        if not self.system.gateway:
            return None
        text = self.metrics()
        return (
            metric_total(text, "alarmgw_store_commits_total"),
            metric_total(text, "alarmgw_store_ops_total"),
        )

    def _gateway_received(self) -> float:
        return metric_total(self.metrics(), "alarmgw_events_received_total")

    def _gateway_drain(self, target: float, max_s: float) -> Json:
        """Wait until the gateway counted `target` events received and its outbox is empty."""
        started = time.monotonic()
        received = pending = 0.0
        while time.monotonic() - started < max_s:
            text = self.metrics()
            received = metric_total(text, "alarmgw_events_received_total")
            pending = metric_total(text, "alarmgw_outbox_pending")
            if received >= target and pending == 0:
                break
            time.sleep(0.1)
        return {
            "received": received,
            "outbox_pending": pending,
            "waited_s": round(time.monotonic() - started, 3),
        }

    def gc_pauses(self, start: float, end: float) -> Json | None:
        """The gateway's GC pauses recorded between two epochs (None for a relay)."""
        if self.gc_path is None or not self.gc_path.exists():
            return None
        pauses = []
        for line in self.gc_path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError, KeyError):
                record = json.loads(line)
                if start <= record["t"] <= end:
                    pauses.append(record)
        full = [p["ms"] for p in pauses if p["gen"] == 2]
        return {
            "recorded": len(pauses),
            "full_collections": len(full),
            "full_max_ms": max(full, default=None),
            "max_ms": max((p["ms"] for p in pauses), default=None),
            "total_ms": round(sum(p["ms"] for p in pauses), 1),
        }

    def gc_snapshot(self) -> Json | None:
        """Ask bench.gcwatch for what the collector tracks (SIGUSR1); None for a relay."""
        if self.gc_path is None or self.sut is None or not self.sut.running:
            return None
        self.sut.popen.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline:
            for line in reversed(self.gc_path.read_text(encoding="utf-8").splitlines()):
                with contextlib.suppress(ValueError):
                    record: Json = json.loads(line)
                    if record.get("snapshot"):
                        return record
            time.sleep(0.2)
        return None

    def idle(self, seconds: float) -> Json:
        """CPU share of each process while nothing is offered."""
        before = self._cpu()
        time.sleep(seconds)
        after = self._cpu()
        return {k: round((after[k] - before[k]) / seconds, 4) for k in before}

    def settle(self, quiet_s: float = 2.0, max_s: float = 60.0) -> int:
        """Wait until the sink hears nothing for `quiet_s`; drop what came meanwhile."""
        self.sink.send("wait", 1 << 62, quiet_s, max_s)
        self.sink.expect("waited", max_s + 30)
        self.sink.send("collect")
        return len(self.sink.expect("collected", 120))

    def step(
        self,
        name: str,
        rate: float,
        duration_s: float,
        *,
        warm_s: float,
        mix: Mix | None = None,
        poisson: bool = True,
        every_home_once: bool = False,
        drain_max_s: float | None = None,
        quiet_s: float | None = None,
        apart: tuple[float, Mix | Scenario] | None = None,
        scenario: Scenario | None = None,
        ack_policy: str = "all",
        escalation_deadline_s: float | None = None,
        window_s: float | None = None,
        linger_s: float = 0.0,
    ) -> Json:
        """Run one step of offered load and account for it.

        `apart` (rate, mix or scenario): more events in the same step from a
        second generator on its own connection, as separate devices would send
        them (the overload's panics: on the main generator's connection they
        would queue behind its plate reads in one TCP stream and one in-flight
        window, which no field device shares).

        `scenario`: the step's sends are a scenario's (`bench.scenarios`), not
        the mix's. `ack_policy`: what the session's acker (scenario sessions
        only) acknowledges during the step (`bench.acker`).
        `escalation_deadline_s`: the step owes one escalation to the bureau per
        panic the acker leaves unacknowledged, that long after its ingress.
        `window_s`: also a p99 per kind per window of that length. `linger_s`:
        after the drain, listen that much longer before accounting (for repeats
        that would come late, such as a second escalation).
        """
        plan = self.bench.plan
        drain_max = plan.drain_max_s if drain_max_s is None else drain_max_s
        quiet = plan.drain_quiet_s if quiet_s is None else quiet_s
        events = rate * duration_s
        lead = 1.0 + events * 12e-6
        baseline = self._gateway_received() if self.system.gateway else 0.0
        spec = StepSpec(
            name,
            rate,
            duration_s,
            time.time() + lead,
            plan.seed,
            self.bench.next_id_base(),
            mix or Mix(),
            poisson,
            every_home_once,
            scenario,
        )
        if self.acker is not None:
            self.acker.send("policy", ack_policy, plan.ack_delay_s)
            self.acker.expect("policy", 10.0)
        self.generator.send("step", spec)
        planned = schedule(spec, self.bench.population)
        apart_spec: StepSpec | None = None
        if apart is not None:
            apart_rate, apart_load = apart
            apart_spec = StepSpec(
                f"{name} (apart)",
                apart_rate,
                duration_s,
                spec.t0,
                plan.seed,
                self.bench.next_id_base(),
                apart_load if isinstance(apart_load, Mix) else Mix(),
                poisson,
                scenario=None if isinstance(apart_load, Mix) else apart_load,
            )
            self.alarm_generator.send("step", apart_spec)
            planned = sorted(
                planned + schedule(apart_spec, self.bench.population), key=lambda p: p.t
            )
        ready = time.time()
        _sleep_until(spec.t0)
        cpu_a = self._cpu()
        store_a = self._store_counts()
        _sleep_until(spec.t0 + duration_s)
        cpu_b = self._cpu()
        generated = self.generator.expect("done", duration_s + _PROCESS_TIMEOUT_S)
        if apart_spec is not None:
            apart_generated = self.alarm_generator.expect("done", duration_s + _PROCESS_TIMEOUT_S)
            generated = {
                **generated,
                "sent": generated["sent"] + apart_generated["sent"],
                "scheduled": generated["scheduled"] + apart_generated["scheduled"],
                "error": generated["error"] or apart_generated["error"],
                "apart": apart_generated,
            }
        owed = expected_count(planned)
        escalations: list[tuple[str, str, int]] = []
        if escalation_deadline_s is not None:
            acked = [p.number for p in planned if should_ack(ack_policy, p.number)]
            escalations = escalations_owed(planned, self.bench.bureau_topic, acked)
            owed += len(escalations)
        self.sink.send("wait", owed, quiet, drain_max)
        waited = self.sink.expect("waited", drain_max + 30)
        drain: Json = {"sink": waited}
        if self.system.gateway:
            drain["gateway"] = self._gateway_drain(baseline + len(planned), drain_max)
        if linger_s > 0:
            time.sleep(linger_s)
        cpu_c = self._cpu()
        store_c = self._store_counts()
        self.sink.send("collect")
        received: list[Received] = self.sink.expect("collected", 120)
        accounting = account(
            planned,
            received,
            measure_from=spec.t0 + min(warm_s, duration_s / 2),
            measure_to=spec.t0 + duration_s,
            escalations_owed=escalations,
            deadline_s=escalation_deadline_s or 0.0,
            window_s=window_s,
        )
        sent = max(1, int(generated["sent"]))
        cpu: Json = {
            "sut_us_per_event": round((cpu_c["sut"] - cpu_a["sut"]) / sent * 1e6, 1),
            "load_core_share": {k: round((cpu_b[k] - cpu_a[k]) / duration_s, 3) for k in cpu_a},
            "total_s": {k: round(cpu_c[k] - cpu_a[k], 3) for k in cpu_a},
        }
        assert self.sut is not None
        result: Json = {
            "name": name,
            "offered_rate": rate,
            "duration_s": duration_s,
            "t0": spec.t0,
            "coordinator_ready_before_t0_s": round(spec.t0 - ready, 3),
            **accounting.as_dict(),
            "generator": generated,
            "drain": drain,
            "drain_after_load_s": None
            if accounting.last_receipt is None
            else round(accounting.last_receipt - (spec.t0 + duration_s), 3),
            "cpu": cpu,
            "rss_mb": round(rss_bytes(self.sut.pid) / _MB, 1),
            "peak_rss_mb": _mb(peak_rss_bytes(self.sut.pid)),
            "gc_pauses": self.gc_pauses(spec.t0, time.time()),
            "store": _store_figures(store_a, store_c, sent),
        }
        if self.acker is not None:
            self.acker.send("counts")
            result["acker"] = self.acker.expect("counts", 10.0) | {"policy": ack_policy}
        result["ok"], result["verdict"] = self._verdict(result, generated)
        self.bench.say(
            f"  {self.name:17} {name:28} {rate:>8.0f}/s  "
            f"lost {accounting.lost:<6} p99 "
            f"{_ms(None if accounting.latency is None else accounting.latency.p99)}"
            f"  CPU {cpu['sut_us_per_event']:>7} µs/ev  {result['verdict']}"
        )
        return result

    def _verdict(self, result: Json, generated: Json) -> tuple[bool, str]:
        target = self.bench.plan.p99_target_ms
        problems = []
        if result["lost"]:
            problems.append(f"lost {result['lost']}")
        latency = result["latency_ms"]
        if latency is not None and latency["p99"] >= target:
            problems.append(f"p99 {latency['p99']:.1f} ms >= {target:.0f}")
        if generated.get("error"):
            problems.append(f"generator: {generated['error']}")
        if generated["sent"] != generated["scheduled"]:
            problems.append("generator did not send everything")
        return (not problems, "ok" if not problems else "; ".join(problems))


class _Current:
    """The current session of one system; `open()` replaces it with a fresh one."""

    def __init__(
        self,
        bench: Bench,
        name: str,
        variant: ConfigVariant | None = None,
        *,
        acker: bool = False,
    ) -> None:
        self.bench = bench
        self.name = name
        self.variant = variant
        self.acker = acker
        self._stack: contextlib.ExitStack | None = None
        self._session: Session | None = None
        self.peaks: list[int] = []
        """Peak RSS of sessions already closed."""
        self.exit_codes: list[int | None] = []
        self.store_mb: list[float | None] = []

    @property
    def session(self) -> Session:
        assert self._session is not None
        return self._session

    def open(self) -> Session:
        self.close()
        stack = contextlib.ExitStack()
        self._session = stack.enter_context(
            self.bench.session(self.name, self.variant, acker=self.acker)
        )
        self._stack = stack
        return self._session

    def close(self) -> None:
        if self._stack is None or self._session is None:
            return
        self.peaks.append(self._session.rss.stop())
        self._stack.close()
        self.exit_codes.append(self._session.startup.get("exit_code"))
        self.store_mb.append(self._session.startup.get("store_mb_at_end"))
        self._stack = None
        self._session = None


def _store_figures(
    before: tuple[float, float] | None, after: tuple[float, float] | None, sent: int
) -> Json | None:
    """Commits and ops of a step's store (load and drain): how big the group commits were."""
    if before is None or after is None or after[0] <= 0:
        return None
    commits = after[0] - before[0]
    ops = after[1] - before[1]
    return {
        "commits": int(commits),
        "ops": int(ops),
        "ops_per_commit": round(ops / commits, 1) if commits else None,
        "ops_per_event": round(ops / sent, 2),
        "events_per_commit": round(sent / commits, 2) if commits else None,
    }


def _kept_up(step: Json) -> bool:
    """Nothing lost, everything sent, the load delivered as it came (within 5 %), and
    the backlog gone soon after the load ended."""
    drain = step["drain_after_load_s"]
    generated = step["generator"]
    return (
        step["lost"] == 0
        and generated["sent"] == generated["scheduled"]
        and step["delivered_msgs_per_s"] >= 0.95 * step["expected_msgs_per_s"]
        and (drain is None or drain < _KEPT_UP_S)
    )


def _ms(value: float | None) -> str:
    return "   -    " if value is None else f"{value:8.2f} ms"


def _mb(value: int | None) -> float | None:
    return None if value is None else round(value / _MB, 1)


def _sleep_until(epoch: float) -> None:
    delay = epoch - time.time()
    if delay > 0:
        time.sleep(delay)


class Bench:
    """A whole benchmark run: the district, the sessions, the results."""

    def __init__(self, plan: Plan, workdir: Path, say: Callable[[str], None] = print) -> None:
        unknown = [s for s in plan.systems if s not in SYSTEMS]
        if unknown:
            raise ValueError(f"unknown systems {unknown}; known: {sorted(SYSTEMS)}")
        self.plan = plan
        self.workdir = workdir
        self.say = say
        self._steps = 0
        started = time.monotonic()
        self.district = District.generate(workdir / "district", plan.seed)
        probe = self.district.write_config(
            "probe", broker_port=1883, http_port=9108, store_dir=workdir / "probe"
        )
        probe_config = load_config(probe)
        self.population = Population.from_config(probe_config)
        self.bureau_topic = f"{self.population.base_topic}/out/bureau/{probe_config.bureau}/alarms"
        self.say(
            f"district: {len(self.population.homes)} households, "
            f"{len(self.population.sites)} checkpoints ({time.monotonic() - started:.1f} s)"
        )

    def next_id_base(self) -> int:
        """A fresh block of event numbers: every step's are unique in the run."""
        self._steps += 1
        return self._steps * ID_SPAN

    @contextlib.contextmanager
    def session(
        self, name: str, variant: ConfigVariant | None = None, *, acker: bool = False
    ) -> Iterator[Session]:
        """A running session for one system; everything it started is stopped after."""
        with Session(self, SYSTEMS[name], variant, acker=acker) as session:
            self.say(
                f"{session.name}: ready in {session.startup['startup_s']:.2f} s, "
                f"RSS {session.startup['rss_mb_at_ready']:.0f} MB"
            )
            yield session

    def run(self) -> Json:
        """Every planned system, in order; the results (without the report files)."""
        results: Json = {"systems": {}}
        if self.plan.main:
            for name in self.plan.systems:
                results["systems"][name] = self.run_system(name)
        if self.plan.scenarios:
            from bench.scenario_run import run_scenarios  # noqa: PLC0415 - it imports this module

            results["scenarios"] = run_scenarios(self, self.plan.scenarios)
        return results

    def run_system(self, name: str) -> Json:
        """Prime, district phase (gateways), sweep, overload (durable gateway), profile."""
        plan = self.plan
        system = SYSTEMS[name]
        out: Json = {"label": system.label, "restarts": [], "commit": commit()}
        current = _Current(self, name)
        try:
            session = current.open()
            out["startup"] = dict(session.startup)
            if system.gateway and plan.district:
                out["district"] = self.district_phase(session)
            out["prime"] = session.step("prime", plan.prime_rate, plan.prime_s, warm_s=0)
            out.update(self.sweep(current, out["restarts"]))
            if name == "gateway" and plan.overload:
                session = self.healthy(current, out["restarts"])
                out["overload"] = self.overload(session, out["best_ok_rate"])
            if plan.profile_rate is not None and name == "gateway":
                session = self.healthy(current, out["restarts"])
                out["profile"] = self.profile(session, plan.profile_rate)
            session = current.session
            if system.gateway:
                gc_all = session.gc_pauses(0.0, time.time())
                out["gc"] = {"pauses": gc_all, "snapshot_at_end": session.gc_snapshot()}
            peaks = [*current.peaks, session.rss.stop()]
            out["peak_rss_mb"] = round(max(peaks) / _MB, 1)
            hwm = peak_rss_bytes(session.sut.pid) if session.sut is not None else None
            out["peak_rss_mb_kernel"] = _mb(hwm)
        finally:
            current.close()
        out["startup"]["exit_code"] = current.exit_codes[0] if current.exit_codes else None
        out["store_mb_at_end"] = current.store_mb[-1] if current.store_mb else None
        return out

    def current(
        self, name: str, variant: ConfigVariant | None = None, *, acker: bool = False
    ) -> _Current:
        """The (not yet opened) current session of a system, for `bench.scenario_run`."""
        return _Current(self, name, variant, acker=acker)

    def healthy(self, current: _Current, restarts: list[Json]) -> Session:
        """After a heavy step: wait for quiet, check a low-rate step, restart if it fails."""
        session = current.session
        dropped = session.settle()
        seconds = max(self.plan.prime_s, 1.0)  # a scenario smoke may run without a prime
        check = session.step("health check", self.plan.prime_rate, seconds, warm_s=0)
        if check["ok"]:
            return session
        self.say(f"  {current.name}: unhealthy after a heavy step ({check['verdict']}): restarting")
        session = current.open()
        restart: Json = {"dropped_by_settle": dropped, "health_check": check}
        restart["startup"] = dict(session.startup)
        if session.system.gateway and self.plan.district:
            restart["district"] = self.district_phase(session)
        restarts.append(restart)
        return session

    def sweep(
        self,
        current: _Current,
        restarts: list[Json],
        rates: tuple[int, ...] | None = None,
        **options: Any,  # noqa: ANN401 - Session.step's keyword options
    ) -> Json:
        """Steps of rising load while the system keeps up, then one bisection step.

        The issue's figure is the highest offered rate with nothing lost and p99
        under the target: `best_ok_rate` over every step run. `max_ok_rate` is
        stricter: the highest rate below the first failing step (refined by one
        bisection step), so it also tells whether any lower rate failed, e.g.
        because a garbage-collector pause fell into its window. The sweep goes
        on past a failure while the system keeps up (`_kept_up`), so
        `max_kept_up_rate` shows its capacity apart from latency spikes.
        """
        plan = self.plan
        session = current.session
        steps: list[Json] = []
        strict: list[float] = []
        kept_up: list[float] = []
        failed: float | None = None
        for rate in plan.rates if rates is None else rates:
            result = session.step(
                f"sweep {rate}/s", rate, plan.step_s, warm_s=plan.warm_s, **options
            )
            steps.append(result)
            if result["ok"] and failed is None:
                strict.append(rate)
            elif failed is None:
                failed = rate
            if not _kept_up(result):
                break
            kept_up.append(rate)
        if plan.bisect and failed is not None:
            low = strict[-1] if strict else 0.0
            middle = round((low + failed) / 2 / 250) * 250
            if low < middle < failed:
                session = self.healthy(current, restarts)
                result = session.step(
                    f"bisect {middle}/s", middle, plan.step_s, warm_s=plan.warm_s, **options
                )
                result["bisection"] = True
                steps.append(result)
                if result["ok"]:
                    strict.append(middle)
                else:
                    failed = middle
                if _kept_up(result):
                    kept_up.append(middle)
        return {
            "steps": steps,
            "best_ok_rate": max((s["offered_rate"] for s in steps if s["ok"]), default=None),
            "max_ok_rate": max(strict, default=None),
            "first_failed_rate": failed,
            "max_kept_up_rate": max(kept_up, default=None),
        }

    def district_phase(self, session: Session) -> Json:
        """Idle CPU, first contact of every phone, steady supervision; RSS along the way."""
        plan = self.plan
        homes = len(self.population.homes)
        out: Json = {"households": homes, "checkpoints": len(self.population.sites)}
        out["idle_core_share"] = session.idle(3.0)
        heartbeats = Mix(heartbeat=1.0, routed_pass=0.0, unrouted_pass=0.0, alarm=0.0)
        first = session.step(
            "supervision: first contact",
            plan.supervision_rate,
            homes / plan.supervision_rate,
            warm_s=0,
            mix=heartbeats,
            poisson=False,
            every_home_once=True,
            drain_max_s=180.0,
        )
        online = metric_total(session.metrics(), "alarmgw_devices_online", {"kind": "phone"})
        first["phones_online_after"] = online
        out["first_contact"] = first
        steady_rate = homes / plan.heartbeat_interval_s
        steady = session.step(
            "supervision: steady",
            steady_rate,
            plan.supervision_s,
            warm_s=0,
            mix=heartbeats,
        )
        out["steady"] = steady
        out["heartbeat_interval_s"] = plan.heartbeat_interval_s
        out["steady_rate"] = round(steady_rate, 1)
        idle_share = out["idle_core_share"]["sut"]
        out["supervision_core_share"] = round(
            steady["cpu"]["load_core_share"]["sut"] - idle_share, 4
        )
        out["rss_mb_all_supervised"] = steady["rss_mb"]
        return out

    def overload(self, session: Session, sustainable: float | None) -> Json:
        """Passes at twice the sustainable rate plus a trickle of panics; panics apart."""
        plan = self.plan
        base = plan.overload_rate or sustainable or 2000.0
        pass_rate = 2 * base
        passes = Mix(heartbeat=0.0, routed_pass=1.0, unrouted_pass=0.0, alarm=0.0)
        panics = Mix(heartbeat=0.0, routed_pass=0.0, unrouted_pass=0.0, alarm=0.0, panic=1.0)
        result = session.step(
            "overload: 2x passes + panics",
            pass_rate,
            plan.overload_s,
            warm_s=0,
            mix=passes,
            drain_max_s=240.0,
            quiet_s=10.0,
            apart=(plan.panic_rate, panics),
        )
        result["offered_rate"] = pass_rate + plan.panic_rate
        result["sustainable_rate"] = base
        result["sustainable_from"] = (
            "--overload-rate"
            if plan.overload_rate
            else "best_ok_rate"
            if sustainable
            else "default"
        )
        result["pass_rate"] = pass_rate
        result["panic_rate"] = plan.panic_rate
        by_kind = result["latency_ms_by_kind"]
        result["panic"] = {
            "latency_ms": by_kind.get(Kind.PANIC.value),
            "lost": result["lost_by_kind"].get(Kind.PANIC.value, 0),
        }
        result["passes"] = {
            "latency_ms": by_kind.get(Kind.PASS.value),
            "lost": result["lost_by_kind"].get(Kind.PASS.value, 0),
        }
        return result

    def profile(
        self,
        session: Session,
        rate: float,
        **options: Any,  # noqa: ANN401 - Session.step's keyword options
    ) -> Json:
        """py-spy on the system under test during one step at `rate`; where the time goes.
        `options` go to the step (a scenario's load, for instance)."""
        assert session.sut is not None
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        raw = session.folder / f"profile-{rate:.0f}.txt"
        duration = self.plan.profile_s
        # --gil: sample only the thread holding the GIL, i.e. where Python CPU goes
        # (SQLite's fsync and epoll waits would otherwise count as busy).
        command = [spy, "record", "--pid", str(session.sut.pid), "--rate", "200", "--gil"]
        command += ["--duration", f"{duration + 1:.0f}", "--format", "raw", "--nonblocking"]
        command += ["--output", str(raw)]
        with (session.folder / "py-spy.log").open("wb") as log:
            recorder = subprocess.Popen(command, stdout=log, stderr=log)  # noqa: S603
            try:
                result = session.step(f"profile {rate:.0f}/s", rate, duration, warm_s=0, **options)
            finally:
                try:
                    recorder.wait(timeout=duration + 60)
                except subprocess.TimeoutExpired:
                    recorder.kill()
                    recorder.wait()
        result["py_spy_exit"] = recorder.returncode
        if raw.exists():
            result["summary"] = summarise_raw(raw.read_text(encoding="utf-8", errors="replace"))
            result["raw_file"] = str(raw)
        return result


def with_overrides(plan: Plan, **changes: Any) -> Plan:  # noqa: ANN401
    """A copy of `plan` with some fields changed (for the CLI)."""
    return replace(plan, **changes)
