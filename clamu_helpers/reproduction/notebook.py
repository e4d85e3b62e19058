"""What every notebook of the kit starts with, in one import::

    from clamu_helpers.notebook import *

It shows pandas frames at three decimals, draws matplotlib figures inline in a Jupyter kernel,
and brings the names the notebooks use: ``pd``, ``display`` and ``Markdown``; ``get_setting``,
``SETTINGS`` and ``UnlearningSystem``; and the reproduction modules ``ex`` (experiments),
``figures``, ``measures``, ``claims``, ``plots``, ``profiles``, ``uc`` (unlearning_cost) and
``bench_results``. (``OMP_WAIT_POLICY=PASSIVE`` is set by the package itself, before torch
loads: see :mod:`clamu_helpers`.)
"""
from __future__ import annotations

import pandas as pd
from IPython import get_ipython
from IPython.display import Markdown, display

from ..settings import SETTINGS, get_setting
from ..unlearning.system import UnlearningSystem
from . import bench_results, claims, figures, measures, plots, profiles
from . import experiments as ex
from . import unlearning_cost as uc

pd.set_option("display.precision", 3)
if get_ipython() is not None:       # in a kernel: figures inline (a script or a test draws nothing)
    get_ipython().run_line_magic("matplotlib", "inline")

__all__ = ["Markdown", "SETTINGS", "UnlearningSystem", "bench_results", "claims", "display", "ex", "figures",
           "get_setting", "measures", "pd", "plots", "profiles", "uc"]
