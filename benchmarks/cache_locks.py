"""What the per-key cache lock saves: the smoke reproduction from an empty cache, with and without it.

    .venv/bin/python benchmarks/cache_locks.py [--profile smoke] [--jobs 2] [--only 03_localization,04_clamu]

``clamu_helpers.runtime.cache.cached_tensors`` builds an entry (MiniLM features, the tiny GPT-2's
pretraining, ...) under a per-key ``flock``: a second process asking for the same key waits and
reads it. This script runs ``reproduce`` twice from an empty ``CLAMU_CACHE`` (each into its own
output folder, never ``figures/``): once as the kit is, once with the lock replaced by a no-op, and
counts how many times each cache entry was built (every process of the run logs its builds
through a ``sitecustomize`` placed on ``PYTHONPATH`` for the run alone). Without the lock, two
notebooks that start at once both build what they share; with it, each key is built once.
Writes ``benchmarks/results/cache_locks.json``: per variant the wall time, the builds, the keys
built more than once.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from _common import machine, save

ROOT = Path(__file__).resolve().parents[1]

#: imported by every Python process of a run (PYTHONPATH): logs each cache build, and with
#: CLAMU_BENCH_NO_LOCK=1 replaces the per-key lock by a no-op, once clamu_helpers.runtime.cache is imported
SITE = textwrap.dedent('''
    import contextlib, importlib.abc, importlib.util, os, sys

    class _Patch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != "clamu_helpers.runtime.cache":
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)
            run = spec.loader.exec_module

            def exec_module(module):
                run(module)
                build_log, orig = os.environ["CLAMU_BENCH_LOG"], module.cached_tensors

                def cached_tensors(kind, key, build):
                    def logged():
                        with open(build_log, "a") as f:
                            f.write(f"{kind}/{key}\\n")
                        return build()
                    return orig(kind, key, logged)
                module.cached_tensors = cached_tensors
                if os.environ.get("CLAMU_BENCH_NO_LOCK"):
                    module._key_lock = lambda path: contextlib.nullcontext()
            spec.loader.exec_module = exec_module
            return spec

    if os.environ.get("CLAMU_BENCH_LOG"):
        sys.meta_path.insert(0, _Patch())
''')


def run(variant: str, args, work: Path) -> dict:
    site = work / "site"
    site.mkdir(parents=True, exist_ok=True)
    (site / "sitecustomize.py").write_text(SITE)
    log = work / f"{variant}.builds"
    env = {**os.environ, "CLAMU_CACHE": str(work / f"cache-{variant}"), "CLAMU_BENCH_LOG": str(log),
           "PYTHONPATH": os.pathsep.join([str(site), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    if variant == "no lock":
        env["CLAMU_BENCH_NO_LOCK"] = "1"
    cmd = [sys.executable, "-m", "clamu_helpers", "reproduce", "--profile", args.profile, "--jobs", str(args.jobs),
           "--out", str(work / f"out-{variant.replace(' ', '-')}")]
    if args.only:
        cmd += ["--only", args.only]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    builds = collections.Counter(log.read_text().split()) if log.exists() else collections.Counter()
    return {"variant": variant, "ok": proc.returncode == 0, "wall_seconds": round(wall, 1),
            "builds": sum(builds.values()), "keys": len(builds),
            "built_more_than_once": {k: n for k, n in sorted(builds.items()) if n > 1},
            "tail": proc.stdout[-400:] + proc.stderr[-400:] if proc.returncode else ""}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--only", default=None, help="notebook stems (default: all)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="clamu-locks-") as d:
        rows = [run(v, args, Path(d)) for v in ("lock", "no lock")]
    for r in rows:
        print(json.dumps({k: v for k, v in r.items() if k != "tail"}), r["tail"])
    lock, free = rows
    result = {"machine": machine(), "profile": args.profile, "jobs": args.jobs, "only": args.only, "rows": rows,
              "saved_seconds": round(free["wall_seconds"] - lock["wall_seconds"], 1),
              "duplicate_builds_without_lock": free["builds"] - free["keys"],
              "duplicate_builds_with_lock": lock["builds"] - lock["keys"]}
    print(f"saved: {save('cache_locks', result)}")


if __name__ == "__main__":
    main()
