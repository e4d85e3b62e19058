"""Fused vs per-tensor optimizer on the CPU, one thread (``FinetuneConfig.fused``).

    OMP_WAIT_POLICY=PASSIVE CLAMU_CACHE=... .venv/bin/python benchmarks/bench_fused_adam.py [--runs 5]

Times one optimizer step (``foreach=False``, what finetuning used before; ``fused=True``; and
``foreach=True`` for reference) on the parameter shapes of the images setting's MLP
(784-256-256-30) and of one BERT layer (hidden 384, FFN 1536), Adam and AdamW, the variants
interleaved over two rounds against load noise; then whole finetunes of task 0 of
``get_setting("images-label-subsets", "cpu", 0)`` with ``fused=False`` and ``fused=True``
(interleaved, ``--runs`` each), checking each variant gives one digest run to run. Writes
benchmarks/results/bench_fused_adam.json.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import save  # noqa: E402

import torch  # noqa: E402

SHAPES = {
    "mlp-784-256-256-30": [(256, 784), (256,), (256, 256), (256,), (30, 256), (30,)],
    "bert-layer-384-1536": [(384, 384), (384,)] * 4 + [(384,), (384,), (1536, 384), (1536,), (384, 1536), (384,),
                                                      (384,), (384,)],
}
VARIANTS = {"foreach=False": {"foreach": False}, "fused=True": {"fused": True}, "foreach=True": {"foreach": True}}


def step_times(shapes, optimizer: str, kw: dict, steps: int, reps: int) -> list[float]:
    """µs per ``opt.step()``, ``reps`` averages of ``steps`` steps (after 20 warm-up steps)."""
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=g).requires_grad_() for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=g)
    cls = torch.optim.Adam if optimizer == "adam" else torch.optim.AdamW
    opt = cls(params, lr=1e-3, weight_decay=0.0 if optimizer == "adam" else 0.01, **kw)
    for _ in range(20):
        opt.step()
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(steps):
            opt.step()
        out.append((time.perf_counter() - t0) / steps * 1e6)
    return out


def optimizer_steps(steps: int, reps: int) -> dict:
    result = {}
    for name, shapes in SHAPES.items():
        for optimizer in ("adam", "adamw"):
            times: dict[str, list[float]] = {}
            for _ in range(2):
                for label, kw in VARIANTS.items():
                    times.setdefault(label, []).extend(step_times(shapes, optimizer, kw, steps, reps))
            row = {label: {"median_us": round(statistics.median(v), 1), "min_us": round(min(v), 1)}
                   for label, v in times.items()}
            row["parameters"] = sum(torch.Size(s).numel() for s in shapes)
            result[f"{name} {optimizer}"] = row
            print(f"{name} {optimizer}: " + ", ".join(f"{k} median {v['median_us']} µs (min {v['min_us']})"
                                                     for k, v in row.items() if k != "parameters"), flush=True)
    return result


def whole_finetunes(runs: int) -> dict:
    from clamu_helpers import FinetuneConfig
    from clamu_helpers.training.finetune import finetune
    from clamu_helpers.settings import get_setting
    setting = get_setting("images-label-subsets", "cpu", 0)
    setting.theta0   # builds (or reads) the cached M0 outside the timings
    task = setting.tasks[0]
    base = setting.finetune_config.to_json()
    configs = {fused: FinetuneConfig(**{**base, "fused": fused}) for fused in (False, True)}
    finetune(setting, task, 0, config=configs[False])   # warm-up (first-call allocations)
    seconds: dict[bool, list[float]] = {False: [], True: []}
    digests: dict[bool, set[str]] = {False: set(), True: set()}
    for _ in range(runs):
        for fused, cfg in configs.items():
            t0 = time.perf_counter()
            tv = finetune(setting, task, 0, config=cfg)
            seconds[fused].append(time.perf_counter() - t0)
            digests[fused].add(tv.digest)
    out = {"setting": "images-label-subsets cpu 0, task 0", "config": base, "runs": runs}
    for fused in (False, True):
        s = seconds[fused]
        out[f"fused={fused}"] = {"median_ms": round(statistics.median(s) * 1e3, 1), "min_ms": round(min(s) * 1e3, 1),
                                 "runs_ms": [round(x * 1e3, 1) for x in s], "digests": len(digests[fused])}
        print(f"images finetune fused={fused}: median {out[f'fused={fused}']['median_ms']} ms, "
              f"min {out[f'fused={fused}']['min_ms']} ms, runs {out[f'fused={fused}']['runs_ms']}, "
              f"{len(digests[fused])} distinct digest(s)", flush=True)
    out["fused_bits_equal_unfused"] = digests[True] == digests[False]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="whole finetunes per variant")
    ap.add_argument("--steps", type=int, default=100, help="optimizer steps per timing")
    ap.add_argument("--reps", type=int, default=5, help="timings per variant and round")
    args = ap.parse_args()
    torch.set_num_threads(1)
    result = {"threads": 1, "optimizer_step": optimizer_steps(args.steps, args.reps),
              "finetune": whole_finetunes(args.runs)}
    save("bench_fused_adam", result)


if __name__ == "__main__":
    main()
