"""Hyperparameters chosen on validation data, the same way for every method.

A method parameter set to ``"val"`` is chosen during ``fit`` (and again at every refresh after
unlearning) by the mean validation score over the tasks it serves, never on test data. Because
the choice is part of the fit, it is a pure function of the remaining tasks: a system that
unlearned u chooses exactly what a system fitted without u chooses (the audit checks it), and u's
validation data leaves no trace in the served hyperparameters either.

* :func:`scale_grid`: the one grid of served scales α that every method scaling the merged sum τ̄
  searches (task arithmetic, TALL, ClAMU and its control, SIFT-Masks' numeric scale): 1/T (model
  averaging) and the half-decades 0.01, 0.03, 0.1, 0.3, 1 above it. α = 1 is TALL's and the
  draft's unscaled M0 + m ⊙ τ̄; 1/T is SIFT-Masks' rule.
* :func:`choose`: pick the best candidate (ties and NaN scores resolved deterministically).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Hashable, Iterable, Sequence

#: the value of a parameter that is chosen on validation data
VAL = "val"
#: served scales α above 1/T (see :func:`scale_grid`)
SCALE_DECADES = (0.01, 0.03, 0.1, 0.3, 1.0)


def is_val(value) -> bool:
    return isinstance(value, str) and value == VAL


def scale_grid(n_tasks: int) -> tuple[float, ...]:
    """α candidates for T merged tasks: 1/T, then every value of :data:`SCALE_DECADES` above it
    (T = 200: 0.005, 0.01, 0.03, 0.1, 0.3, 1; T = 12: 0.083, 0.1, 0.3, 1)."""
    if n_tasks < 1:
        return ()
    base = 1.0 / n_tasks
    return (base,) + tuple(a for a in SCALE_DECADES if a > base * (1 + 1e-9))


def check_grid(values: Iterable, name: str) -> tuple[float, ...]:
    """A non-empty grid of finite positive numbers, or a :class:`ValueError` naming ``name``."""
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a list of positive numbers, got {values!r}") from None
    if not out or any(not (math.isfinite(v) and v > 0) for v in out):
        raise ValueError(f"{name} must be a non-empty list of finite positive numbers, got {list(values)!r}")
    return out


@dataclass
class Choice:
    """The chosen candidate, its validation score, and the score of every candidate tried."""

    value: Hashable
    score: float
    scores: dict = field(default_factory=dict)


def choose(candidates: Sequence[Hashable], score: Callable[[Hashable], float]) -> Choice:
    """The candidate with the highest ``score`` (validation score, higher is better). Ties go to
    the first candidate (grids list the cheaper or the paper's value first); NaN counts as −∞."""
    if len(candidates) == 0:
        raise ValueError("nothing to choose from: the grid is empty")
    best, scores = None, {}
    for c in candidates:
        s = float(score(c))
        scores[c] = s
        key = -math.inf if math.isnan(s) else s
        if best is None or key > best[0]:
            best = (key, c, s)
    return Choice(best[1], best[2], scores)


__all__ = ["Choice", "SCALE_DECADES", "VAL", "check_grid", "choose", "is_val", "scale_grid"]
