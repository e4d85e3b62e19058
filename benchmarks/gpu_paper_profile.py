"""The paper's architectures at real size on a GPU, random weights: exactness and cost per step.

For CLIP ViT-B-32 (image tower, head from the text tower's class-name embeddings) and GPT-2
Small (``transformers`` config, random init, LM-head scoring), with seeded random weights and
synthetic tasks (no weights or data needed):

1. the exactness audit through the device-aware system, ``audit(setting, method, unlearn=2,
   device=...)`` for ``merge`` and ``sift`` on 8 tasks, and the retrain of one task in a
   **second process** (this script with ``--retrain``) giving the same SHA-256;
2. seconds per finetuning step, per mask-optimisation step and per evaluation batch, and peak
   GPU memory, in float32 and bf16 (ViT-B-32 batch 32; GPT-2 Small batch 16, 128 tokens);
3. the ``paper`` profile's GPU hours computed from those rates and the work counts of
   :data:`PAPER_WORK` (the README's table).

    python benchmarks/gpu_paper_profile.py --out results.json   # on a GPU machine
    python benchmarks/gpu_paper_profile.py --tiny --device cpu   # toy sizes: what CI runs
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import clamu_helpers  # noqa: E402,F401  (sets CUBLAS_WORKSPACE_CONFIG before CUDA initialises)
import torch  # noqa: E402

from clamu_helpers.unlearning.audit import audit  # noqa: E402
from clamu_helpers.runtime.determinism import generator  # noqa: E402
from clamu_helpers.runtime.device import resolve  # noqa: E402
from clamu_helpers.training.finetune import finetune  # noqa: E402
from clamu_helpers.localization.masks import MaskConfig, optimize_mask  # noqa: E402
from clamu_helpers.settings import paper_models as pm  # noqa: E402
from clamu_helpers.settings.base import FinetuneConfig, Setting, Task  # noqa: E402

#: the ``paper`` profile's work in gradient steps (README, "Time"): finetuning, ClAMU masks with
#: their α/η search and the supermask control, and the unlearning curves. Mask steps and
#: finetuning steps are one forward and one backward pass each, so they are counted together.
PAPER_WORK = {"clip": 500_000 + 560_000 + 150_000, "gpt2-lm": 24_000 + 30_000}
#: the batch sizes the paper profile uses (and this script measures at)
BATCH = {"clip": 32, "gpt2-lm": 16}


class ProfileSetting(Setting):
    """A ready-made model plus synthetic two-label tasks (data on the CPU, like every setting)."""

    def __init__(self, name, model, make_x, classes, tasks, n, cfg, seed=0):
        super().__init__("paper", seed, cfg)
        self.name, self.num_classes, self._m = name, classes, model
        self.tasks = []
        for t in range(tasks):
            g = generator(seed, name, "data", t)
            labels = torch.randperm(classes, generator=g)[:2]
            y = labels[torch.randint(2, (n,), generator=g)]
            xy = (make_x(n, g), y)
            self.tasks.append(Task(f"{name}-{t}", xy, xy, xy, labels=tuple(labels.tolist())))

    def build_pretrained(self):
        return self._m

    def trainable(self, name):
        return self._m.is_trained(name)


def build(which: str, tiny: bool, tasks: int, n: int, cfg: FinetuneConfig, seq_len: int) -> ProfileSetting:
    """The setting ``which`` ("clip" or "gpt2-lm") with seeded random weights (same bits in every
    process: the second-process retrain rebuilds it from these arguments)."""
    if which == "clip":
        if tiny:
            clip, tok = pm.tiny_clip(0)
        else:
            import open_clip
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                clip = open_clip.create_model("ViT-B-32", pretrained=None)
            tok = open_clip.get_tokenizer("ViT-B-32")
        model = pm.clip_classifier(clip, tok, [f"class {c}" for c in range(10)])
        size = model.image_size
        return ProfileSetting("clip", model, lambda k, g: torch.randint(0, 256, (k, 3, size, size), generator=g,
                                                                        dtype=torch.uint8), 10, tasks, n, cfg)
    lm = pm.tiny_gpt2(0) if tiny else pm.tiny_gpt2(0, n_layer=12, n_embd=768, n_head=12, vocab_size=50257,
                                                   n_positions=1024)
    vocab, classes, seq = lm.config.vocab_size, 4, (16 if tiny else seq_len)
    model = pm.GPT2Classifier(lm, classes, head="lm", class_tokens=[[vocab - 10 + c] for c in range(classes)])
    return ProfileSetting("gpt2-lm", model, lambda k, g: torch.randint(0, vocab - 10, (k, seq), generator=g),
                          classes, tasks, n, cfg)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _peak_reset(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)


def _peak_gib(dev: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(dev) / 2 ** 30 if dev.type == "cuda" else None


def rates(setting: ProfileSetting, dev: torch.device, steps: int) -> dict:
    """Seconds per finetuning step (float32 and bf16), per mask step and per evaluation batch,
    with peak memory, each timed after one warm-up."""
    setting.to(dev)
    task, out = setting.tasks[0], {}
    for precision in ("float32", "bf16"):
        cfg = FinetuneConfig(**{**setting.finetune_config.to_json(), "steps": steps, "precision": precision})
        finetune(setting, task, config=FinetuneConfig(**{**cfg.to_json(), "steps": 1}))   # warm-up
        _peak_reset(dev)
        _sync(dev)
        t0 = time.perf_counter()
        tv = finetune(setting, task, config=cfg)
        _sync(dev)
        out[f"finetune_s_per_step_{precision}"] = (time.perf_counter() - t0) / steps
        out[f"finetune_peak_gib_{precision}"] = _peak_gib(dev)
    mc = MaskConfig(steps=steps, batch_size=setting.finetune_config.batch_size)
    optimize_mask(setting, tv.values, task.train, MaskConfig(steps=1, batch_size=mc.batch_size), generator(0, "warm"))
    _peak_reset(dev)
    _sync(dev)
    t0 = time.perf_counter()
    optimize_mask(setting, tv.values, task.train, mc, generator(0, "mask"))
    _sync(dev)
    out["mask_s_per_step"], out["mask_peak_gib"] = (time.perf_counter() - t0) / steps, _peak_gib(dev)
    x, y = task.test
    weights = setting.theta0 + tv.values
    setting.score(weights, x[:BATCH[setting.name]], y[:BATCH[setting.name]])   # warm-up
    _sync(dev)
    t0 = time.perf_counter()
    batches = max(1, len(y) // BATCH[setting.name])
    for i in range(batches):
        b = slice(i * BATCH[setting.name], (i + 1) * BATCH[setting.name])
        setting.score(weights, x[b], y[b])
    _sync(dev)
    out["eval_s_per_batch"] = (time.perf_counter() - t0) / batches
    return out


def retrain_in_another_process(args, which: str, device: str) -> str:
    """SHA-256 of task 0's τ_t finetuned by a fresh Python process on ``device``."""
    cmd = [sys.executable, __file__, "--retrain", which, "--device", device, "--tasks", str(args.tasks),
           "--steps", str(args.steps), "--examples", str(args.examples), "--seq-len", str(args.seq_len)]
    cmd += ["--tiny"] if args.tiny else []
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


def config(which: str, args) -> FinetuneConfig:
    return FinetuneConfig(steps=args.steps, lr=1e-5, batch_size=BATCH[which], optimizer="adamw")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="toy sizes (for a CPU)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tasks", type=int, default=8)
    p.add_argument("--unlearn", type=int, default=2)
    p.add_argument("--steps", type=int, default=4, help="finetuning steps per task in the audit; steps timed")
    p.add_argument("--examples", type=int, default=64, help="examples per task")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--only", default="clip,gpt2-lm")
    p.add_argument("--methods", default="merge,sift")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--retrain", default=None, help=argparse.SUPPRESS)   # second-process retrain
    args = p.parse_args(argv)
    dev = resolve(args.device)
    if args.retrain:
        s = build(args.retrain, args.tiny, args.tasks, args.examples, config(args.retrain, args), args.seq_len)
        print(finetune(s.to(dev), s.tasks[0]).digest)
        return 0
    env = {"device": str(dev), "torch": torch.__version__, "tiny": args.tiny}
    if dev.type == "cuda":
        env.update(gpu=torch.cuda.get_device_name(dev), cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    print(json.dumps(env), flush=True)
    results, ok = {"environment": env, "models": {}}, True
    for which in args.only.split(","):
        t0 = time.perf_counter()
        s = build(which, args.tiny, args.tasks, args.examples, config(which, args), args.seq_len)
        r = {"params_trained": s.spec.numel, "build_s": time.perf_counter() - t0, "audits": {}}
        for method in args.methods.split(","):
            a = audit(s, method, unlearn=args.unlearn, seed=0, device=dev)
            r["audits"][method] = {k: a[k] for k in ("exact", "ledger_exact", "retrain_hashes_match",
                                                     "digest_unlearned", "digest_from_scratch", "seconds")}
            ok &= a["exact"]
            print(f"{which:8s} audit {method:5s} exact={a['exact']} {a['seconds']:.1f}s", flush=True)
        here = finetune(s.to(dev), s.tasks[0]).digest
        there = retrain_in_another_process(args, which, str(dev))
        r["second_process_retrain"] = {"sha256_here": here, "sha256_other_process": there, "equal": here == there}
        ok &= here == there
        r.update(rates(s, dev, args.steps))
        hours = {pr: PAPER_WORK[which] * r[f"finetune_s_per_step_{pr}"] / 3600 for pr in ("float32", "bf16")}
        r["paper_profile_hours"] = hours
        results["models"][which] = r
        print(f"{which:8s} d={r['params_trained']:,} second-process retrain equal={here == there} "
              f"step fp32={r['finetune_s_per_step_float32'] * 1e3:.1f}ms bf16={r['finetune_s_per_step_bf16'] * 1e3:.1f}ms "
              f"mask={r['mask_s_per_step'] * 1e3:.1f}ms eval/batch={r['eval_s_per_batch'] * 1e3:.1f}ms "
              f"peak={r['finetune_peak_gib_float32']}GiB", flush=True)
        del s
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    if set(results["models"]) == set(PAPER_WORK):
        results["paper_profile_hours"] = {pr: sum(m["paper_profile_hours"][pr] for m in results["models"].values())
                                          for pr in ("float32", "bf16")}
        label = "toy sizes, NOT the paper's cost" if args.tiny else f"on {env.get('gpu', 'the CPU')}"
        print(f"paper profile (GPT-2 Small, ViT-B-32) computed from these rates ({label}): "
              + ", ".join(f"{pr} {h:.1f} h" for pr, h in results["paper_profile_hours"].items()), flush=True)
    results["all_exact"] = ok
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    print("ALL AUDITS EXACT" if ok else "AUDIT FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
