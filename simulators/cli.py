"""`alarmgw sim ...`: stand-in devices for field technicians and tests.

The gateway's CLI (`gateway/cli.py`, the one front door, DESIGN.md) calls
`add_sim_parser(subparsers)` to add the `sim` command and `run_sim(args, out,
err)` to run it. Each device command builds a pure scenario
(`simulators.scenario`) from the deployment file's topology, applies the
faults asked for, and hands the stream to the MQTT driver
(`simulators.mqtt_driver`); `receiver` drives the serial alarm-receiver
stand-in (`simulators.receiver`, `simulators.pty_driver`).

Exit codes: 0 success; 1 `--wait` saw a send that did not arrive everywhere
it should (or the broker or port could not be used); 2 usage or configuration
errors. Ctrl-C ends a run cleanly, with its summary, and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import math
import os
import random
import signal
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Final

from config import arguments
from config.loader import ConfigError, load_config, with_overrides
from config.model import Checkpoint, CheckpointClass, Config
from protocols.contact_id import Family, family
from protocols.payloads import CheckpointMessage, PhoneMessage, native_payload
from protocols.topics import Topics
from simulators.mqtt_driver import (
    MQTT_V5,
    BrokerAddress,
    DriveReport,
    MqttSimError,
    Reporter,
    SimClient,
    drive,
)
from simulators.scenario import (
    HEARTBEAT_CODE,
    PHONE_EVENTS,
    CheckpointScenario,
    DispatchMatcher,
    DistrictScenario,
    Fault,
    PayloadFormat,
    PhoneScenario,
    Scenario,
    Send,
    WaitResult,
    burst,
    clock_skew,
    corrupt,
    duplicate,
    encode_map,
    expected_sinks,
    phone_code,
    silence,
    stream,
)

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "add_sim_parser",
    "drive_district",
    "main",
    "run_sim",
]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2

_RAW = argparse.RawDescriptionHelpFormatter

# ------------------------------------------------------------------ help texts

_SIM_DESCRIPTION = """\
Stand-in devices: household alarm phones, checkpoint cameras, a whole district
and (on a serial line) an alarm receiver. They publish exactly what the real
devices publish (CONTRACT.md), on a seeded schedule: the same --seed and
--start give the same bytes. Faults are available on demand for every device.

Every MQTT device command takes the deployment file the gateway runs with
(--config): ids, topics and the broker come from it. The broker defaults to
the config's (an "embedded" broker is mqtt://127.0.0.1:1883); --broker
overrides it.

Exit codes: 0 done; 1 --wait saw a send that did not arrive everywhere, or the
broker or port could not be used; 2 usage or configuration error."""

_SIM_EPILOG = """\
first steps:
  alarmgw run --config demo.toml &                          # the gateway
  alarmgw sim phone --config demo.toml --household h001 --event panic --wait
  alarmgw sim checkpoint --config demo.toml --all --duration 120
  alarmgw sim district --config district.toml --speed 5 --duration 600

every command has its own manual:  alarmgw sim phone --help
(demo.toml is config/examples/demo.toml in the source tree)"""

_PHONE_EVENTS_TEXT = textwrap.fill(
    f"events: {', '.join([*PHONE_EVENTS, 'restore'])}, or any Contact ID code 100-999. "
    "codes: panic 120, duress 121 (zone = user number), fire 110, medical 100, "
    "burglary 130, tamper 137, AC loss 301, low battery 302, heartbeat 602 (periodic "
    'test). "restore" sends qualifier 3 on the phone\'s previous alarm (or --restore-of). '
    "Each phone keeps one sequence number across its events; it starts at the run's "
    "start time in microseconds, so a later run never repeats an earlier run's "
    "(household, seq).",
    78,
)

_PHONE_DESCRIPTION = f"""\
Household alarm phones ("ten-household" joint-defence phones) over MQTT:
each send is one Contact ID event on alarmgw/in/phone/<household>.

{_PHONE_EVENTS_TEXT}

With --wait the simulator listens on alarmgw/out/+/+/alarms and
alarmgw/deadletter and, for every send, prints each sink it reached with the
latency of every hop: device clock -> gateway ingress -> dispatch -> here.
Which sinks to expect comes from the config's [routing]. A corrupted send
(--corrupt) is expected in the dead letter instead."""

_PHONE_EPILOG = """\
examples:
  # one panic from one household; show where it went and how fast
  alarmgw sim phone --config demo.toml --household h001 --event panic --wait

  # a burglary and its restore, from three households, 5 s apart
  alarmgw sim phone --config demo.toml --household h001,h002,h003 \\
      --event burglary,restore --interval 5

  # every phone's periodic test, spread over 10 s
  alarmgw sim phone --config demo.toml --all --event heartbeat --spread 10

  # duress by user 12, sent twice (same seq: the gateway must drop the copy)
  alarmgw sim phone --config demo.toml --household h001 --event duress --zone 12 \\
      --duplicate 1 --wait

  # a phone whose clock is 5 minutes fast, and garbage that must be dead-lettered
  alarmgw sim phone --config demo.toml --household h002 --event fire \\
      --clock-skew 300 --wait
  alarmgw sim phone --config demo.toml --household h003 --event panic --corrupt 1 --wait

  # what would be sent, without a broker, byte for byte reproducible
  alarmgw sim phone --config demo.toml --all --event panic --dry-run --seed 7 --start 1700000000

  # a base station on a serial line: native frames, stop and wait, ACK/NAK
  # (--pty makes a pseudo-terminal for a gateway's [[serial]] protocol = "native")
  alarmgw sim phone --config demo.toml --household h001 --event panic --pty
  alarmgw sim phone --config demo.toml --all --event burglary --serial /dev/ttyUSB1 \\
      --corrupt 0.1 --split 0.2 --merge 0.1"""

_CHECKPOINT_DESCRIPTION = """\
Vehicle checkpoint cameras (A/B/C-class) over MQTT, on
alarmgw/in/checkpoint/<id>: passes, heartbeats and faults.

Passes arrive at each lane as a Poisson process at the class's rate: A-class
6 lanes x 360 vehicles/h, B-class 4 x 180, C-class 2 x 60 (times
--rate-scale). Plates are realistic: province character (mostly 苏), city
letter, serial without I and O, about 10 % new-energy 8-character plates, and
a share unread (plate "", confidence 0). A heartbeat every
--heartbeat-interval seconds; faults ("video loss", "lens obscured"...) at
--fault-rate per hour."""

_CHECKPOINT_EPILOG = """\
examples:
  # one checkpoint for two minutes
  alarmgw sim checkpoint --config demo.toml --checkpoint k1 --duration 120

  # every A-class checkpoint at triple traffic until Ctrl-C, quietly
  alarmgw sim checkpoint --config demo.toml --all --class A --rate-scale 3 --duration 0 -q

  # a camera that goes silent after 30 s (the gateway should report it offline)
  alarmgw sim checkpoint --config demo.toml --checkpoint k2 --silence k2@30 --duration 600

  # a camera buffering 50 records and flushing them at once after 20 s
  alarmgw sim checkpoint --config demo.toml --checkpoint k1 --burst 50@20"""

_DISTRICT_DESCRIPTION = """\
The whole district of a deployment file at once (DESIGN.md: 130,000 phones,
207 checkpoints): every phone's periodic test (602) every
--heartbeat-interval seconds, each at its own phase (130,000 / 900 s = about
145/s); real alarms at --alarm-rate per minute from random households (half
restored 1-10 minutes later); and every checkpoint's traffic.

--speed multiplies every rate and divides every interval: --speed 10 is ten
times the district's load. At --speed below 1 the intervals grow past the
gateway's supervision timeouts and devices will be reported offline.
Make a district-sized config with:  python -m config.generate --out DIR"""

_DISTRICT_EPILOG = """\
examples:
  python -m config.generate --out /tmp/district
  alarmgw sim district --config /tmp/district/district.toml --duration 600
  alarmgw sim district --config /tmp/district/district.toml --speed 10 --alarm-rate 30

  # a day of district life in about 15 minutes, 1 % of payloads corrupted
  alarmgw sim district --config /tmp/district/district.toml --speed 96 \\
      --duration 900 --corrupt 0.01"""

_RECEIVER_DESCRIPTION = """\
An alarm receiver's output line (Sur-Gard MLR2 / "685" style, RS-232): one
Contact ID record per event, ending with DC4, sent one at a time until the
automation answers ACK; NAK or silence means retry (3 more times), then the
link is down and events are buffered until a heartbeat ("1011 ... @", every
--heartbeat seconds) is acknowledged again, when the buffer is replayed.
Accounts come from the households' accounts in --config.

Use a real port (--port /dev/ttyUSB0, cabled to the gateway's port) or
--pty, which makes a pseudo-terminal and prints its path for the gateway:
  alarmgw run --config demo.toml --serial rx1=/dev/pts/N"""

_RECEIVER_EPILOG = """\
examples:
  alarmgw sim receiver --config demo.toml --pty --household h001 --event panic \\
      --duration 120
  alarmgw sim receiver --config demo.toml --port /dev/ttyUSB1 --baud 1200 \\
      --bytesize 7 --parity E --all --event heartbeat
  alarmgw sim receiver --config demo.toml --pty --all --event burglary --corrupt 0.01"""

_FAULTS_HELP = """\
faults, all seeded (combine freely; applied in this order: clock skew,
silence, duplicate, corrupt, burst)"""


# ------------------------------------------------------------------ argument types


def _ids(text: str) -> list[str]:
    ids = [part.strip() for part in text.split(",") if part.strip()]
    if not ids:
        raise argparse.ArgumentTypeError(f"{text!r} names no id")
    return ids


@dataclass(frozen=True, slots=True)
class _Skew:
    device: str | None
    seconds: float


def _skew(text: str) -> _Skew:
    device, sep, seconds = text.rpartition("=")
    return _Skew(device if sep else None, arguments.number(seconds))


def _burst(text: str) -> tuple[int, float]:
    count, sep, after = text.partition("@")
    return arguments.count(count), (arguments.non_negative(after) if sep else 0.0)


def _silence(text: str) -> tuple[str, float]:
    device, sep, after = text.rpartition("@")
    if not sep:
        device, after = text, "0"
    if not device:
        raise argparse.ArgumentTypeError(f"{text!r} names no device")
    return device, arguments.non_negative(after)


# ------------------------------------------------------------------ the parser


def _common() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    where = parent.add_argument_group("deployment and broker")
    where.add_argument(
        "--config", required=True, metavar="FILE", help="the deployment file the gateway runs with"
    )
    where.add_argument(
        "--broker",
        metavar="URL",
        help="mqtt://host[:port] or mqtts://host[:port] (default: the config's broker; "
        "embedded = mqtt://127.0.0.1:1883)",
    )
    where.add_argument(
        "--client-id", metavar="ID", help="MQTT client id (default: alarmgw-sim-<command>-<pid>)"
    )
    where.add_argument(
        "--format",
        choices=[f.value for f in PayloadFormat],
        default=PayloadFormat.MSGPACK.value,
        help="payload encoding (default: msgpack, the contract's; json for reading along)",
    )
    where.add_argument(
        "--seed",
        type=int,
        metavar="N",
        help="random seed; printed at start so a run can be replayed (default: a fresh one)",
    )
    where.add_argument(
        "--start",
        type=float,
        metavar="EPOCH",
        help="scenario start as Unix time (default: now); with --dry-run and --seed "
        "the output is byte for byte the same every time",
    )
    where.add_argument(
        "--dry-run",
        action="store_true",
        help="print what would be sent, at once, without connecting to a broker",
    )
    faults = parent.add_argument_group(_FAULTS_HELP)
    faults.add_argument(
        "--duplicate",
        type=arguments.fraction,
        default=0.0,
        metavar="RATE",
        help="send this fraction of events twice (same bytes, same seq/id)",
    )
    faults.add_argument(
        "--duplicate-delay",
        type=arguments.non_negative,
        default=0.0,
        metavar="S",
        help="seconds between an event and its duplicate (default 0)",
    )
    faults.add_argument(
        "--corrupt",
        type=arguments.fraction,
        default=0.0,
        metavar="RATE",
        help="flip bytes in this fraction of payloads; the gateway must dead-letter them",
    )
    faults.add_argument(
        "--clock-skew",
        type=_skew,
        action="append",
        default=[],
        metavar="[DEVICE=]S",
        help="device clock S seconds fast (negative: slow), for one device or all; repeatable",
    )
    faults.add_argument(
        "--burst",
        type=_burst,
        action="append",
        default=[],
        metavar="N[@T]",
        help="the N sends due from T seconds on (default 0) go out at once; repeatable",
    )
    faults.add_argument(
        "--silence",
        type=_silence,
        action="append",
        default=[],
        metavar="DEVICE[@T]",
        help="DEVICE sends nothing from T seconds on (default 0); repeatable",
    )
    return parent


def add_sim_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add `sim` and its device commands to the `alarmgw` parser; returns the `sim` parser."""
    sim = subparsers.add_parser(
        "sim",
        help="stand-in devices: phones, checkpoints, a district, an alarm receiver",
        description=_SIM_DESCRIPTION,
        epilog=_SIM_EPILOG,
        formatter_class=_RAW,
    )
    devices = sim.add_subparsers(dest="sim_command", required=True, metavar="DEVICE")
    common = _common()

    phone = devices.add_parser(
        "phone",
        parents=[common],
        help="household alarm phones: panic, fire, burglary, restore, heartbeat...",
        description=_PHONE_DESCRIPTION,
        epilog=_PHONE_EPILOG,
        formatter_class=_RAW,
    )
    who = phone.add_argument_group("which phones and what they send")
    chosen = who.add_mutually_exclusive_group(required=True)
    chosen.add_argument(
        "--household",
        type=_ids,
        action="extend",
        metavar="ID[,ID...]",
        help="household ids from the config; repeatable",
    )
    chosen.add_argument("--all", action="store_true", help="every household in the config")
    who.add_argument(
        "--event",
        type=_ids,
        action="extend",
        metavar="NAME[,NAME...]",
        help="what each phone sends, in turn (default: panic)",
    )
    who.add_argument(
        "--zone",
        type=int,
        metavar="N",
        help="zone or user number 0-999 (default: 1; 0 for AC loss, low battery, heartbeat)",
    )
    who.add_argument("--part", type=int, default=1, metavar="N", help="partition 0-99 (default 1)")
    who.add_argument(
        "--count",
        type=arguments.count,
        default=1,
        metavar="N",
        help="rounds of --event (default 1)",
    )
    who.add_argument(
        "--interval",
        type=arguments.non_negative,
        default=1.0,
        metavar="S",
        help="seconds between one phone's sends (default 1)",
    )
    who.add_argument(
        "--spread",
        type=arguments.non_negative,
        default=0.0,
        metavar="S",
        help="spread each round's phones at random over S seconds (default 0: all at once)",
    )
    who.add_argument(
        "--restore-of",
        default="burglary",
        metavar="EVENT",
        help="what a restore restores when the phone sent no alarm before it (default burglary)",
    )
    who.add_argument("--seq-start", type=int, metavar="N", help="first sequence number")
    who.add_argument(
        "--allow-unknown",
        action="store_true",
        help="allow households the config does not know (the gateway dead-letters them)",
    )
    waiting = phone.add_argument_group("waiting for the dispatch")
    waiting.add_argument(
        "--wait",
        action="store_true",
        help="wait for each event at every sink it should reach; print each hop's latency",
    )
    waiting.add_argument(
        "--wait-timeout",
        type=arguments.positive,
        default=10.0,
        metavar="S",
        help="give up waiting S seconds after the last send (default 10)",
    )
    phone.add_argument("-q", "--quiet", action="store_true", help="do not print each send")
    _add_phone_serial(phone)

    checkpoint = devices.add_parser(
        "checkpoint",
        parents=[common],
        help="checkpoint cameras: passes with plates, heartbeats, faults",
        description=_CHECKPOINT_DESCRIPTION,
        epilog=_CHECKPOINT_EPILOG,
        formatter_class=_RAW,
    )
    which = checkpoint.add_argument_group("which checkpoints and how busy")
    picked = which.add_mutually_exclusive_group(required=True)
    picked.add_argument(
        "--checkpoint",
        type=_ids,
        action="extend",
        metavar="ID[,ID...]",
        help="checkpoint ids from the config; repeatable",
    )
    picked.add_argument("--all", action="store_true", help="every checkpoint in the config")
    which.add_argument(
        "--class",
        dest="classes",
        choices=[c.value for c in CheckpointClass],
        action="append",
        help="with --all: only this class; repeatable",
    )
    _traffic(which)
    which.add_argument(
        "--duration",
        type=arguments.non_negative,
        default=60.0,
        metavar="S",
        help="seconds to run (default 60; 0 = until Ctrl-C)",
    )
    checkpoint.add_argument("-q", "--quiet", action="store_true", help="do not print each send")

    district = devices.add_parser(
        "district",
        parents=[common],
        help="the whole district: every phone's heartbeat, alarms, every checkpoint",
        description=_DISTRICT_DESCRIPTION,
        epilog=_DISTRICT_EPILOG,
        formatter_class=_RAW,
    )
    load = district.add_argument_group("load")
    load.add_argument(
        "--speed",
        type=arguments.positive,
        default=1.0,
        metavar="X",
        help="multiply every rate by X (default 1: the real district)",
    )
    load.add_argument(
        "--duration",
        type=arguments.non_negative,
        default=60.0,
        metavar="S",
        help="seconds to run (default 60; 0 = until Ctrl-C)",
    )
    load.add_argument(
        "--alarm-rate",
        type=arguments.non_negative,
        default=2.0,
        metavar="PER_MIN",
        help="real alarms and troubles per minute, district-wide (default 2)",
    )
    load.add_argument(
        "--heartbeat-interval",
        dest="phone_heartbeat",
        type=arguments.positive,
        default=900.0,
        metavar="S",
        help="each phone's periodic test interval (default 900)",
    )
    _traffic(load, heartbeat_flag="--checkpoint-heartbeat")
    load.add_argument("--seq-start", type=int, metavar="N", help="first sequence number")
    district.add_argument("-v", "--verbose", action="store_true", help="print every send")

    _add_receiver(devices)
    return sim


def _traffic(
    group: argparse._ArgumentGroup, *, heartbeat_flag: str = "--heartbeat-interval"
) -> None:
    group.add_argument(
        "--rate-scale",
        type=arguments.non_negative,
        default=1.0,
        metavar="X",
        help="multiply every lane's pass rate by X (default 1)",
    )
    group.add_argument(
        heartbeat_flag,
        dest="checkpoint_heartbeat",
        type=arguments.positive,
        default=60.0,
        metavar="S",
        help="seconds between a checkpoint's heartbeats (default 60)",
    )
    group.add_argument(
        "--fault-rate",
        type=arguments.non_negative,
        default=0.2,
        metavar="PER_H",
        help="faults per checkpoint per hour (default 0.2)",
    )
    group.add_argument(
        "--unread-rate",
        type=arguments.fraction,
        default=0.03,
        metavar="RATE",
        help="fraction of passes whose plate is not read (default 0.03)",
    )


def _add_phone_serial(phone: argparse.ArgumentParser) -> None:
    line = phone.add_argument_group(
        "over a serial line instead of MQTT (a base station's native frames, docs/framing.md)",
        "Stop and wait: each frame until its ACK (resent after the timeout), NAK REFUSED "
        "drops it. --corrupt damages this fraction of transmissions on the wire.",
    )
    port = line.add_mutually_exclusive_group()
    port.add_argument(
        "--serial", metavar="DEVICE", help="serial device cabled to the gateway's native port"
    )
    port.add_argument(
        "--pty", action="store_true", help="make a pseudo-terminal and print its path"
    )
    line.add_argument(
        "--baud", type=int, default=9600, help="default 9600 (sets the answer timeout)"
    )
    line.add_argument(
        "--split",
        type=arguments.fraction,
        default=0.0,
        metavar="RATE",
        help="write this fraction of frames in 2-3 pieces",
    )
    line.add_argument(
        "--merge",
        type=arguments.fraction,
        default=0.0,
        metavar="RATE",
        help="write this fraction of frames together with the previous frame, in one write",
    )
    line.add_argument(
        "--give-up",
        type=arguments.non_negative,
        default=0.0,
        metavar="S",
        help="stop S seconds after the last send even if frames are unanswered "
        "(default 0: never, an alarm is never given up on; Ctrl-C stops)",
    )


def _add_receiver(devices: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    receiver = devices.add_parser(
        "receiver",
        help="an alarm receiver's serial output (Contact ID records, DC4, ACK/NAK)",
        description=_RECEIVER_DESCRIPTION,
        epilog=_RECEIVER_EPILOG,
        formatter_class=_RAW,
    )
    receiver.add_argument("--config", required=True, metavar="FILE", help="the deployment file")
    line = receiver.add_argument_group("the serial line")
    port = line.add_mutually_exclusive_group(required=True)
    port.add_argument("--port", metavar="DEVICE", help="serial device, e.g. /dev/ttyUSB1")
    port.add_argument(
        "--pty", action="store_true", help="make a pseudo-terminal and print its path"
    )
    line.add_argument("--baud", type=int, default=9600, help="default 9600")
    line.add_argument("--bytesize", type=int, choices=(7, 8), default=8, help="default 8")
    line.add_argument("--parity", choices=("N", "E", "O"), default="N", help="default N")
    line.add_argument("--stopbits", type=int, choices=(1, 2), default=1, help="default 1")
    unit = receiver.add_argument_group("the receiver")
    unit.add_argument("--receiver", default="01", metavar="RR", help="receiver number (default 01)")
    unit.add_argument("--line", default="100", metavar="LLL", help="line card number (default 100)")
    unit.add_argument(
        "--heartbeat",
        type=arguments.positive,
        default=30.0,
        metavar="S",
        help="seconds between heartbeats (default 30)",
    )
    what = receiver.add_argument_group("which phones call in and what they report")
    chosen = what.add_mutually_exclusive_group(required=True)
    chosen.add_argument(
        "--household", type=_ids, action="extend", metavar="ID[,ID...]", help="households"
    )
    chosen.add_argument("--all", action="store_true", help="every household with an account")
    what.add_argument(
        "--event", type=_ids, action="extend", metavar="NAME[,NAME...]", help="default: panic"
    )
    what.add_argument("--zone", type=int, metavar="N", help="zone or user (default 1, 0 system)")
    what.add_argument(
        "--count", type=arguments.count, default=1, metavar="N", help="rounds (default 1)"
    )
    what.add_argument(
        "--duration",
        type=arguments.non_negative,
        default=0.0,
        metavar="S",
        help="seconds to run (default 0: until every event is acknowledged)",
    )
    faults = receiver.add_argument_group("faults")
    faults.add_argument(
        "--corrupt", type=arguments.fraction, default=0.0, metavar="RATE", help="per byte"
    )
    faults.add_argument(
        "--duplicate", type=arguments.fraction, default=0.0, metavar="RATE", help="resend after ACK"
    )
    faults.add_argument("--seed", type=int, metavar="N", help="random seed")


# ------------------------------------------------------------------ running


class _UsageError(Exception):
    """A problem with the command line or the config's contents: exit 2."""


def run_sim(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """Run `alarmgw sim <device>` as parsed by `add_sim_parser`; returns the exit code."""
    try:
        config = _load(args.config, getattr(args, "broker", None))
        if args.sim_command == "receiver":
            return _run_receiver(args, config, out, err)
        if args.sim_command == "phone" and (args.serial or args.pty):
            return _run_phone_serial(args, config, out, err)
        return _run_mqtt(args, config, out, err)
    except ConfigError as error:
        err.write(f"alarmgw sim: refusing configuration {args.config}: ")
        err.write(f"{len(error.problems)} problem(s)\n")
        for problem in error.problems:
            err.write(f"  {problem}\n")
        return EXIT_USAGE
    except OSError as error:
        err.write(f"alarmgw sim: {error.strerror or error}: {error.filename or ''}\n")
        return EXIT_FAILED
    except _UsageError as error:
        err.write(f"alarmgw sim {args.sim_command}: {error}\n")
        return EXIT_USAGE
    except MqttSimError as error:
        err.write(f"alarmgw sim {args.sim_command}: {error}\n")
        return EXIT_FAILED


def _load(path: str, broker: str | None) -> Config:
    config = load_config(path)
    return config if broker is None else with_overrides(config, broker=broker)


def _faults(args: argparse.Namespace) -> list[Fault]:
    faults: list[Fault] = []
    try:
        faults.extend(
            clock_skew(skew.seconds, None if skew.device is None else [skew.device])
            for skew in args.clock_skew
        )
        faults.extend(silence(device, after) for device, after in args.silence)
        if args.duplicate:
            faults.append(duplicate(args.duplicate, args.duplicate_delay))
        if args.corrupt:
            faults.append(corrupt(args.corrupt))
        for n, after in args.burst:
            faults.append(burst(n, after))
    except ValueError as error:
        raise _UsageError(str(error)) from None
    return faults


@dataclass(frozen=True, slots=True)
class _Plan:
    scenario: Scenario
    description: str
    total_s: float | None
    print_sends: bool


def _plan(args: argparse.Namespace, config: Config, topics: Topics, start: float) -> _Plan:
    fmt = PayloadFormat(args.format)
    try:
        if args.sim_command == "phone":
            return _phone_plan(args, config, topics, start, fmt)
        if args.sim_command == "checkpoint":
            return _checkpoint_plan(args, config, topics, start, fmt)
        return _district_plan(args, config, topics, start, fmt)
    except ValueError as error:
        raise _UsageError(str(error)) from None


def _phone_plan(
    args: argparse.Namespace, config: Config, topics: Topics, start: float, fmt: PayloadFormat
) -> _Plan:
    known = config.topology.households
    if args.all:
        households = [h.id for h in config.households]
        if not households:
            raise _UsageError(f"{args.config} has no households")
    else:
        households = list(dict.fromkeys(args.household))
        unknown = [h for h in households if h not in known]
        if unknown and not args.allow_unknown:
            sample = ", ".join(list(known)[:5]) + (", ..." if len(known) > 5 else "")
            raise _UsageError(
                f"unknown household(s) {', '.join(unknown)} in {args.config} (have: {sample}); "
                "--allow-unknown sends anyway"
            )
    events = args.event or ["panic"]
    scenario = PhoneScenario(
        topics,
        households,
        events,
        start=start,
        count=args.count,
        interval=args.interval,
        spread=args.spread,
        zone=args.zone,
        part=args.part,
        seq_start=args.seq_start,
        restore_of=args.restore_of,
        fmt=fmt,
    )
    rounds = f"{args.count} round{'s' if args.count != 1 else ''}"
    description = (
        f"{len(households)} household{'s' if len(households) != 1 else ''} x "
        f"{', '.join(events)} x {rounds} = {len(scenario)} send{'s' if len(scenario) != 1 else ''}"
    )
    total = (len(scenario) // len(households) - 1) * args.interval + args.spread
    return _Plan(scenario, description, total if total > 0 else None, not args.quiet)


def _checkpoint_plan(
    args: argparse.Namespace, config: Config, topics: Topics, start: float, fmt: PayloadFormat
) -> _Plan:
    known = config.topology.checkpoints
    chosen: list[Checkpoint]
    if args.all:
        classes = set(args.classes or [c.value for c in CheckpointClass])
        chosen = [c for c in config.checkpoints if c.cls.value in classes]
    else:
        unknown = [c for c in args.checkpoint if c not in known]
        if unknown:
            raise _UsageError(
                f"unknown checkpoint(s) {', '.join(unknown)} in {args.config} "
                f"(have: {', '.join(known) or 'none'})"
            )
        chosen = [known[c] for c in dict.fromkeys(args.checkpoint)]
    if not chosen:
        raise _UsageError(f"no checkpoint in {args.config} matches")
    duration = args.duration or None
    scenario = CheckpointScenario(
        topics,
        chosen,
        start=start,
        duration=duration,
        rate_scale=args.rate_scale,
        heartbeat_interval=args.checkpoint_heartbeat,
        fault_rate_per_h=args.fault_rate,
        unread_rate=args.unread_rate,
        fmt=fmt,
    )
    by_class = ", ".join(
        f"{sum(1 for c in chosen if c.cls is cls)} {cls.value}"
        for cls in CheckpointClass
        if any(c.cls is cls for c in chosen)
    )
    description = (
        f"{len(chosen)} checkpoint{'s' if len(chosen) != 1 else ''} ({by_class}), "
        f"about {scenario.total_pass_rate():.2f} passes/s, "
        f"{'until Ctrl-C' if duration is None else f'{duration:g} s'}"
    )
    return _Plan(scenario, description, duration, not args.quiet)


def _district_plan(
    args: argparse.Namespace, config: Config, topics: Topics, start: float, fmt: PayloadFormat
) -> _Plan:
    duration = args.duration or None
    scenario = DistrictScenario(
        topics,
        config,
        start=start,
        duration=duration,
        speed=args.speed,
        alarm_rate_per_min=args.alarm_rate,
        heartbeat_interval=args.phone_heartbeat,
        checkpoint_heartbeat_interval=args.checkpoint_heartbeat,
        rate_scale=args.rate_scale,
        fault_rate_per_h=args.fault_rate,
        unread_rate=args.unread_rate,
        seq_start=args.seq_start,
        fmt=fmt,
    )
    rates = scenario.rates()
    description = (
        f"{len(config.households):,} phones, {len(config.checkpoints)} checkpoints at speed "
        f"{args.speed:g}: heartbeats {rates['heartbeats']:,.1f}/s, alarms "
        f"{rates['alarms'] * 60:.1f}/min, passes {rates['passes']:,.1f}/s, "
        f"{'until Ctrl-C' if duration is None else f'{duration:g} s'}"
    )
    return _Plan(scenario, description, duration, args.verbose)


def _run_mqtt(args: argparse.Namespace, config: Config, out: IO[str], err: IO[str]) -> int:
    topics = Topics(config.mqtt.base_topic)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    # Half a second of lead: the connection comes up before the first send is due,
    # so a short run does not start by reporting itself late.
    start = args.start if args.start is not None else time.time() + 0.5
    plan = _plan(args, config, topics, start)
    faults = _faults(args)
    _warn_supervision(args, config, err)
    sends = stream(plan.scenario, seed=seed, faults=faults)
    fault_text = f" · faults: {', '.join(f.name for f in faults)}" if faults else ""
    header = (
        f"alarmgw sim {args.sim_command}: {plan.description} · seed {seed} · {args.format}"
        f"{fault_text}"
    )
    if args.dry_run:
        if plan.total_s is None and args.sim_command != "phone":
            raise _UsageError("--dry-run needs a --duration")
        out.write(header + " · dry run\n")
        for send in sends:
            out.write(_describe(send) + "\n")
        return EXIT_OK
    broker = BrokerAddress.from_settings(config.mqtt)
    client_id = args.client_id or f"alarmgw-sim-{args.sim_command}-{os.getpid()}"
    return asyncio.run(
        _drive_mqtt(
            args,
            config,
            topics=topics,
            sends=sends,
            run=_Run(broker, client_id, header, plan),
            out=out,
        )
    )


@dataclass(frozen=True, slots=True)
class _Run:
    broker: BrokerAddress
    client_id: str
    header: str
    plan: _Plan


def _warn_supervision(args: argparse.Namespace, config: Config, err: IO[str]) -> None:
    if args.sim_command != "district":
        return
    phone_every = args.phone_heartbeat / args.speed
    if phone_every > config.supervision.phone_timeout_s:
        err.write(
            f"alarmgw sim district: note: phones test every {phone_every:g} s, longer than the "
            f"gateway's phone timeout ({config.supervision.phone_timeout_s:g} s): "
            "they will be reported offline\n"
        )
    checkpoint_every = args.checkpoint_heartbeat / args.speed
    if checkpoint_every > config.supervision.checkpoint_timeout_s:
        err.write(
            f"alarmgw sim district: note: checkpoints beat every {checkpoint_every:g} s, longer "
            f"than the gateway's timeout ({config.supervision.checkpoint_timeout_s:g} s)\n"
        )


async def drive_district(
    config: Config,
    *,
    host: str,
    port: int,
    speed: float,
    alarm_rate_per_min: float,
    seed: int,
    stop: asyncio.Event,
) -> DriveReport:
    """The config's district (every phone's test, alarms, checkpoint traffic) on host:port.

    For `alarmgw demo`, which runs it in the gateway's own event loop: it prints
    nothing (the live view owns the terminal) and runs until `stop` is set, then
    waits briefly for its PUBACKs and returns the report. `alarm_rate_per_min`
    and `speed` mean what `sim district` says. Raises MqttSimError when the
    broker cannot be reached.
    """
    topics = Topics(config.mqtt.base_topic)
    scenario = DistrictScenario(
        topics,
        config,
        start=time.time() + 0.5,
        duration=None,
        speed=speed,
        alarm_rate_per_min=alarm_rate_per_min,
    )
    broker = dataclasses.replace(BrokerAddress.from_settings(config.mqtt), host=host, port=port)
    async with SimClient(broker, f"alarmgw-sim-demo-{os.getpid()}") as client:
        return await drive(stream(scenario, seed=seed), client, stop=stop)


async def _drive_mqtt(
    args: argparse.Namespace,
    config: Config,
    *,
    topics: Topics,
    sends: Iterator[Send],
    run: _Run,
    out: IO[str],
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled = False
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGINT, stop.set)  # Ctrl-C: stop, then the summary
        handled = True
    wait = bool(getattr(args, "wait", False))
    matcher = DispatchMatcher(topics) if wait else None
    arrived = asyncio.Event()
    listener: SimClient | None = None
    try:
        if matcher is not None:
            listener = SimClient(
                run.broker,
                run.client_id + "-wait",
                on_message=_hearing(matcher, arrived),
            )
            await listener.connect()
            await listener.subscribe([f"{topics.base}/out/+/+/alarms", topics.deadletter])
        async with SimClient(run.broker, run.client_id) as client:
            version = "MQTT 5" if client.version == MQTT_V5 else "MQTT 3.1.1"
            with Reporter(out) as reporter:
                reporter.print(f"{run.header} → {run.broker} ({version})")
                on_sent = _printer(reporter, matcher, config, print_sends=run.plan.print_sends)
                report = await drive(
                    sends,
                    client,
                    on_sent=on_sent,
                    reporter=reporter,
                    stop=stop,
                    total_s=run.plan.total_s,
                )
                if matcher is not None and not report.interrupted:
                    await _await_matches(
                        matcher,
                        arrived,
                        timeout_s=args.wait_timeout,
                        stop=stop,
                        reporter=reporter,
                        broker=run.broker,
                    )
            out.write(report.summary() + "\n")
        if report.interrupted:
            if matcher is not None:
                out.write("interrupted: not waiting for the dispatches\n")
            return EXIT_OK  # the technician asked to stop: not a failure
        if matcher is not None:
            return _print_results(matcher.results(), args.wait_timeout, report, out)
        return EXIT_FAILED if report.unacked or report.not_connected else EXIT_OK
    finally:
        if listener is not None:
            await listener.close()
        if handled:
            loop.remove_signal_handler(signal.SIGINT)


def _hearing(
    matcher: DispatchMatcher, arrived: asyncio.Event
) -> Callable[[str, bytes, float], None]:
    def heard(topic: str, payload: bytes, received_at: float) -> None:
        if matcher.observe(topic, payload, received_at):
            arrived.set()

    return heard


def _printer(
    reporter: Reporter,
    matcher: DispatchMatcher | None,
    config: Config,
    *,
    print_sends: bool,
) -> Callable[[Send, float], None]:
    households = config.topology.households

    def sent(send: Send, lateness: float) -> None:
        if matcher is not None:
            message = send.meta.message
            if isinstance(message, PhoneMessage):
                matcher.expect(
                    send,
                    expected_sinks(config, message.household, message.code),
                    known=message.household in households,
                )
        if print_sends:
            late = f"  (late {lateness * 1000:.0f} ms)" if lateness > 0.05 else ""
            reporter.print(_describe(send) + late)

    return sent


async def _await_matches(
    matcher: DispatchMatcher,
    arrived: asyncio.Event,
    *,
    timeout_s: float,
    stop: asyncio.Event,
    reporter: Reporter,
    broker: BrokerAddress,
) -> None:
    deadline = time.monotonic() + timeout_s
    while matcher.pending and not stop.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        reporter.status(
            f"waiting for {matcher.pending} event(s) at their sinks on {broker} "
            f"({remaining:.0f} s left)",
            force=False,
        )
        arrived.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(arrived.wait(), min(remaining, 0.5))


# ------------------------------------------------------------------ printing


def _clock(at: float) -> str:
    whole = int(at)
    return time.strftime("%H:%M:%S", time.localtime(whole)) + f".{int((at - whole) * 1000):03d}"


def _describe(send: Send) -> str:
    """One line per send: when, what, from whom, and the faults applied."""
    message = send.meta.message
    if isinstance(message, PhoneMessage):
        what = (
            f"{send.meta.event:<11} {message.household}  seq={message.seq} q={message.q} "
            f"code={message.code} zone={message.zone} part={message.part}"
        )
    else:
        what = f"{send.meta.event:<11} {message.checkpoint}  {_checkpoint_text(message)}"
    faults = f"  [{', '.join(send.meta.faults)}]" if send.meta.faults else ""
    return (
        f"{_clock(send.at)} {what}  → {send.topic} ({len(send.payload)} B {send.meta.fmt}){faults}"
    )


def _checkpoint_text(message: CheckpointMessage) -> str:
    if message.fault is not None:
        return f"id={message.id} fault {message.fault!r}"
    if message.plate is None:
        return f"id={message.id}"
    plate = message.plate or "(unread)"
    return (
        f"id={message.id} {plate} conf={message.conf} lane={message.lane} {message.dir} "
        f"{message.speed} km/h {message.vtype} {message.color}"
    )


def _ms(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds * 1000:.1f} ms"


def _print_results(
    results: Sequence[WaitResult], timeout_s: float, report: DriveReport, out: IO[str]
) -> int:
    failed = 0
    for result in results:
        message = result.send.meta.message
        assert isinstance(message, PhoneMessage)  # only phone sends are expected
        title = f"{result.send.meta.event} {message.household} seq={message.seq}"
        if result.send.meta.faults:
            title += f" [{', '.join(result.send.meta.faults)}]"
        if result.expect_deadletter:
            if result.deadletter is not None:
                out.write(f"{title}: dead-lettered ({result.deadletter}), as it should be\n")
            else:
                failed += 1
                out.write(f"{title}: NOT DEAD-LETTERED within {timeout_s:g} s\n")
            continue
        if not result.expected:
            why = (
                "periodic test: feeds supervision only"
                if message.code == HEARTBEAT_CODE
                else "the config's [routing] sends it nowhere"
            )
            out.write(f"{title}: not dispatched ({why})\n")
            continue
        reached = len(result.expected) - len(result.missing)
        out.write(f"{title}: reached {reached}/{len(result.expected)} sinks\n")
        for hop in result.hops:
            total = None if hop.device_ts is None else hop.received_at - hop.device_ts
            extra = "  (escalated)" if hop.escalated else ""
            out.write(
                f"  {hop.sink:<24} device→ingress {_ms(hop.device_to_ingress)} · "
                f"ingress→dispatch {_ms(hop.ingress_to_dispatch)} · "
                f"dispatch→here {_ms(hop.dispatch_to_received)} · total {_ms(total)}{extra}\n"
            )
        for sink in result.missing:
            out.write(f"  {sink:<24} MISSING: nothing within {timeout_s:g} s\n")
        if result.missing:
            failed += 1
    if failed:
        out.write(
            f"wait: {failed} of {len(results)} event(s) did not arrive everywhere within "
            f"{timeout_s:g} s. Is the gateway running with this config and connected to the "
            "same broker?\n"
        )
        return EXIT_FAILED
    out.write(f"wait: all {len(results)} event(s) arrived where they should\n")
    return EXIT_FAILED if report.unacked or report.not_connected else EXIT_OK


# ------------------------------------------------------------------ receiver


def _receiver_signals(args: argparse.Namespace, config: Config) -> list[tuple[str, int, int, int]]:
    """(account, qualifier, code, zone) for every event to report, in order."""
    households = config.topology.households
    if args.all:
        chosen = [h for h in config.households if h.accounts]
        if not chosen:
            raise _UsageError(f"no household in {args.config} has a Contact ID account")
    else:
        unknown = [h for h in args.household if h not in households]
        if unknown:
            raise _UsageError(f"unknown household(s) {', '.join(unknown)} in {args.config}")
        chosen = [households[h] for h in dict.fromkeys(args.household)]
        without = [h.id for h in chosen if not h.accounts]
        if without:
            raise _UsageError(
                f"household(s) {', '.join(without)} have no Contact ID account in {args.config}"
            )
    names = [name.strip().lower().replace("-", "_") for name in (args.event or ["panic"])]
    signals: list[tuple[str, int, int, int]] = []
    try:
        codes = [None if name == "restore" else phone_code(name) for name in names]
        previous: dict[str, tuple[int, int]] = {}
        for _ in range(args.count):
            for home in chosen:
                for code in codes:
                    if code is None:
                        restored = previous.get(home.id, (PHONE_EVENTS["burglary"], 1))
                        signals.append((home.accounts[0], 3, *restored))
                        continue
                    zone = args.zone if args.zone is not None else _default_zone(code)
                    if code != HEARTBEAT_CODE:
                        previous[home.id] = (code, zone)
                    signals.append((home.accounts[0], 1, code, zone))
    except ValueError as error:
        raise _UsageError(str(error)) from None
    return signals


def _default_zone(code: int) -> int:
    return 0 if code in (301, 302, HEARTBEAT_CODE) else 1


def _run_receiver(args: argparse.Namespace, config: Config, out: IO[str], err: IO[str]) -> int:
    # Imported here: the serial stand-in pulls in anyio, termios and pyserial,
    # which the MQTT commands do not need.
    import anyio  # noqa: PLC0415
    import serial  # noqa: PLC0415

    from protocols.contact_id import Qualifier  # noqa: PLC0415
    from simulators.pty_driver import Pty, open_pty, run_receiver  # noqa: PLC0415
    from simulators.receiver import ReceiverStandIn, Signal  # noqa: PLC0415

    signals = _receiver_signals(args, config)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    try:
        standin = ReceiverStandIn(
            args.receiver,
            args.line,
            args.heartbeat,
            corrupt_rate=args.corrupt,
            duplicate_rate=args.duplicate,
            line_parity=args.parity != "N",
            rng=random.Random(seed),
        )
        for account, qualifier, code, zone in signals:
            standin.queue(Signal(account, Qualifier(qualifier), code, 1, zone))
    except (TypeError, ValueError) as error:
        raise _UsageError(str(error)) from None
    pty: Pty | None = None
    port: serial.Serial | None = None
    if args.pty:
        pty = open_pty()
        fd = pty.master_fd
        where = pty.slave_path
    else:
        try:
            port = serial.Serial(
                args.port,
                args.baud,
                bytesize=args.bytesize,
                parity=args.parity,
                stopbits=args.stopbits,
                timeout=0,
            )
        except (serial.SerialException, ValueError) as error:
            err.write(f"alarmgw sim receiver: cannot open {args.port}: {error}\n")
            return EXIT_FAILED
        fd = port.fileno()
        os.set_blocking(fd, False)
        where = args.port
    out.write(
        f"alarmgw sim receiver: receiver {args.receiver} line {args.line} on {where}: "
        f"{len(signals)} event(s), heartbeat every {args.heartbeat:g} s, seed {seed}\n"
    )
    if pty is not None:
        out.write(
            f"  point the gateway at it:  alarmgw run --config {args.config} "
            f"--serial NAME={pty.slave_path}\n"
        )
    out.flush()
    until_acked = args.duration == 0
    interrupted = False
    try:
        anyio.run(
            _receiver_session,
            run_receiver,
            standin,
            fd,
            float("inf") if until_acked else args.duration,
            until_acked,
        )
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if pty is not None:
            pty.close()
        if port is not None:
            port.close()
    stats = standin.stats
    out.write(
        f"receiver: sent {stats.sent} record(s), acked {stats.acked}, NAKs {stats.naks}, "
        f"retries {stats.retries}, timeouts {stats.timeouts}, duplicates {stats.duplicates}, "
        f"corrupted bytes {stats.corrupted}, heartbeats {stats.heartbeats} "
        f"(acked {stats.heartbeats_acked}), link down {stats.link_downs}x"
        f"{', interrupted' if interrupted else ''}\n"
    )
    unacknowledged = len(standin.pending)
    if unacknowledged and not interrupted:
        out.write(f"receiver: {unacknowledged} event(s) never acknowledged\n")
        return EXIT_FAILED
    return EXIT_OK


async def _receiver_session(
    runner: Callable[..., Awaitable[None]],
    standin: object,
    fd: int,
    duration_s: float,
    until_acked: bool,
) -> None:
    stop_when = _idle if until_acked else None
    await runner(standin, fd, duration_s=duration_s, stop_when=stop_when)


def _idle(standin: object) -> bool:
    return bool(getattr(standin, "idle", False))


# ------------------------------------------------------------------ phone over serial


def _run_phone_serial(args: argparse.Namespace, config: Config, out: IO[str], err: IO[str]) -> int:
    """`sim phone --serial DEVICE|--pty`: the same sends as native frames, stop and wait."""
    # Imported here, like the receiver's: anyio, termios and pyserial only for serial.
    import anyio  # noqa: PLC0415
    import serial  # noqa: PLC0415

    from protocols.frames import encode_ack  # noqa: PLC0415
    from simulators.pty_driver import Pty, open_pty  # noqa: PLC0415
    from simulators.serial_driver import NativeSender, Sent, run_sender  # noqa: PLC0415

    if args.wait:
        raise _UsageError("--wait listens on MQTT; over serial each ACK is the gateway's word")
    topics = Topics(config.mqtt.base_topic)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    start = args.start if args.start is not None else time.time() + 0.5
    plan = _plan(args, config, topics, start)
    # On a serial line --corrupt damages frames on the wire (the gateway drops
    # them and the sender resends), not payloads.
    faults = [fault for fault in _faults(args) if fault.name != "corrupt"]
    fmt = PayloadFormat(args.format)
    try:
        sender = NativeSender(
            baud=args.baud,
            corrupt_rate=args.corrupt,
            split_rate=args.split,
            merge_rate=args.merge,
            rng=random.Random(f"{seed}/serial"),
        )
    except ValueError as error:
        raise _UsageError(str(error)) from None
    last_at = start
    for send in stream(plan.scenario, seed=seed, faults=faults):
        message = send.meta.message
        last_at = max(last_at, send.at)
        sender.queue_payload(
            encode_map(native_payload(message), fmt),
            label=f"{send.meta.event:<9} {_describe_message(message)}",
            at=send.at,
            urgent=isinstance(message, PhoneMessage) and family(message.code) is Family.LIFE_SAFETY,
        )
    header = f"alarmgw sim phone: {plan.description} · native frames · seed {seed}"
    if args.dry_run:
        # Every frame as it would go out, each answered at once by an ACK.
        out.write(header + " · dry run\n")
        while not sender.idle:
            deadline = sender.next_deadline()
            assert deadline is not None
            writes = sender.poll(deadline)
            answers = b""
            for report in sender.take_reports():
                out.write(_describe_report(report) + "\n")
                if isinstance(report, Sent):
                    answers += encode_ack(report.seq)
            out.write("  " + b"".join(writes).hex(" ") + "\n")
            sender.receive(answers, deadline)
            sender.take_reports()
        return EXIT_OK
    pty: Pty | None = None
    port: serial.Serial | None = None
    if args.pty:
        pty = open_pty()
        fd, where = pty.master_fd, pty.slave_path
    else:
        try:
            port = serial.Serial(args.serial, args.baud, timeout=0)
        except (serial.SerialException, ValueError) as error:
            err.write(f"alarmgw sim phone: cannot open {args.serial}: {error}\n")
            return EXIT_FAILED
        fd, where = port.fileno(), args.serial
        os.set_blocking(fd, False)
    out.write(f"{header} → {where} at {args.baud} baud\n")
    if pty is not None:
        out.write(
            '  point the gateway at it: a [[serial]] port with protocol = "native", then\n'
            f"  alarmgw run --config {args.config} --serial NAME={pty.slave_path}\n"
        )
    out.flush()

    def printed(report: object) -> None:
        if not args.quiet:
            out.write(_describe_report(report) + "\n")
            out.flush()

    duration = math.inf
    if args.give_up:
        duration = max(0.0, last_at - time.time()) + args.give_up
    interrupted = False
    try:
        anyio.run(_serial_session, run_sender, sender, fd, duration, printed)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if pty is not None:
            pty.close()
        if port is not None:
            port.close()
    stats = sender.stats
    out.write(
        f"phone over serial: {stats.queued} frame(s): acked {stats.acked}, refused "
        f"{stats.refused}, NAK RETRY {stats.retry_naks}; {stats.sent} transmission(s), "
        f"timeouts {stats.timeouts}, corrupted {stats.corrupted}, split {stats.split}, "
        f"merged {stats.merged}, stale answers {stats.stale}"
        f"{', interrupted' if interrupted else ''}\n"
    )
    if sender.pending and not interrupted:
        out.write(f"phone over serial: {len(sender.pending)} frame(s) never answered\n")
        return EXIT_FAILED
    return EXIT_FAILED if stats.refused and not interrupted else EXIT_OK


async def _serial_session(
    runner: Callable[..., Awaitable[None]],
    sender: object,
    fd: int,
    duration_s: float,
    on_report: Callable[[object], None],
) -> None:
    await runner(sender, fd, duration_s=duration_s, stop_when=_idle, on_report=on_report)


def _describe_message(message: PhoneMessage | CheckpointMessage) -> str:
    if isinstance(message, PhoneMessage):
        return (
            f"{message.household} seq={message.seq} q={message.q} code={message.code} "
            f"zone={message.zone}"
        )
    return f"{message.checkpoint} {_checkpoint_text(message)}"


def _describe_report(report: object) -> str:
    """One line per transmission, answer or timeout (simulators.serial_driver reports)."""
    from simulators.serial_driver import Answered, Sent, TimedOut  # noqa: PLC0415

    if isinstance(report, Sent):
        again = f" (attempt {report.attempt})" if report.attempt > 1 else ""
        faults = f"  [{', '.join(report.faults)}]" if report.faults else ""
        what = f"seq {report.seq:<5} {report.label}  ({report.size} B)"
        return f"{_clock(report.at)} → {what}{again}{faults}"
    if isinstance(report, Answered):
        latency = f"{report.latency_s * 1000:.1f} ms"
        if report.answer == "ack":
            return f"{_clock(report.at)} ← ACK seq {report.seq} in {latency}"
        if report.answer == "refused":
            return (
                f"{_clock(report.at)} ← NAK REFUSED seq {report.seq} in {latency}: dropped "
                "(the gateway refused its content and dead-lettered it)"
            )
        return (
            f"{_clock(report.at)} ← NAK RETRY seq {report.seq} in {latency}: the gateway "
            "cannot store it now; resending after the timeout"
        )
    if isinstance(report, TimedOut):
        return (
            f"{_clock(report.at)} ✗ seq {report.seq}: no answer in {report.waited_s:.1f} s; "
            "sending it again"
        )
    return repr(report)


# ------------------------------------------------------------------ standalone


def main(
    argv: Sequence[str] | None = None,
    *,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
) -> int:
    """`python -m simulators.cli sim ...`: the same commands without the gateway's CLI."""
    parser = argparse.ArgumentParser(prog="alarmgw", formatter_class=_RAW)
    add_sim_parser(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return run_sim(args, out or sys.stdout, err or sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
