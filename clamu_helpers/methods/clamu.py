"""``clamu``: ClAMU's optimized masks (draft, Algorithm 1 ``Localize``), and its supermask control."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

from ..runtime.determinism import generator, rng
from ..localization.masks import UPDATES, MaskConfig, MaskRun, pack_masks
from ..localization.selection import Halving, choose, scale_grid, search, search_steps
from .base import register
from .declared import ONE_OVER_T, VAL, Grid, Integer, Options, Real, param
from .localized import Masked, weighted_mean

#: η candidates of each update rule (``mask_lr="val"``), and the η that the α search uses
ETA_GRIDS = {"draft": (10.0, 100.0, 1000.0, 10000.0), "normalized": (0.003, 0.01, 0.03, 0.1)}
ETA_START = {"draft": 100.0, "normalized": 0.01}
#: ``search``: "halving" (successive halving, :data:`HALVING`) or "full" (every candidate at E_mask)
SEARCHES = ("halving", "full")
#: the default halving schedule: rungs at E_mask/9, E_mask/3 and E_mask, a third of the candidates
#: going on (``halving_reduction``, ``halving_min_fraction``)
HALVING = Halving(reduction=3, min_fraction=1 / 9)
#: ``search_on``: where the α/η search trains its candidate masks: a sample of the fit's own
#: clusters, or a sample of the tasks, one mask each (the same search whatever the clusters)
SEARCH_ON = ("clusters", "tasks")
#: searches on tasks already made in this process: (τ̄, data, task set, search) → (α, η, steps per round)
_SHARED: OrderedDict = OrderedDict()
_SHARED_MAX = 64


@register("clamu")
class Clamu(Masked):
    """ClAMU optimized masks: per cluster k, scores s_k from 0, m_k = 1{s_k > 0}, ``mask_steps``
    (E_mask) straight-through updates of step ``mask_lr`` (η) on mini-batches of the cluster's
    training data (batches from a generator seeded by (system seed, cluster members)), served
    M0 + α m_k ⊙ τ̄ (:func:`clamu_helpers.localization.masks.optimize_mask`).

    Defaults, and where they come from:

    * ``update="draft"``: the draft's raw rule s ← s − η (∂L/∂M) ⊙ σ(s)(1−σ(s)) ⊙ α τ̄;
      ``"normalized"`` (each step divided by its mean |·|) is a named variant.
    * equal budgets: ``mask_steps=None`` and ``mask_batch_size=None`` take the setting's
      finetuning steps and batch size ("an equal number of steps", draft Sec. 4.4);
      ``mask_batch_size="full"`` uses all of the cluster's data every step.
    * ``alpha="val"`` and ``mask_lr="val"``: chosen on validation data, α from the shared
      :func:`clamu_helpers.localization.selection.scale_grid` (the draft writes α = 1, which is in the grid),
      η from :data:`ETA_GRIDS` (or ``alphas`` / ``mask_lrs``). The search is coordinate-wise:
      α at η = :data:`ETA_START`, then η at the chosen α; each candidate optimizes the masks of
      a seeded sample of ``select_clusters`` clusters and scores the mean validation accuracy
      of their tasks; the final masks of the sampled clusters are reused, the others optimized
      with the chosen (α, η). Every gradient step of the search is charged.
    * ``search="halving"``: each round is a successive halving (:data:`HALVING`): every
      candidate's masks train E_mask/9 steps and are scored, the best third carry on to
      E_mask/3, the best third of those to E_mask (the η round halves the new η values, then
      compares the winner with η = :data:`ETA_START`, already trained in the α round). A run
      carried on resumes bit for bit (:class:`clamu_helpers.localization.masks.MaskRun`), so the chosen
      candidate's masks are those of a full-budget run. ``search="full"``: every candidate
      trains for E_mask (the search as first written; ``benchmarks/search_agreement.py``
      measures how often the two choose alike).

    Every refresh re-clusters and re-optimizes all masks from s = 0 on the new τ̄ (the search
    included). Only task-vector clusters need the remaining τ_t after unlearning."""

    reference = "ClAMU: the draft of Exact Unlearning of Finetuning Data via Model Merging at Scale (2025), Alg. 1"
    test_params = {"mask_steps": 20}
    cost_rule = "retrain-and-masks"
    #: what systems saved before each parameter existed did: successive halving came later (they
    #: searched every candidate in full), then its schedule, then the search on tasks
    legacy_params = {"search": "full", "halving_reduction": HALVING.reduction,
                     "halving_min_fraction": HALVING.min_fraction, "search_on": "clusters"}

    @dataclass
    class Params(Masked.Params):
        alpha: float | str = param(VAL, Real(), sentinels=(VAL, ONE_OVER_T),
                                   grid=("alphas", lambda p, n: scale_grid(n)))   # α; "val": from alphas
        mask_lr: float | str = param(VAL, Real(cast=True), sentinels=(VAL,),
                                     grid=("mask_lrs", lambda p, n: ETA_GRIDS[p.update]))   # η
        mask_steps: int | None = param(None, Integer(), none=True)   # E_mask (None: the finetuning steps)
        mask_batch_size: int | str | None = param(None, Integer(), Options("full"), none=True)   # "full": all data
        update: str = param("draft", Options(*UPDATES))   # "draft" (the raw rule) or "normalized"
        alphas: list | None = param(None, Grid(), none=True)     # α grid (None: selection.scale_grid)
        mask_lrs: list | None = param(None, Grid(), none=True)   # η grid (None: ETA_GRIDS[update])
        select_clusters: int = param(8, Integer(cast=True))   # clusters sampled for the validation search
        search: str = param("halving", Options(*SEARCHES))   # "halving" (successive halving) or "full"
        halving_reduction: int = param(HALVING.reduction, Integer(low=2, cast=True))   # 1/this go on per rung
        halving_min_fraction: float = param(HALVING.min_fraction, Real(high=1.0, closed="right", cast=True))  # 1st rung
        search_on: str = param("clusters", Options(*SEARCH_ON))   # "clusters" (the fit's own) or "tasks" (shared)

    def needs_vectors(self):
        return self.clusters_need_vectors()

    # -- the budget and the grids --------------------------------------------------------------
    def budget(self, setting) -> tuple[int, int | None]:
        """(E_mask, mini-batch size or None for the full batch), resolved against the setting."""
        p, ft = self.p, setting.finetune_config
        steps = ft.steps if p.mask_steps is None else p.mask_steps
        batch = None if p.mask_batch_size == "full" else (ft.batch_size if p.mask_batch_size is None
                                                          else p.mask_batch_size)
        return int(steps), batch

    def alpha_grid(self, n_tasks: int) -> tuple[float, ...]:
        return tuple(float(a) for a in self.grid("alpha", n_tasks))

    def eta_grid(self) -> tuple[float, ...]:
        return self.grid("mask_lr", 0)

    def eta_start(self) -> float:
        grid = self.eta_grid()
        start = ETA_START[self.p.update]
        return start if start in grid else grid[len(grid) // 2]

    def halving(self) -> Halving | None:
        if self.p.search != "halving":
            return None
        return Halving(reduction=self.p.halving_reduction, min_fraction=self.p.halving_min_fraction)

    def search_plan(self, n_tasks: int) -> list[int]:
        """Candidates trained per search round (α round, then the η round's new values): [] when
        nothing is chosen."""
        na, ne = len(self.alpha_grid(n_tasks)), len(self.eta_grid())
        a_val, e_val = "alpha" in self.searched(), "mask_lr" in self.searched()
        if a_val and e_val:
            return [na, ne - 1]
        if a_val:
            return [na]
        return [ne] if e_val else []

    def search_sample(self, n_tasks: int) -> int:
        """S, the masks the validation search optimizes per candidate on ``n_tasks`` tasks: up to
        ``select_clusters`` of the K clusters (of the T tasks with ``search_on="tasks"``), none
        when nothing is chosen."""
        k = self.n_clusters(n_tasks)
        pool = n_tasks if self.p.search_on == "tasks" else k
        return min(self.p.select_clusters, pool) if self.search_plan(n_tasks) and k else 0

    def reused_masks(self, n_tasks: int) -> int:
        """Masks of the search that are served (the chosen candidate's, on the fit's own clusters)."""
        return self.search_sample(n_tasks) if self.p.search_on == "clusters" else 0

    def mask_fits(self, n_tasks: int, e_mask: int | None = None) -> tuple[float, int]:
        """(masks optimized, masks served) by one fit or refresh on ``n_tasks`` tasks, the first
        in full-budget masks (mask steps ÷ E_mask, ``e_mask`` the setting's E_mask unless the
        method fixes ``mask_steps``): the search's rounds over S sampled masks
        (:func:`~clamu_helpers.localization.selection.search_steps`), whose chosen masks are kept
        when they are the fit's own clusters, and the other masks once; K are served."""
        e = self.p.mask_steps or e_mask
        if not e:
            raise ValueError("mask_fits needs e_mask (the setting's E_mask) when mask_steps is not set")
        k, s = self.n_clusters(n_tasks), self.search_sample(n_tasks)
        searched = sum(search_steps(n, e, self.halving()) for n in self.search_plan(n_tasks)) * s
        return (searched + (k - self.reused_masks(n_tasks)) * e) / e, k

    def refit_cost(self, costs, n_tasks, steps):
        """The search rounds over a sample of S masks, then the masks left (K − S on the fit's
        own clusters, all K when the search ran on tasks or nothing is chosen): E_mask gradient
        steps per mask (what halving trains of each candidate,
        :func:`~clamu_helpers.localization.selection.search_steps`), E_mask parallel steps per round."""
        k = self.n_clusters(n_tasks)
        if not k:
            return costs
        e_mask = steps if self.p.mask_steps is None else self.p.mask_steps
        s = self.search_sample(n_tasks)
        for n_candidates in self.search_plan(n_tasks):
            if n_candidates:
                costs.add(gradient_steps=search_steps(n_candidates, e_mask, self.halving()) * s,
                          parallel_steps=e_mask)
        return costs.round(k - self.reused_masks(n_tasks), e_mask, trainings=False)

    # -- fitting -------------------------------------------------------------------------------
    def target(self, ctx) -> torch.Tensor:
        return ctx.tau_bar

    def localize(self, ctx, vectors, costs):
        groups = self.groups
        self.masks, self.chosen = {}, {}
        if not groups:
            return
        steps, batch = self.budget(ctx.setting)
        n = len(ctx.ledger)
        clusters = list(groups)
        alpha, eta = self.alpha_grid(n)[0], self.eta_grid()[0]   # a fixed value is a grid of one
        done: dict[int, torch.Tensor] = {}
        if self.search_plan(n):
            if self.p.search_on == "tasks":
                alpha, eta, rounds = self._shared_search(ctx, steps, batch)
            else:
                alpha, eta, rounds, done = self._search(ctx, groups, self.target(ctx), steps, batch)
            for gradient_steps in rounds:   # each round's candidates run side by side: E_mask parallel steps
                costs.add(gradient_steps=gradient_steps, parallel_steps=steps)
        target = self.target(ctx)
        rest = [c for c in clusters if c not in done]
        for c in self._bar(ctx, rest, f"ClAMU masks (α={alpha:.3g}, η={eta:g})"):
            done[c] = pack_masks([self._run(ctx, groups[c], target, alpha, eta, steps, batch).advance(steps).mask])[0]
        if rest:
            costs.round(len(rest), steps, trainings=False)
        self.masks = {c: done[c] for c in clusters}
        self.chosen = {name: value for name, value in (("alpha", alpha), ("mask_lr", eta)) if name in self.searched()}

    def _run(self, ctx, ids, target, alpha, eta, steps, batch) -> MaskRun:
        """The mask optimisation of one group of tasks (batches seeded by (seed, its members))."""
        ft = ctx.setting.finetune_config
        cfg = MaskConfig(steps, float(eta), batch, float(alpha), self.p.update, ft.threads, ft.precision)
        return MaskRun(ctx.setting, target, self.group_data(ctx, ids, "train"), cfg,
                       generator(ctx.seed, "clamu-mask", *ids))

    def _search(self, ctx, groups, target, steps, batch):
        """The α/η search over masks of a seeded sample of ``groups``: (α, η, gradient steps of
        each round that trained, the chosen candidate's full-budget masks by group)."""
        n = len(ctx.ledger)
        clusters = list(groups)
        s = min(self.p.select_clusters, len(clusters))
        pick = rng(ctx.seed, "clamu-select", *sorted(ctx.task_ids)).permutation(len(clusters))[:s]
        sample = sorted(clusters[int(i)] for i in pick)
        runs: dict[tuple[float, float], dict[int, MaskRun]] = {}
        scored: dict[tuple[float, float, int], float] = {}
        trained, rounds = [0], []

        def run_of(alpha, eta, c) -> MaskRun:
            rs = runs.setdefault((alpha, eta), {})
            if c not in rs:
                rs[c] = self._run(ctx, groups[c], target, alpha, eta, steps, batch)
            return rs[c]

        def evaluate(alpha, eta, b):
            """Mean validation score of the sample's masks after ``b`` steps (runs resumed)."""
            if (alpha, eta, b) not in scored:
                out = []
                for c in self._bar(ctx, sample, f"ClAMU masks (α={alpha:.3g}, η={eta:g}, {b}/{steps} steps)"):
                    run = run_of(alpha, eta, c)
                    trained[0] += max(0, min(b, steps) - run.done)
                    run.advance(b - run.done)
                    xv, yv = self.group_data(ctx, groups[c], "val")
                    w = ctx.setting.theta0 + float(alpha) * torch.where(run.mask, target, target.new_zeros(()))
                    out.append((ctx.setting.score(w, xv, yv), len(groups[c])))
                scored[(alpha, eta, b)] = weighted_mean(out)
            return scored[(alpha, eta, b)]

        def round_of(candidates, score):
            """One search round: its candidates run side by side (one E_mask of parallel steps)."""
            before = trained[0]
            best = search(candidates, score, steps, self.halving()).value
            if trained[0] > before:
                rounds.append(trained[0] - before)
            return best

        searched = self.searched()
        alpha, eta = self.alpha_grid(n)[0], self.eta_grid()[0]
        if "alpha" in searched:
            eta = self.eta_start() if "mask_lr" in searched else eta
            alpha = round_of(self.alpha_grid(n), lambda a, b: evaluate(a, eta, b))
        if "mask_lr" in searched:
            grid = self.eta_grid()
            known = eta if (alpha, eta, steps) in scored else None   # trained to E_mask in the α round
            new = [e for e in grid if e != known]
            best = round_of(new, lambda e, b: evaluate(alpha, e, b)) if new else known
            finalists = sorted({best} | ({known} if known is not None else set()), key=grid.index)
            eta = choose(finalists, lambda e: evaluate(alpha, e, steps)).value
        chosen = runs.get((alpha, eta), {})
        done = {c: pack_masks([r.mask])[0] for c, r in chosen.items() if r.done == steps}
        return alpha, eta, rounds, done

    def _shared_search(self, ctx, steps, batch):
        """``search_on="tasks"``: the search over one mask per task, over τ̄, made once per
        process for (τ̄, the setting, the seed, the task set, the search's parameters) and reused
        by every fit with the same key (another K, the other clustering, the supermask control).
        Returns (α, η, gradient steps of each round)."""
        n = len(ctx.ledger)
        recipe = getattr(ctx.setting, "recipe", None)
        key = (ctx.ledger.digest(), repr(recipe) if recipe is not None else ("object", id(ctx.setting)), ctx.seed,
               tuple(sorted(ctx.task_ids)), steps, batch, self.alpha_grid(n), self.eta_grid(), tuple(self.searched()),
               self.p.update, self.p.select_clusters, self.p.search, self.p.halving_reduction,
               self.p.halving_min_fraction, ctx.setting.finetune_config.threads, ctx.setting.finetune_config.precision)
        if key in _SHARED:
            _SHARED.move_to_end(key)
            return _SHARED[key][:3]
        tasks = {i: (t,) for i, t in enumerate(sorted(ctx.task_ids))}
        alpha, eta, rounds, _ = self._search(ctx, tasks, ctx.tau_bar, steps, batch)
        _SHARED[key] = (alpha, eta, rounds, ctx.setting)   # the setting pins the id in a key without a recipe
        while len(_SHARED) > _SHARED_MAX:
            _SHARED.popitem(last=False)
        return alpha, eta, rounds

    def served_params(self, ctx):
        if not self.masks:
            return {}
        steps, batch = self.budget(ctx.setting)
        eta = self.chosen_value("mask_lr")
        return {"alpha": self.alpha(ctx), "mask_lr": eta, "mask_steps": steps, "mask_batch_size": batch}

    def state(self, ctx):
        return {"masks": self._packed()}, self._meta()

    def load_state(self, ctx, tensors, meta):
        self._load_assignment(meta)
        self.masks = self._load_masks(ctx, tensors) if self.assignment else {}
        self._load_chosen(meta)


__all__ = ["Clamu", "ETA_GRIDS", "ETA_START", "HALVING", "SEARCHES", "SEARCH_ON"]
