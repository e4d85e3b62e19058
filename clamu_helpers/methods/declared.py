"""Method parameters declared once: their constraint, their sentinels, their search grid.

A method's ``Params`` dataclass declares each field with :func:`param` (the models are
scikit-learn's parameter constraints and mergekit's declared parameters)::

    alpha: float | str = param("val", Real(), sentinels=(VAL, ONE_OVER_T), grid=SCALE_GRID)

* a **constraint** (:class:`Real`, :class:`Integer`, :class:`Options`, :class:`Grid`) checks a
  value and returns it normalised (``cast``: stored as float / int); a refused value is a
  ``ValueError`` naming the parameter and what it accepts;
* **sentinels** are the words a parameter may hold instead of a value: :data:`VAL` (chosen on
  validation data, from the declared grid, at every fit and refresh) and :data:`ONE_OVER_T`
  (1/T, model averaging). ``"mean"`` is the older spelling of ``"1/T"`` (:data:`ALIASES`): it
  is accepted and resolved the same way, and kept as written so that the digests of systems
  saved with it do not move;
* the **grid** is what :data:`VAL` searches: :data:`SCALE_GRID` (the one grid of served scales,
  :func:`clamu_helpers.localization.selection.scale_grid` of the number of merged tasks) or the name of
  another field holding a list (``grid="ks"``), optionally falling back, when that field is
  None, to a function of the parameters and T (``grid=("alphas", lambda p, n: scale_grid(n))``).

:meth:`clamu_helpers.methods.base.Method.resolve` turns a parameter into the number served, and
:meth:`~clamu_helpers.methods.base.Method.search` chooses every :data:`VAL` parameter on
validation data from these declarations.
"""
from __future__ import annotations

import json
import math
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Callable

from ..core.errors import ParameterError
from ..localization.selection import VAL, scale_grid

#: 1/T: the served scale of model averaging (T = the number of merged tasks)
ONE_OVER_T = "1/T"
#: older spellings of a sentinel → the sentinel (accepted, resolved alike, stored as written)
ALIASES = {"mean": ONE_OVER_T}
#: the grid of served scales: 1/T and the half-decades above it (:func:`~clamu_helpers.localization.selection.scale_grid`)
SCALE_GRID = scale_grid


def canonical(value):
    """The sentinel a value spells (``"mean"`` → ``"1/T"``), or the value itself."""
    return ALIASES.get(value, value) if isinstance(value, str) else value


class Constraint:
    """A rule a parameter value must follow: :meth:`check` returns it normalised or raises."""

    def check(self, value, name: str):
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class Real(Constraint):
    """A finite number in (low, high] (``closed="right"``) or (low, high) (``"neither"``);
    ``cast`` stores it as float."""

    low: float = 0.0
    high: float = math.inf
    closed: str = "neither"
    cast: bool = False

    def check(self, value, name):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name} must be {self.describe()}, got {value!r}")
        v = float(value)
        above = v > self.low
        below = v <= self.high if self.closed == "right" else v < self.high
        if not (math.isfinite(v) and above and below):
            raise ValueError(f"{name} must be {self.describe()}, got {value!r}")
        return v if self.cast else value

    def describe(self):
        if self.high == math.inf:
            return "a positive number" if self.low == 0 else f"a number above {self.low:g}"
        return f"a number in ({self.low:g}, {self.high:g}{']' if self.closed == 'right' else ')'}"


@dataclass(frozen=True)
class Integer(Constraint):
    """An integer ≥ ``low`` (None: any integer); ``cast`` stores ``int()`` of it."""

    low: int | None = 1
    cast: bool = False

    def check(self, value, name):
        if isinstance(value, bool) or not isinstance(value, int) or (self.low is not None and value < self.low):
            raise ValueError(f"{name} must be {self.describe()}, got {value!r}")
        return int(value) if self.cast else value

    def describe(self):
        if self.low is None:
            return "an integer"
        return "a positive integer" if self.low == 1 else f"an integer ≥ {self.low}"


@dataclass(frozen=True)
class Flag(Constraint):
    """A truth value, stored as ``bool()`` of it."""

    def check(self, value, name):
        return bool(value)

    def describe(self):
        return "True or False"


class Options(Constraint):
    """One of a fixed set of words."""

    def __init__(self, *values):
        self.values = tuple(values)

    def check(self, value, name):
        if not isinstance(value, str) or value not in self.values:
            raise ValueError(f"{name} must be one of {self.values}, got {value!r}")
        return value

    def describe(self):
        return f"one of {self.values}"


@dataclass(frozen=True)
class Grid(Constraint):
    """A non-empty list whose every element follows ``of`` (stored as a list)."""

    of: Constraint = Real(cast=True)

    def check(self, value, name):
        if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__"):
            raise ValueError(f"{name} must be a non-empty list of {self._each()}, got {value!r}")
        items = list(value)
        if not items:
            raise ValueError(f"{name} must be a non-empty list of {self._each()}, got {items!r}")
        try:
            return [self.of.check(v, name) for v in items]
        except ValueError:
            raise ValueError(f"{name} must be a non-empty list of {self._each()}, got {items!r}") from None

    def _each(self):
        d = self.of.describe()
        return d.replace("a positive number", "finite positive numbers").replace("a positive integer", "integers ≥ 1")

    def describe(self):
        return f"a non-empty list of {self._each()}"


@dataclass(frozen=True)
class Declared:
    """What :func:`param` records about a field (in its ``metadata["declared"]``)."""

    constraints: tuple[Constraint, ...]
    sentinels: tuple[str, ...] = ()
    none: bool = False
    grid: Any = None          # SCALE_GRID, a field name, or (field name, function of (params, T))
    doc: str = ""

    def check(self, value, name: str):
        """``value`` normalised, or a ``ValueError`` naming ``name`` and what it accepts."""
        if value is None and self.none:
            return None
        if isinstance(value, str) and canonical(value) in self.sentinels:
            return value
        errors = []
        for c in self.constraints:
            try:
                return c.check(value, name)
            except ValueError as e:
                errors.append(e)
        if len(errors) == 1 and not self.sentinels and not self.none:
            raise errors[0]
        raise ValueError(f"{name} must be {self.describe()}, got {value!r}")

    def describe(self) -> str:
        forms = [c.describe() for c in self.constraints]
        forms += [f"{s!r} ({SENTINEL_DOC.get(s, s)})" for s in self.sentinels]
        if self.none:
            forms.append("None")
        return ", ".join(forms[:-1]) + (" or " if len(forms) > 1 else "") + forms[-1]


SENTINEL_DOC = {VAL: "chosen on validation data", ONE_OVER_T: "1/T"}


def param(default, *constraints: Constraint, sentinels=(), none: bool = False, grid=None, doc: str = ""):
    """A declared ``Params`` field: its default, the constraint(s) a value follows, the sentinel
    words it may hold instead (:data:`VAL`, :data:`ONE_OVER_T`), whether None is allowed, and the
    grid a :data:`VAL` value is chosen from."""
    meta = {"declared": Declared(tuple(constraints), tuple(sentinels), none, grid, doc)}
    if isinstance(default, (list, dict)):
        value = list(default) if isinstance(default, list) else dict(default)
        return field(default_factory=lambda: type(value)(value), metadata=meta)
    return field(default=default, metadata=meta)


def parse_params(items, what: str = "--param") -> dict:
    """``["alpha=0.5", "scale=count"]`` → ``{"alpha": 0.5, "scale": "count"}``, the one reader of
    method parameters written as text (the command line's ``--param``, method specs such as
    ``"sift:scale=count"``): a value is read as JSON where it is JSON (numbers, ``true``, lists)
    and kept as text otherwise (``1/T``, ``count``, ``val``). An item without ``=`` raises
    :class:`~clamu_helpers.core.errors.ParameterError` naming ``what`` and the item."""
    out = {}
    for item in items or []:
        key, eq, value = str(item).partition("=")
        if not eq or not key.strip():
            raise ParameterError(f"{what} expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(value.strip())
        except json.JSONDecodeError:
            out[key.strip()] = value.strip()
    return out


def declared(params_cls) -> dict[str, Declared]:
    """name → :class:`Declared` of every declared field of a ``Params`` dataclass."""
    return {f.name: f.metadata["declared"] for f in fields(params_cls) if "declared" in f.metadata}


def default_of(params_cls, name: str):
    """The declared default of field ``name``."""
    f = {f.name: f for f in fields(params_cls)}[name]
    return f.default_factory() if f.default is MISSING else f.default


def grid_values(decl: Declared, params, n_tasks: int) -> tuple:
    """The candidates a :data:`VAL` parameter is chosen from (see the module docstring)."""
    g = decl.grid
    if g is None:
        raise ValueError("this parameter declares no grid to choose from")
    fallback: Callable | None = None
    if isinstance(g, tuple):
        g, fallback = g
    if callable(g):
        return tuple(g(n_tasks))
    values = getattr(params, g)
    if values is None:
        if fallback is None:
            raise ValueError(f"grid field {g!r} is None and no default grid is declared")
        return tuple(fallback(params, n_tasks))
    return tuple(values)


def one_over_t(n_tasks: int) -> float:
    """:data:`ONE_OVER_T` as a number: 1/T (1 when nothing is merged)."""
    return 1.0 / max(1, n_tasks)


__all__ = ["ALIASES", "Constraint", "Declared", "Flag", "Grid", "Integer", "ONE_OVER_T", "Options", "Real", "SCALE_GRID",
           "VAL", "canonical", "declared", "default_of", "grid_values", "one_over_t", "param", "parse_params"]
