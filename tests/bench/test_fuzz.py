"""The fuzzer (`python -m bench.fuzz`): its mutators, its bookkeeping, its replay and a short run.

The short run is issue 16's "short run in the test suite": about 30 s over every
decoder in protocols/, and not one exception may escape them.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from bench import fuzz
from bench.fuzz import (
    MAX_INPUT,
    MUTATORS,
    TARGETS,
    Pool,
    Target,
    Violation,
    chunks,
    inputs,
    main,
    mutate,
    run,
)
from protocols.receiver import DC4, ReceiverDecoder, ReceiverItem, build_record

# The fuzzer's first finding (issue 16): a JSON payload may spell a lone surrogate
# ("\ud800"); the decoders accepted the string and the project's own MessagePack
# encoder then refused it. protocols/payloads.py now refuses it as bad_encoding.
SURROGATE_ACK = b'{"alarm_id": "\\ud800", "by": "op-7", "ts": 1.0}'


def _pool() -> Pool:
    items = [*TARGETS["receiver.stream"].corpus()[:4], *TARGETS["payloads.phone"].corpus()[:4]]
    return Pool(items, tokens=(b"\x00", DC4, b"{"))


def _raising(name: str, error: Exception) -> Target:
    """A target whose decoder "crashes" on any input holding 0xff."""

    def check(data: bytes) -> list[str]:
        if b"\xff" in data:
            raise error
        return ["ok:fine"]

    return Target(name, "raises on 0xff", check, lambda: [b"abc", b"0123456789"])


# -- mutators ---------------------------------------------------------------------------
@pytest.mark.parametrize("mutator", MUTATORS, ids=lambda m: m.__name__)
def test_each_mutator_changes_its_input_and_stays_bounded(mutator: fuzz.Mutator) -> None:
    """Every mutator changes a non-empty (or empty) input and never exceeds MAX_INPUT."""
    pool = _pool()
    rng = random.Random(1)
    for data in [b"", b"\x00", b"a", *pool.items]:
        for _ in range(50):
            out = mutator(rng, data, pool)
            assert out != data, (mutator.__name__, data)
            assert len(out) <= MAX_INPUT


@pytest.mark.parametrize("mutator", MUTATORS, ids=lambda m: m.__name__)
def test_each_mutator_is_seeded(mutator: fuzz.Mutator) -> None:
    """The same seed gives the same mutations."""
    pool = _pool()
    data = pool.items[0]
    first = [mutator(random.Random(seed), data, pool) for seed in range(20)]
    again = [mutator(random.Random(seed), data, pool) for seed in range(20)]
    assert first == again
    assert len(set(first)) > 1


def test_havoc_on_the_longest_input_stays_bounded() -> None:
    """Stacked mutations of an input already MAX_INPUT long stay within MAX_INPUT."""
    pool = Pool([bytes(MAX_INPUT)])
    rng = random.Random(2)
    assert all(len(mutate(rng, bytes(MAX_INPUT), pool)) <= MAX_INPUT for _ in range(200))


def test_chunks_are_the_bytes_in_non_empty_reads() -> None:
    """A chunking is never an empty read (that would end the stream) and loses nothing."""
    rng = random.Random(3)
    for size in (0, 1, 2, 5, 300, 3000):
        data = bytes(range(256)) * (size // 256) + bytes(size % 256)
        for _ in range(30):
            reads = chunks(rng, data)
            assert b"".join(reads) == data
            assert all(reads)


@pytest.mark.parametrize("name", list(TARGETS))
def test_inputs_are_seeded(name: str) -> None:
    """The same seed feeds a target the same inputs; another seed, others."""
    target = TARGETS[name]
    assert inputs(target, 7, 150) == inputs(target, 7, 150)
    assert inputs(target, 7, 150) != inputs(target, 8, 150)


# -- targets ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(TARGETS))
def test_every_corpus_item_passes_its_check(name: str) -> None:
    """The valid corpus raises nothing and fails no invariant; some of it is accepted."""
    target = TARGETS[name]
    labels = [label for data in target.corpus() for label in target.check(data)]
    assert any(label.startswith("ok:") for label in labels)


def test_a_decoder_that_answers_twice_differently_is_a_violation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An invariant that fails raises Violation: two entry points that must agree don't."""
    valid = TARGETS["payloads.phone"].corpus()[0]
    monkeypatch.setattr(fuzz, "decode_phone_fields", lambda data: (0, 0.0, 1, 100, 0, 1))
    with pytest.raises(Violation, match="decode_phone_fields decodes differently"):
        TARGETS["payloads.phone"].check(valid)


def test_a_decoder_that_reads_each_read_as_a_record_is_a_violation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """STYLE.md's counter-example, a decoder that treats a read as a message, is caught."""

    class PerRead(ReceiverDecoder):
        def receive_data(self, data: bytes | bytearray | memoryview) -> list[ReceiverItem]:
            return super().receive_data(bytes(data) + DC4 if data else data)

    monkeypatch.setattr(fuzz, "ReceiverDecoder", PerRead)
    streams = [build_record("01", str(line), "1234", 1, 120, 1, 1) * 3 for line in range(1, 30)]
    messages = []
    for stream in streams:
        try:
            TARGETS["receiver.stream"].check(stream)
        except Violation as exc:
            messages.append(str(exc))
    assert len(messages) > len(streams) // 2
    assert all("chunking changes the items" in m for m in messages)


def test_a_json_lone_surrogate_is_refused_or_re_encodable() -> None:
    """The fuzzer's first finding passes its target's checks now that it is refused."""
    TARGETS["payloads.ack"].check(SURROGATE_ACK)


# -- running, reporting, replaying --------------------------------------------------------
def test_an_exception_is_caught_saved_and_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A target that raises: the run goes on, counts it, saves the input and says how to replay."""
    target = _raising("fake.raises", ZeroDivisionError("boom"))
    assert main(["--inputs", "400", "--out", str(tmp_path)], targets=[target]) == 1
    out = capsys.readouterr().out
    assert "EXCEPTION in fake.raises: ZeroDivisionError: boom" in out
    row = next(line for line in out.splitlines() if line.startswith("| fake.raises"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1] == "400"
    assert int(cells[4]) > 0  # exceptions
    assert int(cells[3]) + int(cells[4]) == 400  # accepted + exceptions

    results = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    (finding,) = results["findings"]
    assert finding["kind"] == "exception"
    assert finding["type"] == "ZeroDivisionError"
    assert "test_fuzz.py" in finding["where"]
    assert finding["count"] == results["targets"][0]["exceptions"]
    saved = [Path(p) for p in finding["saved"]]
    assert 1 <= len(saved) <= 3
    for path in saved:
        assert b"\xff" in path.read_bytes()
        text = path.with_suffix(".txt").read_text(encoding="utf-8")
        assert repr(path.read_bytes()) in text
        assert f"--replay {path} --target fake.raises" in text
        assert "ZeroDivisionError: boom" in text


def test_replay_reproduces_a_saved_exception(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--replay FILE --target NAME` runs the one input again and shows its traceback."""
    target = _raising("fake.raises", ZeroDivisionError("boom"))
    crash, fine = tmp_path / "crash.bin", tmp_path / "fine.bin"
    crash.write_bytes(b"a\xffb")
    fine.write_bytes(b"ab")
    assert main(["--replay", str(crash), "--target", "fake.raises"], targets=[target]) == 1
    assert "ZeroDivisionError: boom" in capsys.readouterr().out
    assert main(["--replay", str(fine), "--target", "fake.raises"], targets=[target]) == 0
    assert "ok:fine x1" in capsys.readouterr().out


def test_replay_of_a_real_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A receiver stream replays through the real decoder and lists its outcomes."""
    path = tmp_path / "records.bin"
    path.write_bytes(build_record("01", "100", "1234", 1, 121, 1, 1) * 2 + b"junk" + DC4)
    assert main(["--replay", str(path), "--target", "receiver.stream"]) == 0
    out = capsys.readouterr().out
    assert "ok:ReceiverEvent x2" in out
    assert "rej:bad_frame x1" in out


def test_a_violation_is_reported_apart_from_exceptions(tmp_path: Path) -> None:
    """A failed invariant is counted as a violation, with its own signature."""
    target = _raising("fake.violates", Violation("decodes differently", "detail"))
    report = run([target], inputs=300, out=tmp_path)
    (stats,) = report.targets
    assert stats.exceptions == 0
    assert stats.violations > 0
    assert report.failures == stats.violations
    (finding,) = report.findings.values()
    assert (finding.kind, finding.type) == ("violation", "Violation")


def test_inputs_and_seconds_budgets_split_over_targets(tmp_path: Path) -> None:
    """`inputs` is the total, split evenly; `seconds` bounds the time instead."""
    targets = [_raising("fake.a", ValueError()), _raising("fake.b", ValueError())]
    report = run(targets, inputs=101, out=tmp_path)
    assert [t.inputs for t in report.targets] == [51, 50]
    timed = run(targets, inputs=None, seconds=0.2, out=tmp_path)
    assert all(t.inputs > 0 for t in timed.targets)
    assert timed.seconds < 1.0


def test_usage_errors() -> None:
    """Replay needs a known target; unknown targets are refused by name."""
    with pytest.raises(SystemExit):
        main(["--replay", "x.bin"])
    with pytest.raises(SystemExit):
        main(["--replay", "x.bin", "--target", "nope"])
    with pytest.raises(SystemExit):
        main(["--targets", "nope"])


@pytest.mark.slow
def test_a_short_run_over_every_decoder_raises_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """About 30 s over all targets: no exception escapes a decoder, no check fails."""
    code = main(["--seconds", "30", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    results = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert {t["name"] for t in results["targets"]} == set(TARGETS)
    for target in results["targets"]:
        assert target["exceptions"] == 0, out
        assert target["inputs"] > 200, target
        assert target["accepted"] > 0, target
        assert target["rejected"], target
    assert results["findings"] == [], out
    assert code == 0
    assert out.splitlines()[0].startswith("| target")
