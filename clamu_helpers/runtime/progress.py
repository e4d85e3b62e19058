"""Progress bars and widgets: tqdm's notebook widgets and live ipywidgets in an interactive
kernel, plain text bars and static views under ``reproduce``.

``reproduce`` sets ``CLAMU_TEXT_PROGRESS=1`` for the kernels it starts: their bars are then text
on the kernel's stderr, which papermill writes into the notebook's log, where ``reproduce``
reads which finetune (or mask search, or seed) each running notebook is on; a widget bar would
reach no log. ``TQDM_MININTERVAL`` (set by ``reproduce`` too) keeps those logs and the committed
outputs short.

**Forking safely.** tqdm guards its bars with a class-wide lock, and by default starts a monitor
thread that takes that lock every 10 s. A process forked while that thread (or any other) held it
inherits a lock nobody will release, and its first bar waits forever: the crash suite's forked
children hung exactly there (``tqdm.std.TqdmDefaultWriteLock.acquire`` under ``run_finetunes``).
Importing this module turns tqdm's monitor thread off (``tqdm.monitor_interval = 0``; it only
retunes ``miniters`` of stalled bars) and gives a forked child fresh tqdm locks
(``os.register_at_fork``), so no kit process can inherit a held one.
"""
from __future__ import annotations

import os
import threading

import tqdm.std as _tqdm_std


def _fresh_locks_in_child() -> None:
    """After ``fork``, in the child: tqdm's locks anew (the parent's threads that may hold the old
    ones do not exist here); bars created from now on build them again."""
    lock_cls = _tqdm_std.TqdmDefaultWriteLock
    lock_cls.th_lock = threading.RLock()
    if hasattr(lock_cls, "mp_lock"):
        del lock_cls.mp_lock          # recreated at the next bar (create_mp_lock)
    for cls in [_tqdm_std.tqdm, *_subclasses(_tqdm_std.tqdm)]:
        if "_lock" in vars(cls):
            delattr(cls, "_lock")     # get_lock() builds a new one
        if "monitor" in vars(cls):
            cls.monitor = None        # the parent's monitor thread is not in this process


def _subclasses(cls) -> list:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_subclasses(sub)]
    return out


_tqdm_std.tqdm.monitor_interval = 0
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fresh_locks_in_child)


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
