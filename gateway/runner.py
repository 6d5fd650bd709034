"""`alarmgw run`: load and check the configuration, set up logging, run until a signal.

structlog writes JSON lines when the output is not a terminal (production, log
shippers) and readable coloured lines on a terminal (`--log-format` overrides).
SIGINT and SIGTERM cancel the gateway's task group: shutdown is cancellation
(STYLE.md 7), and the gateway says `offline` on its state topic on the way out.
"""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
from typing import IO

import anyio
import structlog

from config.loader import ConfigError, load_config, with_overrides
from config.model import Config
from gateway.app import Gateway

__all__ = ["configure_logging", "run_command"]


def configure_logging(fmt: str = "auto", level: int = logging.INFO) -> None:
    """structlog to stderr: JSON lines, or a console renderer on a terminal."""
    console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer() if console else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Libraries (gmqtt, amqtt) log through the standard library: warnings only.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s: %(message)s")


def _config(args: argparse.Namespace, err: IO[str]) -> Config | None:
    serial: dict[str, str] = {}
    for item in args.serial:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            err.write(f"alarmgw: --serial takes NAME=PATH, got {item!r}\n")
            return None
        serial[name] = path
    try:
        config = load_config(args.config)
        if args.broker or serial:
            config = with_overrides(config, broker=args.broker, serial=serial or None)
    except ConfigError as error:
        err.write(f"alarmgw: refusing to start: {len(error.problems)} configuration problem(s)\n")
        for problem in error.problems:
            err.write(f"  {problem}\n")
        return None
    except OSError as error:
        err.write(f"alarmgw: cannot read {args.config}: {error.strerror or error}\n")
        return None
    return config


async def _serve(gateway: Gateway) -> None:
    async with anyio.create_task_group() as tg:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            await tg.start(gateway.run)
            async for signum in signals:
                structlog.get_logger("alarmgw").info("stopping", signal=signal.Signals(signum).name)
                tg.cancel_scope.cancel()
                break


def run_command(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """Run the gateway until SIGINT/SIGTERM. Exit 2 on a bad configuration."""
    config = _config(args, err)
    if config is None:
        return 2
    configure_logging(args.log_format)
    gateway = Gateway(config, durable=not args.volatile)
    _settle_heap()
    _share_the_gil()
    anyio.run(_serve, gateway)
    return 0


_SWITCH_INTERVAL_S = 0.0002


def _share_the_gil() -> None:
    """Let the store's writer thread have the GIL back quickly while the loop is busy.

    The writer gives the GIL up around every SQLite step and waits up to the
    switch interval (5 ms by default) to get it back from a busy event loop; a
    commit of a few statements then costs about 10 ms of waiting. At 0.2 ms the
    same commit took 1.2 ms (`python -m bench.store_probe`; gateway/adapters/
    store.py, "Few statements per commit"); the loop thread is only asked to
    switch when the writer actually waits.
    """
    sys.setswitchinterval(_SWITCH_INTERVAL_S)


_YOUNG_THRESHOLD = 10_000


def _settle_heap() -> None:
    """Keep the garbage collector's pauses off the dispatch path.

    A district's topology is a few hundred thousand long-lived objects; every
    full collection would walk all of them, measured here as 100-500 ms stalls
    under load (the benchmark's `GC max ms`). They never die, so they are moved
    out of the collector's sight (`gc.freeze`, made for this).

    Under load the gateway also keeps what it must remember for a while (open
    alarms, dedup identities, queued passes): thousands of new long-lived
    objects a second. A young collection walks every one still alive (50,000
    of them took 20-28 ms, once every few seconds), and its survivors would make
    the older generations' walks longer still. So after every collection the
    survivors are frozen too: each collection walks at most the objects made
    since the last one (10,000: a few milliseconds), and no walk ever grows with
    the gateway's memory. Reference counting still frees frozen objects; what a
    frozen object can no longer get is cycle collection, which the hot path does
    not need (its values are acyclic; a cycle made and dropped within one
    interval is still collected). `alarmgw_gc_frozen_objects` shows the count:
    it follows the alarms and dedup entries held, and one that only grows would
    mean cycles leaking.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(_YOUNG_THRESHOLD, 20, 10)
    if _freeze_survivors not in gc.callbacks:
        gc.callbacks.append(_freeze_survivors)


def _freeze_survivors(phase: str, _info: dict[str, int]) -> None:
    if phase == "stop":
        gc.freeze()
