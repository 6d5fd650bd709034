"""`alarmgw broker-config`: the files it writes, and what they do to a real mosquitto 2."""

from __future__ import annotations

import asyncio
import base64
import csv
import dataclasses
import os
import pwd
import shutil
import stat
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import anyio
import msgpack
import pytest
from structlog.testing import capture_logs

from config.loader import load_config
from config.model import Config, Household
from gateway.adapters.mqtt import MQTT_V5, MQTT_V311, MqttPublishError
from gateway.app import Gateway
from gateway.broker_config import (
    DEFAULT_ITERATIONS,
    BrokerConfigError,
    ListenerOptions,
    Role,
    accounts_for,
    generate,
    hash_password,
    verify_password,
)
from gateway.cli import main
from tests.brokers import find_mosquitto, wait_port_open
from tests.gateway.harness import DEMO, eventually, panic, running
from tests.gateway.secured import Client, SecuredBroker, logged_in, read_passwords


def demo() -> Config:
    return load_config(DEMO)


def csv_rows(out: Path) -> list[dict[str, str]]:
    with (out / "credentials.csv").open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def user_block(acl: str, username: str) -> list[str]:
    """The lines of one `user` block of an acl file."""
    lines = acl.splitlines()
    start = lines.index(f"user {username}") + 1
    block = []
    for line in lines[start:]:
        if not line or line.startswith(("user ", "#")):
            break
        block.append(line)
    return block


# ------------------------------------------------------------------ the files


def test_demo_accounts_cover_every_device_sink_and_the_gateway() -> None:
    """One account per phone, checkpoint and sink, plus the gateway's client_id."""
    accounts = accounts_for(demo())
    by_role: dict[Role, list[str]] = {role: [] for role in Role}
    for account in accounts:
        by_role[account.role].append(account.username)
    assert by_role[Role.GATEWAY] == ["alarmgw-demo"]
    assert by_role[Role.PHONE] == [f"h{n:03d}" for n in range(1, 61)]
    assert by_role[Role.CHECKPOINT] == ["k1", "k2", "k3", "k4"]
    assert sorted(by_role[Role.OPERATOR]) == sorted(
        ["op-station-s01", "op-bureau-county", "op-township-t01"]
        + [f"op-village-v0{n}" for n in (1, 2, 3)]
        + [f"op-group-g{n}" for n in (11, 12, 21, 22, 31, 32)]
    )


def test_group_accounts_can_be_left_out(tmp_path: Path) -> None:
    """--no-group-accounts: no op-group-* login and no block for it; the rest unchanged."""
    result = generate(demo(), tmp_path, group_accounts=False)
    assert result.by_role[Role.OPERATOR] == 6
    assert not [name for name in read_passwords(tmp_path) if name.startswith("op-group-")]
    assert "op-group-" not in (tmp_path / "acl").read_text(encoding="utf-8")


def test_acl_grants_exactly_what_each_role_needs(tmp_path: Path) -> None:
    """Phones: one pattern; checkpoints, operators, the gateway: their own blocks, no more."""
    generate(demo(), tmp_path)
    acl = (tmp_path / "acl").read_text(encoding="utf-8")
    rules = [line for line in acl.splitlines() if line and not line.startswith("#")]
    assert [r for r in rules if r.startswith("pattern")] == ["pattern write alarmgw/in/phone/%u"]
    assert "user h001" not in acl  # phones have the pattern only
    assert user_block(acl, "k2") == [
        "topic deny alarmgw/in/phone/k2",
        "topic write alarmgw/in/checkpoint/k2",
        "topic read alarmgw/out/checkpoint/k2/commands",
    ]
    assert user_block(acl, "op-village-v01") == [
        "topic deny alarmgw/in/phone/op-village-v01",
        "topic read alarmgw/out/village/v01/#",
        "topic read alarmgw/state",
        "topic read alarmgw/availability/#",
        "topic write alarmgw/ack/village/v01",
    ]
    # A township centre may also end an interception (the request API).
    assert user_block(acl, "op-township-t01") == [
        "topic deny alarmgw/in/phone/op-township-t01",
        "topic read alarmgw/out/township/t01/#",
        "topic read alarmgw/state",
        "topic read alarmgw/availability/#",
        "topic write alarmgw/ack/township/t01",
        "topic write alarmgw/interception/request/+",
        "topic read alarmgw/interception/response/#",
    ]
    assert user_block(acl, "alarmgw-demo") == [
        "topic deny alarmgw/in/phone/alarmgw-demo",
        "topic read alarmgw/in/#",
        "topic read alarmgw/ack/#",
        "topic write alarmgw/out/#",
        "topic write alarmgw/state",
        "topic write alarmgw/availability/#",
        "topic write alarmgw/deadletter",
        "topic read alarmgw/interception/request/+",
        "topic write alarmgw/interception/response/#",
    ]
    users = [r.split(" ", 1)[1] for r in rules if r.startswith("user ")]
    assert len(users) == 1 + 12 + 4  # gateway, operators, checkpoints


def test_the_base_topic_is_the_configs(tmp_path: Path) -> None:
    """With base_topic city/d7/alarmgw every rule lives under it."""
    config = demo()
    config = dataclasses.replace(
        config, mqtt=dataclasses.replace(config.mqtt, base_topic="city/d7/alarmgw")
    )
    generate(config, tmp_path)
    acl = (tmp_path / "acl").read_text(encoding="utf-8")
    for line in acl.splitlines():
        if line.startswith(("topic ", "pattern ")):
            assert line.split(" ", 2)[2].startswith("city/d7/alarmgw/"), line


def test_listener_snippet_with_and_without_tls_paths(tmp_path: Path) -> None:
    """Given paths are used; missing ones are placeholders the summary names."""
    result = generate(demo(), tmp_path / "a")
    conf = (tmp_path / "a" / "alarmgw.conf").read_text(encoding="utf-8")
    assert result.placeholders == ("certfile", "keyfile")
    assert "allow_anonymous false" in conf.splitlines()
    assert f"password_file {(tmp_path / 'a').resolve()}/passwords" in conf
    assert f"acl_file {(tmp_path / 'a').resolve()}/acl" in conf
    assert "listener 8883" in conf.splitlines()
    assert "require_certificate false" in conf.splitlines()
    options = ListenerOptions(
        port=8884,
        bind="10.0.0.1",
        tls_ca="/x/ca.pem",
        tls_cert="/x/s.pem",
        tls_key="/x/s.key",
        require_certificate=True,
    )
    result = generate(demo(), tmp_path / "b", listener=options, broker_dir="/etc/mosquitto/ag")
    conf = (tmp_path / "b" / "alarmgw.conf").read_text(encoding="utf-8")
    assert result.placeholders == ()
    lines = conf.splitlines()
    expected = (
        "listener 8884 10.0.0.1",
        "certfile /x/s.pem",
        "keyfile /x/s.key",
        "cafile /x/ca.pem",
        "require_certificate true",
        "password_file /etc/mosquitto/ag/passwords",
        "acl_file /etc/mosquitto/ag/acl",
    )
    assert [line for line in expected if line not in lines] == []


def test_credentials_are_private_and_kept_across_runs(tmp_path: Path) -> None:
    """credentials.csv is 0600; a re-run keeps every password and rewrites identical files."""
    generate(demo(), tmp_path)
    assert stat.S_IMODE((tmp_path / "credentials.csv").stat().st_mode) == 0o600
    rows = csv_rows(tmp_path)
    assert [r["role"] for r in rows[:1]] == ["gateway"]
    assert len({r["password"] for r in rows}) == len(rows) == 77
    assert all(len(r["password"]) == 32 for r in rows)
    before = {
        name: (tmp_path / name).read_bytes() for name in ("passwords", "acl", "credentials.csv")
    }
    result = generate(demo(), tmp_path)
    assert (result.created, result.kept) == (0, 77)
    after = {name: (tmp_path / name).read_bytes() for name in before}
    assert after == before


def test_a_new_device_gets_a_password_and_the_others_keep_theirs(tmp_path: Path) -> None:
    """Adding a household adds one account; --rotate changes exactly the one named."""
    generate(demo(), tmp_path)
    first = read_passwords(tmp_path)
    config = demo()
    grown = dataclasses.replace(
        config, households=(*config.households, Household("h061", "v01", "t01", "g11"))
    )
    result = generate(grown, tmp_path)
    second = read_passwords(tmp_path)
    assert (result.created, result.kept) == (1, 77)
    assert set(second) - set(first) == {"h061"}
    assert all(second[name] == first[name] for name in first)
    result = generate(grown, tmp_path, rotate=["h002"])
    third = read_passwords(tmp_path)
    assert result.rotated == 1
    assert third["h002"] != second["h002"]
    assert {n: p for n, p in third.items() if n != "h002"} == {
        n: p for n, p in second.items() if n != "h002"
    }
    hashes = dict(line.split(":", 1) for line in (tmp_path / "passwords").read_text().splitlines())
    assert verify_password(third["h002"], hashes["h002"])
    assert not verify_password(second["h002"], hashes["h002"])


def test_accounts_gone_from_the_config_are_revoked_only_with_prune(tmp_path: Path) -> None:
    """A config that lost devices does not silently wipe their secrets."""
    generate(demo(), tmp_path)
    config = demo()
    shrunk = dataclasses.replace(config, households=config.households[:-1])
    with pytest.raises(BrokerConfigError, match=r"1 account.*h060.*--prune"):
        generate(shrunk, tmp_path)
    assert "h060" in read_passwords(tmp_path)
    with pytest.raises(BrokerConfigError, match="--rotate nobody"):
        generate(config, tmp_path, rotate=["nobody"])
    result = generate(shrunk, tmp_path, prune=True)
    assert result.pruned == 1
    assert "h060" not in read_passwords(tmp_path)
    assert "h060:" not in (tmp_path / "passwords").read_text()


def test_clashing_or_unusable_usernames_are_refused(tmp_path: Path) -> None:
    """A household named like an operator, or an id with ':', stops the tool with both reasons."""
    config = demo()
    odd = (Household("op-village-v01", "v01", "t01", "g11"), Household("h:1", "v01", "t01", "g11"))
    with pytest.raises(BrokerConfigError) as caught:
        generate(dataclasses.replace(config, households=(*config.households, *odd)), tmp_path)
    text = "\n".join(caught.value.problems)
    assert "'op-village-v01' would be both the operator 'village/v01' and the phone" in text
    assert "contains ':'" in text
    assert not (tmp_path / "credentials.csv").exists()
    with pytest.raises(BrokerConfigError, match="control characters"):
        generate(config, tmp_path, listener=ListenerOptions(tls_cert="a\nlistener 1"))
    odd_base = dataclasses.replace(config.mqtt, base_topic="x/%u")
    with pytest.raises(BrokerConfigError, match="contains %u or %c"):
        generate(dataclasses.replace(config, mqtt=odd_base), tmp_path)


def test_hashes_match_mosquitto_passwd(tmp_path: Path) -> None:
    """Our $7$ lines have mosquitto_passwd's shape, and we verify the lines it writes."""
    encoded = hash_password("secret", salt=b"\x01" * 12)
    kind, iterations, salt, digest = encoded.split("$")[1:]
    assert (kind, int(iterations)) == ("7", DEFAULT_ITERATIONS)
    assert len(base64.b64decode(salt)) == 12
    assert len(base64.b64decode(digest)) == 64
    assert verify_password("secret", encoded)
    assert not verify_password("Secret", encoded)
    tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    plain = tmp_path / "plain"
    plain.write_text("alice:w0nderland\n", encoding="utf-8")
    subprocess.run([tool, "-U", str(plain)], check=True, capture_output=True, timeout=10)
    line = plain.read_text(encoding="utf-8").strip()
    username, theirs = line.split(":", 1)
    assert username == "alice"
    assert theirs.startswith(f"$7${DEFAULT_ITERATIONS}$")
    assert verify_password("w0nderland", theirs)
    assert not verify_password("w0nderlan", theirs)
    assert not verify_password("x", "$9$junk")


def test_cli_prints_counts_and_paths_never_a_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The summary counts accounts, names files, says how the gateway logs in; no password."""
    out = tmp_path / "out"
    with capture_logs() as logs:
        code = main(["broker-config", "--config", str(DEMO), "--out", str(out)])
        again = main(["broker-config", "--config", str(DEMO), "--out", str(out), "--rotate", "k1"])
    printed = capsys.readouterr()
    assert (code, again) == (0, 0)
    assert "1 gateway, 12 operator, 4 checkpoint, 60 phone" in printed.out
    assert "77 new" in printed.out
    assert "1 rotated" in printed.out
    assert "time: " in printed.out
    assert "username_env" in printed.out
    assert "password_file" in printed.out
    assert "fill in certfile, keyfile" in printed.out
    everything = printed.out + printed.err + "\n".join(map(str, logs))
    secrets_seen = [p for p in read_passwords(out).values() if p in everything]
    assert secrets_seen == []


def test_cli_reports_problems_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad credentials file or an unknown --rotate is a usage error, nothing written."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "credentials.csv").write_text("who,what\n", encoding="utf-8")
    code = main(["broker-config", "--config", str(DEMO), "--out", str(out)])
    assert code == 2
    assert "not a credentials file" in capsys.readouterr().err
    assert not (out / "passwords").exists()


# ------------------------------------------------------------------ on a real mosquitto


def get(url: str) -> tuple[int, str]:
    """An HTTP GET's status and body, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[SecuredBroker]:
    """mosquitto loaded with what broker-config wrote for demo.toml; killed by pid after."""
    secured = SecuredBroker(tmp_path)
    secured.start()
    try:
        yield secured
    finally:
        secured.kill()


ALARMS_V01 = "alarmgw/out/village/v01/alarms"


@pytest.mark.broker
def test_gateway_over_tls_dispatches_a_panic_from_a_logged_in_phone(
    tmp_path: Path, broker: SecuredBroker
) -> None:
    """mqtts:// + tls_ca + the gateway's credentials; h001's panic reaches v01's operator."""

    async def scenario() -> None:
        config = broker.gateway_config(tmp_path)
        assert config.mqtt.tls
        async with (
            running(Gateway(config)) as gateway,
            logged_in(Client(broker, "op-village-v01", subscriptions=(ALARMS_V01,))) as room,
            logged_in(Client(broker, "h001")) as phone,
        ):
            assert gateway.traffic_link is not None
            await asyncio.wait_for(gateway.traffic_link.wait_connected(), 10)
            await phone.link.publish("alarmgw/in/phone/h001", panic(1))
            await room.wait_for(lambda: len(room.messages) >= 1)
            body = msgpack.unpackb(room.messages[0][1])
            assert (body["alarm_id"], body["household"]) == ("ph/h001/1", "h001")

    asyncio.run(scenario())


@pytest.mark.broker
def test_a_household_cannot_publish_as_another(tmp_path: Path, broker: SecuredBroker) -> None:
    """h001 on h002's topic: MQTT 5 PUBACK 0x87, 3.1.1 silently dropped; nothing dispatched."""

    async def scenario() -> None:
        config = broker.gateway_config(tmp_path)
        async with (
            running(Gateway(config)),
            logged_in(Client(broker, "op-village-v01", subscriptions=(ALARMS_V01,))) as room,
        ):
            async with logged_in(Client(broker, "h001", mqtt_version=MQTT_V5)) as phone:
                with pytest.raises(MqttPublishError) as refused:
                    await phone.link.publish("alarmgw/in/phone/h002", panic(1))
                assert refused.value.reason_code == 0x87
            async with logged_in(Client(broker, "h001", mqtt_version=MQTT_V311)) as old:
                await old.link.publish("alarmgw/in/phone/h002", panic(2))  # PUBACK as usual
            # The household's own topic still works, and is the only alarm.
            async with logged_in(Client(broker, "h001")) as phone:
                await phone.link.publish("alarmgw/in/phone/h001", panic(3))
            await room.wait_for(lambda: len(room.messages) >= 1)
            await asyncio.sleep(0.5)
            ids = [msgpack.unpackb(p)["alarm_id"] for _, p in room.messages]
            assert ids == ["ph/h001/3"]

    asyncio.run(scenario())


@pytest.mark.broker
def test_devices_cannot_acknowledge_and_operators_only_their_own_sink(
    tmp_path: Path, broker: SecuredBroker
) -> None:
    """A phone's or checkpoint's ack, or v02's ack for v01, is refused; v01's own goes through."""

    async def scenario() -> None:
        ack = msgpack.packb({"alarm_id": "ph/h001/1", "by": "x", "ts": 1.0})
        for username, topic in (
            ("h001", "alarmgw/ack/village/v01"),
            ("k1", "alarmgw/ack/village/v01"),
            ("op-village-v02", "alarmgw/ack/village/v01"),
            ("k1", "alarmgw/in/checkpoint/k2"),
            ("k1", "alarmgw/in/phone/k1"),  # the phone pattern is denied to non-phones
            ("op-village-v01", "alarmgw/in/phone/op-village-v01"),
            ("op-village-v01", "alarmgw/out/village/v01/alarms"),
        ):
            async with logged_in(Client(broker, username, mqtt_version=MQTT_V5)) as client:
                with pytest.raises(MqttPublishError) as refused:
                    await client.link.publish(topic, ack)
                assert refused.value.reason_code == 0x87, (username, topic)
        async with logged_in(Client(broker, "op-village-v01", mqtt_version=MQTT_V5)) as room:
            await room.link.publish("alarmgw/ack/village/v01", ack)
        async with logged_in(Client(broker, "k1", mqtt_version=MQTT_V5)) as camera:
            await camera.link.publish("alarmgw/in/checkpoint/k1", b"{}")

    asyncio.run(scenario())


@pytest.mark.broker
def test_an_operator_cannot_read_another_villages_alarms(
    tmp_path: Path, broker: SecuredBroker
) -> None:
    """v01's operator subscribed to all of out/#, state and availability hears only its own."""

    async def scenario() -> None:
        config = broker.gateway_config(tmp_path)
        everything = ("alarmgw/out/#", "alarmgw/in/#", "alarmgw/ack/#", "alarmgw/state")
        async with (
            running(Gateway(config)),
            logged_in(Client(broker, "op-village-v01", subscriptions=everything)) as v01,
            logged_in(Client(broker, "op-village-v02", subscriptions=(everything))) as v02,
            logged_in(Client(broker, "h001")) as h001,
            logged_in(Client(broker, "h021")) as h021,
        ):
            await h001.link.publish("alarmgw/in/phone/h001", panic(1))  # village v01
            await h021.link.publish("alarmgw/in/phone/h021", panic(1))  # village v02
            await v01.wait_for(lambda: any(t.endswith("/alarms") for t, _ in v01.messages))
            await v02.wait_for(lambda: any(t.endswith("/alarms") for t, _ in v02.messages))
            await asyncio.sleep(0.5)
        for room, own in ((v01, "v01"), (v02, "v02")):
            topics = {t for t, _ in room.messages}
            assert topics == {f"alarmgw/out/village/{own}/alarms", "alarmgw/state"}, topics

    asyncio.run(scenario())


@pytest.mark.broker
def test_a_wrong_password_is_refused_at_connect(broker: SecuredBroker) -> None:
    """Wrong password, unknown user, or none: refused at CONNECT on both listeners."""

    async def scenario() -> None:
        for client in (
            Client(broker, "h001", "not-the-password"),
            Client(broker, "h001", "not-the-password", tls=False),
            Client(broker, "h001", broker.passwords["h002"]),
        ):
            await client.link.start()
            try:
                await asyncio.sleep(0.3)
                assert not client.link.connected
            finally:
                await client.link.stop()
        # The plain loopback listener takes the right password, as production's 1883 does.
        async with logged_in(Client(broker, "h001", tls=False)):
            pass

    asyncio.run(scenario())
    log = broker.mosquitto.log()
    assert "not authorised" in log or "bad username or password" in log.lower(), log


@pytest.mark.broker
def test_gateway_with_a_wrong_password_never_becomes_ready_and_says_why(
    tmp_path: Path, broker: SecuredBroker
) -> None:
    """Refused at CONNACK, the gateway keeps retrying, /readyz stays false, the log says so."""

    async def scenario() -> list[MutableMapping[str, Any]]:
        config = broker.gateway_config(tmp_path, password="wrong")
        with capture_logs() as logs:
            gateway = Gateway(config)
            async with asyncio.timeout(20):
                async with anyio.create_task_group() as tg:
                    await tg.start(gateway.run)
                    await eventually(
                        lambda: sum(e["event"] == "mqtt.connect_refused" for e in logs) >= 2
                    )
                    assert gateway.link is not None
                    assert not gateway.link.connected
                    assert gateway.http is not None
                    url = f"http://127.0.0.1:{gateway.http.port}/readyz"
                    status, text = await asyncio.to_thread(get, url)
                    assert status == 503, text
                    assert "not connected: the broker refused the credentials" in text, text
                    assert "wrong" not in text  # the password itself is never shown
                    tg.cancel_scope.cancel()
        return logs

    logs = asyncio.run(scenario())
    refused = [e for e in logs if e["event"] == "mqtt.connect_refused"]
    assert refused
    reason = str(refused[0]["error"]).lower()
    assert (
        "bad user name or password" in reason or "not authorized" in reason or "0x86" in reason
    ), refused[0]
    # Said loudly, with what to check, and retried with backoff (the broker may be
    # given the new password file without restarting the gateway).
    assert {e["log_level"] for e in refused} == {"error"}
    assert "password_file" in str(refused[0]["hint"])
    assert not [e for e in logs if e["event"] == "mqtt.connect_failed"]


@pytest.mark.broker
def test_no_secret_in_the_brokers_or_gateways_logs(tmp_path: Path, broker: SecuredBroker) -> None:
    """After a dispatch and a refused login, no password from credentials.csv appears in a log."""

    async def scenario() -> list[MutableMapping[str, Any]]:
        config = broker.gateway_config(tmp_path)
        with capture_logs() as logs:
            async with (
                running(Gateway(config)),
                logged_in(Client(broker, "op-village-v01", subscriptions=(ALARMS_V01,))) as room,
                logged_in(Client(broker, "h001")) as phone,
            ):
                await phone.link.publish("alarmgw/in/phone/h001", panic(1))
                await room.wait_for(lambda: len(room.messages) >= 1)
        return logs

    logs = asyncio.run(scenario())
    text = "\n".join(map(str, logs)) + broker.mosquitto.log()
    assert [name for name, p in broker.passwords.items() if p in text] == []


@pytest.mark.broker
def test_example_mosquitto_conf_with_the_include_refuses_anonymous(tmp_path: Path) -> None:
    """config/examples/mosquitto.conf with its include_dir line enabled: no anonymous login,
    even on its loopback listener, and the gateway's credentials work there."""
    example = Path(__file__).resolve().parents[2] / "config" / "examples" / "mosquitto.conf"
    secured = SecuredBroker(tmp_path)  # for its generated files and certificates
    include = tmp_path / "conf.d"
    text = example.read_text(encoding="utf-8")
    port = secured.plain_port
    replacements = {
        "listener 1883 127.0.0.1": f"listener {port} 127.0.0.1",
        "persistence true": "persistence false",
        "persistence_location /var/lib/mosquitto/": f"persistence_location {tmp_path}/",
        "#include_dir /etc/mosquitto/alarmgw": f"include_dir {include}",
    }
    for old, new in replacements.items():
        assert old in text, old
        text = text.replace(old, new)
    conf = tmp_path / "production.conf"
    conf.write_text(
        text + f"\nuser {pwd.getpwuid(os.getuid()).pw_name}\nlog_dest file {tmp_path}/p.log\n",
        encoding="utf-8",
    )
    process = subprocess.Popen(
        [find_mosquitto(), "-c", str(conf)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_port_open(port), (tmp_path / "p.log").read_text()
        assert wait_port_open(secured.tls_port), (tmp_path / "p.log").read_text()
        pub = shutil.which("mosquitto_pub") or "/usr/bin/mosquitto_pub"
        anonymous = subprocess.run(
            [pub, "-h", "127.0.0.1", "-p", str(port), "-t", "alarmgw/in/phone/h001", "-m", "x"],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
        assert anonymous.returncode != 0
        gateway = subprocess.run(
            [pub, "-h", "127.0.0.1", "-p", str(port), "-t", "alarmgw/state", "-m", "x",
             "-u", "alarmgw-demo", "-P", secured.passwords["alarmgw-demo"], "-q", "1"],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
        assert gateway.returncode == 0, gateway.stderr
    finally:
        process.kill()
        process.wait(timeout=5)
