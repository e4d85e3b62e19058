"""Command line: ``python -m clamu_helpers {audit,methods,settings,reproduce,receipts,verify} ...`` (also ``clamu``)."""
from __future__ import annotations

import argparse
import json
import os
import sys


def cmd_audit(args) -> int:
    from .unlearning.audit import audit
    from .methods.declared import parse_params
    from .settings import get_setting
    setting = get_setting(args.setting, args.profile, args.seed)
    if args.precision != setting.finetune_config.precision:
        import dataclasses
        setting.finetune_config = dataclasses.replace(setting.finetune_config, precision=args.precision)
    result = audit(setting, args.method, unlearn=args.unlearn, seed=args.seed, progress=args.progress,
                   device=args.device, **parse_params(args.param))
    print(json.dumps(result, indent=2))
    return 0 if result["exact"] else 1


def describe_methods() -> list[dict]:
    """Every registered method as its class declares it: name, reference, control of, counting
    rule, and its typed parameters with their defaults."""
    from .methods import METHODS
    rows = []
    for name, cls in sorted(METHODS.items()):
        rows.append({"method": name, "reference": cls.reference, "control_of": cls.control_of,
                     "cost_rule": cls.cost_rule, "clustered": cls.clustered,
                     "params": cls.Params().to_json()})
    return rows


def cmd_methods(args) -> int:
    rows = describe_methods()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        params = ", ".join(f"{k}={v!r}" for k, v in r["params"].items()) or "(no parameters)"
        ctrl = f"  [control of {r['control_of']}]" if r["control_of"] else ""
        print(f"{r['method']}{ctrl}  cost rule: {r['cost_rule']}\n    {params}\n    {r['reference']}")
    return 0


def cmd_settings(args) -> int:
    from .settings import ANALOG_OF, PROFILES, SETTINGS, availability
    rows = []
    for name in sorted(SETTINGS):
        ok, why = availability(name)
        rows.append({"setting": name, "analog_of": ANALOG_OF.get(name, ""), "profiles": list(PROFILES),
                     "available": ok, "missing": why})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            mark = "yes" if r["available"] else "NO "
            print(f"{r['setting']:<28} available: {mark}  {r['analog_of']}")
            if r["missing"]:
                print(f"{'':<28} {r['missing']}")
        print(f"profiles: {', '.join(PROFILES)}")
    return 0


def cmd_reproduce(args) -> int:
    from .reproduction.reproduce import report_only, reproduce
    if args.report_only:
        return report_only(profile=args.profile, out=args.out)
    return reproduce(profile=args.profile, only=args.only, out=args.out, notebooks_dir=args.notebooks,
                     timeout=args.timeout, write_back=args.write_back, jobs=args.jobs,
                     stall_after=args.stall_after, resume=args.resume)


def cmd_receipts(args) -> int:
    from .unlearning.persistence import verify
    from .unlearning.receipts import summary
    _, meta = verify(args.dir)
    chain = meta.get("receipts", [])
    if args.json:
        print(json.dumps(chain, indent=2))
        return 0
    if not chain:
        print(f"{args.dir}: no unlearning requests yet (system {str(meta.get('system_id', '?'))[:12]}…)")
        return 0
    rows = [summary(r) for r in chain]
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in cols))
    return 0


def cmd_verify(args) -> int:
    """Exit 0 when the chain verifies (and, with --rebuild, a fit from scratch serves the last
    receipt's digest); 1 naming the first bad receipt; 2 when the state cannot be read."""
    from .unlearning.persistence import verify
    from .unlearning.receipts import check_chain
    folder, meta = verify(args.dir)
    chain, served = meta.get("receipts", []), meta["digests"]["served"]
    result = {"directory": str(args.dir), "state": folder.name, "receipts": len(chain),
              "system_id": meta.get("system_id"), "served": served}
    if "system_id" not in meta:
        result.update(ok=False, problems=["this state was saved before receipts existed: nothing to verify"])
    else:
        problems = check_chain(chain, meta["system_id"], served)
        result.update(ok=not problems, problems=problems)
    if args.rebuild and result["ok"]:
        result["rebuild"] = _rebuild(args.dir, meta, chain, use_store=args.use_store)
        result["ok"] = result["rebuild"]["equal"]
        if not result["ok"]:
            result["problems"].append("a system fitted from scratch on the remaining tasks serves "
                                      f"{result['rebuild']['digest_from_scratch'][:16]}…, not the state's {served[:16]}…")
    print(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


def _rebuild(directory, meta: dict, chain: list[dict], use_store: bool = False) -> dict:
    """Load the saved system (its served digest is re-derived from its tensors) and fit one from
    scratch on the remaining tasks with the same method, parameters and seed: every remaining
    τ_t is finetuned again unless ``use_store`` (then cached finetunes are read)."""
    import time

    from .reproduction.experiments import default_store
    from .settings import FinetuneConfig, get_setting
    from .unlearning.system import UnlearningSystem
    t0 = time.perf_counter()
    s = meta["setting"]
    recipe = meta.get("recipe") or {"name": s["name"], "profile": s["profile"], "seed": s["seed"], "kwargs": {}}
    kwargs = dict(recipe["kwargs"])
    # the finetuning config the state was fitted with (one saved before FinetuneConfig.fused read as fused=False)
    kwargs.setdefault("finetune", FinetuneConfig.from_json(s["finetune"]))
    setting = get_setting(recipe["name"], recipe["profile"], recipe["seed"], **kwargs)
    saved = UnlearningSystem.load(directory, setting, store=default_store())
    scratch = UnlearningSystem(setting, meta["method"]["name"], seed=meta["seed"],
                               store=default_store() if use_store else None, digest=saved.ledger.digest_format,
                               **meta["method"]["params"]).fit(meta["task_ids"])
    got = scratch.served_digest()
    want = chain[-1]["served_after"] if chain else meta["digests"]["served"]
    return {"setting": s["name"], "profile": s["profile"], "remaining_tasks": len(meta["task_ids"]),
            "finetuned_again": not use_store,
            "loaded_digest": saved.served_digest(), "digest_from_scratch": got,
            "equal": got == want == saved.served_digest(), "seconds": round(time.perf_counter() - t0, 1)}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clamu", description="Exact unlearning by model merging (ClAMU, SIFT-Masks).")
    sub = p.add_subparsers(dest="command", required=True)
    from .runtime.device import PRECISIONS

    a = sub.add_parser("audit", help="fit, unlearn k tasks, rebuild from scratch, compare digests (JSON)")
    a.add_argument("--setting", default="images-label-subsets")
    a.add_argument("--profile", default=os.environ.get("CLAMU_PROFILE", "smoke"))
    a.add_argument("--method", default="merge")
    a.add_argument("--unlearn", type=int, default=3, help="number of tasks to unlearn, one by one")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--param", action="append", metavar="KEY=VALUE", help="method parameter (repeatable)")
    a.add_argument("--device", default=None, help="cpu, cuda or cuda:i (default: where the setting's M0 is, the CPU)")
    a.add_argument("--precision", default="float32", choices=PRECISIONS, help="finetuning precision (bf16: autocast)")
    a.add_argument("--progress", action="store_true")
    a.set_defaults(func=cmd_audit)

    m = sub.add_parser("methods", help="list the methods, their references, counting rules and parameters")
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=cmd_methods)

    s = sub.add_parser("settings", help="list settings, profiles, and whether their data is here")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_settings)

    r = sub.add_parser("reproduce", help="run every notebook with papermill; write figures, tables, REPORT.md")
    r.add_argument("--profile", default="cpu", choices=["smoke", "cpu", "paper"])
    r.add_argument("--only", default=None, help="comma list of targets (fig2,table1,...) or notebook stems")
    r.add_argument("--out", default=None, help="output folder (default figures/<profile>/)")
    r.add_argument("--notebooks", default=None, help="notebook folder (default notebooks/)")
    r.add_argument("--timeout", type=int, default=None, help="seconds per notebook cell")
    r.add_argument("--jobs", type=int, default=None,
                   help="notebooks run at once (default: one more than the cores, at most 4; 1: one after another)")
    r.add_argument("--stall-after", type=float, default=None, metavar="SECONDS",
                   help="stop a kernel with no new output and no CPU for this long and run its notebook once "
                        "more (default: the notebook's last recorded time, at least 900 s; 0: never)")
    r.add_argument("--resume", action="store_true",
                   help="run only the notebooks with no finished run at this source in the output folder "
                        "(after a run was killed); last_full_run stays the record of a whole run")
    r.add_argument("--write-back", action="store_true",
                   help="copy executed notebooks back into notebooks/ (to commit their outputs)")
    r.add_argument("--report-only", action="store_true",
                   help="write REPORT.md again from the saved rows, timings and benchmark results; run nothing")
    r.set_defaults(func=cmd_reproduce)

    rc = sub.add_parser("receipts", help="list the unlearning receipts of a saved system")
    rc.add_argument("dir", help="the saved system's directory")
    rc.add_argument("--json", action="store_true", help="the full receipts")
    rc.set_defaults(func=cmd_receipts)

    v = sub.add_parser("verify", help="check a saved system's receipt chain (exit 1 naming the first bad receipt)")
    v.add_argument("dir", help="the saved system's directory")
    v.add_argument("--rebuild", action="store_true",
                   help="also fit a system from scratch on the remaining tasks and compare its digest")
    v.add_argument("--use-store", action="store_true",
                   help="with --rebuild: read cached finetunes instead of finetuning every remaining task again")
    v.set_defaults(func=cmd_verify)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = build_parser().parse_args(argv)
    from .core.errors import ClamuError
    try:
        return args.func(args)
    except ClamuError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
