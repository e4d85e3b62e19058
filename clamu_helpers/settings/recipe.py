"""How another process rebuilds a setting: ``get_setting(name, profile, seed, **kwargs)``."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..runtime.cache import content_key

if TYPE_CHECKING:
    from .base import Setting


@dataclass(frozen=True)
class SettingRecipe:
    """The arguments :func:`~clamu_helpers.settings.get_setting` was called with; it records
    one on every setting it builds (``setting.recipe``), keywords included."""

    name: str
    profile: str = "cpu"
    seed: int = 0
    kwargs: dict = field(default_factory=dict)

    def build(self) -> "Setting":
        from . import get_setting
        return get_setting(self.name, self.profile, self.seed, **self.kwargs)

    def key(self) -> str:
        return content_key("recipe", self.name, self.profile, self.seed, self.kwargs)

    @classmethod
    def of(cls, setting: "Setting") -> "SettingRecipe | None":
        """``setting.recipe``; None for a setting built otherwise (then it travels pickled: a
        recipe guessed from its name alone would drop the keywords it was made with)."""
        recipe = getattr(setting, "recipe", None)
        return recipe if isinstance(recipe, SettingRecipe) else None


__all__ = ["SettingRecipe"]
