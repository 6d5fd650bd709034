"""The contract's topic tree (CONTRACT.md): exact strings, parsing, and every invalid id class."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.reasons import Reason, Rejected
from protocols.topics import (
    DEFAULT_BASE,
    MAX_BASE_LEN,
    MAX_ID_LEN,
    AckTopic,
    IngressKind,
    IngressTopic,
    RequestTopic,
    Topics,
    validate_base,
    validate_id,
)

T = Topics()


def _rejected(result: object, reason: Reason) -> Rejected:
    assert isinstance(result, Rejected), result
    assert result.reason is reason, result
    return result


def test_default_topics_are_the_contract_strings() -> None:
    """Under the default base every topic is exactly as CONTRACT.md writes it."""
    assert DEFAULT_BASE == "alarmgw"
    assert T.base == "alarmgw"
    assert T.phone_in("h-12") == "alarmgw/in/phone/h-12"
    assert T.checkpoint_in("kk-01") == "alarmgw/in/checkpoint/kk-01"
    assert T.alarms("village", "dongshan") == "alarmgw/out/village/dongshan/alarms"
    assert T.passes("township", "t1") == "alarmgw/out/township/t1/passes"
    assert T.ack("village", "dongshan") == "alarmgw/ack/village/dongshan"
    assert T.state == "alarmgw/state"
    assert T.availability("h-12") == "alarmgw/availability/h-12"
    assert T.deadletter == "alarmgw/deadletter"
    assert T.commands("checkpoint", "k1") == "alarmgw/out/checkpoint/k1/commands"
    assert T.request("interception", "end") == "alarmgw/interception/request/end"
    assert T.response("interception", "end") == "alarmgw/interception/response/end"
    assert T.subscriptions() == (
        "alarmgw/in/phone/+",
        "alarmgw/in/checkpoint/+",
        "alarmgw/ack/+/+",
        "alarmgw/interception/request/+",
    )
    assert T.parse("alarmgw/interception/request/list") == RequestTopic("interception", "list")
    assert T.parse("alarmgw/interception/request/a/b").reason is Reason.BAD_TOPIC  # type: ignore[union-attr]
    assert repr(T) == "Topics('alarmgw')"


def test_multi_level_base() -> None:
    """A base may have several levels; every topic hangs under it."""
    topics = Topics("city/district7/alarmgw")
    assert topics.phone_in("东山村-03") == "city/district7/alarmgw/in/phone/东山村-03"
    assert topics.subscriptions()[2] == "city/district7/alarmgw/ack/+/+"
    assert topics.parse("city/district7/alarmgw/in/phone/东山村-03") == IngressTopic(
        IngressKind.PHONE, "东山村-03"
    )
    _rejected(topics.parse("alarmgw/in/phone/h"), Reason.BAD_TOPIC)


def test_parse_ingress_and_ack() -> None:
    """The three subscribed trees parse to their ids."""
    assert T.parse("alarmgw/in/phone/h-12") == IngressTopic(IngressKind.PHONE, "h-12")
    assert T.parse("alarmgw/in/checkpoint/卡口 7") == IngressTopic(IngressKind.CHECKPOINT, "卡口 7")
    assert T.parse("alarmgw/ack/village/dongshan") == AckTopic("village", "dongshan")


@pytest.mark.parametrize(
    "topic",
    [
        "",
        "alarmgw",
        "alarmgw/in/phone",  # no id level at all
        "alarmgw/in/phone/a/b",
        "alarmgw/in/checkpoint/a/",
        "alarmgw/in/other/x",
        "alarmgw/out/village/v1/alarms",
        "alarmgw/state",
        "alarmgw/deadletter",
        "alarmgw/availability/h",
        "alarmgw/ack/village",
        "alarmgw/ack/village/v1/extra",
        "alarmgw2/in/phone/h",
        "other/in/phone/h",
        "/alarmgw/in/phone/h",
        "ALARMGW/in/phone/h",
    ],
)
def test_topics_outside_the_tree_are_bad_topic(topic: str) -> None:
    """A topic that is not one of the three ingress shapes is BAD_TOPIC with its bytes."""
    result = _rejected(T.parse(topic), Reason.BAD_TOPIC)
    assert result.raw == topic.encode()
    assert result.detail


@pytest.mark.parametrize(
    ("topic", "detail"),
    [
        ("alarmgw/in/phone/", "phone id is empty"),
        ("alarmgw/in/phone/+", "phone id contains the MQTT wildcard '+'"),
        ("alarmgw/in/checkpoint/#", "checkpoint id contains the MQTT wildcard '#'"),
        ("alarmgw/in/phone/h\x00", "phone id contains the non-printable character U+0000"),
        ("alarmgw/in/phone/ h", "phone id has leading or trailing whitespace"),
        ("alarmgw/ack//v1", "sink kind is empty"),
        ("alarmgw/ack/village/", "sink id is empty"),
        ("alarmgw/ack/vil+/v1", "sink kind contains the MQTT wildcard '+'"),
        ("alarmgw/ack/village/v\x7f", "sink id contains the non-printable character U+007F"),
    ],
)
def test_bad_ids_in_the_tree_are_bad_id(topic: str, detail: str) -> None:
    """A topic of the right shape with an id that could never be built is BAD_ID."""
    result = _rejected(T.parse(topic), Reason.BAD_ID)
    assert result.detail == detail
    assert result.raw == topic.encode()


def test_parse_keeps_unpaired_surrogates_in_raw() -> None:
    """A topic holding a lone surrogate is rejected with its bytes, never an exception."""
    topic = "alarmgw/in/phone/h\udcff"
    result = _rejected(T.parse(topic), Reason.BAD_ID)
    assert result.raw == b"alarmgw/in/phone/h\xed\xb3\xbf"
    _rejected(T.parse("\ud800"), Reason.BAD_TOPIC)


# ---------------------------------------------------------------- validate_id


@pytest.mark.parametrize(
    "value",
    ["h", "h-0001", "东山村-03", "苏A12345", "a b", "village_1.east", "x" * MAX_ID_LEN, "$x", "é"],
)
def test_valid_ids(value: str) -> None:
    """Printable ids, Chinese included, with interior spaces, are valid."""
    assert validate_id(value) is None


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("", "is empty"),
        ("x" * (MAX_ID_LEN + 1), f"is longer than {MAX_ID_LEN} characters ({MAX_ID_LEN + 1})"),
        ("a/b", "contains the topic level separator '/'"),
        ("a+", "contains the MQTT wildcard '+'"),
        ("#", "contains the MQTT wildcard '#'"),
        ("a\x00b", "contains the non-printable character U+0000"),
        ("a\nb", "contains the non-printable character U+000A"),
        ("a\tb", "contains the non-printable character U+0009"),
        ("a\x7f", "contains the non-printable character U+007F"),
        ("a\x85", "contains the non-printable character U+0085"),  # C1 NEL
        ("a\x9f", "contains the non-printable character U+009F"),
        ("a\u200bb", "contains the non-printable character U+200B"),  # zero-width space
        ("a\u3000b", "contains the non-printable character U+3000"),  # ideographic space
        ("a\ud800", "contains the non-printable character U+D800"),
        ("a\uffff", "contains the non-printable character U+FFFF"),
        (" a", "has leading or trailing whitespace"),
        ("a ", "has leading or trailing whitespace"),
    ],
)
def test_invalid_ids(value: str, why: str) -> None:
    """Each class of invalid id is refused with its reason."""
    assert validate_id(value) == why


@pytest.mark.parametrize("base", ["alarmgw", "a/b/c", "区/alarmgw", "x" * 64 + "/" + "y" * 64])
def test_valid_bases(base: str) -> None:
    """Bases of one or several printable levels are valid."""
    assert validate_base(base) is None
    assert Topics(base).base == base


@pytest.mark.parametrize(
    ("base", "why"),
    [
        ("", "is empty"),
        ("/alarmgw", "has an empty level (leading, trailing or double '/')"),
        ("alarmgw/", "has an empty level (leading, trailing or double '/')"),
        ("a//b", "has an empty level (leading, trailing or double '/')"),
        ("$SYS", "starts with '$', which brokers reserve"),
        ("a/+", "level '+' contains the MQTT wildcard '+'"),
        ("a/#", "level '#' contains the MQTT wildcard '#'"),
        ("a/\x00", "level '\\x00' contains the non-printable character U+0000"),
        (" a", "level ' a' has leading or trailing whitespace"),
        ("a/" + "x" * 65, f"level '{'x' * 65}' is longer than 64 characters (65)"),
        ("a/" * 128 + "a", f"is longer than {MAX_BASE_LEN} characters (257)"),
    ],
)
def test_invalid_bases(base: str, why: str) -> None:
    """Each class of invalid base is refused with its reason, and Topics refuses it."""
    assert validate_base(base) == why
    with pytest.raises(ValueError, match="invalid base topic"):
        Topics(base)


@pytest.mark.parametrize("bad", ["", "a/b", "+", "#", " x", "x\x00"])
def test_builders_raise_on_invalid_ids(bad: str) -> None:
    """Building a topic from an invalid id is our own misuse: ValueError."""
    builders: list[Callable[[], str]] = [
        lambda: T.phone_in(bad),
        lambda: T.checkpoint_in(bad),
        lambda: T.alarms(bad, "v1"),
        lambda: T.alarms("village", bad),
        lambda: T.passes(bad, "v1"),
        lambda: T.passes("village", bad),
        lambda: T.ack(bad, "v1"),
        lambda: T.ack("village", bad),
        lambda: T.availability(bad),
    ]
    for build in builders:
        with pytest.raises(ValueError, match="invalid"):
            build()


# ---------------------------------------------------------------- properties

valid_ids = st.text(
    st.characters(exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"), codec="utf-8"),
    min_size=1,
    max_size=MAX_ID_LEN,
).filter(lambda s: validate_id(s) is None)
valid_bases = (
    st.lists(valid_ids, min_size=1, max_size=3)
    .map("/".join)
    .filter(lambda b: validate_base(b) is None)
)


@given(valid_bases, valid_ids, valid_ids)
def test_build_then_parse_round_trips(base: str, first: str, second: str) -> None:
    """Every topic built from valid ids parses back to those ids."""
    topics = Topics(base)
    assert topics.parse(topics.phone_in(first)) == IngressTopic(IngressKind.PHONE, first)
    assert topics.parse(topics.checkpoint_in(first)) == IngressTopic(IngressKind.CHECKPOINT, first)
    assert topics.parse(topics.ack(first, second)) == AckTopic(first, second)
    for egress in (topics.alarms(first, second), topics.passes(first, second), topics.state):
        _rejected(topics.parse(egress), Reason.BAD_TOPIC)


@given(st.text(max_size=MAX_ID_LEN), st.sampled_from("+#/"), st.integers(0, MAX_ID_LEN))
def test_wildcards_and_separators_are_never_valid(text: str, char: str, at: int) -> None:
    """An id holding `+`, `#` or `/` anywhere is always refused."""
    value = text[:at] + char + text[at:]
    assert validate_id(value) is not None
    assert validate_base("alarmgw/" + value.replace("/", "+")) is not None


@given(st.text(max_size=200))
def test_parse_never_raises_and_never_yields_a_bad_id(suffix: str) -> None:
    """Any topic parses to a valid id or a Rejected; accepted ids pass validate_id."""
    prefixes = (
        "",
        "alarmgw/in/phone/",
        "alarmgw/in/checkpoint/",
        "alarmgw/ack/",
        "alarmgw/interception/request/",
    )
    for prefix in prefixes:
        result = T.parse(prefix + suffix)
        if isinstance(result, IngressTopic):
            assert validate_id(result.device_id) is None
        elif isinstance(result, AckTopic):
            assert validate_id(result.sink_kind) is None
            assert validate_id(result.sink_id) is None
        elif isinstance(result, RequestTopic):
            assert validate_id(result.op) is None
            assert T.request(result.api, result.op) == prefix + suffix
        else:
            assert result.reason in {Reason.BAD_TOPIC, Reason.BAD_ID}


@given(st.text(min_size=1, max_size=MAX_ID_LEN))
def test_validate_id_agrees_with_its_definition(value: str) -> None:
    """validate_id accepts exactly the printable, wildcard-free, untrimmed-free ids."""
    expected = value.isprintable() and not set(value) & set("+#/") and value == value.strip()
    assert (validate_id(value) is None) == expected
