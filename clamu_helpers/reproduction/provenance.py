"""Where a result comes from: the commit and a digest of the sources that ran.

Every table (CSV and ``.meta.json``), figure and report row a notebook saves records
:func:`record`: the git commit of the checkout (with ``+modified`` when the library or notebook
sources differ from it) and :func:`source_digest`, a SHA-256 over the library's and the
notebooks' source files. ``reproduce`` records the same for the whole run, and REPORT.md flags
every notebook whose rows come from another source digest than the current one, so a report
never mixes sources without saying so.
"""
from __future__ import annotations

import functools
import hashlib
import subprocess
from pathlib import Path

from . import ROOT  # the repository root, declared with the layer


def source_files(root: Path = ROOT) -> list[Path]:
    """The files a result depends on: the library (``clamu_helpers/**/*.py``) and the notebooks'
    sources (``notebooks/*.py``, the paired scripts of the ``.ipynb`` files)."""
    files = sorted((root / "clamu_helpers").rglob("*.py")) + sorted((root / "notebooks").glob("*.py"))
    return [p for p in files if "__pycache__" not in p.parts]


def digest_of(files: list[Path], root: Path = ROOT) -> str:
    """SHA-256 over each file's path (relative to ``root``) and bytes, in order."""
    h = hashlib.sha256()
    for p in files:
        h.update(str(p.relative_to(root)).encode() + b"\0")
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def source_digest() -> str:
    """The digest of this checkout's sources, computed once per process (at the first result
    it saves, which is what ran)."""
    return digest_of(source_files())


def commit(root: Path = ROOT) -> str | None:
    """``git rev-parse HEAD`` of the checkout, ``+modified`` when its sources (the files of
    :func:`source_files`) differ from it (None outside a git checkout)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        # the sources only: ``reproduce --write-back`` rewrites notebooks/*.ipynb as each notebook ends
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "clamu_helpers/*.py", "notebooks/*.py"], cwd=root,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+modified" if dirty else "") if head else None


@functools.lru_cache(maxsize=1)
def record() -> dict:
    """``{"commit": ..., "source_digest": ...}`` of this process (computed once)."""
    return {"commit": commit(), "source_digest": source_digest()}


__all__ = ["commit", "digest_of", "record", "source_digest", "source_files"]
