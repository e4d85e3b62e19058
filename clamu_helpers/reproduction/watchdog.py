"""A watchdog for a notebook kernel that stopped: no new output and no CPU for a set time.

``reproduce`` runs each notebook in its own kernel. A kernel can stop without ending: papermill
waits forever for the reply of a cell the kernel has finished (jupyter/nbclient#312, seen after
ipywidgets cells), and nothing else times out, so one stopped kernel blocks the whole run.
:class:`Watchdog` watches one notebook from the process that runs it: the size of its log (every
line the kernel prints, every progress bar it draws, every cell papermill starts) and the CPU
time of every process below (the kernel and its workers). When neither moves for ``stall``
seconds it kills those processes; papermill then fails with the kernel's death, and the caller
knows from :attr:`Watchdog.fired` that this was a stall, not an error of the notebook.

A kernel that waits for a cache key another notebook is computing (a finetune, MiniLM's
features, the tiny GPT-2's pretraining) or for one of the run's CPU slots is also quiet and
idle. That is why the default stall time (:func:`default_stall`) is never shorter than the
notebook's whole last recorded run: a wait that long is not a wait.
"""
from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

#: the shortest default stall time, seconds (a notebook with no or a short recorded run)
MIN_STALL = 900.0
#: CPU seconds per second of wall time below which the processes count as idle
#: (an idle kernel's heartbeat uses about 0.001)
IDLE_CPU = 0.02


def default_stall(last_seconds: float | None) -> float:
    """Seconds of silence after which a notebook counts as stopped: its last recorded wall time
    (it would have finished in that time, waits included), at least :data:`MIN_STALL`."""
    return max(MIN_STALL, float(last_seconds or 0.0))


def descendants_cpu(pid: int | None = None) -> float:
    """CPU seconds (user + system) of the processes below ``pid`` (default: this one) now alive."""
    import psutil
    total = 0.0
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return 0.0
    for p in kids:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:   # ended between the listing and the reading
            pass
    return total


def kill_descendants(pid: int | None = None) -> list[int]:
    """SIGKILL every process below ``pid`` (default: this one); returns their pids."""
    import psutil
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
    for p in kids:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass
    return [p.pid for p in kids]


class Watchdog(threading.Thread):
    """Watch ``log`` and the CPU of this process's descendants every ``poll`` seconds; after
    ``stall`` seconds in which the log did not grow and they used less than :data:`IDLE_CPU`
    of a core, kill them and set :attr:`fired` (with :attr:`quiet_for`, the silence measured).
    Use as a context manager around the execution it guards."""

    def __init__(self, log: Path, stall: float, poll: float | None = None):
        super().__init__(name=f"watchdog:{Path(log).name}", daemon=True)
        if stall <= 0:
            raise ValueError(f"stall must be positive, got {stall}")
        self.log, self.stall = Path(log), float(stall)
        self.poll = poll if poll is not None else min(5.0, self.stall / 5)
        self.fired = False
        self.quiet_for = 0.0
        self._stop_event = threading.Event()

    def _size(self) -> int:
        try:
            return self.log.stat().st_size
        except OSError:
            return -1

    def run(self) -> None:
        size, cpu, t = self._size(), descendants_cpu(), time.monotonic()
        quiet_since = t
        while not self._stop_event.wait(self.poll):
            now_size, now_cpu, now = self._size(), descendants_cpu(), time.monotonic()
            busy = abs(now_cpu - cpu) > IDLE_CPU * (now - t)   # abs: a worker that ended takes its CPU along
            if now_size != size or busy:
                quiet_since = now
            size, cpu, t = now_size, now_cpu, now
            if now - quiet_since >= self.stall:
                self.quiet_for = now - quiet_since
                self.fired = True
                kill_descendants()
                return

    def stop(self) -> None:
        self._stop_event.set()

    def __enter__(self) -> "Watchdog":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        self.join(timeout=10)


__all__ = ["IDLE_CPU", "MIN_STALL", "Watchdog", "default_stall", "descendants_cpu", "kill_descendants"]
