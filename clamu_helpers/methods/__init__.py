"""Methods of the unlearning system, by name: ``METHODS`` and ``get_method``."""
from .base import METHODS, Method, get_method, register
from . import basic  # noqa: F401  (registers merge, local)
from . import localize  # noqa: F401
from . import sift  # noqa: F401

__all__ = ["METHODS", "Method", "get_method", "register"]
