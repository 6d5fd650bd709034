"""`alarmgw`: the one front door (DESIGN.md).

    alarmgw run --config FILE [--broker URL] [--serial NAME=PATH]
    alarmgw check-config FILE
    alarmgw topology FILE --json
    alarmgw broker-config --config FILE --out DIR [--tls-cert F --tls-key F] [--rotate USER]
    alarmgw decode contact-id MESSAGE...
    alarmgw decode receiver FILE|-
    alarmgw decode frames FILE|-
    alarmgw decode payload FILE|- [--topic TOPIC]
    alarmgw sim phone|checkpoint|district|receiver ...
    alarmgw tail [--sink KIND/ID] [--plain|--json] [--ack ALARM_ID]
    alarmgw demo [--speed X] [--alarm-rate PER_MIN] [--no-view]

Exit codes: 0 success; 1 something was rejected (decode) or the gateway failed;
2 usage or configuration errors (every problem is printed, with file, key path
and reason).
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO

from config import arguments
from config.loader import ConfigError, load_config
from config.model import Config, Priority
from devices.events import Category, Event, Kind, Source, Stage, Transport
from devices.phone import classify
from gateway.broker_config import BrokerConfigError, ListenerOptions, Role, generate
from gateway.core.routing import Router
from gateway.demo import add_demo_parser, run_demo
from gateway.report_cli import add_report_parser, run_report
from gateway.tail import add_tail_parser, run_tail
from protocols.contact_id import parse_contact_id
from protocols.frames import AckFrame, DataFrame, FrameDecoder, NakFrame
from protocols.payloads import (
    decode_ack,
    decode_checkpoint,
    decode_map,
    decode_native,
    decode_phone,
    decode_request,
)
from protocols.reasons import Rejected
from protocols.receiver import ReceiverDecoder, ReceiverHeartbeat
from protocols.topics import AckTopic, IngressKind, RequestTopic, Topics
from simulators.cli import add_sim_parser, drive_district, run_sim

__all__ = ["main"]

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_USAGE = 2


def _jsonable(value: object) -> object:
    """Values for a field technician's eyes: bytes as escaped text, enums by value."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("ascii", "backslashreplace")
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | frozenset | set):
        return [_jsonable(v) for v in value]
    return value


def _emit(out: IO[str], kind: str, item: object, *, binary: bool = False) -> bool:
    """Print one decoded item as a JSON line; True if it was a rejection.

    `item` says what was decoded (`rejected` for a rejection); `binary` prints
    bytes fields as hex (frames), otherwise as escaped text (receiver records).
    """
    fields = _jsonable(item)
    assert isinstance(fields, dict)
    if binary:
        for name in ("raw", "payload"):
            value = getattr(item, name, None)
            if isinstance(value, bytes):
                fields[name] = value.hex(" ")
    record = {"item": "rejected" if isinstance(item, Rejected) else kind, **fields}
    code = getattr(item, "code", None)
    if isinstance(code, int) and 100 <= code <= 999:
        # What the code means, per the project's policy (PROTOCOLS.md families).
        what, category, priority = classify(code)
        record.update(meaning=what.value, category=category.value, priority=int(priority))
    out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return isinstance(item, Rejected)


_FRAME_NAMES: dict[type, str] = {DataFrame: "data", AckFrame: "ack", NakFrame: "nak"}


def _read(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    return Path(path).read_bytes()


# -- decode ----------------------------------------------------------------------
def _decode(args: argparse.Namespace, out: IO[str]) -> int:
    rejected = False
    if args.what == "contact-id":
        for message in args.input:
            parsed = parse_contact_id(message)
            rejected |= _emit(out, "contact_id", parsed)
        return EXIT_REJECTED if rejected else EXIT_OK
    data = _read(args.input[0])
    if args.what == "receiver":
        receiver = ReceiverDecoder()
        for item in [*receiver.receive_data(data), *receiver.receive_data(b"")]:
            kind = "heartbeat" if isinstance(item, ReceiverHeartbeat) else "event"
            rejected |= _emit(out, kind, item)
    elif args.what == "frames":
        frames = FrameDecoder()
        for frame in [*frames.receive_data(data), *frames.receive_data(b"")]:
            rejected |= _emit(out, _FRAME_NAMES.get(type(frame), "frame"), frame, binary=True)
            if isinstance(frame, DataFrame):
                rejected |= _emit(out, "payload", decode_native(frame.payload))
    else:
        rejected = _emit(out, "payload", _decode_payload(data, args.topic))
    return EXIT_REJECTED if rejected else EXIT_OK


def _decode_payload(data: bytes, topic: str | None) -> object:
    if topic is None:
        decoded = decode_map(data)
        return decoded if isinstance(decoded, Rejected) else {"map": decoded}
    base = topic.split("/", 1)[0] if "/" in topic else topic
    where = Topics(base).parse(topic)
    if isinstance(where, Rejected):
        return where
    if isinstance(where, AckTopic):
        return decode_ack(data)
    if isinstance(where, RequestTopic):
        return decode_request(data)
    if where.kind is IngressKind.PHONE:
        return decode_phone(where.device_id, data)
    return decode_checkpoint(where.device_id, data)


# -- config ------------------------------------------------------------------------
def _load(path: str, err: IO[str]) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as error:
        err.write(f"alarmgw: refusing configuration {path}: {len(error.problems)} problem(s)\n")
        for problem in error.problems:
            err.write(f"  {problem}\n")
        return None
    except OSError as error:
        err.write(f"alarmgw: cannot read {path}: {error.strerror or error}\n")
        return None


def _check_config(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    config = _load(args.file, err)
    if config is None:
        return EXIT_USAGE
    topo = config.topology
    out.write(
        f"{args.file}: ok: {len(topo.townships)} townships, {len(topo.villages)} villages, "
        f"{len(topo.groups)} groups, {len(topo.households)} households, "
        f"{len(topo.checkpoints)} checkpoints, {len(topo.sinks)} sinks\n"
    )
    return EXIT_OK


def _routes(router: Router, config: Config) -> Iterable[dict[str, object]]:
    """Every household and checkpoint with its place and where each kind of event goes."""

    def sinks(event: Event) -> list[str]:
        return [
            f"{t.sink_kind}/{t.sink_id}" + ("" if t.channel == "alarms" else f" ({t.channel})")
            for t in router.targets(event)
        ]

    def probe(category: Category, where: dict[str, str]) -> Event:
        return Event(
            source=Source.GATEWAY,
            transport=Transport.INTERNAL,
            device_id=where.get("household") or where.get("checkpoint") or "",
            kind=Kind.OTHER,
            category=category,
            priority=Priority.INFO,
            stage=Stage.NEW,
            dedup_key="probe",
            content_key=None,
            device_ts=None,
            ingress_ts=0.0,
            township=where["township"],
            village=where.get("village"),
            group=where.get("group"),
            household=where.get("household"),
            checkpoint=where.get("checkpoint"),
        )

    for home in config.households:
        where = {
            "township": home.township,
            "village": home.village,
            "group": home.group,
            "household": home.id,
        }
        yield {
            "household": home.id,
            **{k: v for k, v in where.items() if k != "household"},
            "accounts": list(home.accounts),
            "routes": {
                c.value: sinks(probe(c, where))
                for c in (
                    Category.LIFE_SAFETY,
                    Category.PROPERTY,
                    Category.TROUBLE,
                    Category.INFO,
                    Category.DEVICE_OFFLINE,
                )
            },
        }
    for site in config.checkpoints:
        where = {"township": site.township, "checkpoint": site.id}
        yield {
            "checkpoint": site.id,
            "class": site.cls.value,
            "ring": site.ring,
            "township": site.township,
            "unit": str(site.unit),
            "routes": {
                c.value: sinks(probe(c, where))
                for c in (
                    Category.PASS,
                    Category.CHECKPOINT_FAULT,
                    Category.WATCHLIST,
                    Category.DEVICE_OFFLINE,
                )
            },
        }


def _topology(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    config = _load(args.file, err)
    if config is None:
        return EXIT_USAGE
    router = Router(config)
    if args.json:
        for entry in _routes(router, config):
            out.write(json.dumps(entry, ensure_ascii=False) + "\n")
        return EXIT_OK
    for entry in _routes(router, config):
        name = entry.get("household") or entry.get("checkpoint")
        routes = entry["routes"]
        assert isinstance(routes, dict)
        line = "; ".join(f"{k} → {', '.join(v) or '-'}" for k, v in routes.items())
        out.write(f"{name}: {line}\n")
    return EXIT_OK


# -- broker-config -----------------------------------------------------------------
def _broker_config(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    config = _load(args.config, err)
    if config is None:
        return EXIT_USAGE
    listener = ListenerOptions(
        port=args.port,
        bind=args.bind,
        tls_ca=args.tls_ca,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        require_certificate=args.require_certificate,
    )
    out_dir = Path(args.out)
    try:
        result = generate(
            config,
            out_dir,
            listener=listener,
            broker_dir=args.broker_dir,
            rotate=args.rotate,
            prune=args.prune,
            group_accounts=not args.no_group_accounts,
        )
    except BrokerConfigError as error:
        err.write(f"alarmgw: broker-config: {len(error.problems)} problem(s)\n")
        for problem in error.problems:
            err.write(f"  {problem}\n")
        return EXIT_USAGE
    # Counts and paths only: the secrets stay in credentials.csv.
    roles = ", ".join(f"{result.by_role[role]} {role.value}" for role in Role)
    folder = out_dir.resolve()
    out.write(
        f"accounts: {roles}\n"
        f"passwords: {result.created} new, {result.kept} kept, {result.rotated} rotated, "
        f"{result.pruned} revoked\n"
        f"time: {result.total_s:.2f} s ({result.hash_s:.2f} s hashing)\n"
        f"wrote {folder}/passwords, acl, alarmgw.conf, and credentials.csv (mode 0600:\n"
        "  the only copy of the secrets in clear; keep it off the broker host)\n"
    )
    if result.placeholders:
        out.write(
            f"alarmgw.conf: fill in {', '.join(result.placeholders)} "
            "(or give --tls-cert/--tls-key/--tls-ca)\n"
        )
    out.write(
        "broker: copy passwords, acl and alarmgw.conf to the broker (alarmgw.conf into a\n"
        "  directory of its own, e.g. /etc/mosquitto/conf.d/), then `include_dir` it at the\n"
        "  end of mosquitto.conf; reload with SIGHUP after a re-run\n"
        f"gateway: it logs in as {result.gateway_username!r} (its client_id, both sessions).\n"
        "  Give it the password of the gateway row of credentials.csv, e.g.\n"
        '    (umask 077; python3 -c \'import csv,sys; print(*[r["password"] for r in\n'
        '      csv.DictReader(open(sys.argv[1])) if r["role"] == "gateway"])\'\n'
        f"      {folder}/credentials.csv > /etc/alarmgw/mqtt.password)\n"
        "  and in the district TOML's [mqtt]:\n"
        f'    broker = "mqtts://<broker host>:{args.port}"\n'
        f'    username_env = "ALARMGW_MQTT_USER"   # ALARMGW_MQTT_USER={result.gateway_username}\n'
        '    password_file = "/etc/alarmgw/mqtt.password"   # or password_env\n'
        '    tls_ca = "<the CA that signed the broker certificate>"\n'
    )
    return EXIT_OK


# -- parser ------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alarmgw",
        description="Alarm-phone and checkpoint gateway for village police rooms and "
        "township monitoring centres.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the gateway")
    run.add_argument("--config", required=True, help="deployment TOML file")
    run.add_argument("--broker", help="broker URL (mqtt://host:port, mqtts://..., embedded)")
    run.add_argument(
        "--serial",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="override a serial port's device path (USB paths change in the field)",
    )
    run.add_argument("--log-format", choices=("auto", "json", "console"), default="auto")
    run.add_argument(
        "--volatile",
        action="store_true",
        help="durability off: acknowledge devices before their event is stored "
        "(benchmarks only; a crash loses what the broker had not confirmed)",
    )

    check = sub.add_parser("check-config", help="validate a deployment file; exit 2 on errors")
    check.add_argument("file")

    topo = sub.add_parser("topology", help="list households and checkpoints with their routes")
    topo.add_argument("file")
    topo.add_argument("--json", action="store_true", help="one JSON object per line")

    broker = sub.add_parser(
        "broker-config",
        help="write mosquitto passwords, ACL and TLS listener for a district",
        description="Write what mosquitto 2 needs so that each device, operator console\n"
        "and the gateway may say only what it is for:\n"
        "  DIR/passwords     password_file ($7$ PBKDF2-SHA512)\n"
        "  DIR/acl           acl_file\n"
        "  DIR/alarmgw.conf  allow_anonymous false, both files, a TLS listener (include_dir)\n"
        "  DIR/credentials.csv  the secrets in clear, mode 0600; nothing is printed\n"
        "Usernames: phones and checkpoints their id, operators op-<sink kind>-<sink id>,\n"
        "the gateway its client_id. A re-run keeps existing passwords and adds new accounts.",
        epilog="example:\n"
        "  alarmgw broker-config --config district.toml --out secrets/broker \\\n"
        "      --tls-cert /etc/mosquitto/certs/server.pem \\\n"
        "      --tls-key /etc/mosquitto/certs/server.key",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    broker.add_argument("--config", required=True, help="deployment TOML file")
    broker.add_argument("--out", required=True, metavar="DIR", help="where to write the files")
    broker.add_argument(
        "--broker-dir",
        metavar="DIR",
        help="where the broker will find passwords and acl (default: DIR, absolute)",
    )
    broker.add_argument(
        "--port", type=arguments.port, default=8883, help="TLS listener port (8883)"
    )
    broker.add_argument("--bind", metavar="ADDRESS", help="TLS listener address (default: all)")
    broker.add_argument("--tls-cert", metavar="FILE", help="broker certificate (certfile)")
    broker.add_argument("--tls-key", metavar="FILE", help="broker private key (keyfile)")
    broker.add_argument(
        "--tls-ca", metavar="FILE", help="CA of device certificates (cafile; optional)"
    )
    broker.add_argument(
        "--require-certificate",
        action="store_true",
        help="devices must also present a certificate signed by --tls-ca",
    )
    broker.add_argument(
        "--rotate",
        action="append",
        default=[],
        metavar="USERNAME",
        help="give this account a new password (repeatable)",
    )
    broker.add_argument(
        "--no-group-accounts",
        action="store_true",
        help="no op-group-<id> accounts for the ten-household groups' topics (13,000 at "
        "district scale cost mosquitto ~3 s at each start and reload)",
    )
    broker.add_argument(
        "--prune",
        action="store_true",
        help="revoke accounts that credentials.csv has and the config no longer does",
    )

    decode = sub.add_parser(
        "decode",
        help="decode what a field technician captured",
        description="Print one JSON object per decoded event or rejection. "
        "Exit 0 when everything decoded, 1 when anything was rejected.",
        epilog="examples:\n"
        "  alarmgw decode contact-id 5678181120010019\n"
        "  alarmgw decode receiver capture.bin\n"
        "  cat frames.bin | alarmgw decode frames -\n"
        "  alarmgw decode payload msg.json --topic alarmgw/in/phone/h0001",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    decode.add_argument(
        "what",
        choices=("contact-id", "receiver", "frames", "payload"),
        help="contact-id: 16-character messages; receiver: raw bytes from an alarm "
        "receiver's serial port; frames: native serial frames; payload: one "
        "MessagePack or JSON ingress payload",
    )
    decode.add_argument("input", nargs="+", help="messages (contact-id) or a FILE, - for stdin")
    decode.add_argument("--topic", help="payload only: the topic it came on, to know its kind")
    add_sim_parser(sub)
    add_tail_parser(sub)
    add_report_parser(sub)
    add_demo_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (the console script exits with it)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    out, err = sys.stdout, sys.stderr
    try:
        if args.command == "decode":
            if args.what != "contact-id" and len(args.input) != 1:
                parser.error(f"decode {args.what} takes one FILE or -")
            return _decode(args, out)
        if args.command == "check-config":
            return _check_config(args, out, err)
        if args.command == "topology":
            return _topology(args, out, err)
        if args.command == "broker-config":
            return _broker_config(args, out, err)
        if args.command == "sim":
            return run_sim(args, out, err)
        if args.command == "tail":
            return run_tail(args, out, err)
        if args.command == "report":
            return run_report(args, out, err)
        if args.command == "demo":
            return run_demo(args, out, err, district=drive_district)
        # The asyncio shell and the MQTT client load only when the gateway runs.
        from gateway.runner import run_command  # noqa: PLC0415

        return run_command(args, out, err)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    except BrokenPipeError:
        # `alarmgw topology ... | head`: the reader has gone; that is not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except OSError as error:
        err.write(f"alarmgw: {error}\n")
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
