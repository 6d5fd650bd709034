"""`alarmgw broker-config`: mosquitto 2's passwords, ACL and TLS listener from a district config.

Theory of operation
-------------------
Without this, any client that reaches the broker can publish a panic as any
household or acknowledge any alarm. The district file already knows every
device and every sink, so it is the one source of who may say what:

**Accounts** (docs/broker-security.md has them as a table):

- phone: username = its household id; writes `<base>/in/phone/<id>`, reads nothing;
- checkpoint: username = its id; writes `<base>/in/checkpoint/<id>`, reads
  `<base>/out/checkpoint/<id>/commands` (reserved for commands to cameras);
- operator: `op-<sink kind>-<sink id>`; writes `<base>/ack/<kind>/<id>`, reads
  `<base>/out/<kind>/<id>/#` (alarms, passes), `<base>/state`, `<base>/availability/#`;
- gateway: its `client_id` (both sessions); reads `<base>/in/#` and `<base>/ack/#`,
  writes `<base>/out/#`, `<base>/state` (also its Will), `<base>/availability/#`
  and `<base>/deadletter`.

Every sink gets one operator account: village police rooms, township centres,
stations, the bureau, and each ten-household group (the group's account is for
whatever makes the neighbours' phones ring). Usernames must be unique across
roles; a clash (a household called `op-village-v01`) is refused, not guessed.

**Phones are one ACL pattern, not 130,000 user blocks.** mosquitto 2.0's
acl_file loader appends each `topic` line by walking the list of users from the
start (`add__acl` in src/security_default.c), so N user blocks load in O(N^2):
minutes at district scale, at every start and every SIGHUP. So phones get
`pattern write <base>/in/phone/%u`, one line for all. A pattern applies to
every user, so each non-phone account's block begins with
`topic deny <base>/in/phone/<its username>`: mosquitto checks a user's own
denials before any pattern, and that is the one topic the pattern would give
it. mosquitto refuses pattern access to a username or client id containing `+`
or `#`; ids never contain them (config/loader.py `id_problem`).

**Mosquitto's ACL semantics** (checked on 2.0.11, tests/gateway/test_broker_config.py):
once an acl_file is set, anything no line grants is denied. SUBSCRIBE is always
granted; what a client may not read is simply never delivered to it. A denied
PUBLISH is dropped: MQTT 3.1.1 gives no sign (PUBACK as usual), MQTT 5 QoS 1
answers PUBACK 0x87 "not authorized".

**Passwords** are mosquitto 2's `$7$` lines, `user:$7$<iterations>$<b64 salt>$<b64
PBKDF2-HMAC-SHA512>` with a 12-byte salt and 101 iterations (what mosquitto_passwd
2.0 writes). 101 iterations is little against a guessable password and nothing
against these: every secret is `secrets.token_urlsafe(24)`, 192 random bits.

**Secrets are kept**: `credentials.csv` (mode 0600) is the one place they are
in clear. A re-run reads it, keeps each existing account's password (devices
need no re-provisioning), makes passwords for new accounts, and new ones for
`--rotate USERNAME`. An account the config no longer has is only revoked with
`--prune` (a config that lost its households file must not wipe every secret).
A hash line whose password did not change is kept as it was, so a re-run
rewrites identical files. Every file is written to a temporary name and renamed
into place, so a crash never leaves half a credentials file, and mosquitto never
reads half a password file.

Secrets never reach stdout or a log: the summary counts accounts and names files.
"""

from __future__ import annotations

import base64
import binascii
import csv
import enum
import hashlib
import hmac
import io
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from config.model import Config
from protocols.topics import REQUEST_APIS

__all__ = [
    "DEFAULT_ITERATIONS",
    "Account",
    "BrokerConfigError",
    "Credential",
    "ListenerOptions",
    "Result",
    "Role",
    "accounts_for",
    "acl_text",
    "generate",
    "hash_password",
    "listener_text",
    "operator_username",
    "read_credentials",
    "verify_password",
]

DEFAULT_ITERATIONS: Final = 101
"""PBKDF2 iterations mosquitto_passwd 2.0 uses by default (PW_DEFAULT_ITERATIONS)."""
_SALT_BYTES: Final = 12
_HASH_BYTES: Final = 64  # SHA-512
_SECRET_BYTES: Final = 24  # token_urlsafe: 32 characters, 192 bits
_CSV_HEADER: Final = ("username", "role", "id", "password")

PASSWORDS_FILE: Final = "passwords"
ACL_FILE: Final = "acl"
LISTENER_FILE: Final = "alarmgw.conf"
CREDENTIALS_FILE: Final = "credentials.csv"


class Role(enum.StrEnum):
    """What an account is for; the `role` column of credentials.csv."""

    GATEWAY = "gateway"
    OPERATOR = "operator"
    CHECKPOINT = "checkpoint"
    PHONE = "phone"


class BrokerConfigError(Exception):
    """The files cannot be generated; `problems` lists every reason."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        super().__init__("; ".join(self.problems))


@dataclass(frozen=True, slots=True)
class Account:
    """One broker login: who it is and the ACL lines of its `user` block (none for phones)."""

    username: str
    role: Role
    id: str
    """Household id, checkpoint id, sink `kind/id`, or the gateway's client_id."""
    acl: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Credential:
    """A row of credentials.csv."""

    username: str
    role: str
    id: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class ListenerOptions:
    """The TLS listener of alarmgw.conf; None paths become placeholders to fill in."""

    port: int = 8883
    bind: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    require_certificate: bool = False


@dataclass(frozen=True, slots=True)
class Result:
    """What one run did, for the summary (never a secret)."""

    out_dir: Path
    by_role: Mapping[Role, int]
    created: int
    kept: int
    rotated: int
    pruned: int
    hash_s: float
    total_s: float
    gateway_username: str
    placeholders: tuple[str, ...]


# ------------------------------------------------------------------ accounts


_COMMANDERS = frozenset({"township", "station", "bureau"})
"""Sink kinds whose operators may use the request APIs (end an interception)."""


def operator_username(sink_kind: str, sink_id: str) -> str:
    """The operator account of a sink: `op-<kind>-<id>`, e.g. `op-village-v01`."""
    return f"op-{sink_kind}-{sink_id}"


def accounts_for(config: Config, *, group_accounts: bool = True) -> list[Account]:
    """Every account of the district, gateway first; `BrokerConfigError` on clashes.

    `group_accounts=False` leaves out the ten-household groups' operator accounts
    (13,000 at district scale, where their user blocks cost mosquitto seconds at
    each start and reload).
    """
    base = config.mqtt.base_topic
    phone_in = f"{base}/in/phone"

    def deny_pattern(username: str) -> str:
        # The phone pattern grants every user <base>/in/phone/<username>; close it.
        return f"topic deny {phone_in}/{username}"

    gateway = config.mqtt.client_id
    found: list[Account] = [
        Account(
            gateway,
            Role.GATEWAY,
            gateway,
            (
                deny_pattern(gateway),
                f"topic read {base}/in/#",
                f"topic read {base}/ack/#",
                f"topic write {base}/out/#",
                f"topic write {base}/state",
                f"topic write {base}/availability/#",
                f"topic write {base}/deadletter",
                *(f"topic read {base}/{api}/request/+" for api in REQUEST_APIS),
                *(f"topic write {base}/{api}/response/#" for api in REQUEST_APIS),
            ),
        )
    ]
    for sink in config.sinks:
        if sink.kind == "group" and not group_accounts:
            continue
        username = operator_username(sink.kind, sink.id)
        found.append(
            Account(
                username,
                Role.OPERATOR,
                f"{sink.kind}/{sink.id}",
                (
                    deny_pattern(username),
                    f"topic read {base}/out/{sink.kind}/{sink.id}/#",
                    f"topic read {base}/state",
                    f"topic read {base}/availability/#",
                    f"topic write {base}/ack/{sink.kind}/{sink.id}",
                    *(
                        line
                        for api in REQUEST_APIS
                        if sink.kind in _COMMANDERS
                        for line in (
                            f"topic write {base}/{api}/request/+",
                            f"topic read {base}/{api}/response/#",
                        )
                    ),
                ),
            )
        )
    found.extend(
        Account(
            checkpoint.id,
            Role.CHECKPOINT,
            checkpoint.id,
            (
                deny_pattern(checkpoint.id),
                f"topic write {base}/in/checkpoint/{checkpoint.id}",
                f"topic read {base}/out/checkpoint/{checkpoint.id}/commands",
            ),
        )
        for checkpoint in config.checkpoints
    )
    found.extend(Account(h.id, Role.PHONE, h.id) for h in config.households)
    problems: list[str] = []
    if "%u" in base or "%c" in base:
        # mosquitto substitutes these in `pattern` lines (the phones' one).
        problems.append(
            f"mqtt.base_topic {base!r} contains %u or %c, which mosquitto ACL "
            "patterns would replace"
        )
    first: dict[str, Account] = {}
    for account in found:
        # mosquitto splits a password file line at its first ':' (pwfile__parse).
        if ":" in account.username:
            problems.append(
                f"{account.role} {account.id!r}: username {account.username!r} contains ':', "
                "which a mosquitto password file cannot hold"
            )
        other = first.setdefault(account.username, account)
        if other is not account:
            problems.append(
                f"username {account.username!r} would be both the {other.role} {other.id!r} "
                f"and the {account.role} {account.id!r}; rename one in the config"
            )
    if problems:
        raise BrokerConfigError(problems)
    return found


# ------------------------------------------------------------------ file texts


def acl_text(config: Config, accounts: Sequence[Account], source: str = "") -> str:
    """The mosquitto acl_file: the phone pattern, then one `user` block per other account."""
    base = config.mqtt.base_topic
    phones = sum(1 for a in accounts if a.role is Role.PHONE)
    lines = [
        f"# mosquitto acl_file for alarmgw district {config.district_id!r}, generated by",
        f"# `alarmgw broker-config` from {source or config.source}; edits are overwritten.",
        "# Anything not granted here is denied (mosquitto, once acl_file is set).",
        "",
        f"# Phones ({phones}): each may publish only on its own ingress topic, the",
        "# username being the household id. One pattern instead of a block per phone:",
        "# mosquitto loads user blocks in quadratic time. Every other account below",
        "# starts with a deny of the one topic this pattern would give it.",
        f"pattern write {base}/in/phone/%u",
    ]
    for account in accounts:
        if account.role is Role.PHONE:
            continue
        lines += ["", f"# {account.role} {account.id}", f"user {account.username}", *account.acl]
    lines.append("")
    return "\n".join(lines)


def listener_text(
    options: ListenerOptions, broker_dir: str, source: str
) -> tuple[str, tuple[str, ...]]:
    """alarmgw.conf, and the names of the TLS settings left as placeholders."""
    placeholders: list[str] = []

    def path(value: str | None, name: str, placeholder: str) -> str:
        if value is None:
            placeholders.append(name)
            return placeholder
        return os.path.abspath(value)

    cert = path(options.tls_cert, "certfile", "/etc/mosquitto/certs/server.pem")
    key = path(options.tls_key, "keyfile", "/etc/mosquitto/certs/server.key")
    ca_line: str
    if options.tls_ca is not None:
        ca_line = f"cafile {os.path.abspath(options.tls_ca)}"
    elif options.require_certificate:
        placeholders.append("cafile")
        ca_line = "cafile /etc/mosquitto/certs/device-ca.pem"
    else:
        ca_line = "#cafile /etc/mosquitto/certs/device-ca.pem"
    listen = f"listener {options.port}" + (f" {options.bind}" if options.bind else "")
    lines = [
        "# alarmgw: broker security for mosquitto 2, generated by `alarmgw broker-config`",
        f"# from {source}. mosquitto has no single-file include: put this file in a",
        "# directory of its own and add `include_dir <that directory>` at the END of",
        "# mosquitto.conf (Debian: /etc/mosquitto/conf.d/ is already included).",
        "",
        "# per_listener_settings stays false (mosquitto's default), so these three apply",
        "# to EVERY listener, a loopback 1883 included: no listener is a way round the",
        "# passwords and the ACL. (With per_listener_settings true they would have to",
        "# follow each listener line instead.) The last allow_anonymous read wins.",
        "allow_anonymous false",
        f"password_file {broker_dir}/{PASSWORDS_FILE}",
        f"acl_file {broker_dir}/{ACL_FILE}",
        "",
        "# Devices, consoles and the gateway from other hosts: MQTT over TLS.",
        listen,
        f"certfile {cert}",
        f"keyfile {key}",
        "# cafile: the CA that signs device certificates; only needed with",
        "# require_certificate true. Devices log in with username and password either way.",
        ca_line,
        f"require_certificate {'true' if options.require_certificate else 'false'}",
        "",
    ]
    if placeholders:
        lines.insert(
            4, f"# FILL IN before use: {', '.join(placeholders)} (placeholder paths below)."
        )
    return "\n".join(lines), tuple(placeholders)


# ------------------------------------------------------------------ password hashes


def hash_password(
    password: str, *, salt: bytes | None = None, iterations: int = DEFAULT_ITERATIONS
) -> str:
    """mosquitto 2's `$7$<iterations>$<b64 salt>$<b64 PBKDF2-HMAC-SHA512>` for a password."""
    if salt is None:
        salt = secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations, _HASH_BYTES)
    return (
        f"$7${iterations}${base64.b64encode(salt).decode('ascii')}"
        f"${base64.b64encode(digest).decode('ascii')}"
    )


def verify_password(password: str, encoded: str) -> bool:
    """Whether `encoded` (a `$7$` or `$6$` mosquitto hash) is the hash of `password`."""
    parts = encoded.split("$")
    try:
        if len(parts) == 5 and parts[:2] == ["", "7"]:
            iterations = int(parts[2])
            salt = base64.b64decode(parts[3], validate=True)
            expected = base64.b64decode(parts[4], validate=True)
            if iterations < 1:
                return False
            got = hashlib.pbkdf2_hmac(
                "sha512", password.encode("utf-8"), salt, iterations, len(expected)
            )
        elif len(parts) == 4 and parts[:2] == ["", "6"]:  # mosquitto 1.x: one SHA-512 round
            salt = base64.b64decode(parts[2], validate=True)
            expected = base64.b64decode(parts[3], validate=True)
            got = hashlib.sha512(password.encode("utf-8") + salt).digest()
        else:
            return False
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(got, expected)


# ------------------------------------------------------------------ files


def read_credentials(path: Path) -> dict[str, Credential]:
    """credentials.csv by username ({} if absent); `BrokerConfigError` if it is not ours."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as error:
        raise BrokerConfigError([f"{path}: cannot read: {error}"]) from None
    rows = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(rows, None)
        if header is None or tuple(header) != _CSV_HEADER:
            raise BrokerConfigError(
                [f"{path}: not a credentials file (header must be {','.join(_CSV_HEADER)})"]
            )
        found: dict[str, Credential] = {}
        for row in rows:
            if not row:
                continue
            if len(row) != len(_CSV_HEADER) or not row[0] or not row[3]:
                raise BrokerConfigError(
                    [f"{path}:{rows.line_num}: expected username,role,id,password"]
                )
            found[row[0]] = Credential(*row)
    except csv.Error as error:
        raise BrokerConfigError([f"{path}:{rows.line_num}: not valid CSV: {error}"]) from None
    return found


def _read_hashes(path: Path) -> dict[str, str]:
    """An existing password file's `username -> hash` (best effort: it is only a cache)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    hashes: dict[str, str] = {}
    for line in text.splitlines():
        username, sep, encoded = line.partition(":")
        if sep and not line.startswith("#"):
            hashes[username] = encoded
    return hashes


def _write_atomically(path: Path, text: str, mode: int) -> None:
    """Write `text` to a temporary file beside `path` with `mode`, fsync, rename over."""
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _credentials_text(rows: Iterable[Credential]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(_CSV_HEADER)
    for row in rows:
        writer.writerow((row.username, row.role, row.id, row.password))
    return buffer.getvalue()


def generate(
    config: Config,
    out_dir: Path,
    *,
    listener: ListenerOptions | None = None,
    broker_dir: str | None = None,
    rotate: Sequence[str] = (),
    prune: bool = False,
    group_accounts: bool = True,
    clock: Callable[[], float] = time.perf_counter,
) -> Result:
    """Write passwords, acl, alarmgw.conf and credentials.csv into `out_dir`.

    `broker_dir` is where the broker will find the files (default: `out_dir`,
    absolute). Raises `BrokerConfigError` before writing anything when the
    config has clashing usernames, `rotate` names an unknown account, or
    accounts would disappear without `prune`. `group_accounts`: see `accounts_for`.
    """
    started = clock()
    listener = listener or ListenerOptions()
    where = broker_dir or str(out_dir.resolve())
    # Each becomes (part of) one line of alarmgw.conf: a line break would start another.
    for name, value in (
        ("--broker-dir", where),
        ("--bind", listener.bind),
        ("--tls-ca", listener.tls_ca),
        ("--tls-cert", listener.tls_cert),
        ("--tls-key", listener.tls_key),
        ("the config's path", config.source),
    ):
        if value is not None and not value.isprintable():
            raise BrokerConfigError([f"{name} {value!r} contains control characters"])
    accounts = accounts_for(config, group_accounts=group_accounts)
    out_dir.mkdir(parents=True, exist_ok=True)
    credentials_path = out_dir / CREDENTIALS_FILE
    existing = read_credentials(credentials_path)
    wanted = {account.username for account in accounts}
    problems = [
        f"--rotate {name}: no such account in {config.source}"
        for name in rotate
        if name not in wanted
    ]
    gone = [name for name in existing if name not in wanted]
    if gone and not prune:
        shown = ", ".join(repr(name) for name in gone[:5]) + (" ..." if len(gone) > 5 else "")
        problems.append(
            f"{len(gone)} account(s) in {credentials_path} are not in the config ({shown}); "
            "re-run with --prune to revoke them"
        )
    if problems:
        raise BrokerConfigError(problems)
    rotated = set(rotate)
    old_hashes = _read_hashes(out_dir / PASSWORDS_FILE)
    rows: list[Credential] = []
    lines: list[str] = []
    created = kept = 0
    hashing_started = clock()
    for account in accounts:
        previous = existing.get(account.username)
        if previous is not None and account.username not in rotated:
            password = previous.password
            kept += 1
            encoded = old_hashes.get(account.username)
            if encoded is None or not verify_password(password, encoded):
                encoded = hash_password(password)
        else:
            password = secrets.token_urlsafe(_SECRET_BYTES)
            created += previous is None
            encoded = hash_password(password)
        rows.append(Credential(account.username, account.role.value, account.id, password))
        lines.append(f"{account.username}:{encoded}")
    hash_s = clock() - hashing_started
    conf, placeholders = listener_text(listener, where, config.source)
    # The CSV first: if anything after it fails, the secrets it holds are the ones to use.
    _write_atomically(credentials_path, _credentials_text(rows), 0o600)
    # 0640: mosquitto reads these as its own user (chgrp mosquitto); salted hashes only.
    _write_atomically(out_dir / PASSWORDS_FILE, "\n".join(lines) + "\n", 0o640)
    _write_atomically(out_dir / ACL_FILE, acl_text(config, accounts), 0o640)
    _write_atomically(out_dir / LISTENER_FILE, conf, 0o644)
    by_role = {role: sum(1 for a in accounts if a.role is role) for role in Role}
    return Result(
        out_dir=out_dir,
        by_role=by_role,
        created=created,
        kept=kept,
        rotated=len(rotated),
        pruned=len(gone),
        hash_s=hash_s,
        total_s=clock() - started,
        gateway_username=config.mqtt.client_id,
        placeholders=placeholders,
    )
