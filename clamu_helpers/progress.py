"""Progress bars: tqdm's notebook widgets in an interactive kernel, plain text under ``reproduce``.

``reproduce`` sets ``CLAMU_TEXT_PROGRESS=1`` for the kernels it starts: their bars are then text
on the kernel's stderr, which papermill writes into the notebook's log, where ``reproduce``
reads which finetune (or mask search, or seed) each running notebook is on; a widget bar would
reach no log. ``TQDM_MININTERVAL`` (set by ``reproduce`` too) keeps those logs and the committed
outputs short.
"""
from __future__ import annotations

import os


def tqdm(*args, **kwargs):
    """A tqdm bar: ``tqdm.auto``'s (widgets in a notebook) unless ``$CLAMU_TEXT_PROGRESS`` is set."""
    if os.environ.get("CLAMU_TEXT_PROGRESS"):
        from tqdm.std import tqdm as bar
    else:
        from tqdm.auto import tqdm as bar
    return bar(*args, **kwargs)


__all__ = ["tqdm"]
