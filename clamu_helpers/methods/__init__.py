"""Methods of the unlearning system, by name: ``METHODS`` and ``get_method``.

One file per method (or per method and its control); importing this package registers them all.
"""
from .base import METHODS, Method, get_method, register
from . import basic  # noqa: F401  (merge, local)
from . import ties  # noqa: F401
from . import tall  # noqa: F401
from . import emr  # noqa: F401
from . import clamu  # noqa: F401  (clamu, clamu-supermask)
from . import cluster_merge  # noqa: F401
from . import sift  # noqa: F401  (sift, sift-random-mask, sift-merge)

__all__ = ["METHODS", "Method", "get_method", "register"]
