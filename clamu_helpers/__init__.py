"""clamu_helpers: exact unlearning of finetuning data by model merging (ClAMU, SIFT-Masks).

The flow is one-way: settings (data, M0) → finetune (τ_t) → ledger (exact τ̄) → methods
(masks, clusters) → system (fit, serve, unlearn) → experiments → plots.
"""
from .errors import (ClamuError, DuplicateTaskError, ExactnessError, MissingResourceError,
                     NonFiniteError, ShapeMismatchError, StateError, UnknownTaskError)
from .finetune import finetune
from .ledger import MergeLedger
from .params import ParamSpec
from .settings import SETTINGS, FinetuneConfig, Setting, Task, get_setting
from .system import UnlearningSystem
from .taskvector import TaskVector

__version__ = "0.1.0"

__all__ = [
    "ClamuError", "DuplicateTaskError", "ExactnessError", "FinetuneConfig", "MergeLedger",
    "MissingResourceError", "NonFiniteError", "ParamSpec", "SETTINGS", "Setting", "ShapeMismatchError",
    "StateError", "Task", "TaskVector", "UnknownTaskError", "UnlearningSystem", "finetune", "get_setting",
]
