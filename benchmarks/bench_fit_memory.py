"""Peak memory of ``UnlearningSystem.fit`` as T grows, against the streamed merge of the same τ_t.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_fit_memory.py [--T 50 500] [--dim 1024 --hidden 1024] [--methods merge sift tall emr ties "tall:clusters=10,cluster_by=task-vectors"]

Issue 31 asks that the memory of a fit stay flat in T (the paper's 500 × ViT-B-32 is 176 GB
of float32 task vectors). This measures where the system stands: each case runs in a fresh child
process, builds a synthetic setting of T tasks whose model has d ≈ dim·hidden parameters
(1.06M at the defaults, 4 MiB per τ_t), and reports the peak RSS above the child's baseline
after the setting is built and a tiny warm-up fit has loaded every lazy module and compiled the
ledger's kernel (``resource.getrusage().ru_maxrss``):

* ``fit <method>``: ``UnlearningSystem(setting, method, store=<disk store>).fit()`` (a method
  spec may carry parameters, ``"tall:clusters=10,cluster_by=task-vectors"``);
* ``stream merge``: ``scaleout.streaming.stream_merge`` of the same τ_t from the store the fit
  wrote (exact ledger, one chunk at a time), the path a flat-memory fit would take.

Writes ``benchmarks/results/bench_fit_memory.json`` (``--out`` names another).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save  # noqa: E402


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KiB on Linux


def child(case: str, tasks: int, dim: int, hidden: int, root: str) -> dict:
    import torch
    torch.set_num_threads(1)
    from clamu_helpers import UnlearningSystem
    from clamu_helpers.settings.synthetic import SyntheticSetting
    from clamu_helpers.training.store import TaskVectorStore
    from clamu_helpers.scaleout.streaming import stream_merge
    from clamu_helpers.reproduction.unlearning_cost import parse_method
    _, name, params = parse_method(case.split(" ", 1)[1] if case.startswith("fit ") else "merge")
    warm = SyntheticSetting(tasks=4, dim=8, hidden=8)   # compile the ledger kernel, load lazy modules
    UnlearningSystem(warm, name, **{**params, **({"clusters": 2} if params.get("clusters") else {})}).fit()
    setting = SyntheticSetting(tasks=tasks, dim=dim, hidden=hidden)
    store = TaskVectorStore(root)
    base = _rss_mib()
    if case.startswith("fit "):
        system = UnlearningSystem(setting, name, store=store, **params).fit()
        digest = system.ledger.digest()
    else:
        keys = [store.key(setting, setting.task(t), 0) for t in setting.task_ids]
        digest = stream_merge(store, keys, setting.spec).digest()
    return {"case": case, "tasks": tasks, "d": setting.spec.numel, "peak_mib": _rss_mib() - base,
            "tau_mib": 4 * setting.spec.numel * tasks / 2 ** 20, "ledger_digest": digest}


def main(sizes: list[int], dim: int, hidden: int, methods: list[str], result_name: str = "bench_fit_memory") -> dict:
    rows = []
    for tasks in sizes:
        with tempfile.TemporaryDirectory(prefix="clamu-fitmem-") as root:
            for case in [f"fit {m}" for m in methods] + ["stream merge"]:
                out = subprocess.run([sys.executable, __file__, "--child", case, str(tasks), str(dim), str(hidden), root],
                                     capture_output=True, text=True, check=True)
                row = json.loads(out.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(f"T={tasks:<4} {case:<14} peak +{row['peak_mib']:8.1f} MiB   (T·d·4 = {row['tau_mib']:.0f} MiB)",
                      flush=True)
    by = {(r["tasks"], r["case"]): r["ledger_digest"] for r in rows}
    same = all(by[(t, "fit merge")] == by[(t, "stream merge")] for t in sizes) if "merge" in methods else None
    print("the merge fit's ledger equals the streamed merge's (same τ_t, same integers):", same)
    result = {"dim": dim, "hidden": hidden, "rows": rows, "ledgers_equal": same}
    save(result_name, result)
    return result


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        case, tasks, dim, hidden, root = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
        print(json.dumps(child(case, tasks, dim, hidden, root)))
        sys.exit(0)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--T", type=int, nargs="+", default=[50, 500])
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--methods", nargs="+", default=["merge", "sift", "tall", "emr", "ties"])
    ap.add_argument("--out", default="bench_fit_memory", help="results/<out>.json")
    a = ap.parse_args()
    main(a.T, a.dim, a.hidden, a.methods, a.out)
