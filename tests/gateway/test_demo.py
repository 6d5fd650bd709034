"""`alarmgw demo`: broker, gateway, district simulator and view in one process; alarms
flow, busy ports are worked around, and Ctrl-C stops everything cleanly."""

from __future__ import annotations

import argparse
import io
import logging
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from gateway.demo import add_demo_parser, default_config, run_demo
from simulators.cli import drive_district
from tests.gateway.harness import DEMO

ROOT = Path(__file__).resolve().parents[2]


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_demo_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["demo", *argv])


@pytest.fixture
def busy() -> Iterator[tuple[int, int]]:
    """Two loopback ports held by someone else for the test's duration."""
    sockets = []
    for _ in range(2):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        sockets.append(sock)
    try:
        yield sockets[0].getsockname()[1], sockets[1].getsockname()[1]
    finally:
        for sock in sockets:
            sock.close()


def test_the_packaged_demo_config_is_found() -> None:
    """Without --config the demo runs config/examples/demo.toml."""
    assert default_config().resolve() == DEMO.resolve()


@pytest.mark.broker
def test_demo_runs_alarms_through_and_stops_by_itself(
    tmp_path: Path, busy: tuple[int, int]
) -> None:
    """With the config's broker and metrics ports taken, the demo says so, picks free
    ones, carries simulated alarms to dispatch, logs to its file only, and exits 0."""
    broker_port, http_port = busy
    text = DEMO.read_text(encoding="utf-8")
    text = text.replace('broker = "embedded"', f'broker = "embedded://127.0.0.1:{broker_port}"')
    text = text.replace('listen = "127.0.0.1:9108"', f'listen = "127.0.0.1:{http_port}"')
    config = tmp_path / "demo.toml"
    config.write_text(text, encoding="utf-8")
    log = tmp_path / "demo.log"
    structlog_before = structlog.get_config()
    handlers_before = list(logging.getLogger().handlers)
    out, err = io.StringIO(), io.StringIO()
    args = _args("--config", str(config), "--no-view", "--duration", "4", "--alarm-rate", "120",
                 "--seed", "3", "--log", str(log))  # fmt: skip
    assert run_demo(args, out, err, district=drive_district) == 0, err.getvalue()
    assert err.getvalue() == ""
    printed = out.getvalue()
    assert f"port {broker_port} is taken" in printed
    assert f"port {http_port} is taken" in printed
    assert f"logs       {log}" in printed
    found = re.search(r"([\d,]+) dispatches", printed.splitlines()[-1])
    assert found is not None
    assert int(found.group(1).replace(",", "")) > 0
    logged = log.read_text(encoding="utf-8")
    assert "alarm dispatched" in logged
    assert "Traceback" not in logged
    # Everything the demo changed for its run is put back.
    assert structlog.get_config() == structlog_before
    assert logging.getLogger().handlers == handlers_before


def test_a_port_asked_for_and_taken_fails_with_one_line(
    tmp_path: Path, busy: tuple[int, int]
) -> None:
    """`--port` names a port in use: one line on stderr pointing at the log, exit 1."""
    err = io.StringIO()
    log = tmp_path / "demo.log"
    args = _args("--port", str(busy[0]), "--http-port", "0", "--duration", "2", "--no-view",
                 "--log", str(log))  # fmt: skip
    assert run_demo(args, io.StringIO(), err, district=drive_district) == 1
    (line,) = err.getvalue().splitlines()
    assert line.startswith("alarmgw demo: failed: ")
    assert str(log) in line


def test_bad_config_is_a_usage_error(tmp_path: Path) -> None:
    """A configuration the loader refuses: every problem printed, exit 2."""
    config = tmp_path / "bad.toml"
    config.write_text("[district]\nid = 1\n", encoding="utf-8")
    err = io.StringIO()
    assert (
        run_demo(_args("--config", str(config)), io.StringIO(), err, district=drive_district) == 2
    )
    assert "refusing configuration" in err.getvalue()


@pytest.mark.broker
@pytest.mark.slow
def test_ctrl_c_stops_the_demo_cleanly(tmp_path: Path) -> None:
    """In its own process, without a terminal: alarms are printed as they arrive, and
    SIGINT stops broker, gateway and simulator with exit 0, a summary and no traceback."""
    log = tmp_path / "demo.log"
    code = (
        "import sys\n"
        "from gateway.demo import main\n"
        "from simulators.cli import drive_district\n"
        "sys.exit(main(sys.argv[1:], district=drive_district))\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code, "--port", "0", "--http-port", "0", "--alarm-rate", "120",
         "--duration", "30", "--log", str(log)],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        lines = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            line = process.stdout.readline().decode()
            lines.append(line)
            if " → " in line and " P" in line:  # an alarm line: "... #1 P1 panic ... → sink"
                break
        else:
            raise AssertionError("no alarm printed: " + "".join(lines))
        process.send_signal(signal.SIGINT)
        rest, errors = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    assert process.returncode == 0, errors.decode()
    assert b"Traceback" not in errors
    assert errors.decode().strip() == ""
    assert re.search(rb"demo: [\d,]+ events in", rest)
    assert "Traceback" not in log.read_text(encoding="utf-8")
