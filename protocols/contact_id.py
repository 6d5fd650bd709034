"""Contact ID (Ademco, SIA DC-05): the 16-character alarm message, parsed and built.

Theory of operation (PROTOCOLS.md, "Contact ID"). A message is sixteen characters
with no separators, ``AAAA MT Q XYZ GG CCC S``:

- ``AAAA`` account: digits 0-9 and B-F. ``A`` never occurs, because DTMF ``A``
  is not used and the checksum already gives ``0`` the value 10.
- ``MT`` message type: ``18`` (preferred) or ``98``; any other value belongs to
  another Ademco format and is refused as `Reason.BAD_MESSAGE_TYPE`.
- ``Q`` qualifier: ``1`` new event, ``3`` restore, ``6`` previously reported.
- ``XYZ`` event code (decimal 100-999), ``GG`` group/partition, ``CCC`` zone or
  user number; all decimal.
- ``S`` checksum: the values of all sixteen characters sum to a multiple of 15,
  where ``0`` counts 10 and ``B``-``F`` count 11-15.

`parse_contact_id` checks the fields left to right and then the checksum, so a
message that is wrong in content gets the precise reason (an ``A`` in the
account is `BAD_CHARACTER`, not `BAD_CHECKSUM`, although its sum is off too).
Every failure is a `Rejected` value, never an exception: the message came from
a peer. Only misuse of the builders (`build_contact_id`, `checksum_char`,
`ContactId(...)`, `family`) raises `ValueError`/`TypeError`.

Lower-case hex digits: ``b``-``f`` are accepted in the account and the checksum
and normalised to upper case. They are the same DTMF digits, and some receivers
and IP alarm hosts print hex in lower case; refusing them would NAK a real alarm
over spelling, and the receiver would retry and then hold it (DESIGN.md
principle 1). ``a``/``A`` stays refused in every case. The dataclass always holds
the canonical upper-case form; `Rejected.raw` and callers keep the original bytes.

`family` is the project's policy, which the standard does not give: 100-129,
151 (gas) and 162 (CO) are life safety; the rest of 1xx is property (24-hour
non-burglary alarms are still alarms); 2xx supervisory, 3xx trouble,
4xx open/close, 5xx bypass, 6xx test, 7xx-9xx other.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from protocols.reasons import Reason, Rejected

__all__ = [
    "ContactId",
    "Family",
    "Qualifier",
    "build_contact_id",
    "checksum_char",
    "family",
    "parse_contact_id",
]

_LENGTH = 16
_MESSAGE_TYPES = frozenset({18, 98})
# Characters a Contact ID digit may be, with the value the checksum gives it.
# '0' counts 10 (DTMF 0 is ten pulses); B-F are DTMF digits 11-15; 'A' never occurs.
_VALUES: dict[str, int] = (
    {str(d): d for d in range(1, 10)} | {"0": 10} | {c: 11 + i for i, c in enumerate("BCDEF")}
)
# Lower case b-f read as their upper-case digit (see the module docstring).
_CANONICAL: dict[str, str] = {c: c for c in _VALUES} | {c.lower(): c for c in "BCDEF"}
_DECIMAL = frozenset("0123456789")


class Qualifier(enum.IntEnum):
    """The Contact ID event qualifier ``Q`` (PROTOCOLS.md)."""

    NEW = 1
    """A new event (on 4xx: opening = disarm)."""
    RESTORE = 3
    """A restore (on 4xx: closing = arm); never a new alarm."""
    PREVIOUS = 6
    """Previously reported and still present; never a new alarm."""


class Family(enum.StrEnum):
    """What kind of event a code is, by the project's policy; values are metric labels."""

    LIFE_SAFETY = "life_safety"
    PROPERTY = "property"
    SUPERVISORY = "supervisory"
    TROUBLE = "trouble"
    OPEN_CLOSE = "open_close"
    BYPASS = "bypass"
    TEST = "test"
    OTHER = "other"


# 151 gas and 162 CO threaten life although they sit among the 24-hour
# non-burglary codes (PROTOCOLS.md, event code families; our policy).
_LIFE_SAFETY_EXTRA = frozenset({151, 162})
_FAMILY_BY_HUNDRED: dict[int, Family] = {
    2: Family.SUPERVISORY,
    3: Family.TROUBLE,
    4: Family.OPEN_CLOSE,
    5: Family.BYPASS,
    6: Family.TEST,
}


def family(code: int) -> Family:
    """Return the project's family for an event code; ValueError outside 100-999."""
    _check_int("code", code, 100, 999)
    if code <= 129 or code in _LIFE_SAFETY_EXTRA:
        return Family.LIFE_SAFETY
    if code <= 199:
        return Family.PROPERTY
    return _FAMILY_BY_HUNDRED.get(code // 100, Family.OTHER)


def _check_int(name: str, value: object, low: int, high: int) -> None:
    """Raise TypeError/ValueError unless `value` is an int (not bool) in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in {low}..{high}, got {value}")


def _check_account(account: object) -> str:
    """Return a valid 4-character canonical account, or raise TypeError/ValueError."""
    if not isinstance(account, str):
        raise TypeError(f"account must be a str, not {type(account).__name__}")
    if len(account) != 4 or any(c not in _VALUES for c in account):
        raise ValueError(f"account must be 4 characters of 0-9, B-F, got {account!r}")
    return account


def checksum_char(first15: str) -> str:
    """Return the checksum character ``S`` for the first fifteen characters.

    ``need = 15 - (sum mod 15)``, in 1..15; 10 is sent as ``0`` and 15 as ``F``.
    The sum cannot catch transposed digits (PROTOCOLS.md): swapping two
    characters leaves it unchanged, so the checksum only guards substitutions.
    """
    if not isinstance(first15, str):
        raise TypeError(f"first15 must be a str, not {type(first15).__name__}")
    if len(first15) != _LENGTH - 1:
        raise ValueError(f"first15 must be 15 characters, got {len(first15)}")
    if any(c not in _VALUES for c in first15):
        raise ValueError(f"first15 holds a character outside 0-9, B-F: {first15!r}")
    need = 15 - sum(_VALUES[c] for c in first15) % 15
    return "0" if need == 10 else "0123456789ABCDEF"[need]


@dataclass(frozen=True, slots=True)
class ContactId:
    """One valid Contact ID message; construction validates (ValueError on misuse)."""

    account: str
    message_type: int
    qualifier: Qualifier
    code: int
    group: int
    zone: int

    def __post_init__(self) -> None:
        _check_account(self.account)
        _check_int("message_type", self.message_type, 0, 99)
        if self.message_type not in _MESSAGE_TYPES:
            raise ValueError(f"message_type must be 18 or 98, got {self.message_type!r}")
        if not isinstance(self.qualifier, Qualifier):
            raise TypeError(f"qualifier must be a Qualifier, got {self.qualifier!r}")
        _check_int("code", self.code, 100, 999)
        _check_int("group", self.group, 0, 99)
        _check_int("zone", self.zone, 0, 999)

    @property
    def text(self) -> str:
        """The sixteen-character message, checksum included."""
        first15 = (
            f"{self.account}{self.message_type:02d}{int(self.qualifier)}"
            f"{self.code:03d}{self.group:02d}{self.zone:03d}"
        )
        return first15 + checksum_char(first15)


def build_contact_id(
    account: str,
    qualifier: Qualifier | int,
    code: int,
    group: int,
    zone: int,
    *,
    message_type: int = 18,
) -> str:
    """Return the sixteen-character message for these fields (ValueError on misuse)."""
    if isinstance(qualifier, bool) or not isinstance(qualifier, int):
        raise TypeError(f"qualifier must be a Qualifier or int, got {qualifier!r}")
    return ContactId(
        account=account,
        message_type=message_type,
        qualifier=Qualifier(qualifier),  # ValueError for anything but 1, 3, 6
        code=code,
        group=group,
        zone=zone,
    ).text


def parse_contact_id(message: str | bytes | bytearray | memoryview) -> ContactId | Rejected:
    """Parse one Contact ID message; every failure is a `Rejected` carrying the input bytes."""
    if isinstance(message, str):
        # backslashreplace: a str from a peer may hold anything, even lone surrogates.
        raw = message.encode("utf-8", "backslashreplace")
        text = message
    elif isinstance(message, bytes | bytearray | memoryview):
        raw = bytes(message)
        # latin-1 maps every byte to one character, so lengths stay byte lengths
        # and any non-ASCII byte fails the character checks below.
        text = raw.decode("latin-1")
    else:
        raise TypeError(f"message must be str or bytes, not {type(message).__name__}")

    if len(text) != _LENGTH:
        return Rejected(Reason.BAD_LENGTH, raw, f"{len(text)} characters, expected 16")

    account = "".join(_CANONICAL.get(c, "?") for c in text[0:4])
    if "?" in account:
        return Rejected(Reason.BAD_CHARACTER, raw, f"account {text[0:4]!r}: 0-9, B-F only")
    mt = text[4:6]
    if not _is_decimal(mt) or int(mt) not in _MESSAGE_TYPES:
        return Rejected(Reason.BAD_MESSAGE_TYPE, raw, f"message type {mt!r}: 18 or 98 only")
    q = text[6]
    if q not in "136":
        return Rejected(Reason.BAD_QUALIFIER, raw, f"qualifier {q!r}: 1, 3 or 6 only")
    xyz = text[7:10]
    if not _is_decimal(xyz) or int(xyz) < 100:
        return Rejected(Reason.BAD_EVENT_CODE, raw, f"event code {xyz!r}: decimal 100-999")
    gg, ccc = text[10:12], text[12:15]
    if not _is_decimal(gg) or not _is_decimal(ccc):
        return Rejected(Reason.BAD_CHARACTER, raw, f"group {gg!r} / zone {ccc!r}: decimal only")
    s = _CANONICAL.get(text[15])
    if s is None:
        return Rejected(Reason.BAD_CHARACTER, raw, f"checksum {text[15]!r}: 0-9, B-F only")
    # Every character is now canonical, so the values are defined. The sum
    # catches any single substitution (values differ by 1..14, never by 15) but,
    # being a sum, cannot catch transposed digits (PROTOCOLS.md).
    canonical = account + text[4:15] + s
    total = sum(_VALUES[c] for c in canonical)
    if total % 15:
        return Rejected(Reason.BAD_CHECKSUM, raw, f"digit sum {total} is not a multiple of 15")
    return ContactId(
        account=account,
        message_type=int(mt),
        qualifier=Qualifier(int(q)),
        code=int(xyz),
        group=int(gg),
        zone=int(ccc),
    )


def _is_decimal(field: str) -> bool:
    """True if every character is an ASCII decimal digit (str.isdigit accepts '²' too)."""
    return all(c in _DECIMAL for c in field)
