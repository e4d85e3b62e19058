"""GPU code-path and cost check of the paper's architectures at real size, random weights.

Builds GPT-2 Small (CLS head and LM head) and CLIP ViT-B-32 (text-initialised head) with
seeded random weights, finetunes a handful of synthetic tasks deterministically with the
kit's ``finetune``, merges them in the exact ``MergeLedger``, unlearns one (retrain, verify
SHA-256, subtract) and audits against a from-scratch merge of the rest. Prints seconds per
step and peak GPU memory. No weights or data are needed.

    python benchmarks/gpu_paper_profile.py            # on a GPU machine
    python benchmarks/gpu_paper_profile.py --tiny     # toy sizes, CPU (what CI can run)
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")   # before CUDA initialises
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from clamu_helpers.determinism import generator  # noqa: E402
from clamu_helpers.finetune import finetune  # noqa: E402
from clamu_helpers.ledger import MergeLedger  # noqa: E402
from clamu_helpers.settings import paper_models as pm  # noqa: E402
from clamu_helpers.settings.base import FinetuneConfig, Setting, Task  # noqa: E402
from clamu_helpers.taskvector import TaskVector  # noqa: E402


class ProfileSetting(Setting):
    """A ready-made model plus synthetic tasks, all on ``device``."""

    def __init__(self, name, model, make_x, classes, tasks, n, device, cfg, seed=0):
        super().__init__("paper", seed, cfg)
        self.name, self.num_classes, self._m = name, classes, model.to(device)
        self.tasks = []
        for t in range(tasks):
            g = generator(seed, name, "data", t)
            labels = torch.randperm(classes, generator=g)[:2]
            y = labels[torch.randint(2, (n,), generator=g)]
            xy = (make_x(n, g).to(device), y.to(device))
            self.tasks.append(Task(f"{name}-{t}", xy, xy, xy, labels=tuple(labels.tolist())))

    def build_pretrained(self):
        return self._m

    def trainable(self, name):
        return self._m.is_trained(name)


def gpt2_setting(head, tiny, device, args, cfg):
    lm = pm.tiny_gpt2(0) if tiny else pm.tiny_gpt2(0, n_layer=12, n_embd=768, n_head=12, vocab_size=50257,
                                                   n_positions=1024)
    vocab, classes = lm.config.vocab_size, 4
    names = [[vocab - 10 + c] for c in range(classes)]          # distinct single-token "class names"
    model = pm.GPT2Classifier(lm, classes, head=head, class_tokens=names if head == "lm" else None,
                              train_top_k=args.top_k)
    seq = 16 if tiny else args.seq_len
    return ProfileSetting(f"gpt2-{head}", model, lambda n, g: torch.randint(0, vocab - 10, (n, seq), generator=g),
                          classes, args.tasks, args.examples, device, cfg)


def clip_setting(tiny, device, args, cfg):
    if tiny:
        clip, tok = pm.tiny_clip(0)
    else:
        import open_clip
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            clip = open_clip.create_model("ViT-B-32", pretrained=None)
        tok = open_clip.get_tokenizer("ViT-B-32")
    names = [f"class {c}" for c in range(10)]
    model = pm.clip_classifier(clip, tok, names, train_top_k=args.top_k)
    size = model.image_size
    return ProfileSetting("clip", model, lambda n, g: torch.randint(0, 256, (n, 3, size, size), generator=g,
                                                                    dtype=torch.uint8), 10, args.tasks,
                          args.examples, device, cfg)


def to_cpu(tv: TaskVector) -> TaskVector:
    return TaskVector(tv.task_id, tv.values.detach().cpu().contiguous(), tv.spec, tv.meta)


def profile(setting, steps, device) -> dict:
    """Finetune every task, merge, unlearn the first, audit; timings and peak memory."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    spec = setting.spec
    ledger, vectors, secs = MergeLedger(spec), {}, []
    for task in setting.tasks:
        sync()
        t0 = time.perf_counter()
        tv = to_cpu(finetune(setting, task, seed=0))
        sync()
        secs.append(time.perf_counter() - t0)
        ledger.add(task.task_id, tv)
        vectors[task.task_id] = tv
    forget = setting.tasks[0]
    t0 = time.perf_counter()
    again = to_cpu(finetune(setting, forget, seed=0))
    retrain_s = time.perf_counter() - t0
    same = again.sha256 == vectors[forget.task_id].sha256
    if same:
        ledger.remove(forget.task_id, again)
    scratch = MergeLedger.from_vectors([v for k, v in vectors.items() if k != forget.task_id], spec)
    return {"setting": setting.name, "params_trained": spec.numel, "tasks": len(setting.tasks),
            "s_per_step": sum(secs[1:] or secs) / max(1, len(secs[1:] or secs)) / steps,
            "first_task_s": secs[0], "retrain_s": retrain_s, "retrain_hash_match": same,
            "audit_ok": same and ledger.digest() == scratch.digest(),
            "peak_mem_gib": torch.cuda.max_memory_allocated() / 2 ** 30 if device.startswith("cuda") else float("nan")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="toy sizes (for a CPU)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tasks", type=int, default=3)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--examples", type=int, default=32, help="examples per task")
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--top-k", type=int, default=None, help="train only the last k blocks (default: all)")
    p.add_argument("--only", default="gpt2-cls,gpt2-lm,clip")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("no CUDA device: run with --tiny --device cpu")
    cfg = FinetuneConfig(steps=args.steps, lr=1e-5, batch_size=args.batch, optimizer="adamw")
    print(f"device={args.device} tiny={args.tiny} torch={torch.__version__}"
          + (f" gpu={torch.cuda.get_device_name(0)}" if args.device.startswith("cuda") else ""))
    ok = True
    for which in args.only.split(","):
        t0 = time.perf_counter()
        s = (clip_setting(args.tiny, args.device, args, cfg) if which == "clip"
             else gpt2_setting(which.split("-")[1], args.tiny, args.device, args, cfg))
        build = time.perf_counter() - t0
        r = profile(s, args.steps, args.device)
        ok &= r["audit_ok"]
        print(f"{r['setting']:9s} d={r['params_trained']:>11,} build={build:6.1f}s step={r['s_per_step'] * 1e3:8.1f}ms "
              f"first_task={r['first_task_s']:6.2f}s retrain={r['retrain_s']:6.2f}s hash_match={r['retrain_hash_match']} "
              f"audit={'OK' if r['audit_ok'] else 'FAILED'} peak_mem={r['peak_mem_gib']:.2f}GiB", flush=True)
        del s
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    print("ALL AUDITS OK" if ok else "AUDIT FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
