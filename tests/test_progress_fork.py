"""A process forked while another thread holds tqdm's lock must not hang at its first bar.

The crash suite's forked children once hung for 15 minutes (and, looped on a loaded machine, again
for 120 s) in ``tqdm.std.TqdmDefaultWriteLock.acquire``: tqdm's monitor thread takes the class-wide
lock every 10 s, and a fork at that moment leaves the child a lock no thread of its own will
release. ``clamu_helpers.runtime.progress`` turns the monitor off and renews tqdm's locks in a forked child.
"""
import os
import signal
import sys
import threading
import time

import pytest

pytestmark = pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "win32", reason="needs fork")


def test_kit_bars_start_no_monitor_thread():
    import tqdm.std

    from clamu_helpers.runtime.progress import tqdm as bar
    for _ in bar(range(3), disable=True):
        pass
    assert tqdm.std.tqdm.monitor_interval == 0
    assert not [t for t in threading.enumerate() if type(t).__name__ == "TMonitor"]


def test_a_child_forked_while_a_thread_holds_the_lock_makes_its_bars():
    import tqdm.std

    import clamu_helpers.runtime.progress  # noqa: F401  (the fork handler)
    held, release = threading.Event(), threading.Event()

    def holder():
        with tqdm.std.tqdm.get_lock():
            held.set()
            release.wait(60)

    t = threading.Thread(target=holder, daemon=True)
    t.start()
    assert held.wait(10)
    pid = os.fork()
    if pid == 0:   # the child: a bar, under an alarm so that a hang ends as SIGALRM
        signal.alarm(20)
        for _ in clamu_helpers.runtime.progress.tqdm(range(2), disable=True):
            pass
        os._exit(0)
    try:   # the parent keeps holding the lock until the child is done (bounded wait)
        deadline = time.monotonic() + 30
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if not done:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    finally:
        release.set()
        t.join(10)
    assert done, "the forked child hung at its first tqdm bar"
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, \
        f"the child died by signal {os.WTERMSIG(status) if os.WIFSIGNALED(status) else '?'} (14: it hung)"
