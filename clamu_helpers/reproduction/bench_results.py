"""Benchmark results read into the report: what the notebooks do not measure themselves.

Some measurements are too long for the run that writes REPORT.md, or compare two variants of
the protocol; their benchmarks write JSON under ``benchmarks/results/``, and these functions turn
that JSON into report rows (labelled as read from a benchmark). Each returns nothing when its
benchmark has not been run.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from . import claims

from . import ROOT  # the repository root, declared with the layer


def _result(name: str, root=None) -> dict | None:
    path = Path(root or ROOT) / "benchmarks" / "results" / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def search_agreement_rows(profile: str, root=None) -> list[dict]:
    """Report rows from ``benchmarks/search_agreement.py`` (its JSON for ``profile``, if it was
    run): how often ClAMU's successive-halving search chooses the (α, η) of the full search, the
    served accuracy difference with its interval over the (setting, seed) pairs, and the share of
    the full search's mask steps it trains. [] when the benchmark has not been run."""
    data = _result("search_agreement" if profile == "cpu" else f"search_agreement_{profile}", root)
    if data is None:
        return []
    rows, sm = data["rows"], data["summary"]
    where = ", ".join(sorted({r["setting"] for r in rows}))
    return [claims.measurement(
        f"ClAMU's validation search, successive halving − full search: served accuracy (benchmarks/search_agreement.py, "
        f"{sm['pairs']} (setting, seed) pairs: {where}; K={data['clusters']} feature clusters)",
        [r["difference"] for r in rows],
        detail=f"chosen (α, η) agree in {sm['agree']} of {sm['pairs']} (α alone in {sm['alpha_agree']}); halving trains "
               f"{sm['mask_steps_ratio']:.2f}× the full search's mask steps")]


def unlearning_compute_values(root=None, name: str = "bench_unlearning_compute_seeds") -> tuple[list[float], dict] | None:
    """Per seed, the largest baseline's wall-seconds ratio to SIFT-Masks at the largest T that
    ``benchmarks/bench_unlearning_compute.py --seeds`` measured directly (its JSON), with its
    arguments; None when the benchmark has not been run."""
    from .unlearning_cost import claim_ratios
    data = _result(name, root)
    if data is None:
        return None
    ratios = pd.DataFrame(data["ratios"])
    top = ratios[ratios.tasks == ratios.tasks.max()]
    return claim_ratios(top, "ratio_seconds"), {**data["args"], "tasks": int(ratios.tasks.max())}


__all__ = ["search_agreement_rows", "unlearning_compute_values"]
