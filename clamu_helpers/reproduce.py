"""``python -m clamu_helpers reproduce``: run every notebook headlessly with papermill.

Each notebook runs in its own kernel with the profile injected as a parameter and
``CLAMU_FIGURES`` pointing at the output folder, where it saves its figures and tables (with
provenance) and a ``report/<notebook>.json`` of paper-vs-ours rows. A notebook that fails
stops nothing else: the summary names it and the command exits non-zero. At the end
``REPORT.md`` is assembled from the rows, and per-notebook wall times are printed.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]

#: figure/table targets → the notebook that makes them (``--only fig2,table1``)
TARGETS = {
    "quickstart": "00_quickstart",
    "fig2": "01_when_is_merging_scalable",
    "fig4": "02_clustering",
    "table1": "03_localization",
    "fig3": "04_clamu", "fig5": "04_clamu",
    "table2": "05_unlearning_costs", "table3": "05_unlearning_costs",
    "sift": "06_sift_masks",
    "demo": "07_interactive_unlearning",
    "table4": "08_appendix", "table5": "08_appendix", "table6": "08_appendix",
}


def _notebooks(folder: Path, only: str | None) -> list[Path]:
    found = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise FileNotFoundError(f"no numbered notebooks in {folder}")
    if not only:
        return found
    wanted = set()
    for item in only.split(","):
        item = item.strip()
        stem = TARGETS.get(item, item)
        matches = [p for p in found if p.stem == stem or p.stem.startswith(stem)]
        if not matches:
            raise SystemExit(f"--only: unknown target {item!r}; targets: {sorted(TARGETS)} or notebook names")
        wanted.update(matches)
    return sorted(wanted)


def _missing_dependencies() -> list[str]:
    missing = []
    for mod, pkg in (("papermill", "papermill"), ("nbformat", "nbformat"), ("ipykernel", "ipykernel"),
                     ("matplotlib", "matplotlib"), ("seaborn", "seaborn"), ("tabulate", "tabulate")):
        try:
            __import__(mod)
        except ImportError:
            missing.append(pkg)
    return missing


def reproduce(profile: str = "cpu", only: str | None = None, out: str | None = None,
              notebooks_dir: str | None = None, timeout: int | None = None, write_back: bool = False) -> int:
    missing = _missing_dependencies()
    if missing:
        print(f"reproduce needs {', '.join(missing)}: run `bash scripts/setup.sh` "
              f"(or pip install {' '.join(missing)})")
        return 2
    import papermill as pm

    folder = Path(notebooks_dir) if notebooks_dir else ROOT / "notebooks"
    out_dir = Path(out) if out else ROOT / "figures" / profile
    (out_dir / "notebooks").mkdir(parents=True, exist_ok=True)
    (out_dir / "logs").mkdir(exist_ok=True)
    (out_dir / "report").mkdir(exist_ok=True)
    env = {"CLAMU_PROFILE": profile, "CLAMU_FIGURES": str(out_dir.resolve()), "OMP_WAIT_POLICY": "PASSIVE",
           "MPLBACKEND": "module://matplotlib_inline.backend_inline", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    os.environ.update(env)
    results = []
    bar = tqdm(_notebooks(folder, only), desc=f"reproduce ({profile})", unit="notebook")
    for nb in bar:
        bar.set_postfix_str(nb.stem)
        target = out_dir / "notebooks" / nb.name
        log = out_dir / "logs" / f"{nb.stem}.log"
        t0 = time.perf_counter()
        ok, error = True, ""
        with open(log, "w") as fh:
            try:
                pm.execute_notebook(str(nb), str(target), parameters={"profile": profile}, cwd=str(folder),
                                    log_output=True, stdout_file=fh, stderr_file=fh, progress_bar=False,
                                    execution_timeout=timeout, kernel_name="python3")
            except Exception as e:  # a failing notebook stops nothing else
                ok, error = False, f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
                fh.write(f"\nFAILED: {error}\n")
        seconds = time.perf_counter() - t0
        results.append({"notebook": nb.stem, "ok": ok, "seconds": round(seconds, 1), "error": error})
        if ok and write_back:
            _write_back(target, nb, profile)
    total = sum(r["seconds"] for r in results)
    merged = _merge_timings(out_dir / "timings.json", profile, results)
    write_report(out_dir, profile, merged)
    print(f"\nreproduce --profile {profile}: {sum(r['ok'] for r in results)}/{len(results)} notebooks ok, "
          f"{total / 60:.1f} min in all")
    for r in results:
        print(f"  {'ok ' if r['ok'] else 'FAIL'} {r['notebook']:<32} {r['seconds']:>7.1f} s  {r['error']}")
    print(f"figures, tables and REPORT.md in {out_dir}")
    return 0 if all(r["ok"] for r in results) else 1


def _write_back(executed: Path, source: Path, profile: str) -> None:
    """Copy an executed notebook over its source, with papermill's injected parameters made
    to defer to ``$CLAMU_PROFILE`` (so nbval in CI still runs the committed notebook at smoke)."""
    import nbformat
    nb = nbformat.read(executed, as_version=4)
    for cell in nb.cells:
        if "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            cell.source = (f'import os\nprofile = os.environ.get("CLAMU_PROFILE", "{profile}")'
                           f'  # outputs below are from profile={profile}; $CLAMU_PROFILE overrides')
    nbformat.write(nb, source)


def _merge_timings(path: Path, profile: str, results: list[dict]) -> list[dict]:
    """timings.json keeps the latest result of every notebook run into this folder (an
    ``--only`` run updates its notebooks and keeps the others), sorted by notebook."""
    old = json.loads(path.read_text()) if path.exists() else {}
    rows = {r["notebook"]: r for r in old.get("notebooks", []) if old.get("profile") == profile}
    rows.update({r["notebook"]: r for r in results})
    merged = [rows[k] for k in sorted(rows)]
    path.write_text(json.dumps({"profile": profile, "total_seconds": round(sum(r["seconds"] for r in merged), 1),
                                "notebooks": merged}, indent=2) + "\n")
    return merged


def write_report(out_dir: Path, profile: str, results: list[dict]) -> Path:
    """REPORT.md: our numbers beside the paper's, row by row, from each notebook's rows."""
    lines = [f"# Reproduction report ({profile} profile)", "",
             "Each row puts a number from this run beside the paper's (from `shared/paper/DIGEST.md`) and says "
             "whether the paper's *trend* reproduces here. The embedded settings are small offline analogs of the "
             "paper's (see README, Settings): absolute numbers are not comparable, trends are.", ""]
    for r in results:
        path = out_dir / "report" / f"{r['notebook']}.json"
        lines.append(f"## {r['notebook']} ({'ok' if r['ok'] else 'FAILED: ' + r['error']}, {r['seconds']} s)")
        lines.append("")
        if not path.exists():
            lines += ["(no report rows)", ""]
            continue
        rows = json.loads(path.read_text())
        lines.append("| claim | paper | this run | trend reproduces |")
        lines.append("|---|---|---|---|")
        for row in rows:
            verdict = {True: "yes", False: "**no**", None: "n/a"}[row.get("reproduces")]
            lines.append(f"| {row['claim']} | {row['paper']} | {row['ours']} | {verdict} |")
        lines.append("")
    path = out_dir / "REPORT.md"
    path.write_text("\n".join(lines) + "\n")
    return path
