"""What a message from a kind of device means: normalisation, identities, supervision.

Pure: every function takes the current time as an argument.
"""

from devices.checkpoint import normalise_checkpoint, normalise_plate, watchlist_event
from devices.events import Category, Event, Kind, Source, Stage, Transport
from devices.phone import classify, content_key, normalise_phone, normalise_receiver_event
from devices.supervision import DeviceClass, Supervisor, Transition

__all__ = [
    "Category",
    "DeviceClass",
    "Event",
    "Kind",
    "Source",
    "Stage",
    "Supervisor",
    "Transition",
    "Transport",
    "classify",
    "content_key",
    "normalise_checkpoint",
    "normalise_phone",
    "normalise_plate",
    "normalise_receiver_event",
    "watchlist_event",
]
