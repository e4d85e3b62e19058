"""Progress bars and widgets: tqdm's notebook widgets and live ipywidgets in an interactive
kernel, plain text bars and static views under ``reproduce``.

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


def static_widgets() -> bool:
    """Whether widget cells show a static view instead of live widgets: ``$CLAMU_STATIC_WIDGETS``,
    which ``reproduce`` sets for its kernels. Nobody can move a slider in a headless run, a
    static figure and table are what a reader of the committed notebook can see, and widget
    messages in a headless kernel can leave papermill waiting forever for a cell that has
    finished (jupyter/nbclient#312: seen here on the widget cells of 04 and 06)."""
    return bool(os.environ.get("CLAMU_STATIC_WIDGETS"))


__all__ = ["static_widgets", "tqdm"]
