"""Settings by name: ``SETTINGS`` maps a name to a factory ``(profile, seed, **kw) -> Setting``."""
from __future__ import annotations

from typing import Callable

from .base import PROFILES, FinetuneConfig, Setting, Task
from .images import ImageSetting
from .synthetic import SyntheticSetting

SETTINGS: dict[str, Callable[..., Setting]] = {
    "images-uniform": lambda profile="cpu", seed=0, **kw: ImageSetting("uniform", profile, seed, **kw),
    "images-label-subsets": lambda profile="cpu", seed=0, **kw: ImageSetting("label-subsets", profile, seed, **kw),
    "synthetic": lambda profile="smoke", seed=0, **kw: SyntheticSetting(profile, seed, **kw),
}

#: what each setting stands in for in the paper
ANALOG_OF = {
    "images-uniform": "CLIP (i): DTD/RESISC45/MNIST, uniform per task",
    "images-label-subsets": "CLIP (ii): DTD/RESISC45/MNIST, label subsets per task",
    "synthetic": "none: Gaussian blobs for tests and teaching",
}


def register_setting(name: str, factory: Callable[..., Setting], analog_of: str) -> None:
    """Add a setting to the registry (modules of optional settings call this on import)."""
    SETTINGS[name] = factory
    ANALOG_OF[name] = analog_of


def get_setting(name: str, profile: str = "cpu", seed: int = 0, **kw) -> Setting:
    """Build a setting by name (see :data:`SETTINGS`)."""
    if name not in SETTINGS:
        raise ValueError(f"unknown setting {name!r}; available: {sorted(SETTINGS)}")
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {PROFILES}")
    return SETTINGS[name](profile=profile, seed=seed, **kw)


__all__ = ["ANALOG_OF", "FinetuneConfig", "PROFILES", "SETTINGS", "Setting", "SyntheticSetting", "Task", "get_setting", "register_setting"]
