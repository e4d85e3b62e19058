"""What exact unlearning costs, counted as the draft counts it and measured on a setting.

Counting: every method declares its rule once, as :meth:`Method.unlearning_cost` (one request
forgetting n of T merged tasks; ``steps`` = one finetune's steps E), and charges what it
executes through the same :meth:`clamu_helpers.runtime.costs.Costs.round`. One deletion (n = 1):

| method | task-trainings | gradient steps | parallel steps |
|---|---|---|---|
| ``scratch`` (one model on the union of the T−1 remaining tasks' data) | T − 1 | (T−1)·E | (T−1)·E |
| ``merge``, ``sift`` and its controls (retrain τ_u, subtract) | 1 | E | E |
| ``tall``, ``emr``, ``ties`` (need every τ_t: retrain τ_u, then the T−1 others side by side) | T | T·E | 2·E |
| ``clamu`` (retrain τ_u, re-optimise all K masks side by side; plus the α/η search) | 1 | E + K·E_mask (+ search) | E + E_mask (+ one E_mask per search round) |
| ``cluster-merge`` (retrain τ_u, subtract it from its cluster; data-dependent rebuilds on top) | 1 | E | E |
| ``local`` (stores every τ_t: delete it) | 0 | 0 | 0 |

With ``vectors="keep"`` TALL, EMR and TIES keep every τ_t (T models of storage) and retrain only
τ_u. Choices (the draft is brief): scratch trains one model sequentially, its data T−1 tasks'
worth, so its steps are E × (T−1) (the draft's "tasks worth of data"); TALL/EMR retrain the
remaining local models after τ_u (the draft's Table 3: parallel steps = 2× merging); ClAMU
re-optimises masks with as many steps as a finetune (the draft: "an equal number of steps").
:data:`RULES` (method → the name of its rule) is derived from the registry.

``draft_arithmetic(500, 250)`` reproduces the draft's Σ_{i=250}^{499} i = 93,625
task-trainings for scratch versus 250 for merging (374.5×): arithmetic from the draft's own
formula, not a measurement. ``measure_unlearning`` fits each method on the same tasks, unlearns
the same seeded sequence of k tasks one by one, audits exactness against a from-scratch fit
without them, and returns one row per method.

(Over 300 lines on purpose: counting (each method's declared rule) and measuring (running the
same requests on a setting) are compared row by row, so both live here.)
"""
from __future__ import annotations

import dataclasses
import time
from typing import Iterable, Sequence

import pandas as pd
import torch
from ..runtime.progress import tqdm

from ..unlearning.audit import choose_forget_set
from ..core.errors import ClamuError
from ..training.finetune import finetune
from ..methods import METHODS, get_method
from ..methods.declared import parse_params
from ..settings.base import Setting, Task
from ..unlearning.system import UnlearningSystem
from ..core.taskvector import TaskVector

#: method → the name of its counting rule (each method's ``cost_rule`` declaration), and ``scratch``
RULES = {"scratch": "retrain-union", **{name: cls.cost_rule for name, cls in sorted(METHODS.items())}}

#: the sizes of the image settings' profiles (smoke, cpu, paper) and the paper's 500
PROFILE_TASKS = {"smoke": 12, "cpu": 200, "paper": 500}

#: the draft's own methods for its counting (no validation search: the draft counts one mask
#: optimisation of E_mask = E steps per cluster after each deletion)
DRAFT_PARAMS = {"clamu": {"alpha": 1.0, "mask_lr": 100.0}}


def deletion_cost(method: str, n_tasks: int, steps: int = 1, n_forgotten: int = 1, **params) -> dict:
    """Cost of one request forgetting ``n_forgotten`` of ``n_tasks`` merged tasks, by the
    method's own counting rule (``params``: the method's parameters, e.g. ``clusters``).

    Returns ``{"task_trainings", "gradient_steps", "parallel_steps"}``."""
    if n_tasks < 1:
        raise ClamuError(f"a deletion needs at least one merged task, got n_tasks={n_tasks}")
    if not 1 <= n_forgotten <= n_tasks:
        raise ClamuError(f"cannot forget {n_forgotten} of {n_tasks} tasks in one request")
    if method == "scratch":
        rest = n_tasks - n_forgotten
        return {"task_trainings": rest, "gradient_steps": rest * steps, "parallel_steps": rest * steps}
    if method not in METHODS:
        raise ClamuError(f"no counting rule for method {method!r}; known: {sorted(RULES)}")
    c = get_method(method, **params).unlearning_cost(n_tasks, n_forgotten, steps).counts()
    return {"task_trainings": c["finetunes"], "gradient_steps": c["gradient_steps"],
            "parallel_steps": c["parallel_steps"]}


def sequence_cost(method: str, total: int, unlearn: int, steps: int = 1, **params) -> dict:
    """Summed :func:`deletion_cost` of ``unlearn`` deletions one by one from ``total`` tasks."""
    if not 0 <= unlearn <= total:
        raise ClamuError(f"cannot unlearn {unlearn} of {total} tasks")
    out = {"task_trainings": 0, "gradient_steps": 0, "parallel_steps": 0}
    for i in range(unlearn):
        for key, val in deletion_cost(method, total - i, steps, **params).items():
            out[key] += val
    return out


def draft_arithmetic(total: int = 500, unlearn: int = 250, steps: int = 1, params: dict | None = None,
                     methods: Sequence[str] = ("scratch", "merge", "sift", "tall", "emr", "clamu")) -> pd.DataFrame:
    """The draft's counting for ``unlearn`` sequential deletions from ``total`` tasks: arithmetic
    from the counting rules, not a measurement.

    One row per method: task-trainings, gradient and parallel steps, and SIFT's advantage
    (method ÷ sift) in each, plus ``first_deletion_ratio`` (one deletion from ``total``).
    ``params``: method → parameters (default :data:`DRAFT_PARAMS`). With the defaults, scratch is
    93,625 task-trainings and merge 250 (374.5×)."""
    params = DRAFT_PARAMS if params is None else params
    rows = []
    sift = sequence_cost("sift", total, unlearn, steps)
    sift_first = deletion_cost("sift", total, steps)
    for m in methods:
        c = sequence_cost(m, total, unlearn, steps, **params.get(m, {}))
        first = deletion_cost(m, total, steps, **params.get(m, {}))
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
    (label, name, params) passes through; values are read by :func:`~clamu_helpers.methods.declared.parse_params`."""
    if isinstance(spec, tuple):
        label, name, params = spec
        return str(label), str(name), dict(params)
    spec = str(spec)
    name, _, rest = spec.partition(":")
    return spec, name.strip(), parse_params(filter(None, rest.split(",")), f"method spec {spec!r}")


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
            "exact": again.digest == tv.digest, "digest": tv.digest}


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
        from ..training.store import TaskVectorStore
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
    for row, (_, name, params) in zip(rows, [s for s in specs if s[1] != "scratch"] + [("scratch", "scratch", {})]):
        c = sequence_cost(name, len(ids), k, steps, **params)
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


def _k_of(k, n_tasks: int) -> int:
    """``1``, ``"10%"`` (of T, at least 1) → a number of tasks to forget."""
    if isinstance(k, str) and k.endswith("%"):
        return max(1, round(float(k[:-1]) / 100 * n_tasks))
    return int(k)


def _warm_up(setting: Setting, specs, seed: int, store) -> None:
    """One untimed request of every method on the setting's first 3 tasks, so that no timed
    request pays a process's first optimizer steps, hashes and lazy imports (a cold first request
    once took 5–8× the next ones and alone made a seed's ratio)."""
    sub = setting.subset(min(3, len(setting.tasks)))
    for _, name, params in specs:
        UnlearningSystem(sub, name, seed=seed, store=store, **params).fit().unlearn(sub.task_ids[:1])


def unlearning_compute(setting: Setting, methods: Sequence, sizes: Sequence[int], ks: Sequence = (1, "10%"),
                       seed: int = 0, audit: str = "smallest", progress: bool = False,
                       warm_up: bool = True) -> pd.DataFrame:
    """Unlearning compute *measured*: for each T in ``sizes`` (the setting's first T tasks) and
    each method (names or specs such as ``"tall:vectors=keep"``, :func:`parse_method`), fit
    once, then for each k in ``ks`` (a count or a percentage of T) reload the fitted state and
    forget k seeded tasks in one request. Records the gradient and parallel steps the system
    executed, its wall seconds, the finetunes it ran and the storage it needs (after fit and
    after unlearning). ``audit``: ``"smallest"`` checks exactness (served digest against a
    fit without the forgotten tasks) at the smallest T only, ``"all"`` everywhere, ``"none"``
    never (``exact`` is then NaN). Fits read finished finetunes from the shared store;
    unlearning never does (retraining is what is measured). ``warm_up``: one untimed request
    per method first (:func:`_warm_up`)."""
    from ..runtime.determinism import stable_seed
    from .experiments import default_store, reloadable
    if audit not in ("smallest", "all", "none"):
        raise ClamuError(f"audit must be 'smallest', 'all' or 'none', got {audit!r}")
    specs = [parse_method(m) for m in methods]
    for label, name, _ in specs:
        if name not in METHODS:
            raise ClamuError(f"method {name!r} is not registered; available: {sorted(METHODS)}")
    store, rows = default_store(), []
    if warm_up:
        _warm_up(setting, specs, seed, store)
    for n in sizes:
        sub = setting.subset(n)
        ids = list(sub.task_ids)
        for label, name, params in tqdm(specs, desc=f"unlearning compute, T={n}", disable=not progress, leave=False):
            fitted = UnlearningSystem(sub, name, seed=seed, store=store, **params).fit()
            with reloadable(fitted, store) as copy:
                for k in ks:
                    kk = _k_of(k, n)
                    forget = choose_forget_set(ids, kk, stable_seed(seed, "compute", n, kk))
                    system = copy()
                    c0 = dataclasses.replace(system.unlearn_costs)
                    system.unlearn(forget)
                    c = system.unlearn_costs.since(c0)
                    exact = float("nan")
                    if audit == "all" or audit == "smallest" and n == min(sizes):
                        remaining = [t for t in ids if t not in set(forget)]
                        ref = UnlearningSystem(sub, name, seed=seed, store=store, **params).fit(remaining)
                        exact = float(ref.served_digest() == system.served_digest())
                    rows.append({"setting": setting.name, "method": label, "base_method": name, "tasks": n, "k": kk,
                                 "k_rule": str(k), "seed": seed,
                                 "unlearn_finetunes": c.finetunes, "unlearn_gradient_steps": c.gradient_steps,
                                 "unlearn_parallel_steps": c.parallel_steps, "unlearn_seconds": c.seconds,
                                 "storage_bytes_fit": fitted.storage_bytes(), "storage_bytes": system.storage_bytes(),
                                 "exact": exact})
    return pd.DataFrame(rows)


def compute_ratios(frame: pd.DataFrame, reference: str = "sift") -> pd.DataFrame:
    """Each method's measured unlearning cost ÷ ``reference``'s at the same (seed, T, k): one row
    per (method, seed, tasks, k) with ``ratio_gradient_steps``, ``ratio_parallel_steps``,
    ``ratio_seconds`` (inf where the reference spent 0, 0 where the method did)."""
    if reference not in set(frame["method"]):
        raise ClamuError(f"no rows of {reference!r} (methods: {sorted(set(frame['method']))})")
    keys = ["seed", "tasks", "k_rule"]
    ref = frame[frame.method == reference].set_index(keys)
    out = []
    for _, r in frame[frame.method != reference].iterrows():
        b = ref.loc[tuple(r[k] for k in keys)]
        out.append({"method": r["method"], "seed": r["seed"], "tasks": r["tasks"], "k": r["k"], "k_rule": r["k_rule"],
                    **{f"ratio_{c}": _ratio(r[f"unlearn_{c}"], b[f"unlearn_{c}"])
                       for c in ("gradient_steps", "parallel_steps", "seconds")}})
    return pd.DataFrame(out)


#: the "other merging baselines" of the final version's "up to 250× less compute" (Table 3's
#: localization methods that need every remaining τ_t): the claim is judged on the larger of
#: their ratios to SIFT-Masks
CLAIM_BASELINES = ("tall", "emr")
#: the compute claim in two configurations, SIFT-Masks and the baselines alike: both at fixed
#: scales (SIFT-Masks' 1/T, TALL's original α = 1; EMR has no scale), and both with their scales
#: chosen on validation data after every request — configuration → (SIFT-Masks, baselines)
CLAIM_CONFIGS = {"fixed scales": ("sift:scale=1/T", ("tall:alpha=1", "emr")),
                 "scales chosen on validation": ("sift:scale=val", ("tall", "emr"))}


def claim_ratios(frame: pd.DataFrame, column: str, baselines: Sequence[str] = CLAIM_BASELINES) -> list[float]:
    """Per seed, in seed order, the largest ``column`` among ``baselines`` for one deletion
    (k rule "1"): the values the compute claim is judged on. ``frame`` holds one T per method
    and seed (:func:`compute_ratios` at one T, or :func:`ratio_growth`'s extrapolation)."""
    one = frame[(frame.k_rule == "1") & frame.method.isin(baselines)]
    if "tasks" in one and one.groupby(["method", "seed"]).tasks.nunique().gt(1).any():
        raise ValueError("claim_ratios needs one T per method and seed; select the T first")
    return [float(v) for v in one.groupby("seed", sort=True)[column].max()]


def ratio_growth(ratios: pd.DataFrame, column: str = "ratio_gradient_steps", at: int = 500) -> pd.DataFrame:
    """How a ratio grows with T: per (method, k rule, seed), the least-squares fit
    log ratio = a + b log T over the measured T, its exponent ``b`` and its value at ``at``
    tasks (an extrapolation, labelled as such). Rows with a zero or infinite ratio are left out
    of the fit (a method that spends nothing, such as ``vectors="keep"``, has no growth)."""
    import math
    out = []
    for (method, k_rule, seed), sub in ratios.groupby(["method", "k_rule", "seed"], sort=False):
        pts = [(math.log(t), math.log(r)) for t, r in zip(sub["tasks"], sub[column]) if 0 < r < math.inf]
        if len(pts) < 2:
            out.append({"method": method, "k_rule": k_rule, "seed": seed, "exponent": float("nan"),
                        f"extrapolated_at_{at}": float("nan"), "points": len(pts)})
            continue
        xs, ys = zip(*pts)
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        sxx = sum((x - mx) ** 2 for x in xs)
        b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else float("nan")
        a = my - b * mx
        out.append({"method": method, "k_rule": k_rule, "seed": seed, "exponent": b,
                    f"extrapolated_at_{at}": math.exp(a + b * math.log(at)), "points": len(pts)})
    return pd.DataFrame(out)
