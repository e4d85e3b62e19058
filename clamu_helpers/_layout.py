"""The package's layers, declared once, and the import names of the flat layout before them.

``LAYERS`` lists the subpackages from the bottom up: a module imports only from its own layer
or those below it (``tests/test_architecture.py`` checks every import statement). Until 0.2 the
modules of the new layers sat flat in ``clamu_helpers/``; ``import clamu_helpers.ledger`` and
``from clamu_helpers import experiments`` still give the same module objects as
``clamu_helpers.core.ledger`` and ``clamu_helpers.reproduction.experiments`` (an import hook, no
copies), so notebooks, saved pickles and user code written against the flat names keep working.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import pkgutil
import sys
from pathlib import Path

#: subpackages from the bottom layer up
LAYERS = ("core", "runtime", "settings", "training", "localization", "methods", "scaleout", "unlearning",
          "reproduction")
#: the layers whose modules sat flat in ``clamu_helpers/`` before 0.2 (``settings`` and ``methods``
#: were already subpackages)
FLATTENED = ("core", "runtime", "training", "localization", "scaleout", "unlearning", "reproduction")

_ROOT = Path(__file__).resolve().parent


def flat_names() -> dict[str, str]:
    """``clamu_helpers.<module>`` → ``clamu_helpers.<layer>.<module>`` for every module of the
    flattened layers (read from the folders, so a module added to a layer is covered)."""
    out: dict[str, str] = {}
    for layer in FLATTENED:
        for info in pkgutil.iter_modules([str(_ROOT / layer)]):
            old = f"{__package__}.{info.name}"
            if old in out:
                raise ImportError(f"module {info.name!r} is in two layers: {out[old]} and {layer}")
            out[old] = f"{__package__}.{layer}.{info.name}"
    return out


class _FlatNames(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves a flat name to the module of its layer (the same object, not a copy)."""

    def __init__(self, names: dict[str, str]):
        self.names = names

    def find_spec(self, fullname, path=None, target=None):
        if fullname in self.names:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        module = importlib.import_module(self.names[spec.name])
        spec.loader_state = module.__spec__   # importlib stamps the alias spec on the module next
        return module

    def exec_module(self, module):
        module.__spec__ = module.__spec__.loader_state   # give the module back its own spec


def install() -> dict[str, str]:
    """Put the flat names on the import path once; names of modules already imported are
    registered at once (so ``import clamu_helpers.finetune`` cannot replace the package's
    ``finetune`` function with the module). Returns the mapping."""
    for finder in sys.meta_path:
        if isinstance(finder, _FlatNames):
            break
    else:
        finder = _FlatNames(flat_names())
        sys.meta_path.insert(0, finder)   # before any path finder: a stale flat file never wins
    for old, new in finder.names.items():
        if new in sys.modules:
            sys.modules.setdefault(old, sys.modules[new])
    return finder.names
