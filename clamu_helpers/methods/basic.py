"""``merge`` (one global model, M0 + α τ̄: averaging or task arithmetic) and ``local`` (T local
models, the upper reference)."""
from __future__ import annotations

from dataclasses import dataclass

from ..runtime.costs import Costs
from .base import Method, Params, register
from .declared import ONE_OVER_T, SCALE_GRID, VAL, Real, param


#: the served scale α of methods that scale the merged sum τ̄: a positive number, ``"1/T"``
#: (model averaging; ``"mean"`` is its older spelling) or ``"val"`` (chosen on validation data
#: from :data:`~clamu_helpers.methods.declared.SCALE_GRID`)
ALPHA = dict(sentinels=(VAL, ONE_OVER_T), grid=SCALE_GRID)


def alpha_param(default):
    """The declaration of a served scale α (:data:`ALPHA`), with its default."""
    return param(default, Real(), **ALPHA)


def mean_val_score(ctx, weights_of, ids) -> float:
    """Mean validation score over tasks ``ids`` of ``weights_of(task id)`` (NaN for none)."""
    return ctx.setting.mean_score(weights_of, ids, "val")


@register("merge")
class Merge(Method):
    """Merging only: every task is served M0 + α τ̄. α = ``"mean"`` (1/T) is model averaging
    (default); a number is task arithmetic with that α; ``"val"`` is task arithmetic with α chosen
    from :func:`clamu_helpers.localization.selection.scale_grid` by the mean validation score of the served
    model over the merged tasks (Ilharco et al. 2023 tune α on validation data the same way).
    Everything but serving comes from the declaration: the search, the refresh, the state."""

    streams_vectors = True   # fit chooses α on validation data from τ̄ alone

    reference = "Task arithmetic: Ilharco et al., Editing models with task arithmetic, ICLR 2023"
    scale_param = "alpha"

    @dataclass
    class Params(Params):
        alpha: float | str = alpha_param("mean")

    def weights_for(self, ctx, task_id):
        if not len(ctx.ledger):
            return ctx.setting.theta0
        return ctx.setting.theta0 + self.resolve("alpha", len(ctx.ledger)) * ctx.tau_bar


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
