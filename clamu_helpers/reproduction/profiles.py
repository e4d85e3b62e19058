"""What changes with the profile (``smoke`` | ``cpu`` | ``paper``), declared once.

A notebook's parameters cell holds ``None`` for a knob whose default depends on the profile,
and asks :func:`default` for it; no notebook compares ``profile`` itself. The task counts of
each setting per profile live with the settings (``clamu_helpers.settings``); what is here is
what the notebooks choose on top of them: the seeds claims are judged over (:data:`SEEDS`),
and the knobs in :data:`KNOBS`. :func:`available` is the one way a notebook keeps the settings
this machine can build.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Sequence

from ..settings import SETTINGS, availability
from ..settings.base import PROFILES  # declared with the settings, which check it

#: seeds per profile: every claim's interval is Student t over these seeds (the seed changes
#: task sampling, finetuning and forget orders); smoke keeps the two an interval needs
SEEDS: dict[str, tuple[int, ...]] = {"smoke": (0, 1), "cpu": (0, 1, 2), "paper": (0, 1, 2)}
#: power where it is affordable: notebooks whose claims are cheap to measure run more seeds than
#: :data:`SEEDS` at a profile — Figure 2 (01), Figure 4 (02) and SIFT-Masks' accuracy (06); the
#: notebooks where ClAMU's masks dominate the cost keep :data:`SEEDS`. Five, not ten, for 01:
#: its seeds 5–9 need text finetunes no other notebook shares and cost 33 of a 120-minute run
#: (benchmarks/RESULTS.md, the second whole run)
MORE_SEEDS: dict[str, dict[str, tuple[int, ...]]] = {
    "cpu": {"01_when_is_merging_scalable": tuple(range(5)), "02_clustering": tuple(range(5)),
            "06_sift_masks": tuple(range(5))},
}

#: ClAMU's validation search as the comparison rows run it (``experiments.COMPARISON``): a
#: protocol choice made for the time of a whole cpu run, measured before it was taken
#: (benchmarks/RESULTS.md, "A shared α/η search and a more aggressive halving"). One α/η search
#: over per-task masks (``search_on="tasks"``), shared by every K, every clustering and the
#: supermask control of a seed, re-run on every refresh after unlearning (exactness holds), and
#: successive halving keeping a quarter of the candidates from E_mask/16 on. On Figure 5's fits:
#: 0.44× the wall time, accuracy +0.002 [−0.030, +0.033].
CLAMU_PROTOCOL: dict = {"search_on": "tasks", "halving_reduction": 4, "halving_min_fraction": 1 / 16}

ALL = "all"
#: knob → {profile: value}; "*" is every profile not named. ``ALL`` means every task / seed.
KNOBS: dict[str, dict[str, Any]] = {
    # 05, Table 3: the Reddit analog at every task it has (100 at cpu: at 20, TALL starts 3 points
    # below the local models and the draft's 18.6-point rise cannot happen), one request per
    # checkpoint, masks re-learned after each. One forget order per seed at cpu (the seeds give the
    # interval): ClAMU re-learns 100 + 50 + 25 + 5 + 1 per-task masks along it, about what five
    # orders cost at 20 tasks. Smoke has no fortunes setting worth the time: the image analog whole
    "table3_setting": {"smoke": "images-label-subsets", "*": "fortunes-label-subsets"},
    "table3_tasks": {"smoke": ALL, "*": ALL},
    "table3_orders": {"smoke": 5, "*": 1},
    # 06: the task counts of the accuracy curve (smoke: the two ends), and the T of the
    # unlearning-compute measurement with the seeds it runs on (executed steps do not depend
    # on the seed; 3 seeds of T ∈ {50, 100, 200} cost an hour on 2 cores)
    "sift_sizes": {"smoke": "ends", "*": ALL},
    # 06: SIFT-Masks' accuracy claim on the text and author settings too, at their largest T only
    # (every task finetuned again with fixed signs), on the first 3 seeds at cpu
    "sift_text_settings": {"smoke": ("reviews-by-movie",),
                           "*": ("reviews-by-movie", "fortunes-label-subsets", "fictitious-authors")},
    "sift_text_seeds": {"smoke": ALL, "*": 3},
    "cost_sizes": {"smoke": (6, 12), "*": (50, 100, 200)},
    "cost_seeds": {"smoke": ALL, "*": 1},
    # 06: the seeds the compute claim (one deletion, its four methods at every T) is measured on,
    # the first of the notebook's seeds: TALL and EMR retrain every remaining task per request
    "compute_claim_seeds": {"smoke": ALL, "*": 3},
    # 08: Tables 4 and 5 (smoke keeps Table 4: both heads finetuned twice is its longest part)
    "appendix_tables": {"smoke": ("Table 4",), "*": ("Table 4", "Table 5")},
}


def _check(profile: str) -> None:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {list(PROFILES)}")


def seeds_for(profile: str, notebook: str | None = None) -> tuple[int, ...]:
    """The seeds a notebook runs at ``profile``: ``notebook``'s own in :data:`MORE_SEEDS` if it
    has some there, else :data:`SEEDS`; or those of ``$CLAMU_SEEDS`` (a comma list, e.g.
    ``CLAMU_SEEDS=0`` for a quick look: one seed gives no interval, so its claims are reported as
    not judged)."""
    _check(profile)
    env = os.environ.get("CLAMU_SEEDS", "").strip()
    if env:
        try:
            seeds = tuple(int(x) for x in env.split(",") if x.strip())
        except ValueError:
            raise ValueError(f"CLAMU_SEEDS must be a comma list of integers, got {env!r}") from None
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError(f"CLAMU_SEEDS must list distinct seeds, got {env!r}")
        return seeds
    return MORE_SEEDS.get(profile, {}).get(notebook, SEEDS[profile])


def default(knob: str, profile: str, given: Any = None) -> Any:
    """``given`` when the notebook's parameters cell set it (not ``None``), else the profile's
    value of ``knob`` from :data:`KNOBS`."""
    _check(profile)
    if knob not in KNOBS:
        raise KeyError(f"unknown knob {knob!r}; knobs: {sorted(KNOBS)}")
    if given is not None:
        return given
    values = KNOBS[knob]
    return values.get(profile, values["*"])


def take(items: Sequence, n: Any) -> list:
    """``items`` as a knob says: all of them (``ALL``), the first and the last (``"ends"``), the
    last alone (``"last"``), or the first ``n`` (all of them when there are fewer)."""
    items = list(items)
    if n == ALL:
        return items
    if n == "last":
        return items[-1:]
    if n == "ends":
        return items[:1] + items[-1:] if len(items) > 1 else items
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"expected {ALL!r}, 'ends', 'last' or a positive count, got {n!r}")
    return items[:n]


def available(names: Sequence[str], quiet: bool = False) -> list[str]:
    """The settings of ``names`` that are registered and can be built on this machine, in
    order; each one left out is named on stderr with what is missing (unless ``quiet``)."""
    out = []
    for name in names:
        ok, why = availability(name) if name in SETTINGS else (False, "not a registered setting")
        if ok:
            out.append(name)
        elif not quiet:
            print(f"skipping {name}: {why}", file=sys.stderr)
    return out
