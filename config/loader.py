"""The loader: the only reader of the deployment file (DESIGN.md, "config/").

Theory of operation. A deployment is one TOML file (read with stdlib `tomllib`)
plus, at district scale, a CSV file of households. `load_config` reads both,
checks every value and every reference, and either returns a frozen `Config`
or raises one `ConfigError` that lists *every* problem at once, each as
`file: key.path: reason` (STYLE.md habit 12, after zigbee2mqtt's schema-checked
settings); the gateway prints them and refuses to start. A CSV row's problem is
`households.csv:LINE: column: reason`.

Reading is done by `_Table`, a view of one TOML table that remembers which keys
the loader asked for: whatever key is left over when the table is finished is
reported as unknown (with a "did you mean" hint), so a typo never passes
silently and never silently falls back to a default. Each typed getter reports
its own problem and returns a fallback, so one bad value never hides the next.
A reference (village -> township, household -> group, checkpoint -> unit...) is
checked only when the referring value is itself well formed, so one mistake is
reported once.

Ids become MQTT topic levels (CONTRACT.md: `alarmgw/out/<sink_kind>/<sink_id>/...`,
`alarmgw/in/phone/<household_id>`), hence `id_problem`: non-empty, at most 64
characters, printable, none of `+ # /` (MQTT wildcards and the level separator),
no leading or trailing whitespace. protocols/topics.validate_id applies the same
rule; config may import nothing of the project (DESIGN.md), so
the rule is written here too and a test holds the two together.

Secrets are never literal in the file: the broker credentials come from
environment variables or a file named in the config, and are resolved here, once.
"""

from __future__ import annotations

import csv
import difflib
import io
import ipaddress
import math
import os
import re
import tomllib
import urllib.parse
import zoneinfo
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Final, Protocol, TypeVar

from config.model import (
    DEFAULT_DEADLINES_S,
    DEFAULT_ROUTES,
    INTERCEPTION_ALARM_KINDS,
    RINGS,
    ROUTE_KEYS,
    TARGETS,
    Checkpoint,
    CheckpointClass,
    Config,
    DedupSettings,
    EscalationPolicy,
    Group,
    Household,
    HttpSettings,
    InterceptionPolicy,
    MqttSettings,
    Priority,
    RoutingPolicy,
    SerialPort,
    Sink,
    SinkRef,
    StoreSettings,
    SupervisionSettings,
    Township,
    Village,
)

__all__ = [
    "BASE_TOPIC_MAX_LENGTH",
    "ID_MAX_LENGTH",
    "ConfigError",
    "ConfigProblem",
    "id_problem",
    "load_config",
    "loads_config",
    "parse_broker_url",
    "with_overrides",
]

_T = TypeVar("_T")
# The CSV reader's problem callback: (line, column, reason).
_LineProblem = Callable[[int, str, str], None]


class _CsvReader(Protocol):
    """What the households reader uses of `csv.reader`: rows and the current line."""

    @property
    def line_num(self) -> int:
        """The number of source lines read so far."""
        ...

    def __iter__(self) -> Iterator[list[str]]:
        """The rows."""
        ...


ID_MAX_LENGTH: Final = 64
BASE_TOPIC_MAX_LENGTH: Final = 256

# PROTOCOLS.md, Contact ID: the account is digits 0-9 and B-F, `A` never occurs;
# receivers print 4 characters, some 6.
_ACCOUNT: Final = re.compile(r"[0-9B-F]{4,6}")
_HOSTNAME: Final = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
    r"(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?"
)
_PORT: Final = re.compile(r"[0-9]{1,5}")
_EMBEDDED: Final = "embedded"
_EMBEDDED_DEFAULT: Final = ("127.0.0.1", 1883)
_IMPLICIT_SINK_KINDS: Final = ("township", "village", "group")
_CREDENTIALS_REFUSED: Final = (
    "credentials are never written in the config; name environment variables "
    "with username_env/password_env, or a file with password_file"
)
_PLATE_MAX_LENGTH: Final = 16
_PARITIES: Final = ("N", "E", "O", "M", "S")
_STOPBITS: Final = (1.0, 1.5, 2.0)
_PROTOCOLS: Final = ("receiver", "native")
_CSV_COLUMNS: Final = ("id", "group", "accounts")


def id_problem(value: str) -> str | None:
    """Why `value` cannot be an id (it becomes one MQTT topic level), or None if it can.

    The rule and the wording of protocols/topics.validate_id: non-empty, at most
    64 characters, printable (no C0/C1 controls, no invisible format or space
    characters other than ' ', no surrogates), none of `/ + #`, and no leading
    or trailing whitespace, which is invisible on an operator's console.
    """
    if (
        value
        and len(value) <= ID_MAX_LENGTH
        and value.isprintable()
        and "/" not in value
        and "+" not in value
        and "#" not in value
        and value == value.strip()
    ):
        return None  # the common case: one C-level scan per check
    if not value:
        return "is empty"
    if len(value) > ID_MAX_LENGTH:
        return f"is longer than {ID_MAX_LENGTH} characters ({len(value)})"
    for char in value:
        if char == "/":
            return "contains the topic level separator '/'"
        if char in "+#":
            return f"contains the MQTT wildcard {char!r}"
        if not char.isprintable():
            return f"contains the non-printable character U+{ord(char):04X}"
    return "has leading or trailing whitespace"


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with the configuration: which file, which key, and why."""

    file: str
    path: str
    reason: str

    def __str__(self) -> str:
        if self.path:
            return f"{self.file}: {self.path}: {self.reason}"
        return f"{self.file}: {self.reason}"


class ConfigError(Exception):
    """The configuration cannot be used; `problems` lists every reason at once."""

    def __init__(self, problems: Iterable[ConfigProblem]) -> None:
        self.problems: tuple[ConfigProblem, ...] = tuple(problems)
        count = len(self.problems)
        lines = [f"{count} problem{'s' if count != 1 else ''} in the configuration:"]
        lines.extend(str(problem) for problem in self.problems)
        super().__init__("\n".join(lines))


# ------------------------------------------------------------------ public entry points


def load_config(
    path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
) -> Config:
    """Read and validate a deployment file; raise `ConfigError` listing every problem.

    Relative paths in the file (store, households_file, TLS and password files)
    are relative to the file's folder. `environ` is where `*_env` credentials are
    looked up (default: the process environment).
    """
    shown = os.fspath(path)
    try:
        with open(shown, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as error:
        raise ConfigError([ConfigProblem(shown, "", f"cannot read: {error.strerror}")]) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([ConfigProblem(shown, "", f"not valid TOML: {error}")]) from None
    except UnicodeDecodeError:
        raise ConfigError([ConfigProblem(shown, "", "not UTF-8 text")]) from None
    return _Builder(shown, os.path.abspath(shown), environ).build(data)


def loads_config(
    text: str,
    *,
    name: str = "<config>",
    base_dir: str | os.PathLike[str] = ".",
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Validate a deployment given as TOML text.

    `name` labels the problems; relative paths are taken under `base_dir`.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([ConfigProblem(name, "", f"not valid TOML: {error}")]) from None
    source = os.path.join(os.path.abspath(base_dir), os.path.basename(name))
    return _Builder(name, source, environ, shown_dir=os.fspath(base_dir)).build(data)


def parse_broker_url(url: str) -> tuple[str, int, bool] | str:
    """`(host, port, tls)` of a broker URL, or the reason it is not one.

    Accepted: `mqtt://host[:port]` (default 1883), `mqtts://host[:port]` (TLS,
    default 8883), and `embedded` or `embedded://host:port` for the broker the
    gateway starts itself (default 127.0.0.1:1883). No credentials, path or query.
    """
    if url == _EMBEDDED:
        return (*_EMBEDDED_DEFAULT, False)
    if not url.isprintable() or " " in url:  # isprintable: no other whitespace either
        return f"{url!r} contains spaces or control characters"
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as error:
        return f"not a URL: {error}"
    scheme = parts.scheme
    if scheme not in ("mqtt", "mqtts", _EMBEDDED):
        return f"{url!r}: the scheme must be mqtt:// or mqtts://, or the broker 'embedded'"
    if "@" in parts.netloc:
        return _CREDENTIALS_REFUSED
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return f"{url!r}: a broker URL has no path, query or fragment"
    host = parts.hostname
    if not host:
        return f"{url!r}: the host is missing"
    host_reason = _host_problem(host)
    if host_reason is not None:
        return host_reason
    try:
        port = parts.port
    except ValueError:
        return f"{url!r}: the port must be a number from 1 to 65535"
    if port is None:
        port = 8883 if scheme == "mqtts" else 1883
    if not 1 <= port <= 65535:
        return f"{url!r}: the port must be a number from 1 to 65535"
    return host, port, scheme == "mqtts"


def with_overrides(
    config: Config,
    *,
    broker: str | None = None,
    serial: Mapping[str, str] | None = None,
) -> Config:
    """Apply the CLI's `--broker URL` and `--serial NAME=PATH` overrides to a loaded config.

    Bad input raises `ConfigError` whose problems name `--broker` or `--serial` as the file.
    """
    problems: list[ConfigProblem] = []
    mqtt = config.mqtt
    if broker is not None:
        parsed = parse_broker_url(broker)
        if isinstance(parsed, str):
            problems.append(ConfigProblem("--broker", "", parsed))  # the reason quotes it
        else:
            host, port, tls = parsed
            mqtt = replace(
                mqtt,
                broker_url=broker,
                embedded=_is_embedded(broker),
                host=host,
                port=port,
                tls=tls,
            )
    ports = {serial_port.name: serial_port for serial_port in config.serial}
    for name, device in (serial or {}).items():
        shown = f"{name}={device}"
        if name not in ports:
            known = ", ".join(ports) or "none"
            problems.append(
                ConfigProblem(
                    "--serial", shown, f"no [[serial]] port named {name!r} (have: {known})"
                )
            )
        elif not device:
            problems.append(ConfigProblem("--serial", shown, "the device path is empty"))
        else:
            ports[name] = replace(ports[name], device=device)
    devices: dict[str, str] = {}
    for serial_port in ports.values():
        if serial_port.device in devices:
            problems.append(
                ConfigProblem(
                    "--serial",
                    f"{serial_port.name}={serial_port.device}",
                    f"device already used by serial port {devices[serial_port.device]!r}",
                )
            )
        devices[serial_port.device] = serial_port.name
    if problems:
        raise ConfigError(problems)
    return replace(config, mqtt=mqtt, serial=tuple(ports.values()))


# ------------------------------------------------------------------ small parsers


def _id_reason(value: str) -> str | None:
    """`id_problem`, naming the value (a key path alone does not show it)."""
    why = id_problem(value)
    return None if why is None else f"{value!r} {why}"


def _is_embedded(url: str) -> bool:
    return url == _EMBEDDED or url.startswith(_EMBEDDED + "://")


def _host_problem(host: str) -> str | None:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if _HOSTNAME.fullmatch(host) is None:
            return f"{host!r} is not a host name or IP address"
    return None


def _parse_listen(text: str) -> tuple[str, int] | str:
    """`(host, port)` of `host:port` / `[v6]:port` (port 0 = ephemeral), or why not."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        return f"{text!r}: expected host:port, e.g. 127.0.0.1:9108"
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return f"{host!r} in brackets is not an IPv6 address"
    elif ":" in host:
        return f"{text!r}: an IPv6 address goes in brackets, e.g. [::1]:9108"
    if not host:
        return f"{text!r}: the host is missing"
    if _PORT.fullmatch(port_text) is None or int(port_text) > 65535:
        return f"{text!r}: the port must be a number from 0 to 65535"
    host_reason = _host_problem(host)
    if host_reason is not None:
        return host_reason
    return host, int(port_text)


def _base_topic_problem(base: str) -> str | None:
    # The rule of protocols/topics.validate_base: levels obey the id rule, and
    # `$` topics are the broker's own (`$SYS`, `$share`), skipped by wildcards.
    if not base:
        return "is empty"
    if len(base) > BASE_TOPIC_MAX_LENGTH:
        return f"is longer than {BASE_TOPIC_MAX_LENGTH} characters ({len(base)})"
    if base.startswith("$"):
        return "starts with '$', which brokers reserve"
    for level in base.split("/"):
        if not level:
            return "has an empty level (leading, trailing or double '/')"
        why = id_problem(level)
        if why is not None:
            return f"level {level!r} {why}"
    return None


def _plate_problem(plate: str) -> str | None:
    # str.isprintable is False for control characters and every space but ' '.
    if not plate or len(plate) > _PLATE_MAX_LENGTH or not plate.isprintable() or " " in plate:
        return f"{plate!r} is not a plate: 1-{_PLATE_MAX_LENGTH} characters without spaces"
    return None


def _toml_type(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date/time"


# ------------------------------------------------------------------ reading tables


class _Missing:
    """The absence of a key (None cannot be: nothing in TOML is None, but clarity wins)."""


_MISSING: Final = _Missing()


class _Problems:
    """Where every problem of one load goes, in the order found."""

    __slots__ = ("file", "items")

    def __init__(self, file: str) -> None:
        self.file = file
        self.items: list[ConfigProblem] = []

    def add(self, path: str, reason: str) -> None:
        self.items.append(ConfigProblem(self.file, path, reason))


class _Table:
    """One TOML table being read; keys never asked for are reported as unknown by `finish`."""

    __slots__ = ("_asked", "_data", "_out", "path")

    def __init__(self, out: _Problems, path: str, data: Mapping[str, object]) -> None:
        self._out = out
        self._data = data
        self._asked: set[str] = set()
        self.path = path

    def at(self, key: str) -> str:
        """The key path of `key` in this table."""
        return f"{self.path}.{key}" if self.path else key

    def problem(self, key: str, reason: str) -> None:
        """Report a problem with `key`."""
        self._out.add(self.at(key), reason)

    def raw(self, key: str) -> object:
        """The value of `key` as TOML gave it, or `_MISSING`."""
        self._asked.add(key)
        return self._data.get(key, _MISSING)

    def all_keys(self) -> list[str]:
        """Every key of the table (each counted as known: for tables keyed by data)."""
        keys = list(self._data)
        self._asked.update(keys)
        return keys

    def has(self, key: str) -> bool:
        """Whether `key` is present (and counts it as known)."""
        return self.raw(key) is not _MISSING

    def _wrong(self, key: str, expected: str, value: object) -> None:
        self.problem(key, f"expected {expected}, got {_toml_type(value)}")

    def text(self, key: str, default: _T) -> str | _T:
        """A string, or `default` when absent or wrong."""
        value = self.raw(key)
        if value is _MISSING:
            return default
        if isinstance(value, str):
            return value
        self._wrong(key, "a string", value)
        return default

    def ident(self, key: str, *, required: bool = True) -> str | None:
        """An id (see `id_problem`), or None when absent or bad (reported if required)."""
        value = self.raw(key)
        if value is _MISSING:
            if required:
                self.problem(key, "required key is missing")
            return None
        if not isinstance(value, str):
            self._wrong(key, "a string", value)
            return None
        reason = _id_reason(value)
        if reason is not None:
            self.problem(key, reason)
            return None
        return value

    def integer(self, key: str, default: int, low: int, high: int | None = None) -> int:
        """An integer in `[low, high]`, or `default` when absent or wrong."""
        value = self.raw(key)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self._wrong(key, "an integer", value)
            return default
        if value < low or (high is not None and value > high):
            if high is None:
                self.problem(key, f"must be at least {low}, got {value}")
            elif high == low + 1:
                self.problem(key, f"must be {low} or {high}, got {value}")
            else:
                self.problem(key, f"must be from {low} to {high}, got {value}")
            return default
        return value

    def number(self, key: str, default: _T, *, positive: bool = True) -> float | _T:
        """A finite number, > 0 (`positive`) or >= 0, or `default` when absent or wrong."""
        value = self.raw(key)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            self._wrong(key, "a number", value)
            return default
        number = float(value)
        if not math.isfinite(number):
            self.problem(key, "must be a finite number")
            return default
        if positive and number <= 0:
            self.problem(key, f"must be greater than 0, got {value}")
            return default
        if number < 0:
            self.problem(key, f"must be at least 0, got {value}")
            return default
        return number

    def boolean(self, key: str, default: bool) -> bool:
        """true or false, or `default` when absent or wrong."""
        value = self.raw(key)
        if value is _MISSING:
            return default
        if isinstance(value, bool):
            return value
        self._wrong(key, "true or false", value)
        return default

    def strings(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        """An array of strings (bad elements reported and left out), or `default`."""
        value = self.raw(key)
        if value is _MISSING:
            return default
        if not isinstance(value, list):
            self._wrong(key, "an array of strings", value)
            return default
        kept: list[str] = []
        for index, item in enumerate(value):
            if isinstance(item, str):
                kept.append(item)
            else:
                self.problem(f"{key}[{index}]", f"expected a string, got {_toml_type(item)}")
        return tuple(kept)

    def table(self, key: str) -> _Table:
        """A sub-table (empty when absent or wrong)."""
        value = self.raw(key)
        path = self.at(key)
        if isinstance(value, dict):
            return _Table(self._out, path, value)
        if value is not _MISSING:
            self._wrong(key, "a table", value)
        return _Table(self._out, path, {})

    def tables(self, key: str) -> list[_Table]:
        """An array of tables (`[[key]]`); bad elements are reported and left out."""
        value = self.raw(key)
        if value is _MISSING:
            return []
        if not isinstance(value, list):
            self._wrong(key, "an array of tables", value)
            return []
        found: list[_Table] = []
        for index, item in enumerate(value):
            path = f"{self.at(key)}[{index}]"
            if isinstance(item, dict):
                found.append(_Table(self._out, path, item))
            else:
                self._out.add(path, f"expected a table, got {_toml_type(item)}")
        return found

    def finish(self) -> None:
        """Report every key that was never asked for: typos must not pass silently."""
        for key in self._data:
            if key not in self._asked:
                near = difflib.get_close_matches(key, self._asked, n=1)
                if near:
                    self.problem(key, f"unknown key; did you mean {near[0]!r}?")
                else:
                    known = ", ".join(sorted(self._asked)) or "none"
                    self.problem(key, f"unknown key (known keys here: {known})")


# ------------------------------------------------------------------ the builder


class _Builder:
    """Checks one deployment and builds its `Config`; see the module docstring."""

    def __init__(
        self,
        shown: str,
        source: str,
        environ: Mapping[str, str] | None,
        *,
        shown_dir: str | None = None,
    ) -> None:
        self.out = _Problems(shown)
        self.source = source
        self.base_dir = os.path.dirname(source)
        # How to show a path named in the file: beside the file as the user named it.
        self.shown_dir = os.path.dirname(shown) if shown_dir is None else shown_dir
        self.environ: Mapping[str, str] = os.environ if environ is None else environ

    def resolve(self, value: str) -> str:
        """A path from the file, made absolute against the file's folder."""
        return os.path.normpath(os.path.join(self.base_dir, os.path.expanduser(value)))

    def build(self, data: Mapping[str, object]) -> Config:
        """The whole check; raises `ConfigError` unless there is nothing to report."""
        root = _Table(self.out, "", data)
        district = root.table("district")
        district_id = district.ident("id")
        district_name = district.text("name", district_id or "")
        bureau = district.ident("bureau")
        timezone = district.text("timezone", "Asia/Shanghai")
        try:
            zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            district.problem("timezone", f"unknown time zone {timezone!r} (e.g. Asia/Shanghai)")
        district.finish()

        mqtt = self.mqtt(root.table("mqtt"), district_id)
        http = self.http(root.table("http"))
        store = self.store(root.table("store"))
        dedup = self.dedup(root.table("dedup"))
        supervision = self.supervision(root.table("supervision"))
        routing = self.routing(root.table("routing"))
        escalation = self.escalation(root.table("escalation"))
        watchlist = self.watchlist(root)

        topology = _TopologyBuilder(self)
        topology.sinks(root.tables("sinks"))
        if bureau is not None and ("bureau", bureau) not in topology.declared:
            district.problem(
                "bureau", f"unknown sink 'bureau/{bureau}': declare it under [[sinks]]"
            )
        topology.townships(root.tables("townships"))
        topology.villages(root.tables("villages"))
        topology.groups(root.tables("groups"))
        topology.inline_households(root.tables("households"))
        households_file = root.text("households_file", None)
        if households_file is not None:
            topology.csv_households(households_file)
        topology.checkpoints(root.tables("checkpoints"))
        serial = self.serial(root.tables("serial"), topology)
        operators = self.operators(root.table("operators"), topology)
        interception = self.interception(root.table("interception"), topology)
        root.finish()

        if self.out.items:
            raise ConfigError(self.out.items)
        assert district_id is not None
        assert bureau is not None
        return Config(
            source=self.source,
            district_id=district_id,
            district_name=district_name,
            bureau=bureau,
            timezone=timezone,
            mqtt=mqtt,
            http=http,
            store=store,
            dedup=dedup,
            supervision=supervision,
            routing=routing,
            escalation=escalation,
            interception=interception,
            townships=tuple(topology.township_by_id.values()),
            villages=tuple(topology.village_by_id.values()),
            groups=tuple(topology.group_by_id.values()),
            households=tuple(topology.household_by_id.values()),
            checkpoints=tuple(topology.checkpoint_by_id.values()),
            sinks=topology.all_sinks(),
            serial=serial,
            watchlist=watchlist,
            operators=operators,
        )

    # ---------------------------------------------------------------- settings

    def mqtt(self, table: _Table, district_id: str | None) -> MqttSettings:
        """[mqtt]: broker, topics, credentials (resolved here), TLS files, timers."""
        defaults = MqttSettings()
        url = table.text("broker", defaults.broker_url)
        parsed = parse_broker_url(url)
        host, port, tls = defaults.host, defaults.port, defaults.tls
        if isinstance(parsed, str):
            table.problem("broker", parsed)
        else:
            host, port, tls = parsed
        base_topic = table.text("base_topic", defaults.base_topic)
        reason = _base_topic_problem(base_topic)
        if reason is not None:
            table.problem("base_topic", reason)
        client_id = table.text("client_id", f"alarmgw-{district_id or 'district'}")
        reason = _id_reason(client_id)
        if reason is not None:
            table.problem("client_id", reason)

        for key in ("username", "password"):
            if table.has(key):
                table.problem(key, _CREDENTIALS_REFUSED)
        username = self.from_environ(table, "username_env")
        password = self.from_environ(table, "password_env")
        password_file = table.text("password_file", None)
        if password_file is not None:
            if table.has("password_env"):
                table.problem("password_file", "give password_env or password_file, not both")
            else:
                password = self.read_secret(table, "password_file", password_file)
        if password is not None and username is None and not table.has("username_env"):
            table.problem("username_env", "a password needs a username: name its variable here")

        files: dict[str, str] = {}
        for key in ("tls_ca", "tls_cert", "tls_key"):
            value = table.text(key, None)
            if value is None:
                continue
            path = self.resolve(value)
            files[key] = path
            if not os.path.isfile(path):
                table.problem(key, f"no such file: {path}")
        if files and not tls and not isinstance(parsed, str):
            table.problem(next(iter(files)), "TLS files need an mqtts:// broker")
        if ("tls_cert" in files) != ("tls_key" in files):
            key = "tls_cert" if "tls_cert" in files else "tls_key"
            table.problem(
                key, "tls_cert and tls_key go together (a client certificate needs its key)"
            )
        keepalive = table.integer("keepalive_s", defaults.keepalive_s, 1, 65535)
        expiry = table.integer("session_expiry_s", defaults.session_expiry_s, 0, 0xFFFFFFFF)
        table.finish()
        return MqttSettings(
            broker_url=url,
            embedded=_is_embedded(url),
            host=host,
            port=port,
            tls=tls,
            base_topic=base_topic,
            client_id=client_id,
            username=username,
            password=password,
            tls_ca=files.get("tls_ca"),
            tls_cert=files.get("tls_cert"),
            tls_key=files.get("tls_key"),
            keepalive_s=keepalive,
            session_expiry_s=expiry,
        )

    def from_environ(self, table: _Table, key: str) -> str | None:
        """The value of the environment variable that `key` names, if it names one."""
        name = table.text(key, None)
        if name is None:
            return None
        if not name:
            table.problem(key, "must name an environment variable")
            return None
        value = self.environ.get(name)
        if value is None:
            table.problem(key, f"environment variable {name!r} is not set")
        elif not value:
            table.problem(key, f"environment variable {name!r} is empty")
            return None
        return value

    def read_secret(self, table: _Table, key: str, value: str) -> str | None:
        """A secret file's content without its trailing line break."""
        path = self.resolve(value)
        try:
            with open(path, encoding="utf-8") as handle:
                secret = handle.read().rstrip("\r\n")
        except OSError as error:
            table.problem(key, f"cannot read {path}: {error.strerror}")
            return None
        except UnicodeDecodeError:
            table.problem(key, f"{path} is not UTF-8 text")
            return None
        if not secret:
            table.problem(key, f"{path} is empty")
            return None
        return secret

    def http(self, table: _Table) -> HttpSettings:
        """[http]: the metrics and health listener."""
        defaults = HttpSettings()
        listen = table.text("listen", f"{defaults.host}:{defaults.port}")
        table.finish()
        parsed = _parse_listen(listen)
        if isinstance(parsed, str):
            table.problem("listen", parsed)
            return defaults
        return HttpSettings(*parsed)

    def store(self, table: _Table) -> StoreSettings:
        """[store]: the outbox file (relative to the config's folder) and its commits."""
        defaults = StoreSettings()
        path = table.text("path", defaults.path)
        if not path:
            table.problem("path", "must not be empty")
        elif path != ":memory:":  # SQLite's in-memory database, for tests
            path = self.resolve(path)
        settings = StoreSettings(
            path=path,
            retention_h=table.number("retention_h", defaults.retention_h),
            alarm_retention_days=table.number(
                "alarm_retention_days", defaults.alarm_retention_days
            ),
            commit_interval_ms=table.number(
                "commit_interval_ms", defaults.commit_interval_ms, positive=False
            ),
            commit_max_batch=table.integer("commit_max_batch", defaults.commit_max_batch, 1),
        )
        table.finish()
        return settings

    def dedup(self, table: _Table) -> DedupSettings:
        """[dedup]: the duplicate window."""
        defaults = DedupSettings()
        settings = DedupSettings(
            window_s=table.number("window_s", defaults.window_s),
            max_entries=table.integer("max_entries", defaults.max_entries, 1),
        )
        table.finish()
        return settings

    def supervision(self, table: _Table) -> SupervisionSettings:
        """[supervision]: silence after which a device is offline."""
        defaults = SupervisionSettings()
        settings = SupervisionSettings(
            phone_timeout_s=table.number("phone_timeout_s", defaults.phone_timeout_s),
            checkpoint_timeout_s=table.number(
                "checkpoint_timeout_s", defaults.checkpoint_timeout_s
            ),
            receiver_timeout_s=table.number("receiver_timeout_s", defaults.receiver_timeout_s),
        )
        table.finish()
        return settings

    def target_names(self, table: _Table, key: str, names: tuple[str, ...]) -> tuple[str, ...]:
        """Check a list of routing/escalation targets: known names, each once."""
        seen: set[str] = set()
        for index, name in enumerate(names):
            if name not in TARGETS:
                table.problem(
                    f"{key}[{index}]", f"unknown target {name!r} (targets: {', '.join(TARGETS)})"
                )
            elif name in seen:
                table.problem(f"{key}[{index}]", f"target {name!r} is listed twice")
            seen.add(name)
        return names

    def routing(self, table: _Table) -> RoutingPolicy:
        """[routing]: who gets which kind of alarm, and which passes are published."""
        targets = {
            key: self.target_names(table, key, table.strings(key, DEFAULT_ROUTES[key]))
            for key in ROUTE_KEYS
        }
        defaults = RoutingPolicy()
        passes_table = table.table("passes")
        passes = {
            cls: passes_table.boolean(cls.value, defaults.passes[cls]) for cls in CheckpointClass
        }
        passes_table.finish()
        qos = table.integer("passes_qos", defaults.passes_qos, 0, 1)
        table.finish()
        return RoutingPolicy(MappingProxyType(targets), MappingProxyType(passes), qos)

    def escalation(self, table: _Table) -> EscalationPolicy:
        """[escalation]: the chain, and per-priority deadlines (0 = never escalate)."""
        defaults = EscalationPolicy()
        chain = self.target_names(table, "chain", table.strings("chain", defaults.chain))
        deadlines = table.table("deadline_s")
        deadline_s: dict[Priority, float | None] = {}
        for priority in Priority:
            seconds = deadlines.number(
                priority.key, DEFAULT_DEADLINES_S[priority] or 0.0, positive=False
            )
            deadline_s[priority] = seconds or None
        deadlines.finish()
        table.finish()
        return EscalationPolicy(chain, MappingProxyType(deadline_s))

    def watchlist(self, root: _Table) -> frozenset[str]:
        """Top-level `watchlist`: plates whose pass raises a watchlist_hit (compared upper-case)."""
        plates = root.strings("watchlist", ())
        kept: set[str] = set()
        for index, plate in enumerate(plates):
            reason = _plate_problem(plate)
            if reason is not None:
                root.problem(f"watchlist[{index}]", reason)
            else:
                kept.add(plate.upper())
        return frozenset(kept)

    def operators(self, table: _Table, topology: _TopologyBuilder) -> Mapping[str, frozenset[str]]:
        """[operators]: `"kind/id" = ["name", ...]`, who may acknowledge each sink's alarms."""
        keys = table.all_keys()
        if not keys:  # the usual case: no sink index built at start-up for nothing
            return MappingProxyType({})
        known = {f"{sink.kind}/{sink.id}" for sink in topology.all_sinks()}
        found: dict[str, frozenset[str]] = {}
        for key in keys:
            # Quoted in TOML ("village/v01"), so the path shows it quoted too.
            where = f'"{key}"'
            if key not in known:
                table.problem(where, f"unknown sink '{key}' (kind/id, e.g. village/v01)")
                continue
            names = table.strings(key, ())
            kept: list[str] = []
            for index, name in enumerate(names):
                reason = _operator_problem(name)
                if reason is None and name in kept:
                    reason = f"operator '{name}' listed twice"
                if reason is not None:
                    table.problem(f"{where}[{index}]", reason)
                else:
                    kept.append(name)
            if not names:
                table.problem(where, "an empty list: name the sink's operators, or leave it out")
            found[key] = frozenset(kept)
        table.finish()
        return MappingProxyType(found)

    def interception(self, table: _Table, topology: _TopologyBuilder) -> InterceptionPolicy:
        """[interception]: rings activated by a hit or an alarm, staffing deadline, chain."""
        defaults = InterceptionPolicy()
        enabled = table.boolean("enabled", defaults.enabled)
        on_hit_table = table.table("on_hit")
        on_hit: dict[int, tuple[int, ...]] = dict(defaults.on_hit)
        for key in on_hit_table.all_keys():
            ring = _ring_of(key)
            if ring is None:
                on_hit_table.problem(key, f"a ring is one of {', '.join(map(str, RINGS))}")
                continue
            on_hit[ring] = self.rings(on_hit_table, key)
        on_hit_table.finish()
        encloses_table = table.table("encloses")
        encloses: dict[int, frozenset[str]] = {}
        for key in encloses_table.all_keys():
            ring = _ring_of(key)
            if ring is None:
                encloses_table.problem(key, f"a ring is one of {', '.join(map(str, RINGS))}")
                continue
            towns = encloses_table.strings(key, ())
            for index, town in enumerate(towns):
                if town not in topology.township_by_id:
                    encloses_table.problem(f"{key}[{index}]", f"unknown township {town!r}")
            encloses[ring] = frozenset(towns)
        encloses_table.finish()
        kinds = table.strings("alarm_kinds", ())
        for index, kind in enumerate(kinds):
            if kind not in INTERCEPTION_ALARM_KINDS:
                table.problem(
                    f"alarm_kinds[{index}]",
                    f"not a household alarm kind: {kind!r} (one of "
                    f"{', '.join(INTERCEPTION_ALARM_KINDS)})",
                )
        if kinds and not any(encloses.values()):
            table.problem(
                "alarm_kinds",
                "alarms can only activate rings that enclose townships: list them under"
                ' [interception.encloses] (e.g. 1 = ["t01"])',
            )
        deadline = table.number(
            "staff_deadline_s", defaults.staff_deadline_s or 0.0, positive=False
        )
        duration = table.number("duration_s", defaults.duration_s)
        chain = self.target_names(table, "chain", table.strings("chain", defaults.chain))
        table.finish()
        return InterceptionPolicy(
            enabled=enabled,
            on_hit=MappingProxyType(on_hit),
            alarm_kinds=frozenset(kinds),
            encloses=MappingProxyType(encloses),
            staff_deadline_s=deadline or None,
            duration_s=duration,
            chain=chain,
        )

    def rings(self, table: _Table, key: str) -> tuple[int, ...]:
        """A list of ring numbers (each 1-3, no repeats)."""
        value = table.raw(key)
        if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            table.problem(key, f"expected a list of ring numbers, got {_toml_type(value)}")
            return ()
        kept: list[int] = []
        for index, ring in enumerate(value):
            if ring not in RINGS:
                table.problem(f"{key}[{index}]", f"a ring is one of {', '.join(map(str, RINGS))}")
            elif ring in kept:
                table.problem(f"{key}[{index}]", f"ring {ring} listed twice")
            else:
                kept.append(ring)
        return tuple(kept)

    def serial(self, tables: list[_Table], topology: _TopologyBuilder) -> tuple[SerialPort, ...]:
        """[[serial]]: ports, each with a unique name and device."""
        ports: list[SerialPort] = []
        devices: dict[str, str] = {}
        for table in tables:
            name = topology.unique(table, "serial", "name")
            if name is not None:
                reason = topology.device_id_problem(name, "household", "checkpoint")
                if reason is not None:
                    table.problem("name", reason)
            device = table.text("device", None)
            if device is None:
                table.problem("device", "required key is missing")
            elif not device:
                table.problem("device", "must not be empty")
            elif device in devices:
                table.problem("device", f"{device!r} is already used by {devices[device]}")
            else:
                devices[device] = table.path
            baud = table.integer("baud", 9600, 1, 4_000_000)
            bytesize = table.integer("bytesize", 8, 5, 8)
            parity = table.text("parity", "N")
            if parity not in _PARITIES:
                table.problem("parity", f"must be one of {', '.join(_PARITIES)}, got {parity!r}")
            stopbits = table.number("stopbits", 1.0)
            if stopbits not in _STOPBITS:
                table.problem("stopbits", f"must be 1, 1.5 or 2, got {stopbits:g}")
            protocol = table.text("protocol", "receiver")
            if protocol not in _PROTOCOLS:
                table.problem(
                    "protocol", f"must be one of {', '.join(_PROTOCOLS)}, got {protocol!r}"
                )
            timeout = table.number("receiver_timeout_s", None)
            township = table.text("township", None)
            if township is not None and township not in topology.township_by_id:
                table.problem("township", f"unknown township {township!r}")
            table.finish()
            if name is not None and device:
                ports.append(
                    SerialPort(
                        name,
                        device,
                        baud,
                        bytesize,
                        parity,
                        stopbits,
                        protocol,
                        timeout,
                        township,
                    )
                )
        return tuple(ports)


class _TopologyBuilder:
    """The topology part of one load: sinks, townships ... checkpoints, cross-checked."""

    def __init__(self, builder: _Builder) -> None:
        self.builder = builder
        self.declared: dict[tuple[str, str], Sink] = {}
        self.township_by_id: dict[str, Township] = {}
        self.village_by_id: dict[str, Village] = {}
        self.group_by_id: dict[str, Group] = {}
        self.household_by_id: dict[str, Household] = {}
        self.checkpoint_by_id: dict[str, Checkpoint] = {}
        self.account_owner: dict[str, str] = {}
        # Where each (kind, id) was first seen, to name it in a duplicate's problem.
        self.where: defaultdict[str, dict[str, str]] = defaultdict(dict)

    def unique(self, table: _Table, kind: str, key: str = "id") -> str | None:
        """The table's id if well formed and not yet used by another of `kind`."""
        value = table.ident(key)
        if value is None:
            return None
        first = self.where[kind].get(value)
        if first is not None:
            table.problem(key, f"duplicate id {value!r} (also at {first})")
            return None
        self.where[kind][value] = table.path
        return value

    def device_id_problem(self, device_id: str, *earlier: str) -> str | None:
        """Why a device id clashes with an `earlier` kind of device, if it does.

        Devices share `alarmgw/availability/<device_id>` (CONTRACT.md), so
        households, checkpoints and serial ports must not share an id.
        """
        for kind in earlier:
            first = self.where[kind].get(device_id)
            if first is not None:
                return (
                    f"{device_id!r} is also the id of the {kind} at {first}; "
                    "devices share alarmgw/availability/<device_id>"
                )
        return None

    def sinks(self, tables: list[_Table]) -> None:
        """[[sinks]]: the declared sinks (stations, the bureau, anything else)."""
        for table in tables:
            kind = table.ident("kind")
            sink_id = table.ident("id")
            name = table.text("name", sink_id or "")
            table.finish()
            if kind in _IMPLICIT_SINK_KINDS:
                table.problem(
                    "kind", f"{kind!r} sinks exist for every [[{kind}s]] entry; do not declare them"
                )
            elif kind is not None and sink_id is not None:
                first = self.where["sink"].get(f"{kind}/{sink_id}")
                if first is not None:
                    table.problem("id", f"duplicate sink '{kind}/{sink_id}' (also at {first})")
                else:
                    self.where["sink"][f"{kind}/{sink_id}"] = table.path
                    self.declared[(kind, sink_id)] = Sink(kind, sink_id, name)

    def townships(self, tables: list[_Table]) -> None:
        """[[townships]]: id, name, optional station sink id."""
        for table in tables:
            township_id = self.unique(table, "township")
            name = table.text("name", township_id or "")
            station = table.ident("station", required=False)
            table.finish()
            if station is not None and ("station", station) not in self.declared:
                table.problem(
                    "station", f"unknown sink 'station/{station}': declare it under [[sinks]]"
                )
            if township_id is not None:
                self.township_by_id[township_id] = Township(township_id, name, station)

    def villages(self, tables: list[_Table]) -> None:
        """[[villages]]: id, name, township."""
        for table in tables:
            village_id = self.unique(table, "village")
            name = table.text("name", village_id or "")
            township = table.ident("township")
            table.finish()
            if township is not None and township not in self.township_by_id:
                table.problem("township", f"unknown township {township!r}")
            elif village_id is not None and township is not None:
                self.village_by_id[village_id] = Village(village_id, name, township)

    def groups(self, tables: list[_Table]) -> None:
        """[[groups]]: id, village."""
        for table in tables:
            group_id = self.unique(table, "group")
            village = table.ident("village")
            table.finish()
            if village is not None and village not in self.village_by_id:
                table.problem("village", f"unknown village {village!r}")
            elif group_id is not None and village is not None:
                self.group_by_id[group_id] = Group(group_id, village)

    def place(self, group_id: str) -> tuple[str, str]:
        """(village, township) of a known group."""
        village = self.group_by_id[group_id].village
        return village, self.village_by_id[village].township

    def account_problem(self, account: str, household_id: str | None) -> str | None:
        """Why an account cannot be taken (and take it if it can)."""
        if _ACCOUNT.fullmatch(account) is None:
            return (
                f"account {account!r} is not 4-6 characters of 0-9 and B-F "
                "(Contact ID accounts never use A)"
            )
        owner = self.account_owner.get(account)
        if owner is not None:
            return f"account {account!r} already belongs to household {owner!r}"
        if household_id is not None:
            self.account_owner[account] = household_id
        return None

    def inline_households(self, tables: list[_Table]) -> None:
        """[[households]]: id, group, accounts."""
        for table in tables:
            household_id = self.unique(table, "household")
            group = table.ident("group")
            accounts = table.strings("accounts", ())
            table.finish()
            good = household_id is not None
            if group is not None and group not in self.group_by_id:
                table.problem("group", f"unknown group {group!r}")
                good = False
            for index, account in enumerate(accounts):
                reason = self.account_problem(account, household_id)
                if reason is not None:
                    table.problem(f"accounts[{index}]", reason)
                    good = False
            if good and group is not None and household_id is not None:
                village, township = self.place(group)
                self.household_by_id[household_id] = Household(
                    household_id, village, township, group, accounts
                )

    def csv_households(self, value: str) -> None:
        """`households_file`: CSV `id,group,accounts` (accounts `;`-separated), by line.

        The district-scale path (130,000 rows): one pass, no per-row tables.
        """
        builder = self.builder
        out = builder.out
        shown = os.path.join(builder.shown_dir, value)
        path = builder.resolve(value)
        problems = out.items

        def problem(line: int, column: str, reason: str) -> None:
            problems.append(ConfigProblem(f"{shown}:{line}", column, reason))

        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as error:
            out.add("households_file", f"cannot read {shown}: {error.strerror}")
            return
        try:
            # Decoded whole (a few MB at district scale) so a bad byte has a line.
            text = data.decode("utf-8-sig")  # a spreadsheet's byte order mark is fine
        except UnicodeDecodeError as error:
            problem(data.count(b"\n", 0, error.start) + 1, "", "not UTF-8 text")
            return
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        try:
            header = next(reader, None)
            if header is None:
                problem(1, "", "the file is empty; expected the header id,group,accounts")
                return
            if tuple(header) != _CSV_COLUMNS:
                problem(1, "", f"the header must be id,group,accounts, got {','.join(header)}")
                return
            self.csv_rows(reader, shown, problem)
        except csv.Error as error:
            problem(reader.line_num, "", f"not valid CSV: {error}")

    def csv_rows(self, reader: _CsvReader, shown: str, problem: _LineProblem) -> None:
        """The household rows: a fast path for rows with nothing to report, else `csv_row`.

        130,000 rows must load well inside the gateway's start-up budget, so a row
        that is well formed, new and refers to a known group is taken with a few
        dict look-ups; any other row goes to `csv_row`, which names each problem.
        """
        seen = self.where["household"]
        households = self.household_by_id
        places = {group: self.place(group) for group in self.group_by_id}
        for row in reader:
            line = reader.line_num
            if len(row) == 3:
                household_id, group, text = row
                place = places.get(group)
                accounts = tuple(text.split(";")) if text else ()
                if (
                    place is not None
                    and household_id not in seen
                    and id_problem(household_id) is None
                    and self.take_accounts(accounts, household_id)
                ):
                    seen[household_id] = f"{shown}:{line}"
                    households[household_id] = Household(household_id, *place, group, accounts)
                    continue
            self.csv_row(row, line, f"{shown}:{line}", problem)

    def take_accounts(self, accounts: tuple[str, ...], household_id: str) -> bool:
        """Take all `accounts` for the household if each is well formed and free, else none."""
        owners = self.account_owner
        for account in accounts:
            if account in owners or _ACCOUNT.fullmatch(account) is None:
                return False
        if len(accounts) > 1 and len(set(accounts)) != len(accounts):
            return False
        for account in accounts:
            owners[account] = household_id
        return True

    def csv_row(self, row: list[str], line: int, where: str, problem: _LineProblem) -> None:
        """Report every problem of a household row that the fast path refused."""
        if not row:
            return  # a blank line
        if len(row) != 3:
            problem(line, "", f"expected 3 fields (id,group,accounts), got {len(row)}")
            return
        household_id, group, accounts_text = row
        good = True
        reason = _id_reason(household_id)
        if reason is not None:
            problem(line, "id", reason)
            good = False
        else:
            first = self.where["household"].get(household_id)
            if first is not None:
                problem(line, "id", f"duplicate id {household_id!r} (also at {first})")
                good = False
            else:
                self.where["household"][household_id] = where
        if group not in self.group_by_id:
            reason = _id_reason(group)
            problem(line, "group", reason or f"unknown group {group!r}")
            good = False
        accounts = tuple(accounts_text.split(";")) if accounts_text else ()
        for account in accounts:
            reason = self.account_problem(account, household_id if good else None)
            if reason is not None:
                problem(line, "accounts", reason)
                good = False
        # Only rows the fast path refused come here, and each has something to say.
        assert not good, f"{where}: the fast path refused a good row"

    def checkpoints(self, tables: list[_Table]) -> None:
        """[[checkpoints]]: id, name, class, ring, township, managing unit."""
        for table in tables:
            checkpoint_id = self.unique(table, "checkpoint")
            name = table.text("name", checkpoint_id or "")
            cls_text = table.text("class", None)
            cls: CheckpointClass | None = None
            if cls_text is None:
                table.problem("class", "required key is missing")
            elif cls_text not in CheckpointClass.__members__:
                table.problem("class", f"must be A, B or C, got {cls_text!r}")
            else:
                cls = CheckpointClass(cls_text)
            if not table.has("ring"):
                table.problem("ring", "required key is missing")
            ring = table.integer("ring", 0, 1, 3)
            township = table.ident("township")
            if township is not None and township not in self.township_by_id:
                table.problem("township", f"unknown township {township!r}")
                township = None
            unit = self.unit(table)
            table.finish()
            if checkpoint_id is not None:
                reason = self.device_id_problem(checkpoint_id, "household")
                if reason is not None:
                    table.problem("id", reason)
            if (
                checkpoint_id is not None
                and cls is not None
                and township is not None
                and unit is not None
                and ring
            ):
                self.checkpoint_by_id[checkpoint_id] = Checkpoint(
                    checkpoint_id, name, cls, ring, township, unit
                )

    def unit(self, table: _Table) -> SinkRef | None:
        """A checkpoint's `unit = "kind/id"`: a declared or implicit sink."""
        text = table.text("unit", None)
        if text is None:
            table.problem("unit", "required key is missing")
            return None
        kind, sep, sink_id = text.partition("/")
        if not sep or "/" in sink_id:
            table.problem("unit", f"expected kind/id, e.g. 'station/s01', got {text!r}")
            return None
        reason = _id_reason(kind) or _id_reason(sink_id)
        if reason is not None:
            table.problem("unit", reason)
            return None
        implicit: dict[str, Mapping[str, object]] = {
            "township": self.township_by_id,
            "village": self.village_by_id,
            "group": self.group_by_id,
        }
        ids = implicit.get(kind)
        known = sink_id in ids if ids is not None else (kind, sink_id) in self.declared
        if not known:
            table.problem("unit", f"unknown sink {text!r}: declare it under [[sinks]]")
            return None
        return SinkRef(kind, sink_id)

    def all_sinks(self) -> tuple[Sink, ...]:
        """The declared sinks, then the implicit ones of every township, village and group."""
        return (
            *self.declared.values(),
            *(Sink("township", t.id, t.name) for t in self.township_by_id.values()),
            *(Sink("village", v.id, v.name) for v in self.village_by_id.values()),
            *(Sink("group", g.id, g.id) for g in self.group_by_id.values()),
        )


_MAX_OPERATOR = 64


def _ring_of(key: str) -> int | None:
    """The ring a table key names ("1", "2", "3"), or None."""
    return int(key) if key.isdigit() and int(key) in RINGS else None


def _operator_problem(name: str) -> str | None:
    """Why `name` cannot be an operator's name (the `by` of an acknowledgement), or None."""
    if not name or len(name) > _MAX_OPERATOR:
        return f"an operator's name has 1 to {_MAX_OPERATOR} characters"
    if not name.isprintable() or name != name.strip():
        return "an operator's name is printable, without leading or trailing spaces"
    return None
