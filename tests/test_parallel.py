"""Every backend gives the same bits; the store is filled by workers and never recomputed."""
import pytest
import torch

from clamu_helpers import parallel
from clamu_helpers.training.parallel import (RecipeMismatchError, SettingRecipe, run_finetunes, shutdown_ray,
                                    shutdown_workers)


@pytest.fixture(scope="module", autouse=True)
def _stop_workers():
    yield
    shutdown_workers()
from clamu_helpers.settings.synthetic import SyntheticSetting
from clamu_helpers.training.store import TaskVectorStore


@pytest.fixture(scope="module")
def serial(tiny):
    return {t: tv.digest for t, tv in run_finetunes(tiny, tiny.task_ids, seed=3, progress=False).items()}


def _hashes(res):
    return {t: tv.digest for t, tv in res.items()}


def test_processes_equal_serial_and_fill_store(tiny, serial, tmp_path, monkeypatch):
    store = TaskVectorStore(tmp_path)
    res = run_finetunes(tiny, tiny.task_ids, seed=3, backend="processes", workers=2, store=store, progress=False)
    assert list(res) == tiny.task_ids           # input order
    assert _hashes(res) == serial
    assert len(store) == len(tiny.task_ids)     # written by the workers
    # finished finetunes are never recomputed, whatever the backend
    monkeypatch.setattr(parallel, "finetune", lambda *a, **k: pytest.fail("recomputed a stored finetune"))
    again = run_finetunes(tiny, tiny.task_ids, seed=3, backend="processes", store=store, progress=False)
    assert _hashes(again) == serial


def test_processes_with_sign_reuse_the_pool(tiny):
    sign = torch.where(torch.rand(tiny.spec.numel, generator=torch.Generator().manual_seed(0)) < 0.5, -1.0, 1.0)
    ids = tiny.task_ids[:3]
    ref = run_finetunes(tiny, ids, seed=1, sign=sign, progress=False)
    pool = parallel._POOL.get("pool")
    got = run_finetunes(tiny, ids, seed=1, sign=sign, backend="processes", progress=False)
    assert _hashes(got) == _hashes(ref)
    assert pool is not None and parallel._POOL.get("pool") is pool   # same setting: workers reused
    assert all(bool(((tv.values * sign) >= 0).all()) for tv in got.values())


def test_recipe_mismatch_is_detected():
    other = SyntheticSetting(tasks=3, n_train=10)   # not what get_setting("synthetic") builds
    with pytest.raises(RecipeMismatchError, match="other training data"):
        run_finetunes(other, other.task_ids[:2], backend="processes", progress=False,
                      recipe=SettingRecipe("synthetic", "smoke", 0))
    # built without get_setting: no recipe is guessed from its name, it must travel pickled
    with pytest.raises(ValueError, match="pass recipe=SettingRecipe"):
        run_finetunes(other, other.task_ids[:2], backend="processes", ship="recipe", progress=False)


def test_a_keyword_that_keeps_shapes_and_data_reaches_the_workers():
    """get_setting's keywords travel in the recipe. A finetuning config changes neither the
    parameter spec nor the tasks' data, so a recipe that dropped it (as recipes rebuilt from
    the setting's name alone did) would give workers other τ without any check failing."""
    from clamu_helpers.settings import FinetuneConfig, get_setting
    s = get_setting("synthetic", "smoke", 0, tasks=4, finetune=FinetuneConfig(steps=15, lr=0.05, batch_size=8))
    assert s.recipe.kwargs["finetune"].lr == 0.05
    ref = run_finetunes(s, s.task_ids, seed=2, progress=False)
    got = run_finetunes(s, s.task_ids, seed=2, backend="processes", ship="recipe", progress=False)
    assert _hashes(got) == _hashes(ref)
    default = run_finetunes(get_setting("synthetic", "smoke", 0, tasks=4), s.task_ids, seed=2, progress=False)
    assert _hashes(default) != _hashes(ref)      # the keyword matters: dropping it would change τ
    with pytest.raises(RecipeMismatchError, match="finetunes with"):   # and a recipe without it is refused
        run_finetunes(s, s.task_ids, seed=2, backend="processes", progress=False,
                      recipe=SettingRecipe("synthetic", "smoke", 0, {"tasks": 4}))


def test_ray_equals_serial(tiny, serial, tmp_path):
    pytest.importorskip("ray")
    import os

    import ray
    os.environ.setdefault("RAY_raylet_start_wait_time_s", "600")   # the shared 2-core box can be slow
    os.environ.setdefault("RAY_agent_register_timeout_ms", "600000")
    parallel.ray_init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                      runtime_env={"env_vars": dict(parallel.WORKER_ENV)})
    try:
        store = TaskVectorStore(tmp_path)
        res = run_finetunes(tiny, tiny.task_ids, seed=3, backend="ray", workers=2, store=store, progress=False)
        assert _hashes(res) == serial
        assert len(store) == len(tiny.task_ids)
        res2 = run_finetunes(tiny, tiny.task_ids[:3], seed=3, backend="ray", ship="recipe", progress=False)
        assert _hashes(res2) == {t: serial[t] for t in tiny.task_ids[:3]}
        actors = list(parallel._RAY["actors"])   # one per worker, each built the setting once
        res3 = run_finetunes(tiny, tiny.task_ids[3:], seed=3, backend="ray", ship="recipe", progress=False)
        assert _hashes(res3) == {t: serial[t] for t in tiny.task_ids[3:]}
        assert parallel._RAY["actors"] == actors   # reused: no rebuild inside the next batch
        other = SyntheticSetting(tasks=3, n_train=10)
        with pytest.raises(Exception, match="other training data"):
            run_finetunes(other, other.task_ids[:2], backend="ray", progress=False,
                          recipe=SettingRecipe("synthetic", "smoke", 0))
        assert "actors" not in parallel._RAY   # a failed run leaves no actors behind
        # the merge itself on Ray, in the same Ray session: partial ledgers of shares of the
        # store, reduced here, give the serial digest (clamu_helpers.scaleout.partial)
        from clamu_helpers.scaleout.streaming import stream_merge
        keys = [store.key(tiny, tiny.task(t), 3) for t in tiny.task_ids]
        serial_merge = stream_merge(store, keys, tiny.spec)
        assert stream_merge(store, keys, tiny.spec, backend="ray", workers=3).digest() == serial_merge.digest()
        # and the TALL and EMR mask builds, shared by tasks among Ray workers: the serial bits
        from clamu_helpers.scaleout.streaming import stream_emr, stream_tall_masks
        tall = stream_tall_masks(store, keys, tiny.spec, lambdas=[0.2, 0.5], chunk=64)
        tall_ray = stream_tall_masks(store, keys, tiny.spec, lambdas=[0.2, 0.5], chunk=64, backend="ray", workers=2)
        assert all(torch.equal(tall.masks[lam][t], tall_ray.masks[lam][t]) for lam in tall.masks for t in tiny.task_ids)
        emr_s, emr_r = stream_emr(store, keys, tiny.spec, chunk=64), stream_emr(store, keys, tiny.spec, chunk=64,
                                                                                backend="ray", workers=2)
        assert torch.equal(emr_s.emr.tau_uni, emr_r.emr.tau_uni) and emr_s.emr.rescalers == emr_r.emr.rescalers
    finally:
        shutdown_ray()


def test_images_smoke_processes_equal_serial(smoke_images):
    ids = smoke_images.task_ids[:2]
    ref = run_finetunes(smoke_images, ids, seed=0, progress=False)
    got = run_finetunes(smoke_images, ids, seed=0, backend="processes", workers=2,
                        recipe=SettingRecipe("images-label-subsets", "smoke", 0), progress=False)
    assert _hashes(got) == _hashes(ref)


def test_bad_arguments(tiny):
    with pytest.raises(ValueError, match="unknown backend"):
        run_finetunes(tiny, tiny.task_ids, backend="dask")
    with pytest.raises(ValueError, match="workers"):
        run_finetunes(tiny, tiny.task_ids, backend="processes", workers=0)


def test_system_fits_with_worker_processes_exactly(tiny):
    """UnlearningSystem(backend="processes") serves the same bits as the serial backend."""
    from clamu_helpers import UnlearningSystem
    serial = UnlearningSystem(tiny, "sift").fit()
    procs = UnlearningSystem(tiny, "sift", backend="processes", workers=2).fit()
    assert procs.served_digest() == serial.served_digest()
    procs.unlearn([tiny.task_ids[1]])
    serial.unlearn([tiny.task_ids[1]])
    assert procs.served_digest() == serial.served_digest()


def test_ray_init_retries_only_a_start_up_timeout(monkeypatch):
    ray = pytest.importorskip("ray")
    calls = []

    def slow_start(**kw):
        calls.append(kw)
        if len(calls) < 3:
            raise Exception("The current node timed out during startup. This could happen because ...")
    monkeypatch.setattr(ray, "init", slow_start)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    parallel.ray_init(num_cpus=2)
    assert calls == [{"num_cpus": 2}] * 3
    calls.clear()
    with pytest.raises(Exception, match="timed out during startup"):   # gives up after the attempts
        parallel.ray_init(attempts=2, num_cpus=2)

    def bad(**kw):
        calls.append(kw)
        raise ValueError("no cluster at that address")
    calls.clear()
    monkeypatch.setattr(ray, "init", bad)
    with pytest.raises(ValueError, match="no cluster"):
        parallel.ray_init(address="ray://nowhere:1")
    assert len(calls) == 1                                            # other errors are not retried
