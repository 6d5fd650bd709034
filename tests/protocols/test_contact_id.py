"""Contact ID: golden messages from PROTOCOLS.md, the checksum rule, family policy, round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.contact_id import (
    ContactId,
    Family,
    Qualifier,
    build_contact_id,
    checksum_char,
    family,
    parse_contact_id,
)
from protocols.reasons import Reason, Rejected
from tests.strategies import contact_ids

# PROTOCOLS.md, "Contact ID", worked examples (valid).
GOLDEN_VALID = [
    ("5678181120010019", ContactId("5678", 18, Qualifier.NEW, 120, 1, 1)),  # panic zone 1
    ("5678183120010017", ContactId("5678", 18, Qualifier.RESTORE, 120, 1, 1)),  # its restore
    ("567818112101012B", ContactId("5678", 18, Qualifier.NEW, 121, 1, 12)),  # duress user 12
    ("5678181602000001", ContactId("5678", 18, Qualifier.NEW, 602, 0, 0)),  # periodic test
    ("BEEF181110010049", ContactId("BEEF", 18, Qualifier.NEW, 110, 1, 4)),  # B-F account
    ("567818112001014F", ContactId("5678", 18, Qualifier.NEW, 120, 1, 14)),  # checksum 15
]

# PROTOCOLS.md worked examples (invalid), then one per remaining reason.
GOLDEN_INVALID = [
    ("5678181120010010", Reason.BAD_CHECKSUM),
    ("12A4181120010015", Reason.BAD_CHARACTER),  # digit A never occurs
    ("567818112001001", Reason.BAD_LENGTH),  # 15 characters
    ("5678182120010018", Reason.BAD_QUALIFIER),  # qualifier 2
    ("56781811200100190", Reason.BAD_LENGTH),  # 17 characters
    ("", Reason.BAD_LENGTH),
    ("5678171120010010", Reason.BAD_MESSAGE_TYPE),  # another Ademco format
    ("56781B1120010010", Reason.BAD_MESSAGE_TYPE),  # not decimal
    ("5678181099010010", Reason.BAD_EVENT_CODE),  # below 100
    ("56781811B0010010", Reason.BAD_EVENT_CODE),  # hex event code
    ("56781811200B0010", Reason.BAD_CHARACTER),  # hex group
    ("5678181120010B10", Reason.BAD_CHARACTER),  # hex zone
    ("567818112001001A", Reason.BAD_CHARACTER),  # A as checksum
    ("5678181120010a19", Reason.BAD_CHARACTER),
    ("12a4181120010015", Reason.BAD_CHARACTER),  # lower-case a is still A
    ("56 8181120010019", Reason.BAD_CHARACTER),
]


@pytest.mark.parametrize(("message", "expected"), GOLDEN_VALID)
def test_golden_valid_messages_parse_as_str_and_bytes(message: str, expected: ContactId) -> None:
    """Each worked example parses, from str and from bytes, to its fields."""
    assert parse_contact_id(message) == expected
    assert parse_contact_id(message.encode("ascii")) == expected


@pytest.mark.parametrize(("message", "expected"), GOLDEN_VALID)
def test_golden_valid_messages_rebuild_byte_for_byte(message: str, expected: ContactId) -> None:
    """Building a worked example's fields gives the manual's exact text (not only a round trip)."""
    assert expected.text == message
    assert (
        build_contact_id(
            expected.account,
            expected.qualifier,
            expected.code,
            expected.group,
            expected.zone,
            message_type=expected.message_type,
        )
        == message
    )


@pytest.mark.parametrize(("message", "reason"), GOLDEN_INVALID)
def test_invalid_messages_are_rejected_with_their_reason(message: str, reason: Reason) -> None:
    """An invalid message is a Rejected with the precise reason and the input bytes as raw."""
    for given_as in (message, message.encode("ascii")):
        result = parse_contact_id(given_as)
        assert isinstance(result, Rejected)
        assert result.reason is reason
        assert result.raw == message.encode("ascii")
        assert result.detail


def test_content_is_checked_before_the_checksum() -> None:
    """'12A4...' also fails the sum, but the precise reason (the A) wins."""
    result = parse_contact_id("12A4181120010015")
    assert isinstance(result, Rejected)
    assert result.reason is Reason.BAD_CHARACTER


def test_message_type_98_is_accepted() -> None:
    """Message type 98 is Contact ID too (PROTOCOLS.md)."""
    text = build_contact_id("5678", Qualifier.NEW, 120, 1, 1, message_type=98)
    assert text[4:6] == "98"
    assert parse_contact_id(text) == ContactId("5678", 98, Qualifier.NEW, 120, 1, 1)


def test_lower_case_hex_is_accepted_and_normalised() -> None:
    """Lower-case b-f in account and checksum read as B-F; raw keeps the original bytes."""
    assert parse_contact_id("beef181110010049") == ContactId("BEEF", 18, Qualifier.NEW, 110, 1, 4)
    assert parse_contact_id(b"567818112101012b") == ContactId("5678", 18, Qualifier.NEW, 121, 1, 12)


def test_bad_bytes_are_rejected_not_raised() -> None:
    """Non-ASCII bytes and characters are BAD_CHARACTER; raw is the exact input."""
    result = parse_contact_id(b"56\xff8181120010019")
    assert isinstance(result, Rejected)
    assert result.reason is Reason.BAD_CHARACTER
    assert result.raw == b"56\xff8181120010019"
    text = "56\u00b28" + "181120010019"
    result = parse_contact_id(text)
    assert isinstance(result, Rejected)
    assert result.reason is Reason.BAD_CHARACTER
    assert result.raw == text.encode("utf-8")


def test_lone_surrogate_in_str_does_not_raise() -> None:
    """A str with a lone surrogate (undecodable peer text) is still a Rejected value."""
    result = parse_contact_id("56\udcff8181120010019")
    assert isinstance(result, Rejected)
    assert result.reason is Reason.BAD_CHARACTER


def test_bytearray_input_is_accepted() -> None:
    """A bytearray (as read from a buffer) parses like bytes."""
    assert isinstance(parse_contact_id(bytearray(b"5678181120010019")), ContactId)


def test_parse_of_a_non_text_is_misuse() -> None:
    """Passing something that is neither str nor bytes is a TypeError (our API misused)."""
    with pytest.raises(TypeError):
        parse_contact_id(5678181120010019)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("first15", "expected"),
    [
        ("567818112001001", "9"),
        ("567818112001014", "F"),  # need 15 is sent as F
        ("123418113001019", "0"),  # need 10 is sent as 0
        ("567818112101012", "B"),
    ],
)
def test_checksum_char_follows_the_rule(first15: str, expected: str) -> None:
    """need = 15 - (sum mod 15); 10 is sent as '0' and 15 as 'F'."""
    assert checksum_char(first15) == expected


@pytest.mark.parametrize(
    ("first15", "error"),
    [
        ("56781811200100", ValueError),
        ("5678181120010019", ValueError),
        ("56A818112001001", ValueError),
        ("beef18111001004", ValueError),  # builders take canonical upper case only
        (b"567818112001001", TypeError),
    ],
)
def test_checksum_char_misuse_raises(first15: object, error: type[Exception]) -> None:
    """A wrong length, a character outside 0-9 B-F, or a non-str is misuse."""
    with pytest.raises(error):
        checksum_char(first15)  # type: ignore[arg-type]


def test_the_sum_cannot_catch_transposed_digits() -> None:
    """Documented limitation: swapping two digits keeps the sum, so the message still parses."""
    swapped = "6578181120010019"  # "5678..." with the first two account digits swapped
    assert parse_contact_id(swapped) == ContactId("6578", 18, Qualifier.NEW, 120, 1, 1)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"account": "12A4"}, ValueError),
        ({"account": "123"}, ValueError),
        ({"account": "12345"}, ValueError),
        ({"account": "beef"}, ValueError),
        ({"account": 1234}, TypeError),
        ({"qualifier": 2}, ValueError),
        ({"qualifier": True}, TypeError),
        ({"qualifier": "1"}, TypeError),
        ({"code": 99}, ValueError),
        ({"code": 1000}, ValueError),
        ({"code": 120.0}, TypeError),
        ({"code": True}, TypeError),
        ({"group": 100}, ValueError),
        ({"group": -1}, ValueError),
        ({"zone": 1000}, ValueError),
        ({"message_type": 17}, ValueError),
        ({"message_type": 18.0}, TypeError),
    ],
)
def test_build_contact_id_misuse_raises(kwargs: dict[str, object], error: type[Exception]) -> None:
    """Every field out of its domain raises: building is our API, not peer input."""
    fields: dict[str, object] = {
        "account": "5678",
        "qualifier": Qualifier.NEW,
        "code": 120,
        "group": 1,
        "zone": 1,
        "message_type": 18,
    }
    fields.update(kwargs)
    with pytest.raises(error):
        build_contact_id(**fields)  # type: ignore[arg-type]


def test_build_contact_id_accepts_an_int_qualifier() -> None:
    """Qualifier may be given as its wire number."""
    assert build_contact_id("5678", 3, 120, 1, 1) == "5678183120010017"


def test_contact_id_requires_a_qualifier_member() -> None:
    """The value class holds a Qualifier, never a bare int."""
    with pytest.raises(TypeError):
        ContactId("5678", 18, 1, 120, 1, 1)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (100, Family.LIFE_SAFETY),  # medical
        (110, Family.LIFE_SAFETY),  # fire
        (121, Family.LIFE_SAFETY),  # duress
        (129, Family.LIFE_SAFETY),
        (130, Family.PROPERTY),  # burglary
        (137, Family.PROPERTY),  # tamper
        (140, Family.PROPERTY),  # general alarm
        (150, Family.PROPERTY),  # 24-hour non-burglary
        (151, Family.LIFE_SAFETY),  # gas
        (162, Family.LIFE_SAFETY),  # CO
        (161, Family.PROPERTY),
        (199, Family.PROPERTY),
        (200, Family.SUPERVISORY),
        (301, Family.TROUBLE),  # AC loss
        (350, Family.TROUBLE),
        (401, Family.OPEN_CLOSE),
        (570, Family.BYPASS),
        (602, Family.TEST),  # periodic test
        (700, Family.OTHER),
        (999, Family.OTHER),
    ],
)
def test_family_policy(code: int, expected: Family) -> None:
    """The project's life-safety policy: 100-129, 151, 162; the rest by hundreds."""
    assert family(code) is expected


@pytest.mark.parametrize(
    ("code", "error"), [(99, ValueError), (1000, ValueError), ("120", TypeError)]
)
def test_family_misuse_raises(code: object, error: type[Exception]) -> None:
    """A code outside 100-999 (or not an int) is misuse."""
    with pytest.raises(error):
        family(code)  # type: ignore[arg-type]


def test_family_values_are_lower_snake_labels() -> None:
    """Family values are metric labels in lower-case snake."""
    assert [f.value for f in Family] == [
        "life_safety",
        "property",
        "supervisory",
        "trouble",
        "open_close",
        "bypass",
        "test",
        "other",
    ]


@given(contact_ids())
def test_round_trip_build_then_parse(value: ContactId) -> None:
    """Any valid fields built to text parse back to the same value."""
    text = build_contact_id(
        value.account,
        value.qualifier,
        value.code,
        value.group,
        value.zone,
        message_type=value.message_type,
    )
    assert len(text) == 16
    assert text == value.text
    assert parse_contact_id(text) == value
    assert parse_contact_id(text.encode("ascii")) == value


@given(contact_ids(), st.data())
def test_any_single_substitution_is_rejected(value: ContactId, data: st.DataObject) -> None:
    """Changing any one character of a valid message never yields a valid message."""
    text = value.text
    position = data.draw(st.integers(0, 15))
    replacement = data.draw(st.characters(codec="ascii").filter(lambda c: c != text[position]))
    if replacement.upper() == text[position]:
        return  # lower-case b-f is the same digit by design
    mutated = text[:position] + replacement + text[position + 1 :]
    assert isinstance(parse_contact_id(mutated), Rejected)


@given(st.one_of(st.binary(max_size=20), st.text(max_size=20)))
def test_arbitrary_input_never_raises(message: bytes | str) -> None:
    """Any bytes or text give a ContactId or a Rejected, never an exception."""
    result = parse_contact_id(message)
    if isinstance(result, ContactId):
        as_text = message if isinstance(message, str) else message.decode("ascii")
        assert result.text == as_text.upper()
    else:
        assert isinstance(result, Rejected)
        expected_raw = message if isinstance(message, bytes) else message.encode("utf-8")
        assert result.raw == expected_raw


@given(st.binary(min_size=16, max_size=16))
def test_arbitrary_sixteen_bytes_never_raise(message: bytes) -> None:
    """Right-length garbage reaches every field check and still only returns values."""
    assert isinstance(parse_contact_id(message), ContactId | Rejected)
