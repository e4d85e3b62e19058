"""The method interface of :class:`UnlearningSystem`, and the registry of methods.

A method decides what is served on top of the exact merge τ̄ (kept by the system's ledger).
It never sees the system: every call gets a :class:`~clamu_helpers.methods.context.MethodContext`
(``ctx``: the setting, θ0, seed, a read-only view of τ̄ and the ledger, the kept τ_t, the cost
account of the phase, and ``ctx.retrain(ids)``).
``fit`` learns its extra state (masks, clusters, scales), ``weights_for`` gives a task's flat
weights, ``refresh`` recomputes what unlearning made stale, ``state`` is what must be
bit-identical to a from-scratch fit (the audit hashes it), and ``storage_bytes`` counts what
serving stores, the way the paper counts it.

Each method declares, once, in its class: its ``name`` (via :func:`register`), its
``reference``, whether it takes ``clusters`` (``clustered``), which parameter is its served
scale (``scale_param``, chosen on validation data when set to ``"val"``), whether it is a
``control`` (a method that tests another's explanation), and its counting rule
(:meth:`Method.unlearning_cost`). Its parameters are declared in its ``Params`` dataclass with
:func:`~clamu_helpers.methods.declared.param` (constraint, sentinels ``"val"`` and ``"1/T"``,
search grid): validation, :meth:`Method.resolve`, the validation :meth:`Method.search` and the
saved choices come from those declarations. Lists of methods elsewhere (costs, demo, tests)
derive from these declarations.
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Callable, ClassVar

import torch

from ..core import digests
from ..runtime.costs import Costs
from ..core.errors import ClamuError, ParameterError, StateError, UnknownNameError
from ..localization.selection import choose, is_val
from .declared import ONE_OVER_T, canonical, declared, grid_values, one_over_t

if TYPE_CHECKING:
    from .context import MethodContext

METHODS: dict[str, type["Method"]] = {}


def register(name: str) -> Callable[[type], type]:
    def deco(cls):
        cls.name = name
        METHODS[name] = cls
        return cls
    return deco


def get_method(name: str, **params) -> "Method":
    if name not in METHODS:
        raise UnknownNameError(f"unknown method {name!r}; available: {sorted(METHODS)}")
    return METHODS[name](**params)


def saved_method(name: str, params: dict) -> "Method":
    """The method of a saved state: ``get_method`` with the saved ``params``, and the
    :attr:`Method.legacy_params` value of every parameter the state predates."""
    if name not in METHODS:
        raise UnknownNameError(f"unknown method {name!r}; available: {sorted(METHODS)}")
    return get_method(name, **{**METHODS[name].legacy_params, **params})


@dataclass
class Params:
    """A method's parameters, declared once as a typed dataclass (``Method.Params``): its fields
    are the method's keyword arguments with their defaults, each declared with
    :func:`~clamu_helpers.methods.declared.param` (its constraint, sentinels and search grid).
    :meth:`validate` checks and normalises every declared field when the method is built, each
    error naming the parameter, then runs :meth:`check` (rules between fields); :meth:`to_json`
    is what ``method.params`` holds (persistence and digests), from which
    ``get_method(name, **params)`` rebuilds the method."""

    def __post_init__(self):
        try:
            self.validate()
        except ClamuError:
            raise
        except (TypeError, ValueError) as e:  # a value the declaration refuses: the user's error
            raise ParameterError(str(e)) from e

    def validate(self) -> None:
        """Check and normalise every declared field, then :meth:`check`."""
        for name, decl in declared(type(self)).items():
            setattr(self, name, decl.check(getattr(self, name), name))
        self.check()

    def check(self) -> None:
        """Rules that tie fields together (default: none)."""

    def to_json(self) -> dict:
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


class Method:
    name = "method"
    #: where the method comes from (paper, code)
    reference = ""
    #: takes a ``clusters`` parameter (K): one state per cluster instead of per task
    clustered = False
    #: the parameter holding the served scale (``"val"``: chosen on validation data), if any
    scale_param: str | None = None
    #: the method this one is a control for (None for methods proper)
    control_of: str | None = None
    #: keep every τ_t in memory after fit (local models; methods whose refresh needs them)
    keeps_vectors = False
    #: ``fit`` reads the τ_t one at a time, in any order (or not at all): a system with a store
    #: may then finetune and merge in chunks and hand ``fit`` a lazy mapping over the store, so
    #: the memory of a fit stays flat in T (:meth:`UnlearningSystem.fit`)
    streams_vectors = False
    #: unlearning retrains τ_u (False only for ``local``, which stores τ_u itself)
    retrains = True
    #: the counting rule :meth:`unlearning_cost` implements, in a word (tables and docs)
    cost_rule = "retrain-one"
    #: whether :meth:`unlearning_cost` predicts exactly what the system executes (False where
    #: the work depends on the data, e.g. which clusters change after re-clustering)
    cost_rule_exact = True
    #: fast parameters for tests (few mask steps and the like); {} when the defaults are fast
    test_params: dict = {}
    #: parameters added after systems of this method were first saved: name → the value that
    #: behaves as the method did before. A saved state without one loads with that value
    #: (:func:`saved_method`), and a parameter at that value is left out of the state digest, so
    #: a state saved before the parameter existed keeps its digest.
    legacy_params: ClassVar[dict] = {}

    #: the method's typed parameters (a :class:`Params` dataclass; none by default)
    Params: ClassVar[type[Params]] = Params

    def __init__(self, **params):
        unknown = sorted(set(params) - set(self.Params.names()))
        if unknown:
            raise ParameterError(f"method {self.name!r} has no parameter {', '.join(map(repr, unknown))}; its "
                            f"parameters: {', '.join(self.Params.names()) or 'none'}")
        #: the typed, validated parameters
        self.p = self.Params(**params)
        #: the same as plain JSON (what is saved, hashed and used to rebuild the method)
        self.params: dict = self.p.to_json()
        #: what fit chose on validation data for the ``"val"`` parameters (name → value)
        self.chosen: dict = {}

    # -- parameters as served, and chosen on validation data ------------------------------------
    def resolve(self, name: str, n_tasks: int):
        """Parameter ``name`` as served over ``n_tasks`` merged tasks: the value chosen on
        validation data (``self.chosen``) when it is ``"val"``, 1/T when it is ``"1/T"`` (or its
        older spelling ``"mean"``), else the parameter itself."""
        value = getattr(self.p, name)
        if is_val(value):
            return self.chosen[name]
        if canonical(value) == ONE_OVER_T:
            return one_over_t(n_tasks)
        return value

    def grid(self, name: str, n_tasks: int) -> tuple:
        """The candidates of parameter ``name``: its declared grid when it is ``"val"``, else the
        one value it resolves to."""
        if is_val(getattr(self.p, name)):
            return grid_values(declared(self.Params)[name], self.p, n_tasks)
        return (self.resolve(name, n_tasks),)

    def searched(self) -> list[str]:
        """The parameters set to ``"val"`` that declare a grid, in declaration order."""
        return [n for n, d in declared(self.Params).items() if d.grid is not None and is_val(getattr(self.p, n))]

    def search(self, ctx: "MethodContext", names=None, score=None) -> dict:
        """Choose parameters on validation data: every candidate of the product of the grids of
        ``names`` (default: :meth:`searched`; a fixed parameter among them is a grid of one) is
        scored by ``score(values)`` (default: :meth:`validation_score`, the mean validation score
        of what the method serves with those values), the best kept (ties to the first,
        :func:`~clamu_helpers.localization.selection.choose`). Returns the ``"val"`` parameters' choice."""
        names = self.searched() if names is None else list(names)
        if not names:
            return {}
        n = len(ctx.ledger)
        candidates = list(itertools.product(*(self.grid(name, n) for name in names)))
        score = score or (lambda values: self.validation_score(ctx, values))
        best = candidates[0] if len(candidates) == 1 else \
            choose(candidates, lambda c: score(dict(zip(names, c)))).value
        return {name: v for name, v in zip(names, best) if is_val(getattr(self.p, name))}

    def validation_score(self, ctx: "MethodContext", values: dict, ids=None) -> float:
        """Mean validation score over ``ids`` (default: the merged tasks) of the weights this
        method serves with ``values`` in place of the chosen ones (each group's weights computed
        once)."""
        saved, self.chosen = self.chosen, {**self.chosen, **values}
        try:
            cache: dict = {}

            def weights_of(t):
                g = self.group_of(ctx, t)
                if g not in cache:
                    cache[g] = self.weights_for(ctx, t)
                return cache[g]
            return ctx.setting.mean_score(weights_of, ctx.task_ids if ids is None else ids, "val")
        finally:
            self.chosen = saved

    def chosen_value(self, name: str):
        """Parameter ``name`` as served: the value chosen on validation data (``self.chosen``)
        when the parameter is ``"val"``, else the parameter itself."""
        value = getattr(self.p, name)
        return self.chosen[name] if is_val(value) else value

    def require_chosen(self, names=None, what: str | None = None) -> None:
        """Refuse (:class:`StateError`) a loaded state that lacks the value chosen on validation
        data for one of the ``"val"`` parameters ``names`` (default: every declared one)."""
        names = [n for n, d in declared(self.Params).items() if d.grid is not None] if names is None else names
        for name in names:
            if is_val(getattr(self.p, name)) and name not in self.chosen:
                raise StateError(f"saved {what or self.name} state lacks the {name} chosen on validation data")

    # -- life cycle ------------------------------------------------------------------------
    def finetune_kwargs(self, ctx: "MethodContext") -> dict:
        """Extra keyword arguments for :func:`clamu_helpers.training.finetune.finetune` (SIFT's sign)."""
        return {}

    def fit(self, ctx: "MethodContext", vectors: dict) -> None:
        """Learn the method's state once τ̄ holds every task (``vectors``: id → τ_t). Default:
        choose the ``"val"`` parameters on validation data (:meth:`search`)."""
        self.chosen = {}
        self.chosen = self.search(ctx) if ctx.task_ids else {}

    def refresh(self, ctx: "MethodContext", removed: list[str], retrained: dict) -> None:
        """Recompute what unlearning ``removed`` made stale. ``retrained`` holds the request's
        τ_u, already retrained and hash-checked by the system. Default: choose the ``"val"``
        parameters again, on the remaining tasks' validation data."""
        self.fit(ctx, {})

    def group_of(self, ctx: "MethodContext", task_id: str) -> str:
        """Tasks of one group are served the same weights (evaluation computes them once)."""
        return "global"

    def weights_for(self, ctx: "MethodContext", task_id: str) -> torch.Tensor:
        raise NotImplementedError

    # -- what is served ------------------------------------------------------------------
    def served_params(self, ctx: "MethodContext") -> dict:
        """The hyperparameters served now, as numbers (:meth:`resolve`: a ``"val"`` parameter is
        the value chosen on validation data, ``"1/T"`` is 1/T). Tables record them beside the
        accuracy. Default: the served scale (``scale_param``) and every parameter that declares a
        search grid, when something is merged."""
        n = len(ctx.ledger)
        if not n:
            return {}
        names = [self.scale_param] if self.scale_param else []
        names += [k for k, d in declared(self.Params).items() if d.grid is not None and k not in names]
        return {k: self.resolve(k, n) for k in names}

    def mask_density(self, ctx: "MethodContext") -> float | None:
        """Mean fraction of parameters inside the served masks (None: the method has no masks)."""
        return None

    def state(self, ctx: "MethodContext") -> tuple[dict[str, torch.Tensor], dict]:
        """(tensors, JSON metadata) of the served state beyond τ̄ (default: what was chosen on
        validation data, if anything)."""
        return {}, ({"chosen": dict(self.chosen)} if self.chosen else {})

    def load_state(self, ctx: "MethodContext", tensors: dict[str, torch.Tensor], meta: dict) -> None:
        """Restore what :meth:`state` returned (persistence). ``self.params`` must hold the
        JSON-able constructor keyword arguments, so ``get_method(name, **params)`` rebuilds it.
        Default: the choices made on validation data, which every ``"val"`` parameter needs."""
        self.chosen = dict(meta.get("chosen", {}))
        if len(ctx.ledger):
            self.require_chosen()

    def state_digest(self, ctx: "MethodContext") -> str:
        """SHA-256 over the method's JSON state and a digest of each of its tensors, in the
        ledger's digest format (bare SHA-256 for a system saved before digests were named)."""
        tensors, meta = self.state(ctx)
        params = {k: v for k, v in self.params.items()
                  if not (k in self.legacy_params and v == self.legacy_params[k])}
        h = hashlib.sha256(json.dumps({"method": self.name, "params": params, "meta": meta},
                                      sort_keys=True, default=str).encode())
        for k in sorted(tensors):
            h.update(f"{k}:{digests.tensor(tensors[k], ctx.ledger.digest_format)}".encode())
        return h.hexdigest()

    def storage_bytes(self, ctx: "MethodContext") -> int:
        """Bytes stored to serve: the global model (d float32) plus the method's extras."""
        return 4 * ctx.setting.spec.numel

    # -- cost --------------------------------------------------------------------------------
    def unlearning_cost(self, n_before: int, n_forgotten: int, steps: int) -> Costs:
        """The counting rule: what one request forgetting ``n_forgotten`` of ``n_before`` merged
        tasks costs (``steps``: one finetune's steps). Default: retrain the forgotten τ_u in one
        round and subtract them (merge, SIFT-Masks). The system charges what it executes through
        the same :meth:`Costs.round`; a test checks that both agree for every method."""
        return Costs().round(n_forgotten if self.retrains else 0, steps)
