"""``merge`` (one global model, M0 + α τ̄: averaging or task arithmetic) and ``local`` (T local
models, the upper reference)."""
from __future__ import annotations

from dataclasses import dataclass

from ..costs import Costs
from ..selection import choose, is_val, scale_grid
from .base import Method, Params, register


def resolve_alpha(alpha, n_tasks: int) -> float:
    """α as a number: ``"mean"`` is 1/T (model averaging), a number is used as is."""
    if alpha == "mean":
        return 1.0 / max(1, n_tasks)
    return float(alpha)


def check_alpha(alpha, name: str = "alpha") -> None:
    """α: ``"mean"`` (1/T), ``"val"`` (chosen on validation from :func:`scale_grid`) or a
    finite positive number; anything else is a ``ValueError`` naming the parameter."""
    if alpha in ("mean", "val"):
        return
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (0 < float(alpha) < float("inf")):
        raise ValueError(f"{name} must be a positive number, 'mean' (1/T) or 'val' (chosen on validation data), "
                         f"got {alpha!r}")


def mean_val_score(ctx, weights_of, ids) -> float:
    """Mean validation score over tasks ``ids`` of ``weights_of(task id)`` (NaN for none)."""
    return ctx.setting.mean_score(weights_of, ids, "val")


@register("merge")
class Merge(Method):
    """Merging only: every task is served M0 + α τ̄. α = ``"mean"`` (1/T) is model averaging
    (default); a number is task arithmetic with that α; ``"val"`` is task arithmetic with α chosen
    from :func:`clamu_helpers.selection.scale_grid` by the mean validation score of the served
    model over the merged tasks (Ilharco et al. 2023 tune α on validation data the same way)."""

    reference = "Task arithmetic: Ilharco et al., Editing models with task arithmetic, ICLR 2023"
    scale_param = "alpha"

    @dataclass
    class Params(Params):
        alpha: float | str = "mean"   # "mean" (1/T), "val" or a positive number

        def validate(self):
            check_alpha(self.alpha)

    def __init__(self, **params):
        super().__init__(**params)
        self.chosen: dict = {}

    def alpha(self, ctx) -> float:
        a = self.params["alpha"]
        return self.chosen["alpha"] if is_val(a) else resolve_alpha(a, len(ctx.ledger))

    def fit(self, ctx, vectors):
        self._choose(ctx)

    def refresh(self, ctx, removed, retrained):
        self._choose(ctx)

    def _choose(self, ctx) -> None:
        self.chosen = {}
        ids = ctx.task_ids
        if is_val(self.params["alpha"]) and ids:
            theta0, tau_bar = ctx.setting.theta0, ctx.tau_bar
            c = choose(scale_grid(len(ids)), lambda a: mean_val_score(ctx, theta0 + a * tau_bar, ids))
            self.chosen = {"alpha": c.value}

    def weights_for(self, ctx, task_id):
        if not len(ctx.ledger):
            return ctx.setting.theta0
        return ctx.setting.theta0 + self.alpha(ctx) * ctx.tau_bar

    def served_params(self, ctx):
        return {"alpha": self.alpha(ctx)} if len(ctx.ledger) else {}

    def state(self, ctx):
        return {}, ({"chosen": self.chosen} if self.chosen else {})

    def load_state(self, ctx, tensors, meta):
        self.chosen = dict(meta.get("chosen", {}))


@register("local")
class Local(Method):
    """Local models: task t is served M0 + τ_t (a forgotten or unknown task gets M0). Storage
    is T models; unlearning just deletes τ_u (no retraining)."""

    reference = "the upper reference: one finetuned model per task"
    keeps_vectors = True
    retrains = False
    cost_rule = "none"

    def group_of(self, ctx, task_id):
        return task_id if task_id in ctx.vectors else "zero-shot"

    def weights_for(self, ctx, task_id):
        tv = ctx.vectors.get(task_id)
        return ctx.setting.theta0 if tv is None else ctx.setting.theta0 + tv.values

    def state(self, ctx):
        return {}, {"local_models": {k: v.digest_in(ctx.ledger.digest_format) for k, v in sorted(ctx.vectors.items())}}

    def storage_bytes(self, ctx):
        return 4 * ctx.setting.spec.numel * max(1, len(ctx.vectors))

    def unlearning_cost(self, n_before, n_forgotten, steps):
        return Costs()
