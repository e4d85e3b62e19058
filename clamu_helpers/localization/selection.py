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
* :func:`search`: the one search routine: every candidate at the full budget, or successive
  halving (:class:`Halving`) where a candidate's score costs a training run (ClAMU's masks).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Hashable, Sequence

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


@dataclass(frozen=True)
class Halving:
    """Successive halving (Jamieson & Talwalkar 2016, the inner loop of Hyperband, Li et al. 2018)
    over candidates whose score comes from a training run of ``budget`` steps.

    All candidates train to the first rung, a fraction ``1/reduction^R`` of the budget
    (``R`` rungs above it, the first at least ``min_fraction`` of the budget); at each rung the best
    ``⌈n/reduction⌉`` (by validation score; ties to the earlier candidate, NaN last, as
    :func:`choose`) go on, *resuming* their runs, until the last rung trains the survivors to the
    full budget and :func:`choose` picks among them. The survivor's full-budget run is the one a
    full search would have made for that candidate (:class:`clamu_helpers.localization.masks.MaskRun` resumes
    bit for bit), so nothing chosen is trained twice."""

    reduction: int = 3
    min_fraction: float = 1 / 9

    def __post_init__(self):
        if isinstance(self.reduction, bool) or not isinstance(self.reduction, int) or self.reduction < 2:
            raise ValueError(f"halving reduction must be an integer ≥ 2, got {self.reduction!r}")
        if not (0 < float(self.min_fraction) <= 1):
            raise ValueError(f"halving min_fraction must be in (0, 1], got {self.min_fraction!r}")

    def rungs(self, budget: int) -> list[int]:
        """Training steps at each rung, increasing, the last = ``budget`` (e.g. 20 → [3, 7, 20]
        with reduction 3 down to 1/9; duplicates merged, at least one step)."""
        if budget < 1:
            raise ValueError(f"budget must be ≥ 1 step, got {budget}")
        r = 0
        while self.reduction ** (r + 1) * float(self.min_fraction) <= 1 + 1e-9:
            r += 1
        return sorted({max(1, math.ceil(budget / self.reduction ** k)) for k in range(r + 1)})

    def survivors(self, n: int) -> int:
        return max(1, math.ceil(n / self.reduction))

    def steps(self, n_candidates: int, budget: int) -> int:
        """Training steps of one search over ``n_candidates`` (per unit trained, e.g. per sampled
        cluster): each rung trains its candidates from the previous rung's budget on."""
        total, alive, prev = 0, n_candidates, 0
        rungs = self.rungs(budget)
        for i, b in enumerate(rungs):
            total += alive * (b - prev)
            prev = b
            if i < len(rungs) - 1:
                alive = self.survivors(alive)
        return total if n_candidates else 0


def search(candidates: Sequence[Hashable], evaluate: Callable[[Hashable, int], float], budget: int,
           halving: Halving | None = None) -> Choice:
    """The validation search for parameters whose score costs a training run: the candidate with
    the best ``evaluate(candidate, steps)`` (a validation score after training ``steps``, resumed
    from the candidate's previous rung). ``halving=None`` scores every candidate at the full
    ``budget`` (:func:`choose`); a :class:`Halving` stops the weak ones early. The steps trained
    are :meth:`Halving.steps` (``n × budget`` without halving), whatever the scores."""
    if halving is None:
        return choose(candidates, lambda c: evaluate(c, budget))
    if len(candidates) == 0:
        raise ValueError("nothing to choose from: the grid is empty")
    alive = list(candidates)
    rungs = halving.rungs(budget)
    for b in rungs[:-1]:
        if len(alive) == 1:
            break   # the last one trains to the full budget anyway: no need to score it on the way
        scored = choose(alive, lambda c: evaluate(c, b)).scores
        rank = sorted(range(len(alive)), key=lambda i: (-_key(scored[alive[i]]), i))
        keep = sorted(rank[:halving.survivors(len(alive))])
        alive = [alive[i] for i in keep]
    return choose(alive, lambda c: evaluate(c, budget))


def search_steps(n_candidates: int, budget: int, halving: Halving | None = None) -> int:
    """Training steps of :func:`search` over ``n_candidates`` (per unit trained)."""
    return n_candidates * budget if halving is None else halving.steps(n_candidates, budget)


def _key(score: float) -> float:
    return -math.inf if math.isnan(score) else score


__all__ = ["Choice", "Halving", "SCALE_DECADES", "VAL", "choose", "is_val", "scale_grid", "search", "search_steps"]
