"""How close do the kit's finetune, mask and evaluation steps come to this machine's peak FLOP rate?

    .venv/bin/python benchmarks/bench_flops.py [--profile cpu] [--settings NAME ...] [--repeat 3] [--rounds 2]

Everything runs on ONE thread (``torch.set_num_threads(1)``; the kit pins one thread per
finetune and per mask), per embedded setting built by ``get_setting(name, profile, 0)``:

* **peak**: float32 (and bfloat16) GFLOP/s of a square matmul (1024² and 2048², ``torch.mm`` into a preallocated
  output, the fastest of several runs each), measured before each round over the settings and
  after the last; the largest rate is "the peak" every share below is taken of (another job on
  the machine lowers a measurement, never raises it, so the largest is the least disturbed). It is a measured peak,
  not the chip's nominal one (16 float32 FLOPs per cycle per core on Zen 1 with AVX2 FMA). A setting
  whose steps run under bfloat16 autocast (its ``FinetuneConfig.precision``, which its mask step
  takes too) is taken as a share of the bfloat16 peak (its evaluation, float32, of the float32 one); ``CLAMU_PRECISION=float32`` measures the
  same settings in float32.
* **finetune step**: the kit's own path, :func:`clamu_helpers.training.finetune.finetune`. FLOPs are
  counted over a whole ``finetune`` call with ``steps=1`` (one forward + backward of one
  mini-batch of the setting's ``batch_size``, only the parameters the setting trains requiring
  gradients, exactly as the kit runs it); seconds per step are the fastest of ``repeat`` calls
  of the real ``finetune(setting, task, 0)`` (``setting.finetune_config.steps`` steps) divided
  by its steps, so the call's fixed cost (copy of M0, τ_t's concatenation) is spread over its
  steps as it is in a real run. The JSON also keeps a 1-step call's seconds, so the fixed cost
  can be read off (``fixed_s`` ≈ t(1 step) − per-step marginal, 0 where noise makes it negative).
* **mask step**: :func:`clamu_helpers.localization.masks.optimize_mask` at ClAMU's equal budget for the
  setting (``Clamu.budget``: steps, mini-batch), ``MaskConfig(steps, 100.0, batch, 0.1,
  "draft", 1)`` on a random τ̄ of scale 1e-3; FLOPs counted over a 1-step call (forward +
  backward through :func:`clamu_helpers.core.params.functional`), seconds the same way as finetuning.
* **evaluation**: ``setting.score(θ0, *task.test)`` for the first task (forward only, no
  gradients); FLOPs of one call, seconds the fastest of ``repeat`` calls.

What is counted: ``torch.utils.flop_counter.FlopCounterMode`` counts only matmul- and
convolution-like ATen ops (mm, addmm, bmm, baddbmm, convolutions, the fused attention kernels;
CPU flash attention is added here, it is not in torch's table), 2 FLOPs per multiply-add.
Element-wise and reduction work is NOT counted: Adam's update, softmax, layer norm, GELU, the
mask step's ``where``/sigmoid/score update over all d parameters, the loss, copies and
allocation. That uncounted work, plus Python and dispatch overhead on tiny matrices, is exactly
why a step with little matmul per parameter (small batches, d large) sits far below peak: its
GFLOP/s is "counted matmul FLOPs per wall second", a measure of how much of the step's time does
the work that scales with the batch. The steps are deterministic and pinned to one thread like
the kit's, so their rates hold for a real run on one core. Another job on the machine lowers
every rate (on the shared 2-core box the one-thread matmul moved between 23 and 39 GFLOP/s
within minutes), so the script makes ``--rounds`` passes over the settings, minutes apart, and
keeps each unit's fastest round; the JSON records every peak measurement and the load averages
at the start and the end.

:func:`measure` is importable (``from bench_flops import measure``; ``benchmarks/`` on the path)
and returns one setting's unit costs: ``seconds_per_finetune_step``, ``seconds_per_mask_step``,
``seconds_per_evaluation`` (per evaluated task), with the FLOP counts beside them. A setting
whose data or weights are missing is skipped with a message (``{"skipped": why}``), never an
error. Writes ``benchmarks/results/flops.json`` (``flops_<profile>.json`` for another profile);
it reads the kit's kernels at run time, so re-running it measures whatever they are then.
"""
from __future__ import annotations

import argparse
import copy
import os
import time
from dataclasses import replace

import torch
from torch.utils.flop_counter import FlopCounterMode

from _common import best_of, save

DEFAULT_SETTINGS = ("images-label-subsets", "fortunes-label-subsets", "fictitious-authors")
#: square matmul sizes for the peak
PEAK_SIZES = (1024, 2048)
#: the peaks measured: float32, and bfloat16 for the settings whose steps run under bf16 autocast
#: (``FinetuneConfig.precision``; the cpu profile's text and author settings where bf16 is native)
PEAK_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
#: what a missing dataset or model raises while a setting is built
MISSING = (FileNotFoundError, ImportError, ModuleNotFoundError, OSError)


def _custom_flops() -> dict:
    """FLOP formulas torch's table lacks: CPU flash attention (what SDPA runs on the CPU)."""
    from torch.utils import flop_counter as fc
    out = {}
    aten = torch.ops.aten
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        out[aten._scaled_dot_product_flash_attention_for_cpu] = (
            lambda q, k, v, *a, out_shape=None, **kw: fc.sdpa_flop_count(q, k, v))
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        # the CPU kernel's grad_out is laid out (B, S, H, D); the count wants (B, H, S, D) = q's shape
        out[aten._scaled_dot_product_flash_attention_for_cpu_backward] = (
            lambda g, q, k, v, *a, out_shape=None, **kw: fc.sdpa_backward_flop_count(q, q, k, v))
    return out


def count_flops(fn) -> int:
    """Matmul/conv FLOPs of ``fn()`` (see the module docstring for what is not counted)."""
    with FlopCounterMode(display=False, custom_mapping=_custom_flops()) as fc:
        fn()
    return int(fc.get_total_flops())


def peak_gflops(repeat: int = 3, sizes=PEAK_SIZES, dtype: torch.dtype = torch.float32) -> dict:
    """GFLOP/s of ``torch.mm`` on n×n matrices of ``dtype`` (float32, or bfloat16: what a
    bf16-autocast step's matmuls run), one thread, the fastest of ``max(repeat, 3)`` runs (4× as
    many, at least 8, below 2048², which take under 0.1 s)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rates = {}
        g = torch.Generator().manual_seed(0)
        for n in sizes:
            a, b = torch.randn(n, n, generator=g).to(dtype), torch.randn(n, n, generator=g).to(dtype)
            c = torch.empty(n, n, dtype=dtype)
            torch.mm(a, b, out=c)  # warm-up
            runs = max(repeat, 3) if n >= 2048 else max(4 * repeat, 8)
            s = best_of(lambda: torch.mm(a, b, out=c), runs)
            rates[n] = 2 * n ** 3 / s / 1e9
    finally:
        torch.set_num_threads(old)
    return {"gflops_by_size": {str(n): round(r, 2) for n, r in rates.items()},
            "peak_gflops": round(max(rates.values()), 2)}


def _row(work: str, flops: int, seconds: float, **extra) -> dict:
    return {"work": work, "flops": flops, "seconds": seconds, **extra}


def derive(result: dict, peak: float | None = None, eval_peak: float | None = None) -> dict:
    """Fill a :func:`measure` result's derived fields (GFLOP/s, share of ``peak``, a call's
    fixed cost, the unit costs) from its raw FLOPs and seconds; returns ``result``. The
    evaluation row's share is of ``eval_peak`` when given (evaluation runs float32 in every
    precision)."""
    rows = result.get("rows")
    if not rows:
        return result
    ft, mask, ev = rows
    for r, row_peak in ((ft, peak), (mask, peak), (ev, eval_peak or peak)):
        if "seconds_per_call" in r:  # a step: the real call's seconds spread over its steps
            r["seconds"] = r["seconds_per_call"] / r["steps"]
            marginal = (r["seconds_per_call"] - r["seconds_one_step_call"]) / max(1, r["steps"] - 1)
            r["fixed_s"] = round(max(0.0, r["seconds_one_step_call"] - marginal), 4) if r["steps"] > 1 else None
        rate = r["flops"] / r["seconds"] / 1e9 if r["seconds"] > 0 else float("nan")
        r.update(gflop=round(r["flops"] / 1e9, 6), ms=round(r["seconds"] * 1e3, 3), gflops=round(rate, 3),
                 pct_of_peak=round(100 * rate / row_peak, 2) if row_peak else None)
    result.update(seconds_per_finetune_step=ft["seconds"], seconds_per_finetune=ft["seconds_per_call"],
                  seconds_per_mask_step=mask["seconds"], seconds_per_mask=mask["seconds_per_call"],
                  seconds_per_evaluation=ev["seconds"], flops_per_finetune_step=ft["flops"],
                  flops_per_mask_step=mask["flops"], flops_per_evaluation=ev["flops"])
    return result


def best_of_rounds(results: list[dict], peak: float | None = None) -> dict:
    """One setting measured in several rounds: each time the fastest of the rounds."""
    if any("skipped" in r for r in results):
        return next(r for r in results if "skipped" in r)
    best = copy.deepcopy(results[0])
    for other in results[1:]:
        for r, o in zip(best["rows"], other["rows"]):
            for k in ("seconds", "seconds_per_call", "seconds_one_step_call"):
                if k in r:
                    r[k] = min(r[k], o[k])
    best["rounds"] = len(results)
    return derive(best, peak)


def measure(setting_name: str, profile: str = "cpu", repeat: int = 3, peak: float | None = None,
            seed: int = 0) -> dict:
    """One setting's unit costs on one thread: FLOPs and seconds per finetune step, per mask
    step and per evaluated task (``peak``: GFLOP/s to take shares of; None leaves them out).
    Returns ``{"setting", "skipped": why}`` when the setting cannot be built here."""
    from clamu_helpers import get_setting
    from clamu_helpers.runtime.determinism import generator
    from clamu_helpers.core.errors import MissingResourceError
    from clamu_helpers.training.finetune import finetune
    from clamu_helpers.localization.masks import MaskConfig, optimize_mask
    from clamu_helpers.methods import get_method
    from clamu_helpers.settings import availability

    ok, why = availability(setting_name)
    if not ok:
        return {"setting": setting_name, "profile": profile, "skipped": why or "not available"}
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t = time.perf_counter()
        try:
            s = get_setting(setting_name, profile, seed)
            s.model, s.spec, s.theta0  # build M0 (cached) outside the timed work
        except (MissingResourceError, *MISSING) as e:
            return {"setting": setting_name, "profile": profile, "skipped": f"{type(e).__name__}: {e}"}
        build_s = time.perf_counter() - t
        task = s.tasks[0]
        cfg = s.finetune_config
        rows = []

        # finetune: FLOPs of a 1-step call, seconds of the real call / its steps
        ft_flops = count_flops(lambda: finetune(s, task, seed, replace(cfg, steps=1)))
        ft_call = best_of(lambda: finetune(s, task, seed), repeat)
        ft_one = best_of(lambda: finetune(s, task, seed, replace(cfg, steps=1)), repeat)
        batch = min(cfg.batch_size, len(task.train[1]))
        rows.append(_row(f"finetune step (batch {batch})", ft_flops, ft_call / cfg.steps, steps=cfg.steps,
                         seconds_per_call=ft_call, seconds_one_step_call=ft_one))

        # ClAMU's mask step at its equal budget
        steps, mbatch = get_method("clamu").budget(s)
        tau = 1e-3 * torch.randn(s.spec.numel, generator=torch.Generator().manual_seed(0))
        mcfg = MaskConfig(steps, 100.0, mbatch, 0.1, "draft", 1, cfg.precision)   # the setting's precision, as ClAMU

        def mask(c):
            return lambda: optimize_mask(s, tau, task.train, c, generator(seed, "flops"))
        m_flops = count_flops(mask(replace(mcfg, steps=1)))
        m_call = best_of(mask(mcfg), repeat)
        m_one = best_of(mask(replace(mcfg, steps=1)), repeat)
        mb = len(task.train[1]) if mbatch is None else min(mbatch, len(task.train[1]))
        rows.append(_row(f"mask step (batch {mb})", m_flops, m_call / steps, steps=steps,
                         seconds_per_call=m_call, seconds_one_step_call=m_one))

        # evaluation of one task's test split
        x, y = task.test
        weights = s.theta0
        e_flops = count_flops(lambda: s.score(weights, x, y))
        e_s = best_of(lambda: s.score(weights, x, y), repeat)
        rows.append(_row(f"evaluation ({len(y)} examples)", e_flops, e_s))
    finally:
        torch.set_num_threads(old)
    return derive({"setting": s.name, "profile": profile, "seed": seed, "parameters": s.spec.numel,
                   "precision": cfg.precision, "build_s": round(build_s, 2), "rows": rows}, peak)


def main(profile: str, settings, repeat: int, rounds: int = 2) -> dict:
    torch.set_num_threads(1)
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    peaks, per_setting = [], {name: [] for name in settings}

    def peak_now(when):
        for name, dtype in PEAK_DTYPES.items():
            p = peak_gflops(repeat, PEAK_SIZES, dtype)
            peaks.append({"when": when, "dtype": name, **p["gflops_by_size"]})
            print(f"one-thread {name} matmul ({when}): " + ", ".join(f"{n}²: {r:.1f} GFLOP/s"
                                                                 for n, r in p["gflops_by_size"].items()), flush=True)

    for k in range(rounds):
        peak_now(f"before round {k + 1}")
        for name in settings:
            if per_setting[name] and "skipped" in per_setting[name][0]:
                continue
            t = time.perf_counter()
            r = measure(name, profile, repeat)
            if "skipped" in r:
                print(f"skipped {name}: {r['skipped']}", flush=True)
            else:
                print(f"round {k + 1}: measured {name} ({r['parameters']:,} parameters) in "
                      f"{time.perf_counter() - t:.0f} s", flush=True)
            per_setting[name].append(r)
    peak_now("at the end")
    by_dtype = {d: {str(n): max(p[str(n)] for p in peaks if p["dtype"] == d) for n in PEAK_SIZES} for d in PEAK_DTYPES}
    peak = {"gflops_by_size": by_dtype["float32"], "peak_gflops": max(by_dtype["float32"].values()),
            "by_dtype": {d: {"gflops_by_size": v, "peak_gflops": max(v.values())} for d, v in by_dtype.items()},
            "measurements": peaks}
    for d, v in peak["by_dtype"].items():
        print(f"{d} peak: {v['peak_gflops']:.1f} GFLOP/s (the fastest of {len(peaks) // len(PEAK_DTYPES)} measurements)",
              flush=True)

    def peak_of(r):   # a setting's shares are of the peak of the precision its steps run in
        return peak["by_dtype"]["bfloat16" if r.get("precision") == "bf16" else "float32"]["peak_gflops"]
    results = [best_of_rounds(per_setting[name], None) for name in settings]
    results = [derive(r, peak_of(r), peak["peak_gflops"]) if "skipped" not in r else r for r in results]
    for r in results:  # plain floats for the JSON
        for row in r.get("rows", []):
            for key in ("seconds", "seconds_per_call", "seconds_one_step_call"):
                if key in row:
                    row[key] = round(row[key], 6)
    load_end = os.getloadavg() if hasattr(os, "getloadavg") else None
    out = {"profile": profile, "repeat": repeat, "rounds": rounds, "threads": 1,
           "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "peak": peak,
           "counted_ops": "matmul/conv-like ATen ops only (FlopCounterMode); element-wise work is not counted",
           "settings": results,
           "loadavg": {"start": load_start, "end": load_end,
                       "note": "machine.loadavg_at_start is taken when the JSON is written, i.e. at the end"}}
    save("flops" if profile == "cpu" else f"flops_{profile}", out)
    print("\n| setting (precision) | work | GFLOP per step | ms per step | GFLOP/s | % of the peak it runs at |\n"
          "|---|---|---|---|---|---|")
    for d, v in peak["by_dtype"].items():
        for n, rate in v["gflops_by_size"].items():
            f = 2 * int(n) ** 3
            print(f"| – ({d}) | matmul {n}² (peak reference) | {f / 1e9:.2f} | {f / rate / 1e6:.1f} | {rate:.1f} | "
                  f"{100 * rate / v['peak_gflops']:.0f} |")
    for r in results:
        if "skipped" in r:
            print(f"| {r['setting']} | skipped: {r['skipped']} | | | | |")
            continue
        for row in r["rows"]:
            print(f"| {r['setting']} ({r['precision']}) | {row['work']} | {row['gflop']:.4f} | {row['ms']:.2f} | {row['gflops']:.2f} | "
                  f"{row['pct_of_peak']:.1f} |")
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--settings", nargs="+", default=list(DEFAULT_SETTINGS))
    ap.add_argument("--repeat", type=int, default=3, help="timed calls per unit and round (the fastest counts)")
    ap.add_argument("--rounds", type=int, default=2,
                    help="rounds over all settings, a peak measurement between them (the fastest round counts)")
    a = ap.parse_args()
    main(a.profile, a.settings, a.repeat, a.rounds)
