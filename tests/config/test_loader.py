"""config.loader: every rule reported with file, key path and reason, all at once."""

from __future__ import annotations

import copy
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from config import (
    INTERCEPTION_ALARM_KINDS,
    CheckpointClass,
    Config,
    ConfigError,
    InterceptionPolicy,
    Priority,
    SinkRef,
    id_problem,
    load_config,
    loads_config,
    parse_broker_url,
    with_overrides,
)
from devices.events import Kind
from protocols.topics import validate_id

DEMO = Path(__file__).resolve().parents[2] / "config" / "examples" / "demo.toml"

# ---------------------------------------------------------------- a tiny TOML writer

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_DELETE = object()


def _string(text: str) -> str:
    # TOML basic string: escape quote, backslash and the controls TOML forbids raw.
    escaped = (
        f"\\u{ord(c):04X}" if c in '"\\' or ord(c) < 0x20 or ord(c) == 0x7F else c for c in text
    )
    return '"' + "".join(escaped) + '"'


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _string(key)


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"


def _is_table_array(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(i, dict) for i in value)


def dump(doc: Mapping[str, object], prefix: str = "") -> str:
    """TOML text for `doc`: plain keys, then [tables], then [[arrays of tables]]."""
    lines: list[str] = []
    for key, value in doc.items():
        if not isinstance(value, dict) and not _is_table_array(value):
            lines.append(f"{_key(key)} = {_value(value)}")
    for key, value in doc.items():
        path = f"{prefix}{_key(key)}"
        if isinstance(value, dict):
            lines += ["", f"[{path}]", dump(value, path + ".")]
    for key, value in doc.items():
        path = f"{prefix}{_key(key)}"
        if _is_table_array(value):
            assert isinstance(value, list)
            for item in value:
                lines += ["", f"[[{path}]]", dump(item, path + ".")]
    return "\n".join(lines)


def base() -> dict[str, object]:
    """A small valid deployment, as a dict to vary."""
    return {
        "district": {"id": "d1", "name": "区", "bureau": "county"},
        "mqtt": {"broker": "mqtt://127.0.0.1:1883"},
        "sinks": [
            {"kind": "station", "id": "s1", "name": "派出所"},
            {"kind": "bureau", "id": "county"},
        ],
        "townships": [{"id": "t1", "name": "城关镇", "station": "s1"}, {"id": "t2"}],
        "villages": [
            {"id": "v1", "name": "东山村", "township": "t1"},
            {"id": "v2", "township": "t2"},
        ],
        "groups": [{"id": "g1", "village": "v1"}, {"id": "g2", "village": "v2"}],
        "households": [
            {"id": "h1", "group": "g1", "accounts": ["1234"]},
            {"id": "h2", "group": "g2", "accounts": ["BEEF", "567890"]},
            {"id": "h3", "group": "g2"},
        ],
        "checkpoints": [
            {
                "id": "k1",
                "name": "北口",
                "class": "A",
                "ring": 1,
                "township": "t1",
                "unit": "bureau/county",
            },
            {"id": "k2", "class": "B", "ring": 2, "township": "t2", "unit": "station/s1"},
        ],
    }


def varied(changes: Mapping[str, object]) -> dict[str, object]:
    """`base()` with dotted paths (`households.0.group`) set, or deleted with `_DELETE`."""
    doc = copy.deepcopy(base())
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node: object = doc
        for part in parents:
            if isinstance(node, list):
                node = node[int(part)]
            else:
                assert isinstance(node, dict)
                node = node.setdefault(part, {})
        if isinstance(node, list):
            if value is _DELETE:
                del node[int(last)]
            elif int(last) == len(node):
                node.append(value)
            else:
                node[int(last)] = value
        else:
            assert isinstance(node, dict)
            if value is _DELETE:
                node.pop(last)
            else:
                node[last] = value
    return doc


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder, so problems name `cfg.toml` and `households.csv` as written."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def load(doc: Mapping[str, object], environ: Mapping[str, str] | None = None) -> Config:
    Path("cfg.toml").write_text(dump(doc), encoding="utf-8")
    return load_config("cfg.toml", environ=environ or {})


def problems(doc: Mapping[str, object], environ: Mapping[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(doc, environ)
    return [str(problem) for problem in info.value.problems]


# ---------------------------------------------------------------- whole files


def test_demo_loads_cleanly() -> None:
    """The shipped demo loads with its documented topology and short deadlines."""
    config = load_config(DEMO, environ={})
    assert config.district_id == "demo"
    assert config.source == str(DEMO)
    assert config.mqtt.embedded
    assert (config.mqtt.host, config.mqtt.port, config.mqtt.tls) == ("127.0.0.1", 1883, False)
    assert (config.http.host, config.http.port) == ("127.0.0.1", 9108)
    assert [len(config.townships), len(config.villages), len(config.groups)] == [1, 3, 6]
    assert len(config.households) == 60
    assert all(len(h.accounts) == 1 and "A" not in h.accounts[0] for h in config.households)
    kinds = [(c.cls, c.ring) for c in config.checkpoints]
    assert kinds == [
        (CheckpointClass.A, 1),
        (CheckpointClass.B, 1),
        (CheckpointClass.C, 2),
        (CheckpointClass.A, 3),
    ]
    assert config.escalation.deadline_s[Priority.LIFE_SAFETY] == 30.0
    assert config.escalation.deadline_s[Priority.PROPERTY] == 120.0
    assert config.escalation.deadline_s[Priority.TROUBLE] is None
    topology = config.topology
    assert topology.by_account["1001"].id == "h001"
    assert topology.households["h060"].village == "v03"
    assert ("station", "s01") in topology.sinks
    assert ("bureau", "county") in topology.sinks
    assert ("group", "g11") in topology.sinks
    assert config.store.path == str(DEMO.parent / "var" / "demo.sqlite")


def test_base_document_loads(folder: Path) -> None:
    """The test's base document is valid, derives places, and fills defaults."""
    config = load(base())
    assert config.households[1].village == "v2"
    assert config.households[1].township == "t2"
    assert config.households[2].accounts == ()
    assert config.checkpoints[1].unit == SinkRef("station", "s1")
    assert config.district_name == "区"
    assert config.townships[1].name == "t2"
    assert config.townships[1].station is None
    assert config.mqtt.client_id == "alarmgw-d1"
    assert config.mqtt.username is None
    assert config.store.path == str(folder / "alarmgw.sqlite")
    assert config.routing.targets["life_safety"] == ("village", "township", "group")
    assert config.escalation.deadline_s[Priority.INFO] is None
    assert config.watchlist == frozenset()
    sinks = {(s.kind, s.id) for s in config.sinks}
    assert sinks == {
        ("station", "s1"),
        ("bureau", "county"),
        ("township", "t1"),
        ("township", "t2"),
        ("village", "v1"),
        ("village", "v2"),
        ("group", "g1"),
        ("group", "g2"),
    }


def test_many_errors_are_all_reported(folder: Path) -> None:
    """One bad file: every problem is listed, each with file, key path and reason."""
    doc = varied(
        {
            "district.bureau": "state",
            "district.nmae": "x",
            "mqtt.broker": "tcp://example.org",
            "mqtt.password": "hunter2",
            "http.listen": "127.0.0.1:70000",
            "dedup.window_s": 0,
            "routing.life_safety": ["village", "police"],
            "villages.1.township": "t9",
            "households.3": {"id": "h4", "group": "g9"},
            "households.0.accounts": ["12A4"],
            "checkpoints.0.class": "D",
            "checkpoints.1.unit": "station/s7",
            "serial": [{"name": "rx/1", "device": "/dev/ttyUSB0", "parity": "X"}],
        }
    )
    found = problems(doc)
    expected = [
        "cfg.toml: district.nmae: unknown key; did you mean 'name'?",
        (
            "cfg.toml: mqtt.broker: 'tcp://example.org': the scheme must be mqtt:// or mqtts://, "
            "or the broker 'embedded'"
        ),
        (
            "cfg.toml: mqtt.password: credentials are never written in the config; name "
            "environment variables with username_env/password_env, or a file with password_file"
        ),
        "cfg.toml: http.listen: '127.0.0.1:70000': the port must be a number from 0 to 65535",
        "cfg.toml: dedup.window_s: must be greater than 0, got 0",
        (
            "cfg.toml: routing.life_safety[1]: unknown target 'police' (targets: village, "
            "township, group, station, bureau, unit)"
        ),
        "cfg.toml: district.bureau: unknown sink 'bureau/state': declare it under [[sinks]]",
        "cfg.toml: villages[1].township: unknown township 't9'",
        "cfg.toml: groups[1].village: unknown village 'v2'",
        (
            "cfg.toml: households[0].accounts[0]: account '12A4' is not 4-6 characters of 0-9 "
            "and B-F (Contact ID accounts never use A)"
        ),
        "cfg.toml: households[1].group: unknown group 'g2'",
        "cfg.toml: households[2].group: unknown group 'g2'",
        "cfg.toml: households[3].group: unknown group 'g9'",
        "cfg.toml: checkpoints[0].class: must be A, B or C, got 'D'",
        "cfg.toml: checkpoints[1].unit: unknown sink 'station/s7': declare it under [[sinks]]",
        "cfg.toml: serial[0].name: 'rx/1' contains the topic level separator '/'",
        "cfg.toml: serial[0].parity: must be one of N, E, O, M, S, got 'X'",
    ]
    assert sorted(found) == sorted(expected)


def test_config_error_lists_every_problem() -> None:
    """str(ConfigError) counts the problems and lists each one on its own line."""
    with pytest.raises(ConfigError) as info:
        loads_config('[district]\nid = ""\nbureau = "b+"\n', name="x.toml")
    assert str(info.value).splitlines() == [
        "2 problems in the configuration:",
        "x.toml: district.id: '' is empty",
        # bureau is bad, so it is not looked up as a sink: one mistake, one problem.
        "x.toml: district.bureau: 'b+' contains the MQTT wildcard '+'",
    ]


def test_unreadable_and_malformed_files(folder: Path) -> None:
    """A missing file, bad TOML and non-UTF-8 bytes are problems of the file itself."""
    with pytest.raises(ConfigError, match=r"^1 problem in the configuration:\nnope.toml: cannot"):
        load_config("nope.toml")
    Path("bad.toml").write_text("[district\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad.toml: not valid TOML: .*line 1"):
        load_config("bad.toml")
    Path("latin.toml").write_bytes(b'name = "\xe9"\n')
    with pytest.raises(ConfigError, match=r"latin\.toml: not UTF-8 text"):
        load_config("latin.toml")
    with pytest.raises(ConfigError, match=r"<config>: not valid TOML"):
        loads_config("= 1")


def test_dates_are_wrong_types() -> None:
    """TOML dates are named as such when a key expects something else."""
    with pytest.raises(ConfigError) as info:
        loads_config(dump(base()).replace('name = "区"', "name = 1979-05-27"))
    assert "<config>: district.name: expected a string, got a date/time" in str(info.value)


def test_loads_config_resolves_paths_under_base_dir(tmp_path: Path) -> None:
    """TOML text loads like a file, with relative paths under `base_dir`."""
    config = loads_config(dump(base()), base_dir=tmp_path)
    assert config.store.path == str(tmp_path / "alarmgw.sqlite")
    assert config.source == str(tmp_path / "<config>")


# ---------------------------------------------------------------- one test per rule

RULES: list[tuple[dict[str, object], str]] = [
    # district
    ({"district.id": _DELETE}, "district.id: required key is missing"),
    ({"district.id": "d+1"}, "district.id: 'd+1' contains the MQTT wildcard '+'"),
    ({"district.nmae": "x"}, "district.nmae: unknown key; did you mean 'name'?"),
    ({"district.name": 5}, "district.name: expected a string, got an integer"),
    ({"district.name": [5]}, "district.name: expected a string, got an array"),
    ({"district.name": {"x": 5}}, "district.name: expected a string, got a table"),
    (
        {"district.bureau": "state"},
        "district.bureau: unknown sink 'bureau/state': declare it under [[sinks]]",
    ),
    ({"district": "d1"}, "district: expected a table, got a string"),
    ({"mqqt": {}}, "mqqt: unknown key; did you mean 'mqtt'?"),
    ({"zzz": 1}, "zzz: unknown key (known keys here: checkpoints, dedup, district, "),
    # mqtt
    (
        {"mqtt.broker": "tcp://h"},
        "mqtt.broker: 'tcp://h': the scheme must be mqtt:// or mqtts://, or the broker 'embedded'",
    ),
    ({"mqtt.broker": "mqtt://h:0"}, "mqtt.broker: 'mqtt://h:0': the port must be a number from 1"),
    ({"mqtt.broker": "mqtt://h:x"}, "mqtt.broker: 'mqtt://h:x': the port must be a number from 1"),
    ({"mqtt.broker": "mqtt://"}, "mqtt.broker: 'mqtt://': the host is missing"),
    ({"mqtt.broker": "mqtt://a b"}, "mqtt.broker: 'mqtt://a b' contains spaces or control"),
    ({"mqtt.broker": "mqtt://h_!"}, "mqtt.broker: 'h_!' is not a host name or IP address"),
    ({"mqtt.broker": "mqtt://u:p@h"}, "mqtt.broker: credentials are never written in the config"),
    ({"mqtt.broker": "mqtt://h/x"}, "mqtt.broker: 'mqtt://h/x': a broker URL has no path"),
    ({"mqtt.password": "x"}, "mqtt.password: credentials are never written in the config"),
    ({"mqtt.username": "x"}, "mqtt.username: credentials are never written in the config"),
    ({"mqtt.password_env": "NOPE"}, "mqtt.password_env: environment variable 'NOPE' is not set"),
    ({"mqtt.username_env": ""}, "mqtt.username_env: must name an environment variable"),
    ({"mqtt.base_topic": "a/+"}, "mqtt.base_topic: level '+' contains the MQTT wildcard '+'"),
    ({"mqtt.base_topic": "$SYS"}, "mqtt.base_topic: starts with '$', which brokers reserve"),
    ({"mqtt.base_topic": "a//b"}, "mqtt.base_topic: has an empty level"),
    ({"mqtt.base_topic": ""}, "mqtt.base_topic: is empty"),
    ({"mqtt.base_topic": "a" * 257}, "mqtt.base_topic: is longer than 256 characters (257)"),
    ({"mqtt.client_id": "gw/1"}, "mqtt.client_id: 'gw/1' contains the topic level separator"),
    ({"mqtt.keepalive_s": 0}, "mqtt.keepalive_s: must be from 1 to 65535, got 0"),
    ({"mqtt.keepalive_s": 1.5}, "mqtt.keepalive_s: expected an integer, got a float"),
    ({"mqtt.session_expiry_s": -1}, "mqtt.session_expiry_s: must be from 0 to 4294967295, got -1"),
    ({"mqtt.tls_ca": "nope.pem"}, "mqtt.tls_ca: no such file: "),
    # http
    ({"http.listen": "localhost"}, "http.listen: 'localhost': expected host:port"),
    ({"http.listen": ":9108"}, "http.listen: ':9108': the host is missing"),
    ({"http.listen": "::1:9108"}, "http.listen: '::1:9108': an IPv6 address goes in brackets"),
    ({"http.listen": "[x]:9108"}, "http.listen: 'x' in brackets is not an IPv6 address"),
    ({"http.listen": "h:-1"}, "http.listen: 'h:-1': the port must be a number from 0 to 65535"),
    ({"http.listen": "a..b:1"}, "http.listen: 'a..b' is not a host name or IP address"),
    ({"http.listen": 9108}, "http.listen: expected a string, got an integer"),
    # store, dedup, supervision
    ({"store.path": ""}, "store.path: must not be empty"),
    ({"store.retention_h": 0}, "store.retention_h: must be greater than 0, got 0"),
    ({"store.commit_interval_ms": -1}, "store.commit_interval_ms: must be at least 0, got -1"),
    ({"store.commit_max_batch": 0}, "store.commit_max_batch: must be at least 1, got 0"),
    ({"store.commit_max_batch": "9"}, "store.commit_max_batch: expected an integer, got a string"),
    ({"dedup.window_s": True}, "dedup.window_s: expected a number, got a boolean"),
    ({"dedup.window_s": float("inf")}, "dedup.window_s: must be a finite number"),
    ({"dedup.max_entries": 1.5}, "dedup.max_entries: expected an integer, got a float"),
    ({"supervision.phone_timeout_s": -5}, "supervision.phone_timeout_s: must be greater than 0"),
    ({"supervision.phone_timeout": 5}, "supervision.phone_timeout: unknown key; did you mean"),
    # routing and escalation
    ({"routing.trouble": ["police"]}, "routing.trouble[0]: unknown target 'police' (targets: "),
    ({"routing.info": ["bureau", "bureau"]}, "routing.info[1]: target 'bureau' is listed twice"),
    ({"routing.property": "village"}, "routing.property: expected an array of strings, got a str"),
    ({"routing.property": [1]}, "routing.property[0]: expected a string, got an integer"),
    ({"routing.passes_qos": 2}, "routing.passes_qos: must be 0 or 1, got 2"),
    ({"routing.passes.D": True}, "routing.passes.D: unknown key (known keys here: A, B, C)"),
    ({"routing.passes.A": "yes"}, "routing.passes.A: expected true or false, got a string"),
    ({"escalation.chain": ["village", "county"]}, "escalation.chain[1]: unknown target 'county'"),
    ({"escalation.deadline_s.info": -1}, "escalation.deadline_s.info: must be at least 0, got -1"),
    ({"escalation.deadline_s.urgent": 1}, "escalation.deadline_s.urgent: unknown key"),
    # watchlist
    ({"watchlist": ["苏A 12345"]}, "watchlist[0]: '苏A 12345' is not a plate: 1-16 characters"),
    ({"watchlist": [""]}, "watchlist[0]: '' is not a plate"),
    # sinks
    ({"sinks.2": {"kind": "village", "id": "v1"}}, "sinks[2].kind: 'village' sinks exist for"),
    ({"sinks.2": {"kind": "station", "id": "s1"}}, "sinks[2].id: duplicate sink 'station/s1' (al"),
    ({"sinks.2": {"kind": "station"}}, "sinks[2].id: required key is missing"),
    ({"sinks.2": {"kind": "a#", "id": "x"}}, "sinks[2].kind: 'a#' contains the MQTT wildcard '#'"),
    ({"sinks": "x"}, "sinks: expected an array of tables, got a string"),
    ({"sinks.2": "x"}, "sinks[2]: expected a table, got a string"),
    # townships, villages, groups
    ({"townships.1.id": "t1"}, "townships[1].id: duplicate id 't1' (also at townships[0])"),
    ({"townships.0.station": "s9"}, "townships[0].station: unknown sink 'station/s9': declare it"),
    ({"townships.0.staton": "s1"}, "townships[0].staton: unknown key; did you mean 'station'?"),
    ({"villages.1.township": "t9"}, "villages[1].township: unknown township 't9'"),
    ({"villages.1.id": " v2"}, "villages[1].id: ' v2' has leading or trailing whitespace"),
    ({"villages.1.id": "v" * 65}, "villages[1].id: '" + "v" * 65 + "' is longer than 64 char"),
    ({"villages.1.id": "v\u0007"}, "villages[1].id: 'v\\x07' contains the non-printable char"),
    ({"groups.1.village": "v9"}, "groups[1].village: unknown village 'v9'"),
    ({"groups.1.id": "g1"}, "groups[1].id: duplicate id 'g1' (also at groups[0])"),
    # households
    ({"households.2.group": "g9"}, "households[2].group: unknown group 'g9'"),
    ({"households.2.group": _DELETE}, "households[2].group: required key is missing"),
    ({"households.2.group": 5}, "households[2].group: expected a string, got an integer"),
    ({"households.2.id": "h+", "households.2.accounts": ["7777"]}, "households[2].id: 'h+' cont"),
    ({"households.2.id": "h1"}, "households[2].id: duplicate id 'h1' (also at households[0])"),
    (
        {"households.2.accounts": ["12A4"]},
        "households[2].accounts[0]: account '12A4' is not 4-6 characters of 0-9 and B-F",
    ),
    ({"households.2.accounts": ["123"]}, "households[2].accounts[0]: account '123' is not 4-6"),
    ({"households.2.accounts": ["beef"]}, "households[2].accounts[0]: account 'beef' is not 4-6"),
    (
        {"households.2.accounts": ["1234"]},
        "households[2].accounts[0]: account '1234' already belongs to household 'h1'",
    ),
    ({"households.2.accounts": "1234"}, "households[2].accounts: expected an array of strings"),
    # checkpoints
    ({"checkpoints.1.class": "D"}, "checkpoints[1].class: must be A, B or C, got 'D'"),
    ({"checkpoints.1.class": _DELETE}, "checkpoints[1].class: required key is missing"),
    ({"checkpoints.1.ring": 4}, "checkpoints[1].ring: must be from 1 to 3, got 4"),
    ({"checkpoints.1.ring": _DELETE}, "checkpoints[1].ring: required key is missing"),
    ({"checkpoints.1.township": "t9"}, "checkpoints[1].township: unknown township 't9'"),
    ({"checkpoints.1.unit": "s1"}, "checkpoints[1].unit: expected kind/id, e.g. 'station/s01'"),
    ({"checkpoints.1.unit": "a/b/c"}, "checkpoints[1].unit: expected kind/id"),
    ({"checkpoints.1.unit": "station/s9"}, "checkpoints[1].unit: unknown sink 'station/s9': de"),
    ({"checkpoints.1.unit": "village/v9"}, "checkpoints[1].unit: unknown sink 'village/v9'"),
    ({"checkpoints.1.unit": "station/ s1"}, "checkpoints[1].unit: ' s1' has leading or trailing"),
    ({"checkpoints.1.unit": _DELETE}, "checkpoints[1].unit: required key is missing"),
    ({"checkpoints.1.id": "k1"}, "checkpoints[1].id: duplicate id 'k1' (also at checkpoints[0])"),
    ({"checkpoints.1.id": "h1"}, "checkpoints[1].id: 'h1' is also the id of the household at h"),
    ({"district.timezone": "Mars/Base"}, "district.timezone: unknown time zone 'Mars/Base'"),
    ({"store.alarm_retention_days": 0}, "store.alarm_retention_days: must be greater than 0"),
    # interception
    ({"interception.on_hit": {"4": [1]}}, "interception.on_hit.4: a ring is one of 1, 2, 3"),
    ({"interception.on_hit": {"1": [2, 2]}}, "interception.on_hit.1[1]: ring 2 listed twice"),
    ({"interception.on_hit": {"1": [5]}}, "interception.on_hit.1[0]: a ring is one of 1, 2, 3"),
    ({"interception.on_hit": {"1": "2"}}, "interception.on_hit.1: expected a list of ring numbers"),
    ({"interception.encloses": {"x": []}}, "interception.encloses.x: a ring is one of 1, 2, 3"),
    ({"interception.encloses": {"1": ["t9"]}}, "interception.encloses.1[0]: unknown township 't9'"),
    (
        {"interception.alarm_kinds": ["heartbeat"]},
        "interception.alarm_kinds[0]: not a household alarm kind: 'heartbeat'",
    ),
    (
        {"interception.alarm_kinds": ["panic"]},
        "interception.alarm_kinds: alarms can only activate rings that enclose townships",
    ),
    ({"interception.duration_s": 0}, "interception.duration_s: must be greater than 0, got 0"),
    ({"interception.chain": ["unit", "nowhere"]}, "interception.chain[1]: unknown target"),
    ({"interception.staff_deadline": 5}, "interception.staff_deadline: unknown key; did you mean"),
]

SERIAL_RULES: list[tuple[dict[str, object], str]] = [
    ({"name": "rx1"}, "serial[1].name: duplicate id 'rx1' (also at serial[0])"),
    ({"device": "/dev/ttyUSB0"}, "serial[1].device: '/dev/ttyUSB0' is already used by serial[0]"),
    ({"device": _DELETE}, "serial[1].device: required key is missing"),
    ({"device": ""}, "serial[1].device: must not be empty"),
    ({"name": "k1"}, "serial[1].name: 'k1' is also the id of the checkpoint at checkpoints[0]"),
    ({"name": "h2"}, "serial[1].name: 'h2' is also the id of the household at households[1]"),
    ({"baud": 0}, "serial[1].baud: must be from 1 to 4000000, got 0"),
    ({"township": "t9"}, "serial[1].township: unknown township 't9'"),
    ({"bytesize": 9}, "serial[1].bytesize: must be from 5 to 8, got 9"),
    ({"parity": "X"}, "serial[1].parity: must be one of N, E, O, M, S, got 'X'"),
    ({"stopbits": 3}, "serial[1].stopbits: must be 1, 1.5 or 2, got 3"),
    ({"protocol": "sia"}, "serial[1].protocol: must be one of receiver, native, got 'sia'"),
    ({"receiver_timeout_s": 0}, "serial[1].receiver_timeout_s: must be greater than 0, got 0"),
    ({"speed": 9600}, "serial[1].speed: unknown key"),
]


@pytest.mark.parametrize(("changes", "expected"), RULES)
def test_each_rule_is_reported(folder: Path, changes: dict[str, object], expected: str) -> None:
    """Each validation rule reports `cfg.toml: key.path: reason` for its one mistake."""
    found = problems(varied(changes))
    assert any(p.startswith(f"cfg.toml: {expected}") for p in found), found


@pytest.mark.parametrize(("changes", "expected"), SERIAL_RULES)
def test_each_serial_rule_is_reported(
    folder: Path, changes: dict[str, object], expected: str
) -> None:
    """Serial ports: unique names and devices, device-id clashes, and line settings."""
    second: dict[str, object] = {"name": "rx2", "device": "/dev/ttyUSB1"}
    for key, value in changes.items():
        if value is _DELETE:
            second.pop(key)
        else:
            second[key] = value
    doc = varied({"serial": [{"name": "rx1", "device": "/dev/ttyUSB0"}, second]})
    found = problems(doc)
    assert any(p.startswith(f"cfg.toml: {expected}") for p in found), found


def test_serial_ports_load_with_defaults_and_settings(folder: Path) -> None:
    """A serial port takes its defaults (9600 8N1 receiver) or its settings."""
    doc = varied(
        {
            "serial": [
                {"name": "rx1", "device": "/dev/ttyUSB0"},
                {
                    "name": "bus",
                    "device": "/dev/ttyS1",
                    "baud": 1200,
                    "bytesize": 7,
                    "parity": "E",
                    "stopbits": 1.5,
                    "protocol": "native",
                    "receiver_timeout_s": 45,
                },
            ]
        }
    )
    first, second = load(doc).serial
    assert (first.baud, first.bytesize, first.parity, first.stopbits) == (9600, 8, "N", 1.0)
    assert (first.protocol, first.receiver_timeout_s) == ("receiver", None)
    assert (second.baud, second.bytesize, second.parity, second.stopbits) == (1200, 7, "E", 1.5)
    assert (second.protocol, second.receiver_timeout_s) == ("native", 45.0)


def test_settings_are_read(folder: Path) -> None:
    """Every settings key is read into its typed field."""
    doc = varied(
        {
            "mqtt.broker": "mqtts://broker.example.org",
            "mqtt.base_topic": "city/d1",
            "mqtt.client_id": "gw-1",
            "mqtt.keepalive_s": 10,
            "mqtt.session_expiry_s": 0,
            "http.listen": "[::1]:0",
            "store.path": ":memory:",
            "store.retention_h": 1.5,
            "store.commit_interval_ms": 0,
            "store.commit_max_batch": 64,
            "dedup.window_s": 60,
            "dedup.max_entries": 10,
            "supervision.phone_timeout_s": 1,
            "supervision.checkpoint_timeout_s": 2,
            "supervision.receiver_timeout_s": 3,
            "routing.info": ["bureau"],
            "routing.passes_qos": 1,
            "routing.passes.C": True,
            "escalation.chain": ["group", "station"],
            "escalation.deadline_s.trouble": 600,
            "watchlist": ["苏a12345"],
        }
    )
    config = load(doc)
    assert (config.mqtt.host, config.mqtt.port, config.mqtt.tls) == (
        "broker.example.org",
        8883,
        True,
    )
    assert (config.mqtt.base_topic, config.mqtt.client_id) == ("city/d1", "gw-1")
    assert (config.mqtt.keepalive_s, config.mqtt.session_expiry_s) == (10, 0)
    assert (config.http.host, config.http.port) == ("::1", 0)
    assert config.store.path == ":memory:"
    assert (config.store.retention_h, config.store.commit_interval_ms) == (1.5, 0.0)
    assert config.store.commit_max_batch == 64
    assert (config.dedup.window_s, config.dedup.max_entries) == (60.0, 10)
    supervision = config.supervision
    assert (supervision.phone_timeout_s, supervision.checkpoint_timeout_s) == (1.0, 2.0)
    assert supervision.receiver_timeout_s == 3.0
    assert config.routing.targets_for(Priority.INFO) == ("bureau",)
    assert config.routing.passes_qos == 1
    assert config.routing.passes[CheckpointClass.C] is True
    assert config.escalation.chain == ("group", "station")
    assert config.escalation.deadline_s[Priority.TROUBLE] == 600.0
    assert config.watchlist == frozenset({"苏A12345"})


def test_a_checkpoint_unit_may_be_an_implicit_sink(folder: Path) -> None:
    """`unit` may name a township, village or group sink as well as a declared one."""
    config = load(varied({"checkpoints.1.unit": "township/t2", "checkpoints.0.unit": "group/g1"}))
    assert config.checkpoints[1].unit == SinkRef("township", "t2")
    assert config.checkpoints[0].unit == SinkRef("group", "g1")


# ---------------------------------------------------------------- credentials


def test_credentials_come_from_the_environment(folder: Path) -> None:
    """username_env/password_env are looked up in the `environ` given."""
    doc = varied({"mqtt.username_env": "GW_USER", "mqtt.password_env": "GW_PASS"})
    config = load(doc, {"GW_USER": "gw", "GW_PASS": "s3cret"})
    assert (config.mqtt.username, config.mqtt.password) == ("gw", "s3cret")
    assert "s3cret" not in repr(config.mqtt)
    assert "s3cret" not in repr(config)


def test_credentials_default_to_the_process_environment(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without `environ`, the process environment is used."""
    monkeypatch.setenv("GW_TEST_USER", "gw")
    Path("cfg.toml").write_text(dump(varied({"mqtt.username_env": "GW_TEST_USER"})), "utf-8")
    assert load_config("cfg.toml").mqtt.username == "gw"


def test_password_from_a_file(folder: Path) -> None:
    """password_file is read relative to the config, without its line break."""
    Path("secret").write_text("s3cret\n", encoding="utf-8")
    doc = varied({"mqtt.username_env": "U", "mqtt.password_file": "secret"})
    assert load(doc, {"U": "gw"}).mqtt.password == "s3cret"


@pytest.mark.parametrize(
    ("changes", "environ", "expected"),
    [
        (
            {"mqtt.password_env": "P"},
            {"P": "x"},
            "mqtt.username_env: a password needs a username: name its variable here",
        ),
        (
            {"mqtt.username_env": "U", "mqtt.password_env": "P", "mqtt.password_file": "secret"},
            {"U": "u", "P": "x"},
            "mqtt.password_file: give password_env or password_file, not both",
        ),
        (
            {"mqtt.username_env": "U"},
            {"U": ""},
            "mqtt.username_env: environment variable 'U' is em",
        ),
        ({"mqtt.password_file": "nope"}, {}, "mqtt.password_file: cannot read "),
        ({"mqtt.password_file": "empty"}, {}, "mqtt.password_file: "),
        ({"mqtt.password_file": "binary"}, {}, "mqtt.password_file: "),
    ],
)
def test_credential_mistakes(
    folder: Path, changes: dict[str, object], environ: dict[str, str], expected: str
) -> None:
    """A password without username, two sources, empty or unreadable secrets are refused."""
    Path("secret").write_text("x", encoding="utf-8")
    Path("empty").write_text("\n", encoding="utf-8")
    Path("binary").write_bytes(b"\xff\xfe")
    found = problems(varied(changes), environ)
    assert any(p.startswith(f"cfg.toml: {expected}") for p in found), found


def test_tls_files(folder: Path) -> None:
    """TLS files resolve relative to the config and must go with mqtts:// and each other."""
    for name in ("ca.pem", "c.pem", "c.key"):
        Path(name).write_text("x", encoding="utf-8")
    doc = varied(
        {
            "mqtt.broker": "mqtts://h",
            "mqtt.tls_ca": "ca.pem",
            "mqtt.tls_cert": "c.pem",
            "mqtt.tls_key": "c.key",
        }
    )
    mqtt = load(doc).mqtt
    assert mqtt.tls_ca == str(folder / "ca.pem")
    assert (mqtt.tls_cert, mqtt.tls_key) == (str(folder / "c.pem"), str(folder / "c.key"))
    assert "cfg.toml: mqtt.tls_ca: TLS files need an mqtts:// broker" in problems(
        varied({"mqtt.tls_ca": "ca.pem"})
    )
    assert (
        "cfg.toml: mqtt.tls_cert: tls_cert and tls_key go together (a client certificate "
        "needs its key)"
    ) in problems(varied({"mqtt.broker": "mqtts://h", "mqtt.tls_cert": "c.pem"}))


# ---------------------------------------------------------------- the households CSV


def _with_csv(text: str, **changes: object) -> dict[str, object]:
    Path("households.csv").write_text(text, encoding="utf-8")
    return varied({"households_file": "households.csv", **changes})


def test_households_from_csv(folder: Path) -> None:
    """CSV households join the inline ones; accounts split on `;`; blank lines are skipped."""
    doc = _with_csv("id,group,accounts\nh10,g1,1111;2222\n\nh11,g2,\n")
    config = load(doc)
    by_id = config.topology.households
    assert by_id["h10"].accounts == ("1111", "2222")
    assert by_id["h10"].township == "t1"
    assert by_id["h11"].accounts == ()
    assert config.topology.by_account["2222"].id == "h10"
    assert len(config.households) == 5


def test_csv_with_a_byte_order_mark(folder: Path) -> None:
    """A UTF-8 byte order mark (spreadsheet export) does not spoil the header."""
    Path("households.csv").write_bytes("\ufeffid,group,accounts\nh10,g1,1111\n".encode())
    assert len(load(varied({"households_file": "households.csv"})).households) == 4


def test_csv_problems_name_the_line(folder: Path) -> None:
    """Each bad CSV row is reported as `households.csv:LINE: column: reason`."""
    doc = _with_csv(
        "id,group,accounts\n"
        "h10,g1,1111\n"  # 2: fine
        "h11,g9,\n"  # 3: unknown group
        "h1,g1,\n"  # 4: duplicate of an inline household
        "h12,g1,12A4\n"  # 5: bad account
        "h13,g1,1111\n"  # 6: account taken
        "h14,g1\n"  # 7: two fields
        "h/15,g/1,\n"  # 8: bad ids
        "h10,g1,\n"  # 9: duplicate of a CSV household
    )
    assert sorted(problems(doc)) == sorted(
        [
            "households.csv:3: group: unknown group 'g9'",
            "households.csv:4: id: duplicate id 'h1' (also at households[0])",
            (
                "households.csv:5: accounts: account '12A4' is not 4-6 characters of 0-9 and B-F "
                "(Contact ID accounts never use A)"
            ),
            "households.csv:6: accounts: account '1111' already belongs to household 'h10'",
            "households.csv:7: expected 3 fields (id,group,accounts), got 2",
            "households.csv:8: id: 'h/15' contains the topic level separator '/'",
            "households.csv:8: group: 'g/1' contains the topic level separator '/'",
            "households.csv:9: id: duplicate id 'h10' (also at households.csv:2)",
        ]
    )


_CSV_IDS = st.sampled_from(["h10", "h11", "h1", "h/", ""])
_CSV_GROUPS = st.sampled_from(["g1", "g2", "g9", "g#"])
_CSV_ACCOUNTS = st.sampled_from(["", "1111", "2222", "1234", "12A4", "1111;2222", "3333;3333"])


@given(st.lists(st.tuples(_CSV_IDS, _CSV_GROUPS, _CSV_ACCOUNTS), max_size=6))
def test_every_csv_row_is_loaded_or_reported(rows: list[tuple[str, str, str]]) -> None:
    """The fast path and the careful check agree: a row is loaded, or its line has a problem."""
    text = "id,group,accounts\n" + "".join(f"{i},{g},{a}\n" for i, g, a in rows)
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "households.csv").write_text(text, encoding="utf-8")
        doc = dump(varied({"households_file": "households.csv"}))
        try:
            config = loads_config(doc, base_dir=folder)
        except ConfigError as error:
            # The inline part is valid: every problem is a data line's of the CSV.
            files = [p.file.rpartition(":") for p in error.problems]
            assert all(name.endswith("households.csv") for name, _, _ in files)
            assert {int(line) for _, _, line in files} <= set(range(2, len(rows) + 2))
        else:
            assert len(config.households) == 3 + len(rows)


def test_csv_accounts_repeated_in_one_row(folder: Path) -> None:
    """A row that lists one account twice is refused on its line."""
    doc = _with_csv("id,group,accounts\nh10,g1,1111;1111\n")
    assert problems(doc) == [
        "households.csv:2: accounts: account '1111' already belongs to household 'h10'"
    ]


def test_checkpoint_ids_clash_with_csv_households(folder: Path) -> None:
    """Device ids from the CSV are checked against checkpoint ids too."""
    doc = _with_csv("id,group,accounts\nk2,g1,\n")
    assert problems(doc) == [
        (
            "cfg.toml: checkpoints[1].id: 'k2' is also the id of the household at "
            "households.csv:2; devices share alarmgw/availability/<device_id>"
        )
    ]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", "households.csv:1: the file is empty; expected the header id,group,accounts"),
        ("id,accounts,group\n", "households.csv:1: the header must be id,group,accounts, got id,"),
        ('id,group,accounts\nh1,g1,"12"34\n', "households.csv:2: not valid CSV: "),
    ],
)
def test_csv_file_problems(folder: Path, content: str, expected: str) -> None:
    """An empty file, a wrong header and broken quoting are reported with a line."""
    found = problems(_with_csv(content))
    assert len(found) == 1
    assert found[0].startswith(expected)


def test_csv_that_is_not_utf8(folder: Path) -> None:
    """Bytes that are not UTF-8 are a problem of the CSV file, not a crash."""
    Path("households.csv").write_bytes(b"id,group,accounts\nh\xff,g1,\n")
    found = problems(varied({"households_file": "households.csv"}))
    assert found == ["households.csv:2: not UTF-8 text"]


def test_csv_that_is_missing(folder: Path) -> None:
    """A households_file that cannot be read is a problem of the key."""
    found = problems(varied({"households_file": "nope.csv"}))
    assert found == ["cfg.toml: households_file: cannot read nope.csv: No such file or directory"]


def test_csv_in_another_folder_is_named_beside_the_config(tmp_path: Path) -> None:
    """CSV problems name the CSV by the config's folder, as the user gave it."""
    (tmp_path / "households.csv").write_text("id,group,accounts\nh9,g9,\n", encoding="utf-8")
    (tmp_path / "cfg.toml").write_text(dump(varied({"households_file": "households.csv"})))
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "cfg.toml")
    assert [str(p) for p in info.value.problems] == [
        f"{tmp_path / 'households.csv'}:2: group: unknown group 'g9'"
    ]


# ---------------------------------------------------------------- broker URLs and overrides


@pytest.mark.parametrize(
    ("url", "parsed"),
    [
        ("embedded", ("127.0.0.1", 1883, False)),
        ("embedded://127.0.0.1:1884", ("127.0.0.1", 1884, False)),
        ("mqtt://127.0.0.1", ("127.0.0.1", 1883, False)),
        ("mqtt://broker.local:11883", ("broker.local", 11883, False)),
        ("mqtts://broker.example.org", ("broker.example.org", 8883, True)),
        ("mqtt://[::1]:1883/", ("::1", 1883, False)),
    ],
)
def test_broker_urls(url: str, parsed: tuple[str, int, bool]) -> None:
    """Broker URLs give host, port (default by scheme) and TLS."""
    assert parse_broker_url(url) == parsed


@pytest.mark.parametrize(
    "url",
    ["", "http://h", "mqtt://h:65536", "mqtt://h:0", "mqtt://h?x=1", "mqtt://u@h", "mqtt://[x"],
)
def test_bad_broker_urls_give_a_reason(url: str) -> None:
    """Anything else is a reason string, never an exception."""
    assert isinstance(parse_broker_url(url), str)


def test_broker_override(folder: Path) -> None:
    """--broker replaces the broker and everything derived from it."""
    config = load(base())
    moved = with_overrides(config, broker="embedded://127.0.0.1:18830")
    assert (moved.mqtt.host, moved.mqtt.port, moved.mqtt.embedded) == ("127.0.0.1", 18830, True)
    assert moved.mqtt.broker_url == "embedded://127.0.0.1:18830"
    assert moved.mqtt.client_id == config.mqtt.client_id
    assert moved.households == config.households
    tls = with_overrides(config, broker="mqtts://h")
    assert (tls.mqtt.port, tls.mqtt.tls, tls.mqtt.embedded) == (8883, True, False)
    assert with_overrides(config) == config


def test_serial_override(folder: Path) -> None:
    """--serial NAME=PATH replaces that port's device and keeps its settings."""
    doc = varied({"serial": [{"name": "rx1", "device": "/dev/ttyUSB0", "baud": 1200}]})
    config = with_overrides(load(doc), serial={"rx1": "/dev/pts/7"})
    assert config.serial[0].device == "/dev/pts/7"
    assert config.serial[0].baud == 1200


def test_bad_overrides_name_the_option(folder: Path) -> None:
    """Bad --broker and --serial values are ConfigErrors naming the option, all at once."""
    doc = varied(
        {
            "serial": [
                {"name": "rx1", "device": "/dev/ttyUSB0"},
                {"name": "rx2", "device": "/dev/ttyUSB1"},
            ]
        }
    )
    config = load(doc)
    with pytest.raises(ConfigError) as info:
        with_overrides(
            config,
            broker="mqtt://h:99999",
            serial={"rx9": "/dev/x", "rx1": "", "rx2": "/dev/ttyUSB0"},
        )
    assert [str(p) for p in info.value.problems] == [
        "--broker: 'mqtt://h:99999': the port must be a number from 1 to 65535",
        "--serial: rx9=/dev/x: no [[serial]] port named 'rx9' (have: rx1, rx2)",
        "--serial: rx1=: the device path is empty",
        "--serial: rx2=/dev/ttyUSB0: device already used by serial port 'rx1'",
    ]


# ---------------------------------------------------------------- the id rule

_FORBIDDEN = st.sampled_from(["+", "#", "/", *map(chr, [*range(0x20), *range(0x7F, 0xA0)])])
_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=10)


@given(st.tuples(_TEXT, _FORBIDDEN, _TEXT).map("".join))
def test_ids_with_wildcards_separators_or_controls_are_refused(value: str) -> None:
    """An id containing + # / or a control character is refused, by id_problem and the loader."""
    assert id_problem(value) is not None
    with pytest.raises(ConfigError) as info:
        loads_config(dump(varied({"villages.1.id": value})), name="cfg.toml")
    assert any(p.path == "villages[1].id" for p in info.value.problems)


@given(st.text(st.characters(exclude_categories=["Cs"]), max_size=70))
def test_the_id_rule_is_the_topics_rule(value: str) -> None:
    """config's id rule and protocols/topics.validate_id agree on every string."""
    assert id_problem(value) == validate_id(value)


@given(
    st.text(
        st.characters(exclude_categories=["Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"]),
        min_size=1,
        max_size=64,
    ).filter(lambda s: not set(s) & set("+#/"))
)
def test_printable_ids_are_accepted(value: str) -> None:
    """Printable ids without + # / (Chinese included) load as village ids."""
    config = loads_config(dump(varied({"villages.1.id": value, "groups.1.village": value})))
    assert config.villages[1].id == value
    assert config.households[1].village == value


def test_problem_without_a_path() -> None:
    """A problem of a whole file reads `file: reason`."""
    with pytest.raises(ConfigError) as info:
        load_config(os.devnull + "/nope.toml")
    assert str(info.value.problems[0]).startswith(f"{os.devnull}/nope.toml: cannot read: ")


# ---------------------------------------------------------------- operators


def test_operators_name_who_may_acknowledge_each_sink(folder: Path) -> None:
    """`[operators]`: a sink (kind/id) → its operators' names."""
    doc = base()
    doc["operators"] = {"village/v1": ["王警官", "li"], "bureau/county": ["zhao"]}
    config = load(doc)
    assert dict(config.operators) == {
        "village/v1": frozenset({"王警官", "li"}),
        "bureau/county": frozenset({"zhao"}),
    }
    assert not load(base()).operators  # absent: names are not checked


def test_bad_operators_are_refused_with_their_key_paths(folder: Path) -> None:
    doc = base()
    doc["operators"] = {
        "village/nowhere": ["wang"],
        "village/v1": ["wang", "wang", " padded", ""],
        "township/t1": [],
    }
    found = problems(doc)
    assert any('operators."village/nowhere"' in p and "unknown sink" in p for p in found), found
    assert any('operators."village/v1"[1]' in p and "listed twice" in p for p in found), found
    assert any('operators."village/v1"[2]' in p and "spaces" in p for p in found), found
    assert any('operators."village/v1"[3]' in p and "1 to 64" in p for p in found), found
    assert any('operators."township/t1"' in p and "empty list" in p for p in found), found


def test_the_interception_policy_is_read(folder: Path) -> None:
    """[interception]: rings per hit, townships per ring, kinds, deadline (0: none)."""
    doc = varied(
        {
            "interception.on_hit": {"1": [2], "3": []},
            "interception.encloses": {"1": ["t1"], "2": ["t1", "t2"]},
            "interception.alarm_kinds": ["panic", "duress"],
            "interception.staff_deadline_s": 0,
            "interception.duration_s": 600,
        }
    )
    policy = load(doc).interception
    assert dict(policy.on_hit) == {1: (2,), 2: (2, 3), 3: ()}
    assert dict(policy.encloses) == {1: frozenset({"t1"}), 2: frozenset({"t1", "t2"})}
    assert policy.alarm_kinds == frozenset({"panic", "duress"})
    assert (policy.staff_deadline_s, policy.duration_s) == (None, 600.0)
    assert policy.chain == ("unit", "station", "bureau")
    assert load(base()).interception == InterceptionPolicy()


def test_interception_alarm_kinds_are_household_alarm_kinds() -> None:
    """The loader's list (config may not import devices) names real alarm kinds."""
    assert set(INTERCEPTION_ALARM_KINDS) <= {kind.value for kind in Kind}
