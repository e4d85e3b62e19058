"""Compute spent by fitting and unlearning, and the one way it is charged.

Gradient steps count every optimizer step of every finetune or mask optimisation; parallel steps
count the critical path when independent work runs side by side (the draft's Table 3): n task
vectors retrained in one round cost n·E gradient steps but E parallel steps, K masks optimised in
one round K·E_mask and E_mask. :meth:`Costs.round` is how both the system (what it executed) and
each method's counting rule (what the draft's formulas say) charge a round, so the two cannot
disagree on what a round costs.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class Costs:
    """Finetunes (task trainings), gradient steps, parallel steps, wall seconds."""

    finetunes: int = 0
    gradient_steps: int = 0
    parallel_steps: int = 0
    seconds: float = 0.0

    def add(self, finetunes: int = 0, gradient_steps: int = 0, parallel_steps: int = 0, seconds: float = 0.0):
        self.finetunes += finetunes
        self.gradient_steps += gradient_steps
        self.parallel_steps += parallel_steps
        self.seconds += seconds
        return self

    def round(self, n: int, steps: int, trainings: bool = True) -> "Costs":
        """Charge one round of ``n`` independent runs of ``steps`` steps each, side by side
        (finetunes when ``trainings``, else mask optimisations): n·steps gradient steps, steps
        parallel steps (nothing when n = 0)."""
        if n > 0:
            self.add(finetunes=n if trainings else 0, gradient_steps=n * steps, parallel_steps=steps)
        return self

    def since(self, before: "Costs") -> "Costs":
        """What was spent after ``before`` (a copy of these costs taken earlier)."""
        return Costs(self.finetunes - before.finetunes, self.gradient_steps - before.gradient_steps,
                     self.parallel_steps - before.parallel_steps, self.seconds - before.seconds)

    def counts(self) -> dict:
        """The counted quantities (no seconds): what a counting rule can predict."""
        d = asdict(self)
        d.pop("seconds")
        return d


__all__ = ["Costs"]
