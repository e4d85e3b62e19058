"""A content-addressed store of task vectors and masks on disk (safetensors + JSON, never pickle).

**The key.** ``key(setting, task, seed, ...)`` is the SHA-256 of everything τ_t depends on:
the setting's name, its parameter spec (digest of names and shapes), the task's training data
(``Task.digest``: id plus SHA-256 of every training tensor), the finetuning hyperparameters
(``FinetuneConfig``: steps, lr, batch size, optimizer, weight decay, threads, precision, fused
optimizer or not), the seed, the SIFT sign vector v (its SHA-256) and projection when
sign-fixed, and the environment fingerprint (torch/numpy/python versions, machine, device,
threads; on the CPU its kernel family: instruction set, vendor, BLAS, oneDNN). Anything that could
change a bit of τ_t changes the key, so a finished finetune is never recomputed and a stale
one is never reused.

**Sharing.** Workers on several machines may write into one shared folder: every file is
written under a unique temporary name (host, pid, random suffix), fsynced and renamed into
place, so readers never see half a file and concurrent writers of the same key (who write
the same bits) cannot clash. Every read checks the SHA-256 recorded at write time; a corrupt
entry is removed and reported as missing (it will be recomputed), never trusted.

**Claims.** Several runs filling one store at once (two notebooks, two users, a reproduction
beside a test) split the work instead of repeating it: :meth:`TaskVectorStore.claim` takes an
advisory ``flock`` on ``locks/<k[:2]>/<k>.lock`` while a finetune is computed, and
:func:`~clamu_helpers.training.parallel.run_finetunes` skips a task another process has claimed, then
comes back for it at the end (waiting for that claim and reading the result). A lock dies with
its process, so a crashed holder never blocks anyone. ``flock`` holds on a local disk and on
NFSv4; where it is not supported, claims always succeed and runs just may repeat work.

**Streaming.** :meth:`TaskVectorStore.open` gives a :class:`StoredVector` that reads τ_t
chunk by chunk (:meth:`StoredVector.chunks`) or one named parameter at a time
(:meth:`StoredVector.tensor`) with positioned reads, never holding the whole vector; masks
(packed uint8, one bit per parameter) stream the same way.

(Over 300 lines on purpose: the store's key, its atomic reads and writes, the claim locks that
make concurrent finetunes run once, and its housekeeping (purge) belong to one on-disk format.)
"""
from __future__ import annotations

import contextlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Mapping
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from safetensors import safe_open

try:
    import fcntl
except ImportError:  # not on Windows: claims always succeed there (runs may repeat work)
    fcntl = None

from ..core import digests
from ..runtime.cache import cache_dir, content_key
from ..runtime.determinism import fingerprint_of
from ..core.atomic import write_safetensors
from ..core.errors import DuplicateTaskError, ShapeMismatchError, StateError
from ..core.params import ParamSpec
from ..core.taskvector import TaskVector, sha256_tensor

FORMAT = "clamu-tv-v1"
MASK_FORMAT = "clamu-mask-v1"
_DTYPES = {"F32": (np.float32, torch.float32), "U8": (np.uint8, torch.uint8)}
#: default number of values per streamed chunk (4 MiB of float32)
CHUNK = 1 << 20


def read_header(path: Path) -> tuple[dict, int]:
    """(safetensors header as a dict, byte offset where the data begins), without reading data."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise StateError(f"{path} is not a safetensors file (truncated)")
        (n,) = struct.unpack("<Q", raw)
        if n > 100_000_000:
            raise StateError(f"{path} has an implausible header length {n}")
        header = f.read(n)
    if len(header) != n:
        raise StateError(f"{path} is truncated inside its header")
    return json.loads(header), 8 + n


@dataclass
class StoredVector:
    """One stored flat tensor (a τ_t or a packed mask), read piece by piece.

    ``digest`` is the digest recorded at write time (:mod:`clamu_helpers.core.digests`; a file written
    before digests named their algorithm records bare SHA-256 hex under ``sha256``, as masks
    still do); :meth:`chunks` recomputes it while reading and raises :class:`StateError` after
    the last chunk if the bits differ.
    """

    path: Path
    name: str
    meta: dict
    numel: int
    dtype: torch.dtype
    offset: int

    @property
    def task_id(self) -> str:
        return self.meta["task_id"]

    @property
    def digest(self) -> str:
        return self.meta["digest"] if "digest" in self.meta else self.meta["sha256"]

    def read(self, start: int, stop: int) -> torch.Tensor:
        """Values [start, stop) with one positioned read (no memory map, no full load)."""
        if not 0 <= start <= stop <= self.numel:
            raise ShapeMismatchError(f"slice [{start}, {stop}) is outside a vector of {self.numel}")
        np_dtype = np.float32 if self.dtype == torch.float32 else np.uint8
        item = np.dtype(np_dtype).itemsize
        buf = np.empty(stop - start, dtype=np_dtype)
        with open(self.path, "rb") as f:
            f.seek(self.offset + start * item)
            got = f.readinto(memoryview(buf).cast("B"))
        if got != buf.nbytes:
            raise StateError(f"{self.path} is truncated (wanted {buf.nbytes} bytes at {start}, got {got})")
        return torch.from_numpy(buf)

    def chunks(self, chunk: int = CHUNK, verify: bool = True) -> Iterator[torch.Tensor]:
        """Consecutive pieces of ``chunk`` values; the hash is checked after the last one."""
        fmt = digests.format_of(self.digest)
        h = digests.hasher(fmt, self.dtype, (self.numel,)) if verify else None
        np_dtype = np.float32 if self.dtype == torch.float32 else np.uint8
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            for start in range(0, self.numel, chunk):
                buf = np.empty(min(chunk, self.numel - start), dtype=np_dtype)
                if f.readinto(memoryview(buf).cast("B")) != buf.nbytes:
                    raise StateError(f"{self.path} is truncated at value {start}")
                if h is not None:
                    h.update(memoryview(buf).cast("B"))
                yield torch.from_numpy(buf)
        if h is not None and not digests.same(digests.name(fmt, h), self.digest):
            raise StateError(f"{self.path}: the digest of the data does not match the one recorded at write "
                             f"time (corrupt file); delete it so that it is recomputed")

    def tensor(self, name: str, spec: ParamSpec) -> torch.Tensor:
        """One named parameter of τ_t, shaped, read alone (tensor-by-tensor access)."""
        if spec.numel != self.numel:
            raise ShapeMismatchError(f"spec has {spec.numel} parameters, stored vector {self.numel}")
        if name not in spec.names:
            raise ShapeMismatchError(f"spec has no parameter {name!r}")
        i = spec.names.index(name)
        start = sum(spec.sizes[:i])
        return self.read(start, start + spec.sizes[i]).view(spec.shapes[i])

    def load(self) -> torch.Tensor:
        """All values (hash-checked)."""
        t = self.read(0, self.numel)
        if not digests.matches(t, self.digest):
            raise StateError(f"{self.path}: digest mismatch (corrupt file)")
        return t


def check_packed(packed: torch.Tensor, d: int) -> None:
    """Raise unless ``packed`` is a packed mask of ``d`` parameters: ⌈d/8⌉ uint8 values, 1-D."""
    if packed.dtype != torch.uint8 or packed.dim() != 1 or packed.numel() != (d + 7) // 8:
        raise ShapeMismatchError(f"packed mask must be {(d + 7) // 8} uint8 values, got "
                                 f"{tuple(packed.shape)} {packed.dtype}")


class TaskVectorStore:
    """Task vectors under ``root/<k[:2]>/<k>.safetensors``; masks under ``root/masks/``."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else cache_dir() / "task_vectors"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            from ..core.errors import storage_error
            raise storage_error(self.root, e, "the task-vector store (set CLAMU_CACHE to move it)") from e

    # -- keys -------------------------------------------------------------------------------
    def key_parts(self, setting, task, seed: int, sign: torch.Tensor | None = None,
                  projection: str = "after_step", config=None, device=None) -> list:
        """What the key hashes, in order (see the module docstring)."""
        cfg = config or setting.finetune_config
        parts = ["tv-v1", setting.name, setting.spec.digest(), task.digest(), cfg.to_json(),
                 int(seed), sha256_tensor(sign) if sign is not None else None,
                 projection if sign is not None else None,
                 fingerprint_of(cfg, device if device is not None else setting.device)]
        revision = getattr(setting, "revision", "")
        return parts + [revision] if revision else parts

    def key(self, setting, task, seed: int, sign: torch.Tensor | None = None,
            projection: str = "after_step", config=None, device=None) -> str:
        """SHA-256 key of τ_t for (setting, spec, task data, hyperparameters, seed, sign, env)."""
        return content_key(*self.key_parts(setting, task, seed, sign, projection, config, device))

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.safetensors"

    def __contains__(self, key: str) -> bool:
        return self.path(key).exists()

    # -- task vectors -----------------------------------------------------------------------
    def put(self, key: str, tv: TaskVector) -> None:
        """Store τ_t (a no-op when the key is already there: same key, same bits)."""
        path = self.path(key)
        if path.exists():
            return
        meta = {"format": FORMAT, "task_id": tv.task_id, "digest": tv.digest, "numel": tv.values.numel(),
                "spec": tv.spec.digest(), "meta": tv.meta}
        write_safetensors({"tau": tv.values}, path, {"meta": json.dumps(meta, default=str)})

    def open(self, key: str, spec: ParamSpec | None = None) -> StoredVector:
        """A :class:`StoredVector` for streaming τ_t (``FileNotFoundError`` if absent)."""
        return self._open(self.path(key), "tau", spec)

    def get(self, key: str, spec: ParamSpec) -> TaskVector | None:
        """τ_t, hash-checked; ``None`` when absent or corrupt (a corrupt file is removed)."""
        path = self.path(key)
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        try:
            sv = self._open(path, "tau", spec)
            # hashed once, by the TaskVector, which keeps the digest for the ledger (not also by sv.load())
            tv = TaskVector(sv.task_id, sv.read(0, sv.numel), spec, sv.meta.get("meta", {}))
            if not tv.matches(sv.digest):
                raise StateError("digest mismatch")
            return tv
        except (StateError, ShapeMismatchError, KeyError, ValueError, OSError):
            _remove_if_unchanged(path, stat)
            return None

    def keys(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("*/*.safetensors") if p.parent.name != "masks")

    @contextlib.contextmanager
    def claim(self, key: str, wait: bool = False) -> Iterator[bool]:
        """Hold the claim on ``key`` while computing it: yields True when this process holds
        it, False when another process does (only with ``wait=False``; with ``wait=True`` it
        blocks until that process is done). The claim is released on exit."""
        if fcntl is None:
            yield True
            return
        path = self.root / "locks" / key[:2] / f"{key}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            except OSError:  # the file system does not support flock: never block anyone
                yield True
                return
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __len__(self) -> int:
        return len(self.keys())

    # -- masks (packed bits) ----------------------------------------------------------------
    @staticmethod
    def mask_key(*parts: object) -> str:
        """Content key of a mask, from whatever it depends on (method, λ, τ̄ digest, task…)."""
        return content_key("mask-v1", *parts)

    def mask_path(self, key: str) -> Path:
        return self.root / "masks" / key[:2] / f"{key}.safetensors"

    def put_mask(self, key: str, packed: torch.Tensor, d: int, task_id: str = "", meta: dict | None = None) -> None:
        """Store a packed mask (uint8, ⌈d/8⌉ bytes, little bit order as ``packing.pack``)."""
        check_packed(packed, d)
        info = {"format": MASK_FORMAT, "task_id": str(task_id), "d": int(d), "sha256": sha256_tensor(packed),
                "numel": packed.numel(), "meta": meta or {}}
        write_safetensors({"mask": packed}, self.mask_path(key), {"meta": json.dumps(info, default=str)})

    def open_mask(self, key: str) -> StoredVector:
        return self._open(self.mask_path(key), "mask", None)

    def get_mask(self, key: str) -> tuple[torch.Tensor, dict]:
        """(packed uint8 mask, its metadata incl. ``d``), hash-checked."""
        sv = self.open_mask(key)
        return sv.load(), sv.meta

    def purge(self, setting_name: str, task_ids: Iterable[str], masks: bool = True,
              tmp_age_s: float = 3600.0) -> list[str]:
        """Delete from this store what still holds forgotten tasks.

        * every cached τ_t of ``task_ids`` finetuned in ``setting_name`` (matched from each entry's
          header, so it works after the task's data is gone), and unreadable entries (they may
          hold one; the store would recompute them anyway);
        * with ``masks`` (default), every cached mask: masks such as TALL's are computed from a
          τ̄ that contained the forgotten tasks, and they are cheap to recompute;
        * temporary files of interrupted writes older than ``tmp_age_s`` seconds.

        Returns the removed paths. Retraining at unlearning never reads the store, so purging
        costs nothing but later recomputation.
        """
        import time

        root, wanted, removed, now = Path(self.root), {str(t) for t in task_ids}, [], time.time()
        for path in sorted(root.rglob("*")):
            if not path.is_file():
                continue
            name = path.name
            if name.startswith(".") and name.endswith(".tmp"):
                if now - path.stat().st_mtime > tmp_age_s:
                    path.unlink(missing_ok=True)
                    removed.append(str(path))
                continue
            if not name.endswith(".safetensors"):
                continue
            if path.relative_to(root).parts[0] == "masks":
                if masks:
                    path.unlink(missing_ok=True)
                    removed.append(str(path))
                continue
            try:
                with safe_open(str(path), framework="pt") as f:
                    info = json.loads(f.metadata()["meta"])
                hit = info.get("task_id") in wanted and (info.get("meta") or {}).get("setting") == setting_name
            except Exception:  # unreadable: it may hold a forgotten τ
                hit = True
            if hit:
                path.unlink(missing_ok=True)
                removed.append(str(path))
        return removed

    # -- internals --------------------------------------------------------------------------
    def _open(self, path: Path, name: str, spec: ParamSpec | None) -> StoredVector:
        header, offset = read_header(path)
        try:
            meta = json.loads(header["__metadata__"]["meta"])
            entry = header[name]
            np_t = _DTYPES[entry["dtype"]]
        except KeyError as e:
            raise StateError(f"{path} is not a clamu store entry (missing {e})") from None
        begin, end = entry["data_offsets"]
        numel = int(np.prod(entry["shape"])) if entry["shape"] else 1
        if (end - begin) != numel * np.dtype(np_t[0]).itemsize:
            raise StateError(f"{path}: header sizes disagree")
        if spec is not None:
            if numel != spec.numel or meta.get("spec", spec.digest()) != spec.digest():
                raise ShapeMismatchError(f"{path} holds a vector for another parameter spec "
                                         f"({numel} values, expected {spec.numel})")
        if os.path.getsize(path) < offset + end:
            raise StateError(f"{path} is truncated")
        return StoredVector(path, name, meta, numel, np_t[1], offset + begin)


def _remove_if_unchanged(path: Path, stat: os.stat_result) -> None:
    """Delete a corrupt entry unless another writer replaced it since we looked."""
    try:
        now = path.stat()
        if (now.st_ino, now.st_mtime_ns, now.st_size) == (stat.st_ino, stat.st_mtime_ns, stat.st_size):
            path.unlink()
    except FileNotFoundError:
        pass


def open_all(store: TaskVectorStore, keys: Sequence[str], spec: ParamSpec) -> list[StoredVector]:
    """Open every stored τ_t (headers only); raises on a missing key or a repeated task id."""
    out, seen = [], {}
    for key in keys:
        try:
            sv = store.open(key, spec)
        except FileNotFoundError:
            raise FileNotFoundError(f"task vector {key[:16]}… is not in the store {store.root}") from None
        if sv.task_id in seen:
            raise DuplicateTaskError(f"task {sv.task_id!r} appears twice (keys {seen[sv.task_id][:12]}…, {key[:12]}…)")
        seen[sv.task_id] = key
        out.append(sv)
    return out


class StoredVectors(Mapping):
    """τ_t read from the store on access, one at a time, each checked against the digest the
    ``ledger`` (a :class:`~clamu_helpers.core.ledger.MergeLedger`) recorded when it was merged:
    what a streaming ``UnlearningSystem.fit`` hands the method instead of a dict."""

    def __init__(self, store: "TaskVectorStore", keys: dict[str, str], spec: ParamSpec, ledger):
        self._store, self._keys, self._spec, self._ledger = store, dict(keys), spec, ledger

    def __getitem__(self, task_id: str) -> TaskVector:
        tv = self._store.get(self._keys[task_id], self._spec)
        if tv is None:
            raise StateError(f"the store at {self._store.root} lost τ_t of task {task_id!r} during the fit "
                             f"(key {self._keys[task_id]}); fit again")
        self._ledger.check_hashes({task_id: tv}, "task vectors read back from the store")
        return tv

    def __iter__(self):
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def subset(self, ids: Iterable[str]) -> "StoredVectors":
        """The same store and ledger, only the τ_t of ``ids`` (``KeyError`` on an unknown id)."""
        return StoredVectors(self._store, {str(t): self._keys[str(t)] for t in ids}, self._spec, self._ledger)

    def column_blocks(self, ids: Sequence[str], chunk: int) -> Iterator[torch.Tensor]:
        """The τ_t of ``ids`` a block of columns at a time: float64 blocks [len(ids) × chunk]
        (the last one narrower), row i from task ``ids[i]`` (its float32 values, exactly). Memory is one block, never a whole τ_t, so a
        step that compares every pair of τ_t (clustering by their cosines) stays flat in d.

        Each τ_t is hashed as it is read, in the algorithm of the digest the ledger recorded
        when it was merged, and a :class:`StateError` follows the last block if any differs
        (the caller's result must then not be used; nothing has changed)."""
        ids = [str(t) for t in ids]
        if chunk < 1:
            raise ValueError(f"chunk must be ≥ 1, got {chunk}")
        unknown = [t for t in ids if t not in self._keys]
        if unknown:
            raise KeyError(f"tasks {unknown[:5]} are not among the stored task vectors")
        svs = open_all(self._store, [self._keys[t] for t in ids], self._spec)
        recorded = self._ledger.hashes
        hashers = []
        for t, sv in zip(ids, svs):
            if t not in recorded:
                raise StateError(f"task {t!r} is not merged in the ledger these task vectors belong to")
            hashers.append(digests.hasher(digests.format_of(recorded[t]), sv.dtype, (sv.numel,)))
        numel = svs[0].numel if svs else 0
        for start in range(0, numel, chunk):
            block = torch.empty(len(svs), min(chunk, numel - start), dtype=torch.float64, device="cpu")
            for i, (sv, h) in enumerate(zip(svs, hashers)):
                row = sv.read(start, min(start + chunk, numel))
                h.update(memoryview(row.numpy()).cast("B"))
                block[i] = row                 # float32 → float64 is exact
            yield block
        bad = [t for t, h in zip(ids, hashers) if not digests.same(digests.name(digests.format_of(recorded[t]), h),
                                                                    recorded[t])]
        if bad:
            raise StateError(f"τ_t of tasks {bad[:5]} read back from the store {self._store.root} differ from the "
                             f"ones merged (changed or corrupt files); nothing was changed: fit again")
