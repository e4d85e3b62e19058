"""Methods of the unlearning system, by name: ``METHODS`` and ``get_method``.

One file per method (or per method and its control), each registering itself with
:func:`register`. Importing this package imports every module in this folder, so adding a
method is adding its file (and its test): nothing else lists the methods.
"""
import importlib
import pkgutil

from .base import METHODS, Method, Params, get_method, register
from .context import LedgerView, MethodContext

#: modules of this folder that hold no method
_MACHINERY = {"base", "context", "localized"}

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _info.name not in _MACHINERY:
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["METHODS", "LedgerView", "Method", "MethodContext", "Params", "get_method", "register"]
