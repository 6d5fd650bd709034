"""`alarmgw decode`: what a field technician sees for a capture."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from gateway.cli import main
from protocols.payloads import encode

CAPTURES = Path(__file__).resolve().parents[2] / "docs" / "captures"


def _lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


def test_contact_id_decodes_and_says_what_it_means(capsys: pytest.CaptureFixture[str]) -> None:
    """A valid message prints its fields and meaning; exit 0."""
    assert main(["decode", "contact-id", "5678181120010019"]) == 0
    (record,) = _lines(capsys.readouterr().out)
    assert record["item"] == "contact_id"
    assert record["account"] == "5678"
    assert record["code"] == 120
    assert record["meaning"] == "panic"
    assert record["priority"] == 1


def test_contact_id_rejection_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    """A bad checksum is printed as a rejection with its reason; exit 1."""
    assert main(["decode", "contact-id", "5678181120010019", "5678181120010010"]) == 1
    good, bad = _lines(capsys.readouterr().out)
    assert good["item"] == "contact_id"
    assert bad == {
        "item": "rejected",
        "reason": "bad_checksum",
        "raw": "5678181120010010",
        "detail": bad["detail"],
    }


def test_receiver_capture(capsys: pytest.CaptureFixture[str]) -> None:
    """The shipped receiver capture: heartbeats, events, and one bad qualifier."""
    assert main(["decode", "receiver", str(CAPTURES / "receiver.bin")]) == 1
    records = _lines(capsys.readouterr().out)
    assert [r["item"] for r in records] == [
        "heartbeat",
        "event",
        "event",
        "event",
        "rejected",
        "heartbeat",
    ]
    assert records[1]["meaning"] == "duress"
    assert records[1]["account"] == "1234"
    assert records[4]["reason"] == "bad_qualifier"


def test_frames_capture_decodes_payloads_and_drops_the_corrupted_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two good frames and their payloads; the corrupted third is a bad_crc, never an event."""
    assert main(["decode", "frames", str(CAPTURES / "frames.bin")]) == 1
    records = _lines(capsys.readouterr().out)
    assert [r["item"] for r in records] == ["data", "payload", "data", "payload", "rejected"]
    assert records[1]["household"] == "h0101"
    assert records[3]["plate"] == "苏A12345"
    assert records[4]["reason"] == "bad_crc"


def test_payload_from_stdin_with_topic(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A JSON payload on stdin, typed by its topic."""
    body = b'{"v": 1, "seq": 3, "ts": 1.5, "q": 1, "code": 110, "zone": 2}'
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(body)))
    assert main(["decode", "payload", "-", "--topic", "alarmgw/in/phone/h7"]) == 0
    (record,) = _lines(capsys.readouterr().out)
    assert record["household"] == "h7"
    assert record["meaning"] == "fire"


def test_payload_rejections(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Missing keys and bad topics are rejections with their reasons."""
    msg = tmp_path / "m.bin"
    msg.write_bytes(encode({"v": 1, "seq": 3, "ts": 1.5, "q": 1, "zone": 2}))
    assert main(["decode", "payload", str(msg), "--topic", "alarmgw/in/phone/h7"]) == 1
    assert main(["decode", "payload", str(msg), "--topic", "alarmgw/in/phone/h+"]) == 1
    missing, bad_id = _lines(capsys.readouterr().out)
    assert missing["reason"] == "missing_key"
    assert bad_id["reason"] == "bad_id"


def test_payload_without_topic_prints_the_map(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --topic the payload is decoded as a map."""
    msg = tmp_path / "m.bin"
    msg.write_bytes(encode({"alarm_id": "x", "by": "op", "ts": 2.0}))
    assert main(["decode", "payload", str(msg)]) == 0
    assert _lines(capsys.readouterr().out)[0]["map"] == {"alarm_id": "x", "by": "op", "ts": 2.0}


def test_ack_payload_by_topic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An ack topic decodes the payload as an acknowledgement."""
    msg = tmp_path / "a.json"
    msg.write_text('{"alarm_id": "ph/h1/3", "by": "wang", "ts": 10.0}')
    assert main(["decode", "payload", str(msg), "--topic", "alarmgw/ack/village/v1"]) == 0
    assert _lines(capsys.readouterr().out)[0]["by"] == "wang"


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Unknown subcommands, two files, and unreadable files are usage errors."""
    assert main(["decode", "nonsense", "x"]) == 2
    assert main(["decode", "receiver", "a", "b"]) == 2
    assert main(["decode", "receiver", str(tmp_path / "missing.bin")]) == 2
    assert "missing.bin" in capsys.readouterr().err
