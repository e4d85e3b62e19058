"""Several processes unlearning on one saved system at once: no request lost or applied twice.

Four processes each send 25 random requests (some bad) to one saved directory through
:func:`shared_state.unlearn_saved`. Afterwards every task a request unlearned was unlearned by
exactly one request, the receipt chain holds exactly one receipt per request that unlearned
something and verifies, bad requests were refused with nothing written, and the served digest
equals a system fitted from scratch on the remaining tasks. The second test SIGKILLs one of the
processes in the middle of its requests: what it had been told is durable stays, and the rest
holds as before.
"""
import multiprocessing as mp
import os
import random
import signal
import time

import pytest

from clamu_helpers import persistence, shared_state
from clamu_helpers.core.errors import ClamuError, StateError
from clamu_helpers.unlearning.receipts import check_chain
from clamu_helpers.settings.synthetic import SyntheticSetting
from clamu_helpers.unlearning.system import UnlearningSystem

TASKS, PROCESSES, REQUESTS = 48, 4, 25


def _client(directory: str, worker: int, results, done_file: str | None) -> None:
    """Send REQUESTS random requests; put each outcome on ``results`` as soon as it is known."""
    import torch
    torch.set_num_threads(1)
    setting = SyntheticSetting(tasks=TASKS)
    rng = random.Random(f"client-{worker}")
    ids = setting.task_ids
    for k in range(REQUESTS):
        kind = rng.choices(["one", "two", "unknown", "repeated"], weights=[6, 2, 1, 1])[0]
        if kind == "one":
            req = [rng.choice(ids)]
        elif kind == "two":
            req = rng.sample(ids, 2)
        elif kind == "unknown":
            req = [rng.choice(ids), "no-such-task"]
        else:
            t = rng.choice(ids)
            req = [t, t]
        try:
            report = shared_state.unlearn_saved(directory, setting, req)
            results.put((worker, k, req, "ok", report["unlearned"], report["already_unlearned"], report["digest"]))
        except ClamuError as e:
            results.put((worker, k, req, "refused", type(e).__name__, str(e), None))
        if done_file and k == REQUESTS // 3:   # tell the parent it may kill us from now on
            open(done_file, "w").close()


def _run(tmp_path, kill_one: bool):
    setting = SyntheticSetting(tasks=TASKS)
    directory = tmp_path / "system"
    UnlearningSystem(setting, "merge").fit().save(directory)
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    marker = str(tmp_path / "victim-ready")
    procs = [ctx.Process(target=_client, args=(str(directory), w, results, marker if kill_one and w == 0 else None))
             for w in range(PROCESSES)]
    for p in procs:
        p.start()
    if kill_one:
        deadline = time.monotonic() + 600
        while not os.path.exists(marker) and time.monotonic() < deadline and procs[0].is_alive():
            time.sleep(0.05)
        time.sleep(random.Random(0).uniform(0.0, 1.0))   # somewhere inside a later request
        os.kill(procs[0].pid, signal.SIGKILL)
    outcomes = []
    while any(p.is_alive() for p in procs) or not results.empty():
        try:
            outcomes.append(results.get(timeout=1))
        except Exception:
            pass
    for p in procs:
        p.join(timeout=60)
    return setting, directory, outcomes, procs


def _check(setting, directory, outcomes, killed_worker=None):
    accepted = [o for o in outcomes if o[3] == "ok"]
    refused = [o for o in outcomes if o[3] == "refused"]
    # bad requests are refused, each with the error that names what is wrong
    for w, k, req, _, err, msg, _ in refused:
        assert err in ("UnknownTaskError", "DuplicateTaskError"), (req, err, msg)
        assert ("no-such-task" in req) == (err == "UnknownTaskError")
    system = UnlearningSystem.load(directory, setting)
    newly = [t for o in accepted for t in o[4]]
    # every task is unlearned by exactly one request (none twice), and it is gone from the merge
    assert len(newly) == len(set(newly))
    assert set(system.unlearned) >= set(newly) and not set(newly) & set(system.task_ids)
    # one receipt per request that unlearned something, in a chain that verifies
    chain = system.receipts
    assert check_chain(chain, system.system_id, system.served_digest()) == []
    with_work = [o for o in accepted if o[4]]
    if killed_worker is None:
        assert len(chain) == len(with_work) and set(system.unlearned) == set(newly)
    else:   # the killed process's last request may have committed before it could say so
        assert len(with_work) <= len(chain) <= len(with_work) + 1
        extra = set(system.unlearned) - set(newly)
        assert len(chain) == len(with_work) + (1 if extra else 0)
    forgotten = [t for r in chain for t in r["forgotten"]]
    assert len(forgotten) == len(set(forgotten)) and set(forgotten) == set(system.unlearned)   # none twice
    # the state serves exactly a merge that never saw the unlearned tasks
    scratch = UnlearningSystem(setting, "merge").fit(system.task_ids)
    assert scratch.served_digest() == system.served_digest()
    return accepted, refused, system


def test_four_processes_unlearning_on_one_saved_system(tmp_path):
    setting, directory, outcomes, procs = _run(tmp_path, kill_one=False)
    assert all(p.exitcode == 0 for p in procs)
    assert len(outcomes) == PROCESSES * REQUESTS   # every request answered
    accepted, refused, system = _check(setting, directory, outcomes)
    assert refused and accepted and any(o[5] for o in accepted)   # bad ones, good ones, repeats of done ones
    print(f"{len(outcomes)} requests: {len(accepted)} accepted ({sum(bool(o[4]) for o in accepted)} unlearned "
          f"something), {len(refused)} refused; {len(system.unlearned)} of {TASKS} tasks unlearned")


def test_a_process_killed_mid_request_loses_nothing_it_was_told(tmp_path):
    setting, directory, outcomes, procs = _run(tmp_path, kill_one=True)
    assert procs[0].exitcode == -signal.SIGKILL and all(p.exitcode == 0 for p in procs[1:])
    others = [o for o in outcomes if o[0] != 0]
    assert len(others) == (PROCESSES - 1) * REQUESTS
    _check(setting, directory, outcomes, killed_worker=0)


def test_a_stale_system_cannot_overwrite_a_newer_save(tmp_path):
    """Two handles loaded from one directory: the second save would drop the first's request."""
    setting = SyntheticSetting(tasks=4)
    d = tmp_path / "s"
    UnlearningSystem(setting, "merge").fit().save(d)
    a, b = UnlearningSystem.load(d, setting), UnlearningSystem.load(d, setting)
    persistence.unlearn_durably(a, ["s00"], d)
    before = persistence.verify(d)[1]["digests"]["served"]
    b.unlearn(["s01"])
    with pytest.raises(StateError, match="changed since this system was loaded"):
        b.save(d)
    assert persistence.verify(d)[1]["digests"]["served"] == before   # nothing written
    report = shared_state.unlearn_saved(d, setting, ["s01"])   # the fix the message names
    assert report["unlearned"] == ["s01"] and len(UnlearningSystem.load(d, setting).receipts) == 2
