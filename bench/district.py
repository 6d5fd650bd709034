"""The benchmark's deployment: DESIGN.md's district from `config.generate`, pointed at the bench.

`generate_district(seed)` gives 20 townships, 270 villages, 13,000 groups,
130,000 households and 207 checkpoints. The benchmark edits the generated TOML
text (docs/benchmark.md, "Configuration"):

* `[mqtt] broker` → the benchmark's mosquitto; `[http] listen` → a free port
  (readiness and metrics); `[store] path` → the run's own folder;
* `[routing] passes_qos = 1`: every dispatch at QoS 1, as the bare relays do, so
  "lost" means the same thing on every hop and every system (the default, 0,
  would let a broker drop passes without anyone knowing);
* escalation deadlines 0 (never): the load has no operators acknowledging, and
  escalations would add re-dispatches that the bare relays do not make;
* supervision timeouts 3600 s: no phone or checkpoint may go offline during a
  run merely because the load skipped it for a while (that would add
  `device_offline` alarms); the cost of supervision does not depend on them.

A scenario (`bench.scenarios`) may ask for a variant (`ConfigVariant`): C-class
passes routed too (`[routing.passes]` A, B and C true), and escalation
deadlines kept on, with its own values, for the scenarios where an acker plays
the operators.

Everything else is the generator's default (dedup window and size, group commit
2 ms / 512 events, retention).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from config.generate import generate_district

__all__ = ["ConfigVariant", "District", "edit_district_toml"]

_INSERT_BEFORE: Final = "[escalation]\n"
_EXTRA: Final = """[routing]
passes_qos = 1

[supervision]
phone_timeout_s = 3600
checkpoint_timeout_s = 3600

"""


@dataclass(frozen=True, slots=True)
class ConfigVariant:
    """A scenario's edits on top of the benchmark's: deadlines in seconds (0 = never)."""

    name: str
    life_safety_s: float = 0.0
    property_s: float = 0.0
    route_c_passes: bool = False


_ALL_PASSES: Final = """
[routing.passes]
A = true
B = true
C = true
"""


def _replace_once(text: str, old: str, new: str) -> str:
    if text.count(old) != 1:
        raise ValueError(f"generated district TOML: expected {old!r} exactly once")
    return text.replace(old, new)


def edit_district_toml(
    text: str,
    *,
    broker_port: int,
    http_port: int,
    store_path: Path,
    variant: ConfigVariant | None = None,
) -> str:
    """The generated TOML pointed at the benchmark (see the module docstring)."""
    life_safety = "0" if variant is None else f"{variant.life_safety_s:g}"
    property_s = "0" if variant is None else f"{variant.property_s:g}"
    extra = _EXTRA
    if variant is not None and variant.route_c_passes:
        extra = _replace_once(extra, "passes_qos = 1\n", "passes_qos = 1\n" + _ALL_PASSES)
    text = _replace_once(
        text, 'broker = "mqtt://127.0.0.1:1883"', f'broker = "mqtt://127.0.0.1:{broker_port}"'
    )
    text = _replace_once(text, 'listen = "127.0.0.1:9108"', f'listen = "127.0.0.1:{http_port}"')
    text = _replace_once(
        text, 'path = "var/alarmgw.sqlite"', f"path = {json.dumps(str(store_path))}"
    )
    text = _replace_once(text, "life_safety = 60\n", f"life_safety = {life_safety}\n")
    text = _replace_once(text, "property = 300\n", f"property = {property_s}\n")
    return _replace_once(text, _INSERT_BEFORE, extra + _INSERT_BEFORE)


@dataclass(frozen=True, slots=True)
class District:
    """The generated district written into a folder: one households file, TOMLs per run."""

    folder: Path
    toml_text: str

    @classmethod
    def generate(cls, folder: Path, seed: int = 1) -> District:
        """Generate (deterministic per seed) and write households.csv into `folder`."""
        folder.mkdir(parents=True, exist_ok=True)
        toml_text, csv_text = generate_district(seed)
        (folder / "households.csv").write_text(csv_text, encoding="utf-8")
        return cls(folder, toml_text)

    def write_config(
        self,
        name: str,
        *,
        broker_port: int,
        http_port: int,
        store_dir: Path,
        variant: ConfigVariant | None = None,
    ) -> Path:
        """Write `<name>.toml` beside households.csv; its path."""
        store_dir.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{name}.toml"
        text = edit_district_toml(
            self.toml_text,
            broker_port=broker_port,
            http_port=http_port,
            store_path=(store_dir / "alarmgw.sqlite").resolve(),
            variant=variant,
        )
        path.write_text(text, encoding="utf-8")
        return path
