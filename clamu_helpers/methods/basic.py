"""``merge`` (one global model, M0 + α τ̄) and ``local`` (T local models, the upper reference)."""
from __future__ import annotations

from .base import Method, register


def resolve_alpha(alpha, n_tasks: int) -> float:
    """α as a number: ``"mean"`` is 1/T (model averaging), a number is used as is."""
    if alpha == "mean":
        return 1.0 / max(1, n_tasks)
    return float(alpha)


@register("merge")
class Merge(Method):
    """Merging only: every task is served M0 + α τ̄ (α = 1/T by default)."""

    def __init__(self, alpha="mean"):
        super().__init__()
        self.params = {"alpha": alpha}

    def weights_for(self, system, task_id):
        alpha = resolve_alpha(self.params["alpha"], len(system.ledger))
        return system.setting.theta0 + alpha * system.tau_bar


@register("local")
class Local(Method):
    """Local models: task t is served M0 + τ_t (a forgotten or unknown task gets M0). Storage
    is T models; unlearning just deletes τ_u (no retraining)."""

    keeps_vectors = True
    retrains = False

    def group_of(self, system, task_id):
        return task_id if task_id in system.vectors else "zero-shot"

    def weights_for(self, system, task_id):
        tv = system.vectors.get(task_id)
        return system.setting.theta0 if tv is None else system.setting.theta0 + tv.values

    def state(self, system):
        return {}, {"local_models": {k: v.sha256 for k, v in sorted(system.vectors.items())}}

    def storage_bytes(self, system):
        return 4 * system.setting.spec.numel * max(1, len(system.vectors))
