"""What exact unlearning costs, counted as the draft counts it and measured on a setting.

Counting (one deletion from T tasks merged before it; ``steps`` = one task's finetuning steps):

| method | task-trainings | gradient steps | parallel steps |
|---|---|---|---|
| ``scratch`` (one model on the union of the T−1 remaining tasks' data) | T − 1 | (T−1)·steps | (T−1)·steps |
| ``merge``, ``sift``, ``cluster-merge`` (retrain τ_u, subtract) | 1 | steps | steps |
| ``tall``, ``emr`` (masks need every τ_t: retrain τ_u, then the T−1 others in parallel) | T | T·steps | 2·steps |
| ``clamu`` (retrain τ_u, re-optimise all K masks in parallel, ``mask_steps`` each) | 1 | steps + K·mask_steps | steps + mask_steps |
| ``local`` (stores every τ_t: delete it) | 0 | 0 | 0 |

Choices (the draft is brief): scratch trains one model sequentially, its data T−1 tasks'
worth, so its steps are ``steps`` × (T−1) (the draft's "tasks worth of data"); TALL/EMR are
charged with retraining the remaining local models because storing them would cost T models
(the draft's Table 3 counts it so: parallel steps = 2× merging); ClAMU re-optimises masks with
as many steps as a finetune (the draft: "an equal number of steps"), one mask per remaining task
unless ``clusters`` K is given.

``draft_arithmetic(500, 250)`` reproduces the draft's Σ_{i=250}^{499} i = 93,625
task-trainings for scratch versus 250 for merging (374.5×). ``measure_unlearning`` fits each
method on the same tasks, unlearns the same seeded sequence of k tasks one by one, audits
exactness against a from-scratch fit without them, and returns one row per method.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Iterable, Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from .audit import choose_forget_set
from .errors import ClamuError
from .finetune import finetune
from .methods import METHODS
from .settings.base import Setting, Task
from .system import UnlearningSystem
from .taskvector import TaskVector

#: the draft's counting rule of each method (see the module docstring)
RULES = {"scratch": "retrain-union", "merge": "retrain-one", "sift": "retrain-one",
         "cluster-merge": "retrain-one", "tall": "retrain-all", "emr": "retrain-all",
         "clamu": "retrain-and-masks", "local": "none"}

#: the sizes of the image settings' profiles (smoke, cpu, paper) and the paper's 500
PROFILE_TASKS = {"smoke": 12, "cpu": 200, "paper": 500}


def deletion_cost(method: str, n_tasks: int, steps: int = 1, clusters: int | None = None,
                  mask_steps: int | None = None) -> dict:
    """Cost of one deletion from ``n_tasks`` merged tasks, by the draft's counting (table above).

    Returns ``{"task_trainings", "gradient_steps", "parallel_steps"}``."""
    if method not in RULES:
        raise ClamuError(f"no counting rule for method {method!r}; known: {sorted(RULES)}")
    if n_tasks < 1:
        raise ClamuError(f"a deletion needs at least one merged task, got n_tasks={n_tasks}")
    rest = n_tasks - 1
    ms = steps if mask_steps is None else int(mask_steps)
    rule = RULES[method]
    if rule == "retrain-union":
        tt, g, p = rest, rest * steps, rest * steps
    elif rule == "retrain-one":
        tt, g, p = 1, steps, steps
    elif rule == "retrain-all":
        tt, g, p = n_tasks, n_tasks * steps, steps + (steps if rest else 0)
    elif rule == "retrain-and-masks":
        k = rest if clusters is None else min(int(clusters), rest)
        tt, g, p = 1, steps + k * ms, steps + (ms if k else 0)
    else:
        tt, g, p = 0, 0, 0
    return {"task_trainings": tt, "gradient_steps": g, "parallel_steps": p}


def sequence_cost(method: str, total: int, unlearn: int, steps: int = 1, clusters: int | None = None,
                  mask_steps: int | None = None) -> dict:
    """Summed :func:`deletion_cost` of ``unlearn`` deletions one by one from ``total`` tasks."""
    if not 0 <= unlearn <= total:
        raise ClamuError(f"cannot unlearn {unlearn} of {total} tasks")
    out = {"task_trainings": 0, "gradient_steps": 0, "parallel_steps": 0}
    for i in range(unlearn):
        for key, val in deletion_cost(method, total - i, steps, clusters, mask_steps).items():
            out[key] += val
    return out


def draft_arithmetic(total: int = 500, unlearn: int = 250, steps: int = 1, clusters: int | None = None,
                     mask_steps: int | None = None,
                     methods: Sequence[str] = ("scratch", "merge", "sift", "tall", "emr", "clamu")) -> pd.DataFrame:
    """The draft's counting for ``unlearn`` sequential deletions from ``total`` tasks.

    One row per method: task-trainings, gradient and parallel steps, and SIFT's advantage
    (method ÷ sift) in each, plus ``first_deletion_ratio`` (one deletion from ``total``).
    With the defaults, scratch is 93,625 task-trainings and merge 250 (374.5×)."""
    rows = []
    sift = sequence_cost("sift", total, unlearn, steps)
    sift_first = deletion_cost("sift", total, steps)
    for m in methods:
        c = sequence_cost(m, total, unlearn, steps, clusters, mask_steps)
        first = deletion_cost(m, total, steps, clusters, mask_steps)
        rows.append({"method": m, "total": total, "unlearn": unlearn, "steps": steps, **c,
                     "sift_ratio_gradient": _ratio(c["gradient_steps"], sift["gradient_steps"]),
                     "sift_ratio_parallel": _ratio(c["parallel_steps"], sift["parallel_steps"]),
                     "first_deletion_ratio": _ratio(first["gradient_steps"], sift_first["gradient_steps"])})
    return pd.DataFrame(rows)


def draft_table(sizes: Iterable[int] | None = None, steps: int = 1, **kw) -> pd.DataFrame:
    """:func:`draft_arithmetic` at each size (default: the profiles' 12, 200 and 500 tasks),
    unlearning half of them, as the draft's Table 2 does at 500."""
    sizes = sorted(set(PROFILE_TASKS.values())) if sizes is None else list(sizes)
    return pd.concat([draft_arithmetic(n, n // 2, steps, **kw) for n in sizes], ignore_index=True)


def _ratio(a, b) -> float:
    return float(a) / float(b) if b else float("nan")


# -- measurement --------------------------------------------------------------------------------
def parse_method(spec) -> tuple[str, str, dict]:
    """``"sift:scale=count,projection=before_step"`` → (label, "sift", {...}); a tuple
    (label, name, params) passes through. Numbers in values become int/float."""
    if isinstance(spec, tuple):
        label, name, params = spec
        return str(label), str(name), dict(params)
    spec = str(spec)
    name, _, rest = spec.partition(":")
    params = {}
    for item in filter(None, rest.split(",")):
        key, eq, val = item.partition("=")
        if not eq:
            raise ClamuError(f"method parameter {item!r} in {spec!r} is not key=value")
        params[key.strip()] = _number(val.strip())
    return spec, name.strip(), params


def _number(s: str):
    for cast in (int, float):
        try:
            return cast(s)
        except ValueError:
            pass
    return s


def union_task(setting: Setting, task_ids: Sequence[str], task_id: str = "scratch") -> Task:
    """One task holding the training data of ``task_ids`` (the scratch baseline's data)."""
    tasks = [setting.task(t) for t in task_ids]
    x = torch.cat([t.train[0] for t in tasks])
    y = torch.cat([t.train[1] for t in tasks])
    empty = (x[:0], y[:0])
    return Task(task_id, (x, y), empty, empty, source="union")


def scratch_model(setting: Setting, task_ids: Sequence[str], seed: int = 0) -> TaskVector:
    """Retraining from scratch: one model finetuned from M0 on the union of ``task_ids``' data
    with the setting's FinetuneConfig, its steps scaled by the number of tasks."""
    cfg = dataclasses.replace(setting.finetune_config, steps=setting.finetune_config.steps * len(task_ids))
    return finetune(setting, union_task(setting, task_ids), seed=seed, config=cfg)


def _measure_system(setting, label, name, params, ids, forget, seed, split, store, progress) -> dict:
    remaining = [t for t in ids if t not in set(forget)]
    system = UnlearningSystem(setting, name, seed=seed, store=store, progress=progress, **params)
    system.fit(ids)
    acc_before = setting.mean_score(system.weights_for, remaining, split)
    storage_fit = system.storage_bytes()
    for u in tqdm(forget, desc=f"unlearn ({label})", disable=not progress, leave=False):
        system.unlearn([u])
    ref = UnlearningSystem(setting, name, seed=seed, store=store, **params).fit(remaining)
    return {"method": label, "base_method": name, "shared_store": store is not None, "fit_finetunes": system.fit_costs.finetunes,
            "fit_gradient_steps": system.fit_costs.gradient_steps,
            "fit_parallel_steps": system.fit_costs.parallel_steps, "fit_seconds": system.fit_costs.seconds,
            "unlearn_finetunes": system.unlearn_costs.finetunes,
            "unlearn_gradient_steps": system.unlearn_costs.gradient_steps,
            "unlearn_parallel_steps": system.unlearn_costs.parallel_steps,
            "unlearn_seconds": system.unlearn_costs.seconds,
            "storage_bytes_fit": storage_fit, "storage_bytes": system.storage_bytes(),
            "acc_remaining_before": acc_before,
            "acc_remaining": setting.mean_score(system.weights_for, remaining, split),
            "acc_forgotten": setting.mean_score(system.weights_for, forget, split),
            "acc_forgotten_never_trained": setting.mean_score(ref.weights_for, forget, split),
            "exact": system.served_digest() == ref.served_digest(), "digest": system.served_digest()}


def _measure_scratch(setting, ids, forget, seed, split, mode, progress) -> dict:
    steps = setting.finetune_config.steps
    remaining = [t for t in ids if t not in set(forget)]
    row = {"method": "scratch", "base_method": "scratch", "shared_store": False, "fit_finetunes": 1, "storage_bytes_fit": 4 * setting.spec.numel,
           "storage_bytes": 4 * setting.spec.numel, "fit_gradient_steps": steps * len(ids),
           "fit_parallel_steps": steps * len(ids), "unlearn_finetunes": len(forget)}
    counted = sequence_cost("scratch", len(ids), len(forget), steps)
    row["unlearn_gradient_steps"] = counted["gradient_steps"]
    row["unlearn_parallel_steps"] = counted["parallel_steps"]
    if mode == "count":
        nan = float("nan")
        return {**row, "fit_seconds": nan, "unlearn_seconds": nan, "acc_remaining_before": nan,
                "acc_remaining": nan, "acc_forgotten": nan, "acc_forgotten_never_trained": nan,
                "exact": True, "digest": None}
    theta0 = setting.theta0
    t0 = time.perf_counter()
    tv = scratch_model(setting, ids, seed)
    row["fit_seconds"] = time.perf_counter() - t0
    w = theta0 + tv.values
    row["acc_remaining_before"] = setting.mean_score(lambda t: w, remaining, split)
    current, seconds, grad = list(ids), 0.0, 0
    for u in tqdm(forget, desc="unlearn (scratch)", disable=not progress, leave=False):
        current.remove(u)
        t0 = time.perf_counter()
        tv = scratch_model(setting, current, seed)
        seconds += time.perf_counter() - t0
        grad += tv.meta["steps"]
    if grad != counted["gradient_steps"]:
        raise ClamuError(f"scratch baseline ran {grad} steps, the counting rule says {counted['gradient_steps']}")
    w = theta0 + tv.values
    again = scratch_model(setting, remaining, seed)  # the audit: a fresh from-scratch model
    return {**row, "unlearn_seconds": seconds,
            "acc_remaining": setting.mean_score(lambda t: w, remaining, split),
            "acc_forgotten": setting.mean_score(lambda t: w, forget, split),
            "acc_forgotten_never_trained": setting.mean_score(lambda t: theta0 + again.values, forget, split),
            "exact": again.sha256 == tv.sha256, "digest": tv.sha256}


def measure_unlearning(setting: Setting, methods: Sequence = ("merge", "sift"), k: int = 2, seed: int = 0,
                       tasks: int | None = None, scratch: str | None = "measure", split: str = "test",
                       share_vectors: bool = False, progress: bool = False) -> pd.DataFrame:
    """Fit each method on the same tasks, unlearn the same seeded sequence of ``k`` tasks one by
    one, and report one row per method (tidy: one column per quantity).

    ``methods``: names registered in :data:`METHODS` or specs ``"sift:scale=count"`` (see
    :func:`parse_method`). ``tasks``: use the setting's first n tasks. ``scratch``: add the
    retrain-from-scratch baseline: ``"measure"`` trains it for real after each deletion (steps ×
    remaining tasks; affordable at small k), ``"count"`` only counts it as the draft does
    (no seconds or accuracy; ``exact`` is then True by construction), ``None`` leaves it out. ``share_vectors``: fits (every method's, and the audit's reference
    fits) read τ_t from one temporary store when an earlier fit of this call finetuned it with
    the same options (sign-fixed and plain vectors have different keys): much faster, but then
    ``fit_seconds`` are not comparable across methods (column ``shared_store``). Retraining at
    unlearning never reads the store, so unlearning seconds stay honest.

    Columns: costs of fit and unlearning (finetunes, gradient steps, parallel steps, seconds) as
    the system recorded them, ``counted_*`` by :func:`deletion_cost`, storage bytes after fit
    and after unlearning, mean accuracy on the remaining tasks (before and after) and on the
    forgotten ones, the forgotten tasks' accuracy under a system fitted without them, and
    ``exact`` (served digest equal to that system's)."""
    ids = list(setting.task_ids if tasks is None else setting.task_ids[:int(tasks)])
    forget = choose_forget_set(ids, k, seed)
    if scratch not in (None, "measure", "count"):
        raise ClamuError(f"scratch must be 'measure', 'count' or None, got {scratch!r}")
    specs = [parse_method(m) for m in methods]
    for label, name, _ in specs:
        if name != "scratch" and name not in METHODS:
            raise ClamuError(f"method {name!r} is not registered; available: {sorted(METHODS)}")
    rows, store = [], None
    if share_vectors:
        import tempfile
        from .store import TaskVectorStore
        store = TaskVectorStore(tempfile.mkdtemp(prefix="clamu-cost-"))
    try:
        for label, name, params in tqdm(specs, desc="methods", disable=not progress):
            if name == "scratch":
                continue
            rows.append(_measure_system(setting, label, name, params, ids, forget, seed, split, store, progress))
    finally:
        if store is not None:
            import shutil
            shutil.rmtree(store.root, ignore_errors=True)
    if scratch is not None or any(n == "scratch" for _, n, _ in specs):
        rows.append(_measure_scratch(setting, ids, forget, seed, split, scratch or "measure", progress))
    steps = setting.finetune_config.steps
    for row in rows:
        rule = row["base_method"] if row["base_method"] in RULES else None
        c = sequence_cost(rule, len(ids), k, steps) if rule else {}
        row["counted_unlearn_gradient_steps"] = c.get("gradient_steps", float("nan"))
        row["counted_unlearn_parallel_steps"] = c.get("parallel_steps", float("nan"))
        row.update(setting=setting.name, profile=setting.profile, tasks=len(ids), k=k, seed=seed,
                   steps=steps, forgotten=",".join(forget))
    return pd.DataFrame(rows)


def sift_ratios(frame: pd.DataFrame, reference: str = "sift") -> pd.DataFrame:
    """Each method's unlearning cost divided by ``reference``'s (how many times more SIFT saves):
    measured gradient steps, parallel steps and seconds, and the counted gradient steps."""
    if reference not in set(frame["method"]):
        raise ClamuError(f"no row {reference!r} in the frame (methods: {sorted(frame['method'])})")
    ref = frame.set_index("method").loc[reference]
    cols = ["unlearn_gradient_steps", "unlearn_parallel_steps", "unlearn_seconds", "counted_unlearn_gradient_steps"]
    out = []
    for _, row in frame.iterrows():
        if row["method"] == reference:
            continue
        out.append({"method": row["method"], **{f"ratio_{c}": _ratio(row[c], ref[c]) if pd.notna(row[c]) else float("nan")
                                                for c in cols}})
    return pd.DataFrame(out)
