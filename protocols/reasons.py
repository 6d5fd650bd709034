"""One reason for every rejection, across every decoder and every layer.

DESIGN.md principle 3: peer garbage is data, not a crash. A rejection carries one
`Reason`, and that single value is, all at once, the NAK decision on a serial line,
the `reason` label of `alarmgw_events_rejected_total`, the `reason` field of the
dead-letter entry and the log field. Because it is a metric label, the set is
closed: a reason never carries free text (the `detail` of `Rejected` does).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Reason", "Rejected"]


class Reason(enum.StrEnum):
    """Why a piece of input was refused. Values are stable metric labels."""

    # --- framing (serial streams) -------------------------------------------
    OVERFLOW = "overflow"
    """A frame grew past the decoder's bounded buffer; dropped to the next delimiter."""
    TRUNCATED = "truncated"
    """The stream ended, or a new frame began, before the frame was complete."""
    BAD_FRAME = "bad_frame"
    """Bytes between delimiters that do not have the shape of any known frame."""
    BAD_LENGTH = "bad_length"
    """A declared or fixed length does not match what arrived."""
    BAD_CRC = "bad_crc"
    """A frame's integrity check (CRC) does not match its bytes."""
    BAD_CHECKSUM = "bad_checksum"
    """A Contact ID message whose digit sum is not a multiple of 15."""

    # --- Contact ID content ---------------------------------------------------
    BAD_CHARACTER = "bad_character"
    """A character not allowed at its position (e.g. `A` in an account)."""
    BAD_MESSAGE_TYPE = "bad_message_type"
    """Contact ID message type other than 18 or 98."""
    BAD_QUALIFIER = "bad_qualifier"
    """Contact ID qualifier other than 1, 3, 6 (or E, R, P on a receiver)."""
    BAD_EVENT_CODE = "bad_event_code"
    """An event code outside 100-999 or not decimal."""

    # --- payloads (MessagePack / JSON ingress) --------------------------------
    TOO_LARGE = "too_large"
    """A payload or frame larger than the contract allows."""
    BAD_ENCODING = "bad_encoding"
    """Neither valid MessagePack nor valid JSON (or invalid UTF-8 text)."""
    NOT_A_MAP = "not_a_map"
    """Valid MessagePack or JSON, but not a map/object."""
    MISSING_KEY = "missing_key"
    """A key the contract requires is absent."""
    WRONG_TYPE = "wrong_type"
    """A key's value has the wrong type."""
    OUT_OF_RANGE = "out_of_range"
    """A key's value is of the right type but outside its allowed range or set."""
    UNKNOWN_VERSION = "unknown_version"
    """A contract version (`v`) this gateway does not speak."""

    # --- topics and identities ------------------------------------------------
    BAD_TOPIC = "bad_topic"
    """A topic outside the contract's ingress tree."""
    BAD_ID = "bad_id"
    """A device or sink id that would break a topic (wildcards, `/`, control chars...)."""
    UNKNOWN_DEVICE = "unknown_device"
    """A well-formed message from a device the configuration does not know."""
    UNKNOWN_ACCOUNT = "unknown_account"
    """A receiver record for a Contact ID account no household owns."""
    UNKNOWN_OPERATOR = "unknown_operator"
    """An acknowledgement whose `by` is not an operator of the sink it was sent on
    (checked where the configuration lists operators, `[operators]`)."""

    # --- the gateway itself -----------------------------------------------------
    STORE_UNAVAILABLE = "store_unavailable"
    """The durable store could not record the event; the device is not acknowledged."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """A piece of input that was refused, with the bytes it came as.

    `raw` is what was dropped (bounded by the decoder that produced it) so that
    the dead letter loses nothing; `detail` is human text for logs and the
    dead letter, never a metric label.
    """

    reason: Reason
    raw: bytes
    detail: str = ""
