"""Where a process's time goes: finetuning, mask optimisation, evaluation, the rest.

:func:`timed` wraps the three kinds of work (the library marks them itself); time is counted
*exclusively* — an evaluation inside a mask search counts as evaluation, not twice — so the
categories add up to at most the process's wall time. :func:`snapshot` is what a notebook's
report rows carry into REPORT.md's time breakdown; units run in worker processes
(:mod:`clamu_helpers.runtime.workers`) send their seconds back and are added with :func:`absorb`.
"""
from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from functools import wraps

_SPENT: dict[str, float] = defaultdict(float)
_STACK: list[list[float]] = []          # per open block: [start, seconds spent in nested blocks]
_START = time.perf_counter()
_WORKERS = [0.0]                        # wall seconds of units run by worker processes (absorb)
_WAITED = [0.0]                         # seconds this process waited for its workers (not compute)

FINETUNE, MASKS, EVALUATION = "finetuning", "mask optimisation", "evaluation"


@contextmanager
def timed(category: str):
    """Count the block's own seconds (minus nested ``timed`` blocks) under ``category``."""
    _STACK.append([time.perf_counter(), 0.0])
    try:
        yield
    finally:
        start, nested = _STACK.pop()
        elapsed = time.perf_counter() - start
        _SPENT[category] += elapsed - nested
        if _STACK:
            _STACK[-1][1] += elapsed


def timed_function(category: str):
    """Decorator form of :func:`timed`."""
    def wrap(fn):
        @wraps(fn)
        def inner(*a, **kw):
            with timed(category):
                return fn(*a, **kw)
        return inner
    return wrap


def spent() -> dict[str, float]:
    """Seconds per category so far (a copy), to diff with :func:`since`."""
    return dict(_SPENT)


def since(before: dict[str, float], wall: float) -> dict[str, float]:
    """Seconds per category spent after ``before`` (:func:`spent`), and ``wall``, the unit's
    own wall seconds: what a worker process sends back with a unit's result."""
    out = {k: v - before.get(k, 0.0) for k, v in _SPENT.items() if v - before.get(k, 0.0) > 0}
    out["wall"] = float(wall)
    return out


def absorb(delta: dict[str, float]) -> None:
    """Add a worker's unit (:func:`since`) to this process's account: its categories, and its
    wall seconds to the workers' total (the rest of it counts as ``other``)."""
    for k, v in delta.items():
        if k != "wall":
            _SPENT[k] += float(v)
    _WORKERS[0] += float(delta.get("wall", 0.0))


def waited(seconds: float) -> None:
    """Count ``seconds`` this process spent waiting for its workers: not compute, so not ``other``."""
    _WAITED[0] += float(seconds)


def snapshot() -> dict[str, float]:
    """Seconds per category since import (or :func:`reset`), this process's and its workers'
    (:func:`absorb`); ``other`` for the rest of both (this process's waits for its workers
    excluded), ``workers`` the workers' wall seconds and ``wall`` this process's."""
    wall = time.perf_counter() - _START
    out = {k: round(v, 3) for k, v in sorted(_SPENT.items())}
    out["other"] = round(max(0.0, wall - _WAITED[0] + _WORKERS[0] - sum(_SPENT.values())), 3)
    out["workers"] = round(_WORKERS[0], 3)
    out["wall"] = round(wall, 3)
    return out


def reset() -> None:
    global _START
    _SPENT.clear()
    _WORKERS[0] = 0.0
    _WAITED[0] = 0.0
    _START = time.perf_counter()
