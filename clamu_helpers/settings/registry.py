"""The settings registry: one :func:`register_setting` call per setting, carrying every fact
about it (its factory, the paper setting it stands in for, its paper twin, how to check that
its data and weights are here). ``SETTINGS``, ``ANALOG_OF``, ``PAPER_SETTING_OF`` and
``AVAILABILITY`` are read-only views derived from it."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable, Iterator

from .base import Setting

Check = Callable[[], "tuple[bool, str]"]


@dataclass(frozen=True)
class SettingEntry:
    """One registered setting."""

    name: str
    factory: Callable[..., Setting]      # (profile, seed, **kw) -> Setting
    analog_of: str                       # what it stands in for in the paper
    paper_twin: str | None = None        # the paper's own setting, used at profile "paper" when available
    available: Check | None = None       # () -> (True, "") or (False, what to download where)
    model: str = ""                      # M0: the pretrained model its tasks finetune, and what of it trains


REGISTRY: dict[str, SettingEntry] = {}


def register_setting(name: str, factory: Callable[..., Setting], analog_of: str, paper_twin: str | None = None,
                     available: Check | None = None, model: str = "") -> SettingEntry:
    """Add a setting (modules of optional settings call this on import). ``available()``
    returns (True, "") when its data and weights are on this machine, else (False, what to
    download where); ``paper_twin`` names the paper's own setting this one is an analog of;
    ``model`` says what M0 is (REPORT.md shows it beside the paper's)."""
    if not name or not callable(factory):
        raise ValueError(f"register_setting needs a name and a factory, got {name!r}, {factory!r}")
    REGISTRY[name] = entry = SettingEntry(name, factory, analog_of, paper_twin, available, model)
    return entry


class _View(Mapping):
    """A read-only name → attribute view of :data:`REGISTRY` (entries where it is set)."""

    def __init__(self, attribute: str):
        self._attr = attribute

    def _items(self) -> dict:
        return {n: getattr(e, self._attr) for n, e in REGISTRY.items() if getattr(e, self._attr) is not None}

    def __getitem__(self, name):
        return self._items()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items())

    def __len__(self) -> int:
        return len(self._items())

    def __repr__(self) -> str:
        return f"<{self._attr} of the registered settings: {sorted(self._items())}>"


SETTINGS: Mapping[str, Callable[..., Setting]] = _View("factory")
ANALOG_OF: Mapping[str, str] = _View("analog_of")
PAPER_SETTING_OF: Mapping[str, str] = _View("paper_twin")
AVAILABILITY: Mapping[str, Check] = _View("available")


def availability(name: str) -> tuple[bool, str]:
    """(available, what is missing) for a registered setting."""
    entry = REGISTRY.get(name)
    if entry is None:
        return False, "not a registered setting"
    if entry.available is None:
        return True, ""
    try:
        return entry.available()
    except Exception as e:  # an availability check must never crash a listing
        return False, f"{type(e).__name__}: {e}"


__all__ = ["ANALOG_OF", "AVAILABILITY", "PAPER_SETTING_OF", "REGISTRY", "SETTINGS", "SettingEntry",
           "availability", "register_setting"]
