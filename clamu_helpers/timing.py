"""Where a process's time goes: finetuning, mask optimisation, evaluation, the rest.

:func:`timed` wraps the three kinds of work (the library marks them itself); time is counted
*exclusively* — an evaluation inside a mask search counts as evaluation, not twice — so the
categories add up to at most the process's wall time. :func:`snapshot` is what a notebook's
report rows carry into REPORT.md's time breakdown.
"""
from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from functools import wraps

_SPENT: dict[str, float] = defaultdict(float)
_STACK: list[list[float]] = []          # per open block: [start, seconds spent in nested blocks]
_START = time.perf_counter()

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


def snapshot() -> dict[str, float]:
    """Seconds per category since import (or :func:`reset`), and ``other`` for the rest."""
    wall = time.perf_counter() - _START
    out = {k: round(v, 3) for k, v in sorted(_SPENT.items())}
    out["other"] = round(max(0.0, wall - sum(_SPENT.values())), 3)
    out["wall"] = round(wall, 3)
    return out


def reset() -> None:
    global _START
    _SPENT.clear()
    _START = time.perf_counter()
