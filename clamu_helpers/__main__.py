"""Command line: ``python -m clamu_helpers {audit,settings,reproduce} ...`` (also ``clamu``)."""
from __future__ import annotations

import argparse
import json
import os
import sys


def _method_params(pairs: list[str]) -> dict:
    out = {}
    for p in pairs or []:
        if "=" not in p:
            raise SystemExit(f"--param expects KEY=VALUE, got {p!r}")
        k, v = p.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def cmd_audit(args) -> int:
    from .audit import audit
    from .settings import get_setting
    setting = get_setting(args.setting, args.profile, args.seed)
    result = audit(setting, args.method, unlearn=args.unlearn, seed=args.seed, progress=args.progress,
                   **_method_params(args.param))
    print(json.dumps(result, indent=2))
    return 0 if result["exact"] else 1


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
    from .reproduce import reproduce
    return reproduce(profile=args.profile, only=args.only, out=args.out, notebooks_dir=args.notebooks,
                     timeout=args.timeout, write_back=args.write_back, jobs=args.jobs)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clamu", description="Exact unlearning by model merging (ClAMU, SIFT-Masks).")
    sub = p.add_subparsers(dest="command", required=True)

    a = sub.add_parser("audit", help="fit, unlearn k tasks, rebuild from scratch, compare digests (JSON)")
    a.add_argument("--setting", default="images-label-subsets")
    a.add_argument("--profile", default=os.environ.get("CLAMU_PROFILE", "smoke"))
    a.add_argument("--method", default="merge")
    a.add_argument("--unlearn", type=int, default=3, help="number of tasks to unlearn, one by one")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--param", action="append", metavar="KEY=VALUE", help="method parameter (repeatable)")
    a.add_argument("--progress", action="store_true")
    a.set_defaults(func=cmd_audit)

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
                   help="notebooks run at once (default: one per core, at most 4; 1: one after another)")
    r.add_argument("--write-back", action="store_true",
                   help="copy executed notebooks back into notebooks/ (to commit their outputs)")
    r.set_defaults(func=cmd_reproduce)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = build_parser().parse_args(argv)
    from .errors import ClamuError
    try:
        return args.func(args)
    except ClamuError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
