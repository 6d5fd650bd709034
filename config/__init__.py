"""Typed settings and topology of one district, and the loader that builds them.

`config` imports nothing of the project (DESIGN.md, "Layout"): it declares and
validates settings; every other package reads the frozen `Config` it returns.
See `config.model` for the values, `config.loader` for the file format's rules,
`config/examples/demo.toml` for every key documented, and `config.generate` for
a district-scale deployment modelled on DESIGN.md's figures.
"""

from __future__ import annotations

from config.loader import (
    BASE_TOPIC_MAX_LENGTH,
    ID_MAX_LENGTH,
    ConfigError,
    ConfigProblem,
    id_problem,
    load_config,
    loads_config,
    parse_broker_url,
    with_overrides,
)
from config.model import (
    DEFAULT_DEADLINES_S,
    DEFAULT_ROUTES,
    INTERCEPTION_ALARM_KINDS,
    RINGS,
    ROUTE_KEYS,
    TARGETS,
    Checkpoint,
    CheckpointClass,
    Config,
    DedupSettings,
    EscalationPolicy,
    Group,
    Household,
    HttpSettings,
    InterceptionPolicy,
    MqttSettings,
    Priority,
    RoutingPolicy,
    SerialPort,
    Sink,
    SinkRef,
    StoreSettings,
    SupervisionSettings,
    Topology,
    Township,
    Village,
)

__all__ = [
    "BASE_TOPIC_MAX_LENGTH",
    "DEFAULT_DEADLINES_S",
    "DEFAULT_ROUTES",
    "ID_MAX_LENGTH",
    "INTERCEPTION_ALARM_KINDS",
    "RINGS",
    "ROUTE_KEYS",
    "TARGETS",
    "Checkpoint",
    "CheckpointClass",
    "Config",
    "ConfigError",
    "ConfigProblem",
    "DedupSettings",
    "EscalationPolicy",
    "Group",
    "Household",
    "HttpSettings",
    "InterceptionPolicy",
    "MqttSettings",
    "Priority",
    "RoutingPolicy",
    "SerialPort",
    "Sink",
    "SinkRef",
    "StoreSettings",
    "SupervisionSettings",
    "Topology",
    "Township",
    "Village",
    "id_problem",
    "load_config",
    "loads_config",
    "parse_broker_url",
    "with_overrides",
]
