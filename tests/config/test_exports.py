"""config's public surface: what `__all__` promises exists (STYLE.md habit 10)."""

from __future__ import annotations

import config
import config.generate
import config.loader
import config.model


def test_every_exported_name_exists() -> None:
    """Each name in each `__all__` is defined, and the package re-exports the modules' names."""
    for module in (config, config.generate, config.loader, config.model):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"
    assert set(config.loader.__all__) | set(config.model.__all__) == set(config.__all__)


def test_exported_names_are_the_same_objects() -> None:
    """The package's names are the modules' own objects, not copies."""
    assert config.load_config is config.loader.load_config
    assert config.Config is config.model.Config
