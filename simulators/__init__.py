"""Stand-in devices for field technicians and tests (DESIGN.md, "simulators/").

A pure, seeded scenario core and thin transport drivers:

* `simulators.plates`: realistic Chinese licence plates and their misreads.
* `simulators.scenario`: what phones, checkpoints and a whole district send,
  and when (`Send` streams from a seeded `random.Random` and an explicit start
  time), the faults (`duplicate`, `corrupt`, `clock_skew`, `burst`, `silence`)
  and the matching of dispatches for `--wait`.
* `simulators.mqtt_driver`: publishes a stream on schedule over MQTT (gmqtt),
  listens for dispatches, reports progress.
* `simulators.receiver` and `simulators.pty_driver`: an alarm receiver's serial
  output line and its file-descriptor driver.
* `simulators.cli`: `alarmgw sim ...`, wired into the gateway's CLI.

May import only `protocols` and `config` (tests/test_architecture.py). The
package itself re-exports the pure core, so importing it never loads an MQTT
client or an event loop.
"""

from simulators.plates import PlateGenerator, PlateRead, misread
from simulators.scenario import (
    CheckpointScenario,
    DispatchMatcher,
    DistrictScenario,
    PayloadFormat,
    PhoneScenario,
    Send,
    SendMeta,
    apply_faults,
    burst,
    clock_skew,
    corrupt,
    duplicate,
    expected_sinks,
    silence,
    stream,
)

__all__ = [
    "CheckpointScenario",
    "DispatchMatcher",
    "DistrictScenario",
    "PayloadFormat",
    "PhoneScenario",
    "PlateGenerator",
    "PlateRead",
    "Send",
    "SendMeta",
    "apply_faults",
    "burst",
    "clock_skew",
    "corrupt",
    "duplicate",
    "expected_sinks",
    "misread",
    "silence",
    "stream",
]
