"""Settings by name, discovered like methods: each module of this folder that is not machinery
is a family of settings whose ``register()`` registers them. Each setting is registered once
(:func:`register_setting`: its factory ``(profile, seed, **kw) -> Setting``, the paper setting it
stands in for, its paper twin, its availability check); ``SETTINGS``, ``ANALOG_OF``, ``PAPER_SETTING_OF`` and ``AVAILABILITY``
are views of that one registry, and :func:`get_setting` builds one by name."""
from __future__ import annotations

import importlib
import pkgutil
import sys

from ..core.errors import UnknownNameError

from .base import PROFILES, FinetuneConfig, Setting, Task
from .recipe import SettingRecipe
from .registry import (ANALOG_OF, AVAILABILITY, PAPER_SETTING_OF, REGISTRY, SETTINGS, SettingEntry, availability,
                       register_setting)
from .synthetic import SyntheticSetting

register_setting("synthetic", lambda profile="smoke", seed=0, **kw: SyntheticSetting(profile, seed, **kw),
                 "none: Gaussian blobs for tests and teaching")


def resolve_setting(name: str, profile: str) -> str:
    """The setting that ``get_setting(name, profile)`` builds: at profile ``paper`` an embedded
    analog is replaced by its paper twin (:data:`PAPER_SETTING_OF`) when the twin's model and
    data are on this machine; otherwise the analog runs at the paper's sizes. Either way one
    line on stderr says which, and what is missing."""
    target = PAPER_SETTING_OF.get(name)
    if profile != "paper" or target is None or target not in SETTINGS:
        return name
    ok, missing = availability(target)
    if ok:
        print(f"profile paper: {name} -> {target} (the paper's model and data)", file=sys.stderr)
        return target
    print(f"profile paper: {target} is not available ({missing}); running the analog {name} at "
          f"the paper's sizes", file=sys.stderr)
    return name


def get_setting(name: str, profile: str = "cpu", seed: int = 0, **kw) -> Setting:
    """Build a setting by name (see :data:`SETTINGS`); at profile ``paper`` an analog becomes
    its paper twin where it is available (:func:`resolve_setting`). The setting records how to
    rebuild it, keywords included (``setting.recipe``: what worker processes build)."""
    if name not in SETTINGS:
        raise UnknownNameError(f"unknown setting {name!r}; available: {sorted(SETTINGS)}")
    if profile not in PROFILES:
        raise UnknownNameError(f"unknown profile {profile!r}; choose one of {PROFILES}")
    name = resolve_setting(name, profile)
    setting = SETTINGS[name](profile=profile, seed=seed, **kw)
    setting.recipe = SettingRecipe(name, profile, seed, dict(kw))
    return setting


__all__ = ["ANALOG_OF", "AVAILABILITY", "FinetuneConfig", "PAPER_SETTING_OF", "PROFILES", "REGISTRY", "SETTINGS",
           "Setting", "SettingEntry", "SettingRecipe", "SyntheticSetting", "Task", "availability", "get_setting",
           "register_setting", "resolve_setting"]

#: modules of this folder that hold no setting family: the machinery, and the paper's loaders
_MACHINERY = {"base", "recipe", "registry", "synthetic", "paper_data", "paper_models"}

# every other module is a family of settings whose ``register()`` registers them (the embedded
# analogs and the paper's own settings; heavy imports are lazy): adding a family is adding its file
for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _info.name not in _MACHINERY:
        importlib.import_module(f"{__name__}.{_info.name}").register()
