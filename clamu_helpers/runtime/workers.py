"""Both cores inside every notebook: a notebook's independent units run in one-thread workers.

A notebook's heavy work is a loop over seeds (:func:`clamu_helpers.reproduction.experiments.over_seeds`:
finetunes, mask optimisations and evaluations of one seed, from the setting to its rows), and
the seeds do not depend on each other. :func:`run_units` runs ``fn(item)`` for every item in a
pool of worker processes instead of one after another in the kernel, so a notebook alone keeps
every core busy:

* **Same bits wherever a unit runs.** Each unit runs with one pinned thread (in a worker, and in
  the kernel when it runs serially), its finetunes and masks already pin theirs, every generator
  is seeded from (seed, task id): a unit's rows are bit-identical in any worker or in the kernel
  (``tests/test_workers.py`` checks it).
* **How many.** ``$CLAMU_WORKERS`` workers (``1``: run in the kernel, as before); by default one
  per unit under ``reproduce`` (its CPU slots decide how many compute at once), else one per unit
  up to the machine's cores. The workers of a call end with it: their memory (a unit's setting,
  model and task vectors, 2–3 GB for the text settings at ``cpu``) goes back to the system instead
  of staying with idle workers while the other notebooks of a run need it. A new call spawns
  its workers again, a few seconds against units of minutes. (Not ``max_tasks_per_child``: with
  a backlog it can deadlock on Python 3.11–3.12, cpython#115634.)
* **A worker that dies** (killed by the system, typically out of memory) does not end the
  notebook: the units that had not finished run again in a new pool of half as many workers
  (same bits: a unit's result does not depend on where it runs), down to one; only a unit that
  kills every try raises :class:`~clamu_helpers.core.errors.WorkerDiedError`, naming it.
* **CPU slots across notebooks.** ``reproduce`` runs several notebooks at once and makes
  ``$CLAMU_SLOTS``, a folder of one lock file per core: a unit computes only while it holds a
  slot (a ``flock``, released by the kernel if its process dies), so the notebooks of a run share
  the cores without oversubscribing them, and a notebook's seeds run side by side when the cores
  are free. Without ``$CLAMU_SLOTS`` (a notebook opened in JupyterLab) units just run.
* **What comes back**: the unit's result, pickled, and the seconds it spent by category
  (:mod:`clamu_helpers.runtime.timing`), which the kernel adds to its own, so REPORT.md's time breakdown
  counts the workers' CPU seconds.

A function that cannot be pickled (``cloudpickle`` sends notebook-defined functions by value)
runs in the kernel instead, with a warning saying why: the rows are the same.
"""
from __future__ import annotations

import atexit
import contextlib
import multiprocessing as mp
import os
import time
import warnings
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from . import timing
from ..core.errors import WorkerDiedError

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Linux: slots are not enforced
    fcntl = None

#: environment of every worker: one OpenMP thread that sleeps instead of spinning, no nested pools
WORKER_ENV = {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CLAMU_WORKERS": "1"}
SLOTS_ENV, WORKERS_ENV = "CLAMU_SLOTS", "CLAMU_WORKERS"
_POOL: dict[str, Any] = {}


def workers_for(n_units: int) -> int:
    """Workers for ``n_units`` units: ``$CLAMU_WORKERS`` if set, else one per unit (at most the
    machine's cores unless ``reproduce``'s CPU slots bound the computing ones)."""
    env = os.environ.get(WORKERS_ENV, "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            raise ValueError(f"{WORKERS_ENV} must be a positive integer, got {env!r}") from None
        if n < 1:
            raise ValueError(f"{WORKERS_ENV} must be a positive integer, got {env!r}")
        return min(n, max(1, n_units))
    cap = n_units if os.environ.get(SLOTS_ENV) else (os.cpu_count() or 1)
    return max(1, min(n_units, cap))


def make_slots(directory: str | os.PathLike, n: int) -> Path:
    """A folder of ``n`` slot files (``reproduce`` makes one per core)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    for i in range(int(n)):
        (d / f"slot-{i}").touch()
    return d


@contextlib.contextmanager
def cpu_slot(directory: str | None = None, poll: float = 0.2) -> Iterator[str | None]:
    """Hold one CPU slot of ``directory`` (default ``$CLAMU_SLOTS``) while computing; yields the
    slot's name (None when no slots are set: nothing to wait for)."""
    directory = directory if directory is not None else os.environ.get(SLOTS_ENV)
    if not directory or fcntl is None:
        yield None
        return
    files = sorted(Path(directory).glob("slot-*"))
    if not files:
        raise FileNotFoundError(f"no slot files in {directory} (made by reproduce: `make_slots`)")
    while True:
        for f in files:
            fd = os.open(f, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            try:
                yield f.name
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
            return
        time.sleep(poll)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """torch pinned to one thread (restored after): a unit's bits do not depend on where it runs."""
    import torch
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this worker when the kernel that started it dies (a kernel killed
    with SIGKILL runs no clean-up: its idle workers would otherwise hold their memory forever)."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, 15, 0, 0, 0)   # PR_SET_PDEATHSIG = 1, SIGTERM = 15
    except (OSError, AttributeError):   # not Linux: workers end when their queue closes
        pass


def _init(parent: int) -> None:
    os.environ.update(WORKER_ENV)
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # an interrupt is the kernel's; it stops its workers
    _die_with_parent()
    if os.getppid() != parent:   # the kernel died before the request above took effect
        os._exit(1)
    import torch
    torch.set_num_threads(1)


def _run(payload: bytes, item: Any) -> tuple[Any, dict[str, float]]:
    """In a worker: unpickle ``fn``, wait for a CPU slot, run ``fn(item)`` on one thread; the
    result and the seconds it spent by category."""
    import cloudpickle
    fn = cloudpickle.loads(payload)
    with cpu_slot():
        before = timing.spent()
        t0 = time.perf_counter()
        with one_thread():
            result = fn(item)
        return result, timing.since(before, time.perf_counter() - t0)


def _pool(n: int) -> ProcessPoolExecutor:
    """A new pool of ``n`` workers (a call's pool ends with it: nothing to reuse)."""
    shutdown()
    pool = ProcessPoolExecutor(n, mp_context=mp.get_context("spawn"), initializer=_init, initargs=(os.getpid(),))
    _POOL["pool"] = pool
    return pool


def shutdown() -> None:
    """Stop this process's workers (no-op if none)."""
    pool = _POOL.pop("pool", None)
    _POOL.clear()
    if pool is not None:
        for p in list(getattr(pool, "_processes", {}).values()):   # running units too
            p.terminate()
        pool.shutdown(wait=True, cancel_futures=True)


atexit.register(shutdown)


def _run_in_pools(payload: bytes, items: list, n: int, results: dict, bar, desc: str) -> None:
    """Fill ``results`` (item index → result) from pools of ``n``, then n/2, …, 1 workers: a
    pool broken by a dead worker is replaced and only the unfinished units run again."""
    t0 = time.perf_counter()
    while True:
        pool = _pool(n)
        futures = {pool.submit(_run, payload, items[i]): i for i in range(len(items)) if i not in results}
        pending = set(futures)
        try:
            while pending:
                t_wait = time.perf_counter()
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                timing.waited(time.perf_counter() - (t0 if t0 is not None else t_wait))
                t0 = None   # the first wait includes starting the workers
                # finished units first: a pool that broke keeps the results it did produce
                for fut in sorted(done, key=lambda f: isinstance(f.exception(), BrokenProcessPool)):
                    value, spent = fut.result()   # a unit's exception is raised here, with its traceback
                    timing.absorb(spent)
                    results[futures[fut]] = value
                    bar.update(1)
            return
        except BrokenProcessPool:
            shutdown()
            left = sorted(set(range(len(items))) - set(results))
            if n == 1:
                raise WorkerDiedError(
                    f"{desc}: a worker process died on every try (killed by the system: out of memory? "
                    f"`dmesg` says); {len(results)} of {len(items)} units finished, not finished: "
                    f"{[items[i] for i in left][:5]}") from None
            n = max(1, n // 2)
            warnings.warn(f"{desc}: a worker process died (killed by the system: out of memory?); running the "
                          f"{len(left)} unfinished units again in {n} worker{'s' if n > 1 else ''} (same results)",
                          stacklevel=3)
            t0 = time.perf_counter()


def run_units(fn: Callable[[Any], Any], items: Sequence[Any], desc: str = "units",
              progress: bool = True) -> list[Any]:
    """``[fn(item) for item in items]``, each unit on one thread, in worker processes when
    :func:`workers_for` gives more than one (see the module docstring); results in item order."""
    from .progress import tqdm
    items = list(items)
    n = workers_for(len(items))
    payload = None
    if n > 1:
        try:
            import cloudpickle
            payload = cloudpickle.dumps(fn)
        except Exception as e:   # e.g. a function holding an open file or a lock
            warnings.warn(f"{desc}: running in this process ({type(e).__name__}: {e}); the results are the same",
                          stacklevel=2)
    bar = tqdm(total=len(items), desc=desc, leave=False, disable=not progress)
    try:
        if payload is None:
            out = []
            for item in items:
                with cpu_slot(), one_thread():
                    out.append(fn(item))
                bar.update(1)
            return out
        results: dict[int, Any] = {}
        try:
            _run_in_pools(payload, items, n, results, bar, desc)
        finally:
            shutdown()   # the workers' memory goes back; no half-busy workers after a failure or interrupt
        return [results[i] for i in range(len(items))]
    finally:
        bar.close()


__all__ = ["SLOTS_ENV", "WORKERS_ENV", "cpu_slot", "make_slots", "one_thread", "run_units", "shutdown", "workers_for"]
