"""The exactness audit: unlearn tasks, rebuild from scratch without them, compare digests.

``audit(setting, method, unlearn=k, seed=s)`` fits a system on every task, unlearns k tasks
chosen by the seed one request at a time (each retrained and hash-checked), fits a second
system from scratch on the remaining tasks, and reports whether the two served digests
(τ̄ and everything the method serves on top) are bit-identical.
"""
from __future__ import annotations

import time

from ..runtime.determinism import rng
from ..core.errors import ClamuError, ExactnessError
from ..settings.base import Setting
from .system import UnlearningSystem


def choose_forget_set(task_ids: list[str], k: int, seed: int) -> list[str]:
    """k distinct task ids chosen by the seed, in the order they will be unlearned."""
    if not 0 < k < len(task_ids):
        raise ClamuError(f"can unlearn between 1 and {len(task_ids) - 1} of {len(task_ids)} tasks, not {k}")
    idx = rng(seed, "forget-set").permutation(len(task_ids))[:k]
    return [task_ids[i] for i in idx]


def audit(setting: Setting, method: str = "merge", unlearn: int = 3, seed: int = 0,
          progress: bool = False, device=None, **method_params) -> dict:
    """Run the audit and return a JSON-able dict; ``exact`` is True when digests are equal.
    ``device``: where both systems compute (default: the setting's)."""
    t0 = time.perf_counter()
    ids = list(setting.task_ids)
    forget = choose_forget_set(ids, unlearn, seed)
    system = UnlearningSystem(setting, method, seed=seed, progress=progress, device=device, **method_params).fit()
    hashes_match, error = True, None
    for tid in forget:
        try:
            system.unlearn([tid])
        except ExactnessError as e:
            hashes_match, error = False, str(e)
            break
    remaining = [t for t in ids if t not in forget]
    scratch = UnlearningSystem(setting, method, seed=seed, progress=progress, device=device,
                               **method_params).fit(remaining)
    d_unlearned, d_scratch = system.served_digest(), scratch.served_digest()
    out = {
        "exact": hashes_match and d_unlearned == d_scratch,
        "digest_unlearned": d_unlearned,
        "digest_from_scratch": d_scratch,
        "ledger_exact": system.ledger.digest() == scratch.ledger.digest(),
        "retrain_hashes_match": hashes_match,
        "setting": setting.name,
        "profile": setting.profile,
        "method": method,
        "method_params": system.method.params,
        "tasks": len(ids),
        "unlearned": forget,
        "unlearn_costs": system.report()["unlearn"],
        "device": str(system.device),
        "fingerprint": system.fingerprint,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if error:
        out["error"] = error
    return out
