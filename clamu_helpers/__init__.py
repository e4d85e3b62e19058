"""clamu_helpers: exact unlearning of finetuning data by model merging (ClAMU, SIFT-Masks).

The flow is one-way, and the subpackages follow it from the bottom up (``_layout.LAYERS``; a
module imports only from its own layer or those below):

* :mod:`~clamu_helpers.core`: τ_t, the exact merge τ̄ = Σ_t τ_t (the ledger), digests, bit-packed masks
* :mod:`~clamu_helpers.runtime`: devices, determinism, caches, worker processes, timing and costs
* :mod:`~clamu_helpers.settings`: the data and M0 of each setting (one file per family, discovered)
* :mod:`~clamu_helpers.training`: finetuning τ_t, many at once, into the content-addressed store
* :mod:`~clamu_helpers.localization`: masks, clusters and the one validation search
* :mod:`~clamu_helpers.methods`: the methods the system serves (one file per method, discovered)
* :mod:`~clamu_helpers.scaleout`: partial ledgers and streamed builds at the paper's size
* :mod:`~clamu_helpers.unlearning`: the system (fit → serve → unlearn), its saved state, receipts, audit
* :mod:`~clamu_helpers.reproduction`: experiments, claims, plots and running the notebooks

The names of the flat layout before 0.2 (``clamu_helpers.ledger``, ``clamu_helpers.experiments``,
…) still import, as the same modules (:mod:`clamu_helpers._layout`).
"""
import os as _os

# the kit runs its work in one-thread worker processes beside the main one: idle OpenMP threads
# of an active wait policy would spin against them (read when torch loads, so set before it)
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from . import _layout  # noqa: E402

_layout.install()
from .core.errors import (ClamuError, DuplicateTaskError, ExactnessError, MissingResourceError,
                          NonFiniteError, ShapeMismatchError, StateError, UnknownTaskError)
from .training.finetune import finetune
from .core.ledger import MergeLedger
from .core.params import ParamSpec
from .settings import SETTINGS, FinetuneConfig, Setting, Task, get_setting
from .unlearning.system import UnlearningSystem
from .core.taskvector import TaskVector

__version__ = "0.2.0"

_layout.install()   # flat names of the modules imported above

__all__ = [
    "ClamuError", "DuplicateTaskError", "ExactnessError", "FinetuneConfig", "MergeLedger",
    "MissingResourceError", "NonFiniteError", "ParamSpec", "SETTINGS", "Setting", "ShapeMismatchError",
    "StateError", "Task", "TaskVector", "UnknownTaskError", "UnlearningSystem", "finetune", "get_setting",
]
