"""Methods whose served state is recomputed from every remaining τ_t after unlearning.

TIES, Consensus and the localization methods (TALL, EMR, task-vector clusters) cannot update their
state by subtracting τ_u: the state is a function of every τ_t that remains. The ``vectors``
parameter (:func:`vectors_param`) says how a refresh gets them, declared once here:

* ``"retrain"`` (default): ``ctx.retrain(ids)`` retrains them, checks each hash against the ledger
  and charges one round of finetunes (the draft's Table 3: 2× parallel steps);
* ``"keep"``: the system keeps every τ_t (``keeps_vectors``), counted as T·d·4 extra bytes.

:class:`UsesRemainingVectors` gives a method the three consequences: where a refresh reads the
vectors from, the second round in its counting rule, and the extra storage.
"""
from __future__ import annotations

from typing import Mapping

from ..core.errors import StateError
from .base import Method
from .declared import Options, param

#: how a refresh gets every remaining τ_t
VECTORS = ("retrain", "keep")


def vectors_param():
    """The declaration of ``vectors`` (see the module docstring)."""
    return param("retrain", Options(*VECTORS))


def remaining_vectors(ctx, ids, mode: str, who: str, stream: bool = False) -> Mapping:
    """τ_t of ``ids`` after unlearning: kept by the system (``mode="keep"``), or retrained and
    hash-checked by :meth:`UnlearningSystem.retrain` (which charges the round; ``stream``: read
    back lazily from the store, for a state built from the τ_t one at a time)."""
    ids = list(ids)
    if not ids:
        return {}
    if mode == "keep":
        missing = [t for t in ids if t not in ctx.vectors]
        if missing:
            raise StateError(f"method {who!r} keeps vectors, but the system lacks {missing[:5]}")
        return {t: ctx.vectors[t] for t in ids}
    return ctx.retrain(ids, desc="retrain remaining", stream=stream)


class UsesRemainingVectors(Method):
    """A method with a declared ``vectors`` parameter whose state needs every remaining τ_t
    (when :meth:`needs_vectors`, default: always). Its state is built from the τ_t one at a
    time (TIES and EMR pass over them once per candidate, TALL and Consensus read each once per
    cluster, clustering by task vectors reads them a block of columns at a time): with a store,
    a fit streams them."""

    cost_rule = "retrain-all"
    streams_vectors = True   # :attr:`Method.streams_vectors`: τ_t read back from the store one at a time

    def __init__(self, **params):
        super().__init__(**params)
        self.keeps_vectors = self.p.vectors == "keep" and self.needs_vectors()

    def needs_vectors(self) -> bool:
        """Whether recomputing the state needs every remaining τ_t (default: yes)."""
        return True

    def remaining_vectors(self, ctx, ids) -> Mapping:
        return remaining_vectors(ctx, ids, self.p.vectors, self.name, stream=self.streams_vectors)

    def unlearning_cost(self, n_before, n_forgotten, steps):
        """Retrain the forgotten τ_u (one round); when the state needs every τ_t and they are not
        kept, retrain the T − n others in a second round."""
        c = super().unlearning_cost(n_before, n_forgotten, steps)
        if self.needs_vectors() and self.p.vectors == "retrain":
            c.round(n_before - n_forgotten, steps)
        return c

    def extra_vector_bytes(self, ctx) -> int:
        """T·d·4 bytes when the system keeps every τ_t for refreshes."""
        return 4 * ctx.setting.spec.numel * len(ctx.vectors) if self.keeps_vectors else 0


__all__ = ["UsesRemainingVectors", "VECTORS", "remaining_vectors", "vectors_param"]
