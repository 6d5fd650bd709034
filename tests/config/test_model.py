"""config.model: frozen values, defaults in one place, and the topology index."""

from __future__ import annotations

import dataclasses

import pytest

from config.model import (
    DEFAULT_DEADLINES_S,
    ROUTE_KEYS,
    Checkpoint,
    CheckpointClass,
    Config,
    Group,
    Household,
    MqttSettings,
    Priority,
    RoutingPolicy,
    Sink,
    SinkRef,
    Township,
    Village,
)


def _config() -> Config:
    return Config(
        source="/etc/alarmgw/d.toml",
        district_id="d",
        district_name="d",
        bureau="county",
        townships=(Township("t1", "城关镇", "s1"),),
        villages=(Village("v1", "东山村", "t1"),),
        groups=(Group("g1", "v1"),),
        households=(Household("h1", "v1", "t1", "g1", ("1234", "BEEF")),),
        checkpoints=(
            Checkpoint("k1", "北口", CheckpointClass.A, 1, "t1", SinkRef("bureau", "county")),
        ),
        sinks=(Sink("bureau", "county", "县公安局"), Sink("village", "v1", "东山村")),
    )


def test_priorities_are_the_contract_numbers() -> None:
    """Priority values are CONTRACT.md's 1..4 and their keys are the config's names."""
    assert [int(p) for p in Priority] == [1, 2, 3, 4]
    assert [p.key for p in Priority] == ["life_safety", "property", "trouble", "info"]
    assert list(ROUTE_KEYS[:4]) == [p.key for p in Priority]
    assert set(DEFAULT_DEADLINES_S) == set(Priority)


def test_sink_refs_read_as_topic_levels() -> None:
    """A SinkRef prints as `kind/id`, the egress topic's middle; a Sink knows its ref."""
    assert str(SinkRef("station", "s01")) == "station/s01"
    assert Sink("village", "v1", "东山村").ref == SinkRef("village", "v1")


def test_values_are_frozen() -> None:
    """Config values cannot be changed after loading."""
    config = _config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.bureau = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.routing.targets["info"] = ("bureau",)  # type: ignore[index]


def test_topology_is_an_index_built_once() -> None:
    """`topology` indexes by id and by account, and is built only once."""
    config = _config()
    topology = config.topology
    assert topology is config.topology
    assert topology.by_account["BEEF"] is config.households[0]
    assert topology.households["h1"].group == "g1"
    assert topology.villages["v1"].township == "t1"
    assert topology.townships["t1"].station == "s1"
    assert topology.groups["g1"].village == "v1"
    assert topology.checkpoints["k1"].unit == SinkRef("bureau", "county")
    assert topology.sinks[("bureau", "county")].name == "县公安局"


def test_replace_starts_a_fresh_index() -> None:
    """A config changed with dataclasses.replace indexes its own topology."""
    config = _config()
    _ = config.topology
    emptied = dataclasses.replace(config, households=())
    assert emptied.topology.households == {}
    assert emptied == dataclasses.replace(config, households=())


def test_repr_is_short_and_hides_secrets() -> None:
    """repr counts the topology instead of listing it, and never shows credentials."""
    config = dataclasses.replace(_config(), mqtt=MqttSettings(username="u", password="pw"))
    text = repr(config)
    assert "households=1" in text
    assert "pw" not in text
    assert "'u'" not in text


def test_routing_targets_by_priority_or_name() -> None:
    """targets_for takes a Priority or a route key; unknown names route nowhere."""
    routing = RoutingPolicy()
    assert routing.targets_for(Priority.LIFE_SAFETY) == ("village", "township", "group")
    assert routing.targets_for("checkpoint_fault") == ("unit",)
    assert routing.targets_for("nothing") == ()
    assert routing.passes[CheckpointClass.C] is False
