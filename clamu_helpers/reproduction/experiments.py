"""One function per figure or table of the paper, each returning a tidy ``pandas.DataFrame``.

Notebooks call these and plot the frames with :mod:`clamu_helpers.reproduction.plots`. Finetunes are
content-addressed in a :class:`TaskVectorStore`, so re-running a notebook (or another
notebook on the same setting) reuses every finished finetune.
"""
from __future__ import annotations

import dataclasses
import tempfile
import time
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import pandas as pd
from ..runtime.progress import tqdm

from ..unlearning.audit import choose_forget_set
from ..core.ledger import MergeLedger
from ..methods.declared import ONE_OVER_T, canonical, one_over_t
from ..settings.base import Setting
from ..training.store import TaskVectorStore
from ..unlearning.system import UnlearningSystem

_STORE: TaskVectorStore | None = None


def default_store() -> TaskVectorStore:
    """The shared on-disk store of finished finetunes (``$CLAMU_CACHE/task_vectors``)."""
    global _STORE
    if _STORE is None:
        _STORE = TaskVectorStore()
    return _STORE


from .profiles import CLAMU_PROTOCOL, SEEDS, seeds_for  # noqa: E402,F401  (declared with the other protocol choices)


def over_seeds(run: Callable[[int], pd.DataFrame], seeds: Sequence[int], desc: str = "seeds") -> pd.DataFrame:
    """``run(seed)`` for every seed, concatenated with a ``seed`` column (progress bar over
    seeds). The seeds run side by side in one-thread worker processes
    (:func:`clamu_helpers.runtime.workers.run_units`; ``CLAMU_WORKERS=1`` runs them here, one after
    another): the rows are bit-identical either way."""
    from ..runtime.workers import run_units
    seeds = list(seeds)
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"repeated seeds: {seeds}")
    frames = run_units(run, seeds, desc=desc)
    return pd.concat([f.assign(seed=s) for f, s in zip(frames, seeds)], ignore_index=True)


def per_seed(frame: pd.DataFrame, quantity: Callable[[pd.DataFrame], float]) -> list[float]:
    """``quantity`` of each seed's rows, in seed order: the values a claim is judged on."""
    if "seed" not in frame:
        raise ValueError("the frame has no seed column (build it with over_seeds)")
    return [float(quantity(sub)) for _, sub in frame.groupby("seed", sort=True)]


def log_sizes(n: int, base: Sequence[int] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)) -> list[int]:
    """Task counts on a log grid up to ``n`` (``n`` included)."""
    return sorted({b for b in base if b < n} | {n})


def merging_at_scale(setting: Setting, sizes: Sequence[int] | None = None, seed: int = 0,
                     alpha: str | float = "mean", progress: bool = False) -> pd.DataFrame:
    """Figure 2: accuracy of the merged model M0 + α Σ_{t≤T} τ_t on the first T tasks, as T
    grows, beside the T local models and the zero-shot M0 (mean over the T tasks)."""
    ids = setting.task_ids
    sizes = list(sizes or log_sizes(len(ids)))
    system = UnlearningSystem(setting, "local", seed=seed, store=default_store(), progress=progress)
    vectors = system.finetune(ids[: max(sizes)], desc=f"finetune {setting.name}")
    local = {t: setting.score(setting.theta0 + vectors[t].values, *setting.task(t).test) for t in vectors}
    zero = {t: setting.score(setting.theta0, *setting.task(t).test) for t in vectors}
    rows = []
    ledger = MergeLedger(setting.spec)
    for t_id in ids[: max(sizes)]:
        ledger.add(t_id, vectors[t_id])
        n = len(ledger)
        if n not in sizes:
            continue
        a = one_over_t(n) if canonical(alpha) == ONE_OVER_T else float(alpha)
        first = ids[:n]
        merged = setting.mean_score(setting.theta0 + a * ledger.tau_bar(), first)
        for label, value in (("merged", merged), ("local", sum(local[t] for t in first) / n),
                             ("zero-shot", sum(zero[t] for t in first) / n)):
            rows.append({"setting": setting.name, "tasks": n, "model": label, setting.metric_name: value})
    return pd.DataFrame(rows)


#: the rows of the comparison figures (3, 5 and SIFT-Masks'): every method as its authors define
#: it, each served scale chosen on validation data from one grid (``"val"``, see
#: :mod:`clamu_helpers.localization.selection`), ClAMU with an equal budget (its search:
#: :data:`CLAMU_PROTOCOL`), and the controls
COMPARISON: dict[str, tuple[str, dict]] = {
    "averaging": ("merge", {}),
    "task arithmetic": ("merge", {"alpha": "val"}),
    "TIES": ("ties", {}),
    "TALL": ("tall", {}),
    "EMR": ("emr", {}),
    "ClAMU": ("clamu", dict(CLAMU_PROTOCOL)),
    "ClAMU supermask (control)": ("clamu-supermask", dict(CLAMU_PROTOCOL)),
    "SIFT-Masks": ("sift", {"scale": "val"}),
    "SIFT random mask (control)": ("sift-random-mask", {"scale": "val"}),
    "SIFT sign-fixed merge (control)": ("sift-merge", {"scale": "val"}),
    "local": ("local", {}),
}

#: (method row, control row, what the control tests) for :func:`control_gaps`
CONTROLS = (
    ("ClAMU", "ClAMU supermask (control)",
     "the same mask optimisation over |τ̄| with random signs: do ClAMU's masks recover what merging knew, "
     "or train a supermask on the task's own data?"),
    ("SIFT-Masks", "SIFT random mask (control)",
     "a random mask of the same density over the same sign-fixed τ̄: does the choice of coordinates matter?"),
    ("SIFT-Masks", "SIFT sign-fixed merge (control)",
     "the same sign-fixed finetuning served without masks: what do the masks add to sign-fixing alone?"),
)


def methods(*labels: str, **extra: tuple[str, dict]) -> dict[str, tuple[str, dict]]:
    """Rows of :data:`COMPARISON` by label (all of them when none is given), plus ``extra``
    rows; raises ``KeyError`` naming an unknown label."""
    unknown = [lab for lab in labels if lab not in COMPARISON]
    if unknown:
        raise KeyError(f"unknown comparison rows {unknown}; known: {list(COMPARISON)}")
    rows = {lab: COMPARISON[lab] for lab in (labels or COMPARISON)}
    return {**rows, **extra}


def control_gaps(frame: pd.DataFrame, by: Sequence[str] = (), metric: str = "accuracy",
                 tie: float = 0.02) -> pd.DataFrame:
    """Each method beside its control (:data:`CONTROLS`) in a frame of
    :func:`compare_methods` rows, grouped by the columns ``by`` (e.g. ``K``, ``clustering``):
    both scores, the gap, and a sentence on what the control shows, whichever way it falls
    (|gap| < ``tie`` is read as "about equal": one seed, no interval)."""
    rows = []
    groups = frame.groupby(list(by), sort=False) if by else [((), frame)]
    for key, sub in groups:
        acc = sub.set_index("label")[metric]
        for method, control, question in CONTROLS:
            if method not in acc or control not in acc:
                continue
            gap = float(acc[method] - acc[control])
            if abs(gap) < tie:
                reading = "about equal: the control explains the method's result"
            elif gap > 0:
                reading = "the method beats its control: what the control removes matters"
            else:
                reading = "the control beats the method"
            rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))), "method": method,
                         "control": control, metric: float(acc[method]), f"control {metric}": float(acc[control]),
                         "gap": gap, "reading": reading, "question": question})
    return pd.DataFrame(rows)


def served_columns(system: UnlearningSystem) -> dict:
    """What a table records beside a method's accuracy: ``alpha`` (its served scale, whatever the
    parameter is called: α, SIFT's scale, TIES's λ; chosen on validation data where it was
    ``"val"``), the other served hyperparameters as ``served_<name>``, and ``mask_density``
    (mean fraction of parameters inside its masks; NaN without masks)."""
    m = system.method
    served = system.served_params()
    out = {"alpha": served.get(m.scale_param, float("nan")) if m.scale_param else float("nan")}
    out.update({f"served_{k}": v for k, v in served.items() if k != m.scale_param})
    dens = system.mask_density()
    out["mask_density"] = float("nan") if dens is None else dens
    return out


def compare_methods(setting: Setting, methods: dict[str, tuple[str, dict]], seed: int = 0,
                    progress: bool = False) -> pd.DataFrame:
    """Fit each ``label → (method, params)`` on every task; one row per method with mean
    test score, the served scale and mask density (:func:`served_columns`), storage bytes and
    fit costs (Figures 3 and 5, SIFT-Masks comparison)."""
    rows = []
    for label, (method, params) in methods.items():
        t0 = time.perf_counter()
        system = UnlearningSystem(setting, method, seed=seed, store=default_store(), progress=progress,
                                  **params).fit()
        scores = system.evaluate()[setting.metric_name]
        rows.append({"setting": setting.name, "label": label, "method": method, "tasks": len(system.task_ids),
                     setting.metric_name: float(scores.mean()), **served_columns(system),
                     "storage_bytes": system.storage_bytes(),
                     "fit_gradient_steps": system.fit_costs.gradient_steps,
                     "seconds": time.perf_counter() - t0, **{f"param_{k}": v for k, v in params.items()}})
    return pd.DataFrame(rows)


def unlearning_schedule(n_tasks: int, fractions: Sequence[float] = (0, 0.5, 0.75, 0.95, 0.99, 0.998)) -> list[int]:
    """How many tasks are unlearned at each row of Tables 2–3 (draft: 0, 250, 375, 475, 495, 499 of 500)."""
    out = sorted({min(n_tasks - 1, int(round(f * n_tasks))) for f in fractions})
    return out


@contextmanager
def reloadable(system: UnlearningSystem, store=None) -> Iterator[Callable[[], UnlearningSystem]]:
    """Save a fitted system once and yield a function that returns a fresh, bit-identical copy
    of it (loaded from the save), so several unlearning sequences can start from one fit."""
    with tempfile.TemporaryDirectory(prefix="clamu-fitted-") as tmp:
        system.save(tmp)
        yield lambda: UnlearningSystem.load(tmp, system.setting, store=store)


def unlearning_orders(setting: Setting, method: str = "merge", orders: int = 5, schedule: Sequence[int] | None = None,
                      seed: int = 0, batch: bool = False, local: bool = True, replay: str = "first",
                      progress: bool = False, **params) -> pd.DataFrame:
    """Tables 2–3 as the draft means them: for each of ``orders`` random forget orders (seeded
    by (seed, order)), the score of the served models on the *remaining* tasks at each
    checkpoint of the schedule, the local models' score on the same remaining tasks
    (``local``) and the gap between them — a rise that the local models share says which tasks
    remain, not that interference fell. One row per (order, checkpoint).

    ``replay``: ``"all"`` unlearns every order for real (from one fitted state, saved once and
    reloaded); ``"first"`` unlearns order 0 for real and, for the other orders, fits the
    remaining tasks afresh from the store of finished finetunes — the same bits, because
    unlearning is exact (order 0 checks it: ``exact`` compares its final served digest with a
    fresh fit of its remaining tasks), at a fraction of the retraining. Costs (gradient and
    parallel steps, seconds) are those of an order unlearned for real, NaN for refitted ones.
    ``batch``: one request per checkpoint instead of one per task."""
    from ..runtime.determinism import stable_seed
    if orders < 1:
        raise ValueError(f"orders must be at least 1, got {orders}")
    if replay not in ("first", "all"):
        raise ValueError(f"replay must be 'first' or 'all', got {replay!r}")
    ids = setting.task_ids
    schedule = list(schedule or unlearning_schedule(len(ids)))
    store = default_store()

    def fit(task_ids=None):
        return UnlearningSystem(setting, method, seed=seed, store=store, progress=progress, **params).fit(task_ids)

    fitted = fit()
    local_scores = {}
    if local:
        loc = UnlearningSystem(setting, "local", seed=seed, store=store, progress=progress).fit()
        local_scores = dict(zip(loc.task_ids, loc.evaluate()[setting.metric_name]))
    rows, nan = [], float("nan")
    with reloadable(fitted, store) as copy:
        for o in tqdm(range(orders), desc=f"forget orders ({method})", disable=not progress, leave=False):
            order = choose_forget_set(ids, max(schedule), stable_seed(seed, "forget-order", o)) if max(schedule) else []
            real = replay == "all" or o == 0
            system = copy() if real else None
            c0 = dataclasses.replace(system.unlearn_costs) if real else None
            done = 0
            for k in schedule:
                gone = set(order[:k])
                remaining = [t for t in ids if t not in gone]
                if real:
                    todo = order[done:k]
                    for req in ([todo] if batch and todo else [[t] for t in todo]):
                        system.unlearn(req)
                    served = system
                else:
                    served = fit(remaining) if k else fitted
                done = k
                score = float(served.evaluate(task_ids=remaining)[setting.metric_name].mean())
                loc_acc = sum(local_scores[t] for t in remaining) / len(remaining) if local else nan
                c = system.unlearn_costs.since(c0) if real else None
                rows.append({"setting": setting.name, "method": method, "order": o, "replayed": "unlearned" if real else "refitted",
                             "unlearned": k, "remaining": len(remaining), setting.metric_name: score, "local": loc_acc,
                             "gap": score - loc_acc,
                             "gradient_steps": c.gradient_steps if real else nan,
                             "parallel_steps": c.parallel_steps if real else nan,
                             "unlearn_seconds": c.seconds if real else nan,
                             "storage_bytes": served.storage_bytes(), "exact": nan})
            if real and max(schedule) and o == 0:
                rows[-1]["exact"] = float(fit(remaining).served_digest() == system.served_digest())
    return pd.DataFrame(rows)


def cluster_counts(n_tasks: int, paper: Sequence[int] = (4, 20, 100), paper_tasks: int = 500) -> list[int]:
    """The draft's K ∈ {4, 20, 100} of 500 tasks, scaled to ``n_tasks`` (at least 2, below T)."""
    ks = {max(2, round(k * n_tasks / paper_tasks)) for k in paper}
    if n_tasks <= 20:
        ks |= {2, 4}
    return sorted(k for k in ks if k < n_tasks)


def methods_vs_tasks(setting: Setting, methods: dict[str, tuple[str, dict]], sizes: Sequence[int],
                     seed: int = 0, progress: bool = False) -> pd.DataFrame:
    """Mean score of each method fitted on the first n tasks, for each n in ``sizes``."""
    frames = []
    for n in sizes:
        df = compare_methods(setting.subset(n), methods, seed=seed, progress=progress)
        frames.append(df.assign(tasks=n))
    return pd.concat(frames, ignore_index=True)


def dataset_table(settings: Sequence[Setting]) -> pd.DataFrame:
    """Table 6: tasks, global labels, labels per task and task sizes of each setting."""
    rows = []
    for s in settings:
        labels = [len(set(t.train[1].reshape(-1).tolist()) - {-100}) for t in s.tasks]
        sizes = [len(t.train[1]) for t in s.tasks]
        rows.append({"setting": s.name, "profile": s.profile, "tasks": len(s.tasks), "global labels": s.num_classes,
                     "labels/task min": min(labels), "labels/task max": max(labels),
                     "train size min": min(sizes), "train size max": max(sizes), "parameters": s.spec.numel,
                     "steps": s.finetune_config.steps})
    return pd.DataFrame(rows)
