"""Running many finetunes: each task is independent, so this is embarrassingly parallel.

``run_finetunes`` is the single entry point, with three backends that give the same bits:

* ``"serial"``: here, one task after another;
* ``"processes"``: ``workers`` local processes (spawn context), each pinned to one thread
  with ``OMP_WAIT_POLICY=PASSIVE``; the pool stays alive for the next call on the same
  setting (``shutdown_workers()`` stops it; it also stops at exit);
* ``"ray"``: Ray tasks of one CPU each, on a local Ray (started with ``num_cpus=workers``)
  or the cluster at ``ray_address``.

Workers rebuild the setting from a picklable :class:`SettingRecipe` (name, profile, seed,
keyword arguments, via ``get_setting``) once per process, and check that the rebuilt
setting has the parent's parameter spec and the task's data digest before training. A
setting whose tensors are small (under :data:`PICKLE_LIMIT`) or that is not in the registry
is sent pickled instead, once per worker. Each worker
sends τ_t back as a tensor with its SHA-256, which the parent checks. With a ``store``, the
parent first takes every τ_t already there (finished finetunes are never recomputed) and
workers write new ones into it (on a cluster: a folder every machine sees).

(Over 300 lines on purpose: the three finetuning backends (serial, processes, Ray) must give the
same bits, and keeping them in one module keeps their shared job, pinning and recipe code in one
place.)
"""
from __future__ import annotations

import atexit
import json
import multiprocessing as mp
import os
import weakref
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import torch
from ..runtime.progress import tqdm

from ..runtime.cache import content_key
from ..core.errors import ClamuError, ExactnessError
from .finetune import finetune
from ..settings.recipe import SettingRecipe  # re-exported: parallel.SettingRecipe
from ..core.taskvector import TaskVector

if TYPE_CHECKING:
    from ..settings.base import Setting
    from .store import TaskVectorStore

BACKENDS = ("serial", "processes", "ray")
#: environment of every worker: one OpenMP thread that sleeps instead of spinning
WORKER_ENV = {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


class RecipeMismatchError(ClamuError):
    """A worker rebuilt a setting that differs from the parent's (spec or task data)."""


@dataclass(frozen=True)
class _Context:
    """Where a worker gets the setting from (sent once per worker process)."""

    source: Any                 # SettingRecipe, or a pickled Setting (or a Ray ObjectRef to one)
    token: str                  # cache key of the setting in a worker
    spec_digest: str
    config: str = ""            # the parent's finetuning config (JSON): a rebuilt setting must match it


@dataclass(frozen=True)
class _Job:
    """One finetune: the task, what it must hash to, and the run's options."""

    task_id: str
    task_digest: str
    key: str | None
    seed: int
    kwargs: dict
    store_root: str | None


_WORKER_SETTINGS: dict[str, "Setting"] = {}
_WORKER_CONTEXT: _Context | None = None


def _pin_worker() -> None:
    for k, v in WORKER_ENV.items():
        os.environ[k] = v
    torch.set_num_threads(1)


def _setting_in_worker(ctx: _Context) -> "Setting":
    setting = _WORKER_SETTINGS.get(ctx.token)
    if setting is None:
        setting = ctx.source.build() if isinstance(ctx.source, SettingRecipe) else ctx.source
        if setting.spec.digest() != ctx.spec_digest:
            raise RecipeMismatchError(
                f"the setting rebuilt in a worker from {ctx.source!r} has a different parameter spec "
                f"than the parent's; pass recipe=SettingRecipe(...) with the right arguments or ship='pickle'")
        if ctx.config and _config_json(setting) != ctx.config:
            raise RecipeMismatchError(
                f"the setting rebuilt in a worker from {ctx.source!r} finetunes with {_config_json(setting)}, "
                f"the parent's with {ctx.config}; pass recipe=SettingRecipe(...) with the right arguments "
                f"or ship='pickle'")
        _WORKER_SETTINGS.clear()
        _WORKER_SETTINGS[ctx.token] = setting
    return setting


def _finetune_job(ctx: _Context, job: _Job):
    """Run one finetune in a worker: (task id, τ_t values, meta, SHA-256)."""
    setting = _setting_in_worker(ctx)
    try:
        task = setting.task(job.task_id)
    except ClamuError:
        task = None
    if task is None or task.digest() != job.task_digest:
        raise RecipeMismatchError(
            f"task {job.task_id!r} rebuilt in a worker has other training data than the parent's; pass "
            f"recipe=SettingRecipe(...) with the setting's arguments, or ship='pickle'")
    if job.store_root is not None and job.key is not None:
        from .store import TaskVectorStore
        store = TaskVectorStore(job.store_root)
        with store.claim(job.key, wait=True):  # another run computing it: wait and read its bits
            tv = store.get(job.key, setting.spec)
            if tv is None:
                tv = finetune(setting, task, seed=job.seed, **job.kwargs)
                store.put(job.key, tv)
    else:
        tv = finetune(setting, task, seed=job.seed, **job.kwargs)
    return tv.task_id, tv.values.numpy(), tv.meta, tv.digest   # numpy: plain bytes, no shared-memory fds


def _pool_init(ctx: _Context) -> None:
    global _WORKER_CONTEXT
    _pin_worker()
    _WORKER_CONTEXT = ctx


def _pool_job(job: _Job):
    return _finetune_job(_WORKER_CONTEXT, job)


def store_keys(setting: "Setting", task_ids: Sequence[str], seed: int, store: "TaskVectorStore", **kwargs) -> dict[str, str]:
    """The store key of each task's τ_t as :func:`run_finetunes` files it (``kwargs`` as it gets them)."""
    return {str(t): store.key(setting, setting.task(str(t)), seed, **kwargs) for t in task_ids}


def run_finetunes(setting: "Setting", task_ids: Sequence[str], seed: int = 0, backend: str = "serial",
                  store: "TaskVectorStore | None" = None, progress: bool = True, desc: str = "finetune",
                  workers: int = 2, ray_address: str | None = None, recipe: SettingRecipe | None = None,
                  ship: str = "auto", **kwargs) -> dict[str, TaskVector]:
    """τ_t for each task id (from ``store`` when it already holds it), in input order.

    ``kwargs`` go to :func:`~clamu_helpers.training.finetune.finetune` (``config``, ``sign``,
    ``projection``). ``workers``: processes or Ray tasks at once. ``recipe``/``ship``: how a
    worker gets the setting (``"auto"``: pickled when its tensors are small, else its recipe;
    ``"recipe"``; ``"pickle"``).
    Every backend returns bit-identical vectors (checked by SHA-256 on arrival).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; available: {BACKENDS}")
    if ship not in ("auto", "recipe", "pickle"):
        raise ValueError(f"ship must be 'auto', 'recipe' or 'pickle', got {ship!r}")
    if int(workers) < 1:
        raise ValueError(f"workers must be ≥ 1, got {workers}")
    ids = list(dict.fromkeys(str(t) for t in task_ids))
    tasks = {tid: setting.task(tid) for tid in ids}   # UnknownTaskError early, in the parent
    keys = store_keys(setting, ids, seed, store, **kwargs) if store is not None else dict.fromkeys(ids)
    out: dict[str, TaskVector] = {}
    for tid in ids:
        if store is not None:
            tv = store.get(keys[tid], setting.spec)
            if tv is not None:
                out[tid] = tv
    todo = [tid for tid in ids if tid not in out]
    bar = tqdm(total=len(ids), initial=len(out), desc=desc, unit="task", disable=not progress, leave=False)
    try:
        if backend == "serial" or len(todo) <= 1 or int(workers) == 1:
            def compute(tid):
                tv = store.get(keys[tid], setting.spec) if store is not None else None  # done meanwhile?
                if tv is None:
                    tv = finetune(setting, tasks[tid], seed=seed, **kwargs)
                    if store is not None:
                        store.put(keys[tid], tv)
                out[tid] = tv
                bar.update(1)

            if store is None:
                for tid in todo:
                    compute(tid)
            else:  # skip what another process is computing right now; come back for it at the end
                deferred = []
                for tid in todo:
                    with store.claim(keys[tid]) as mine:
                        if mine:
                            compute(tid)
                        else:
                            deferred.append(tid)
                for tid in deferred:
                    with store.claim(keys[tid], wait=True):
                        compute(tid)
        else:
            ctx = _context(setting, recipe, ship)
            # a store other processes can write (on disk): workers file τ_t there; else the parent does
            root = str(store.root.resolve()) if store is not None and getattr(store, "shared", True) else None
            jobs = [_Job(tid, tasks[tid].digest(), keys[tid], int(seed), dict(kwargs), root) for tid in todo]
            results = (_run_processes(ctx, jobs, int(workers), setting) if backend == "processes"
                       else _run_ray(ctx, jobs, int(workers), ray_address, setting))
            for tid, values, meta, digest in results:
                if not values.flags.writeable:   # Ray hands out read-only views of its object store
                    values = values.copy()
                tv = TaskVector(tid, torch.from_numpy(values), setting.spec, meta)
                if not tv.matches(digest):
                    raise ExactnessError(f"τ_{tid} arrived with other bits than the worker computed "
                                         f"(transport corruption?)")
                if store is not None and root is None:
                    store.put(keys[tid], tv)
                out[tid] = tv
                bar.update(1)
    finally:
        bar.close()
    return {tid: out[tid] for tid in ids}


#: ``ship="auto"`` sends a setting pickled when its tensors total less than this
PICKLE_LIMIT = 64 << 20


def approx_nbytes(obj, _seen: set | None = None, _depth: int = 0) -> int:
    """Bytes of the tensors reachable from ``obj`` (attributes, containers, modules): a cheap
    estimate of its pickled size, walked without pickling."""
    seen = set() if _seen is None else _seen
    if id(obj) in seen or _depth > 8:
        return 0
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return obj.nelement() * obj.element_size()
    if isinstance(obj, torch.nn.Module):
        return sum(approx_nbytes(t, seen, _depth + 1) for t in [*obj.parameters(), *obj.buffers()])
    if isinstance(obj, dict):
        return sum(approx_nbytes(v, seen, _depth + 1) for v in obj.values())
    if isinstance(obj, (list, tuple, set, frozenset)):
        return sum(approx_nbytes(v, seen, _depth + 1) for v in obj)
    if hasattr(obj, "nbytes") and isinstance(getattr(obj, "nbytes"), int):   # numpy arrays
        return int(obj.nbytes)
    if hasattr(obj, "__dict__") and not isinstance(obj, type):
        return approx_nbytes(vars(obj), seen, _depth + 1)
    return 0


def _config_json(setting) -> str:
    return json.dumps(setting.finetune_config.to_json(), sort_keys=True)


def _context(setting, recipe, ship) -> _Context:
    if ship == "auto" and recipe is None and approx_nbytes(setting) < PICKLE_LIMIT:
        ship = "pickle"   # cheap to send: ship exactly the parent's object
    if recipe is None and ship != "pickle":
        recipe = SettingRecipe.of(setting)
    if ship == "recipe" and recipe is None:
        raise ValueError(f"setting {setting.name!r} is not in the registry: pass recipe=SettingRecipe(...)")
    if ship == "pickle" or recipe is None:
        source, token = setting, content_key("pickled", setting.name, id(setting), setting.spec.digest())
    else:
        source, token = recipe, recipe.key()
    return _Context(source, token, setting.spec.digest(), _config_json(setting))


_POOL: dict = {}   # the live worker pool: workers, setting token, weak reference to the setting


def _pool_for(ctx: _Context, workers: int, setting) -> Any:
    """A pool of ``workers`` spawned processes holding ``ctx``'s setting, reused across calls
    (``UnlearningSystem`` finetunes at fit and again at every unlearning)."""
    live = _POOL.get("pool")
    same = (live is not None and _POOL["workers"] == workers and _POOL["token"] == ctx.token
            and (_POOL["ref"] is None or _POOL["ref"]() is setting))
    if same:
        return live
    shutdown_workers()
    saved = {k: os.environ.get(k) for k in WORKER_ENV}
    os.environ.update(WORKER_ENV)   # spawn copies the environment: set before the workers start
    try:
        pool = mp.get_context("spawn").Pool(workers, initializer=_pool_init, initargs=(ctx,))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    ref = None if isinstance(ctx.source, SettingRecipe) else weakref.ref(setting)
    _POOL.update(pool=pool, workers=workers, token=ctx.token, ref=ref)
    return pool


def shutdown_workers() -> None:
    """Stop the local worker processes kept by ``backend='processes'`` (no-op if none)."""
    pool = _POOL.pop("pool", None)
    _POOL.clear()
    if pool is not None:
        pool.terminate()
        pool.join()


atexit.register(shutdown_workers)


def _run_processes(ctx: _Context, jobs, workers: int, setting) -> Iterator[tuple]:
    """Local worker processes (spawn: a clean interpreter, one pinned thread each)."""
    pool = _pool_for(ctx, workers, setting)
    try:
        yield from pool.imap_unordered(_pool_job, jobs)
    except BaseException:
        shutdown_workers()   # a failed or interrupted run leaves no half-busy pool behind
        raise


class _RayWorker:
    """One Ray actor = one pinned worker process that builds (or fetches) the setting once, in
    its constructor, and then runs finetunes. Actors instead of stateless tasks: Ray may send
    consecutive tasks to any of its pooled processes, so each new process would rebuild the
    setting inside the timed work; an actor pays that once, when it is created."""

    def __init__(self, ctx: _Context):
        _pin_worker()
        if not isinstance(ctx.source, SettingRecipe):
            import ray
            ctx = replace(ctx, source=ray.get(ctx.source))   # the pickled setting, fetched once
        self.ctx = ctx
        _setting_in_worker(ctx)

    def run(self, job: _Job):
        return _finetune_job(self.ctx, job)


_RAY: dict = {}   # the live actors: token, workers, address, actors


def ray_init(attempts: int = 3, **init) -> None:
    """``ray.init(**init)``, tried again (after ``ray.shutdown()``) when a loaded machine makes
    the local node miss Ray's fixed 30-second start-up wait ("timed out during startup")."""
    import ray
    for attempt in range(1, attempts + 1):
        try:
            ray.init(**init)
            return
        except Exception as e:
            if "timed out during startup" not in str(e) or attempt == attempts:
                raise
            ray.shutdown()


def _ray_session() -> tuple:
    import ray
    rc = ray.get_runtime_context()
    return getattr(rc, "gcs_address", None), rc.get_job_id()


def _ray_actors(ctx: _Context, workers: int, address: str | None, setting) -> list:
    """``workers`` actors holding ``ctx``'s setting, reused across calls with the same setting
    (the same recipe, or the very same pickled object) in the same Ray session."""
    import ray
    key = (ctx.token, workers, address, _ray_session())
    ref = _RAY.get("ref")
    if _RAY.get("key") == key and (ref is None or ref() is setting):
        return _RAY["actors"]
    _kill_ray_actors()
    pickled = not isinstance(ctx.source, SettingRecipe)
    if pickled:
        ctx = _Context(ray.put(ctx.source), ctx.token, ctx.spec_digest, ctx.config)
    cls = ray.remote(num_cpus=1, max_restarts=2, max_task_retries=2)(_RayWorker)
    actors = [cls.remote(ctx) for _ in range(workers)]
    _RAY.update(key=key, actors=actors, ref=weakref.ref(setting) if pickled else None)
    return actors


def _kill_ray_actors() -> None:
    actors = _RAY.pop("actors", None) or []
    _RAY.clear()
    if actors:
        import ray
        if ray.is_initialized():
            for a in actors:
                ray.kill(a)


def _run_ray(ctx: _Context, jobs, workers: int, address: str | None, setting) -> Iterator[tuple]:
    """Finetunes on ``workers`` Ray actors of one CPU each (:class:`_RayWorker`), fed from a
    queue as they finish (``ray.util.ActorPool``); starts a local Ray with
    ``num_cpus=workers`` if none runs, or joins the cluster at ``address``."""
    try:
        import ray
        from ray.util import ActorPool
    except ImportError as e:  # pragma: no cover - ray is in requirements
        raise ImportError("backend='ray' needs `pip install ray`") from e
    if not ray.is_initialized():
        # a loaded machine can take minutes to start Ray's agents: wait instead of failing
        os.environ.setdefault("RAY_raylet_start_wait_time_s", "600")
        os.environ.setdefault("RAY_agent_register_timeout_ms", "600000")
        init = dict(address=address, include_dashboard=False, log_to_driver=False,
                    runtime_env={"env_vars": dict(WORKER_ENV)})
        if address is None:
            init["num_cpus"] = workers
        ray_init(**init)
    pool = ActorPool(_ray_actors(ctx, workers, address, setting))
    try:
        yield from pool.map_unordered(lambda actor, job: actor.run.remote(job), jobs)
    except BaseException:
        _kill_ray_actors()   # a failed or interrupted run leaves no half-busy actors behind
        raise


def shutdown_ray() -> None:
    """Stop the local Ray that ``backend='ray'`` started (no-op if none runs)."""
    try:
        import ray
    except ImportError:  # pragma: no cover
        return
    _kill_ray_actors()
    if ray.is_initialized():
        ray.shutdown()
