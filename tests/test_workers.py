"""A notebook's seeds in one-thread worker processes: same rows as in the kernel, CPU slots bound
how many compute at once, failures and unpicklable functions are handled."""
from __future__ import annotations

import threading
import time

import pandas as pd
import pytest

from clamu_helpers import experiments as ex, timing, workers
from clamu_helpers.settings import get_setting


def _rows(sd: int) -> pd.DataFrame:
    """One seed of a small comparison: finetunes, masks (TALL), evaluations on 1 thread."""
    import torch
    s = get_setting("synthetic", "smoke", sd, tasks=5)
    df = ex.compare_methods(s, {"averaging": ("merge", {}), "TALL": ("tall", {})}, seed=sd)
    return df.drop(columns=["seconds"]).assign(threads=torch.get_num_threads())


@pytest.fixture
def fresh_store(tmp_path, monkeypatch):
    monkeypatch.setenv("CLAMU_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(ex, "_STORE", None)
    yield
    workers.shutdown()


def test_seeds_in_workers_give_the_rows_of_the_kernel_bit_for_bit(fresh_store, monkeypatch):
    monkeypatch.setenv("CLAMU_WORKERS", "1")
    here = ex.over_seeds(_rows, [0, 1])
    monkeypatch.setenv("CLAMU_WORKERS", "2")
    monkeypatch.setattr(ex, "_STORE", None)
    before = timing.snapshot()["workers"]
    there = ex.over_seeds(_rows, [0, 1])
    pd.testing.assert_frame_equal(here, there, check_exact=True)
    assert (there.threads == 1).all() and (here.threads == 1).all()
    assert timing.snapshot()["workers"] > before            # the workers' seconds were counted


def test_a_notebook_defined_closure_runs_in_a_worker(monkeypatch):
    monkeypatch.setenv("CLAMU_WORKERS", "2")
    offset = 40   # captured by value: cloudpickle sends the lambda and what it closes over
    try:
        out = workers.run_units(lambda x: (x + offset, __import__("os").getpid()), [1, 2], progress=False)
    finally:
        workers.shutdown()
    assert [v for v, _ in out] == [41, 42]
    assert all(pid != __import__("os").getpid() for _, pid in out)


def _interval(_):
    t0 = time.time()
    time.sleep(0.4)
    return t0, time.time()


def test_cpu_slots_bound_how_many_units_compute_at_once(tmp_path, monkeypatch):
    slots = workers.make_slots(tmp_path / "slots", 1)
    monkeypatch.setenv("CLAMU_SLOTS", str(slots))
    monkeypatch.setenv("CLAMU_WORKERS", "3")
    try:
        spans = sorted(workers.run_units(_interval, range(3), progress=False))
    finally:
        workers.shutdown()
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert start >= end - 0.01        # one slot: never two units at once


def _fail(x):
    if x == 1:
        raise KeyError("unit 1 failed")
    return x


def test_a_failing_unit_raises_its_own_error_in_the_kernel(monkeypatch):
    monkeypatch.setenv("CLAMU_WORKERS", "2")
    with pytest.raises(KeyError, match="unit 1 failed"):
        workers.run_units(_fail, [0, 1], progress=False)
    assert "pool" not in workers._POOL     # the failed pool was stopped


def test_an_unpicklable_function_runs_here_with_a_warning(monkeypatch):
    monkeypatch.setenv("CLAMU_WORKERS", "2")
    lock = threading.Lock()
    with pytest.warns(UserWarning, match="running in this process"):
        out = workers.run_units(lambda x: (x, lock.locked()), [3, 4], progress=False)
    assert out == [(3, False), (4, False)]


def test_bad_worker_counts_are_refused(monkeypatch):
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("CLAMU_WORKERS", bad)
        with pytest.raises(ValueError, match="CLAMU_WORKERS"):
            workers.workers_for(3)
    monkeypatch.setenv("CLAMU_WORKERS", "8")
    assert workers.workers_for(3) == 3


def test_repeated_seeds_are_refused():
    with pytest.raises(ValueError, match="repeated seeds"):
        ex.over_seeds(_rows, [0, 0])


def _build_once(marker_dir):
    import os
    from pathlib import Path

    import torch

    from clamu_helpers.runtime.cache import cached_tensors

    def build():
        (Path(marker_dir) / f"built-{os.getpid()}").touch()
        time.sleep(1.0)
        return {"x": torch.arange(3.0)}
    return cached_tensors("test-kind", "same-key", build)["x"].tolist()


def test_two_processes_wanting_one_cache_entry_build_it_once(tmp_path, monkeypatch):
    monkeypatch.setenv("CLAMU_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CLAMU_WORKERS", "2")
    try:
        out = workers.run_units(_build_once, [str(tmp_path), str(tmp_path)], progress=False)
    finally:
        workers.shutdown()
    assert out == [[0.0, 1.0, 2.0]] * 2
    assert len(list(tmp_path.glob("built-*"))) == 1


def test_workers_end_when_their_kernel_is_killed(tmp_path):
    """A kernel killed with SIGKILL runs no clean-up; its workers must not outlive it."""
    import os
    import signal
    import subprocess
    import sys
    script = tmp_path / "kernel.py"
    script.write_text(
        "import os, sys, time\n"
        "from clamu_helpers import workers\n"
        "if __name__ == '__main__':\n"
        "    os.environ['CLAMU_WORKERS'] = '2'\n"
        "    pids = workers.run_units(lambda x: __import__('os').getpid(), [0, 1], progress=False)\n"
        "    print(' '.join(map(str, pids)), flush=True)\n"
        "    time.sleep(600)\n")
    kernel = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    pids = [int(p) for p in kernel.stdout.readline().split()]
    assert len(pids) == 2
    kernel.send_signal(signal.SIGKILL)
    kernel.wait(timeout=30)
    deadline = time.time() + 30
    alive = pids
    while alive and time.time() < deadline:
        time.sleep(0.2)
        alive = [p for p in pids if os.path.exists(f"/proc/{p}") and
                 open(f"/proc/{p}/stat").read().split()[2] != "Z"]
    assert not alive, f"workers {alive} outlived their kernel"


def _dies_once(item):
    """Unit 2 kills its own worker the first time (as the system's OOM killer would), then runs."""
    import os
    import signal
    from pathlib import Path
    folder, x = item
    marker = Path(folder) / f"died-{x}"
    if x == 2 and not marker.exists():
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return x * 10, os.getpid()


def test_a_worker_killed_by_the_system_does_not_end_the_notebook(tmp_path, monkeypatch):
    monkeypatch.setenv("CLAMU_WORKERS", "3")
    with pytest.warns(UserWarning, match=r"a worker process died .* unfinished units again in 1 worker \(same results\)"):
        out = workers.run_units(_dies_once, [(str(tmp_path), x) for x in (1, 2, 3)], desc="seeds", progress=False)
    assert [v for v, _ in out] == [10, 20, 30] and (tmp_path / "died-2").exists()
    assert workers._POOL == {}                                   # the workers ended with the call: memory back


def _always_dies(_):
    import os
    import signal
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_unit_that_kills_every_worker_is_named_and_no_worker_is_left(monkeypatch):
    from clamu_helpers.core.errors import WorkerDiedError
    monkeypatch.setenv("CLAMU_WORKERS", "2")
    with pytest.warns(UserWarning, match="in 1 worker"), \
            pytest.raises(WorkerDiedError, match=r"seeds: a worker process died on every try .* 0 of 2 units finished, not finished: \[7, 8\]"):
        workers.run_units(_always_dies, [7, 8], desc="seeds", progress=False)
    assert workers._POOL == {}
