"""``python -m clamu_helpers reproduce``: run every notebook headlessly with papermill.

Each notebook runs in its own kernel with the profile injected as a parameter and
``CLAMU_FIGURES`` pointing at the output folder, where it saves its figures and tables (with
provenance) and a ``report/<notebook>.json`` of paper-vs-ours rows. A notebook that fails
stops nothing else: the summary names it and the command exits non-zero. ``jobs`` notebooks
run at once (default: one more than the cores, at most 4; their seeds share one CPU slot per
core), longest first by the last recorded times; they share the finetune store without
repeating each other's work. At the end ``REPORT.md`` is
assembled from the rows, and the wall clock and per-notebook times are printed and written to
``timings.json``.

(Over 300 lines on purpose: running notebooks in parallel kernels, the live status line and the
report written from their outputs are one command's life cycle.)
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Iterable

from tqdm.auto import tqdm

from . import notebook_files
from ..core.errors import ClamuError, UnknownNameError

from . import ROOT  # the repository root, declared with the layer

def _notebooks(folder: Path, only: str | None) -> list[Path]:
    """The numbered notebooks of ``folder``, or those ``only`` names: targets (``fig2``,
    ``table1``: each notebook declares its own in its ``clamu.targets`` metadata) or stems."""
    found = notebook_files.numbered(folder)
    if not only:
        return found
    targets = notebook_files.targets(folder)
    wanted = set()
    for item in only.split(","):
        item = item.strip()
        stem = targets.get(item, item)
        matches = [p for p in found if p.stem == stem or p.stem.startswith(stem)]
        if not matches:
            raise UnknownNameError(f"--only: unknown target {item!r}; targets: {sorted(targets)} or notebook names")
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


def default_jobs() -> int:
    """Notebooks run at once by default: one more than the cores, at most 4. A kernel mostly
    waits for its seeds' workers, which compute only while they hold one of the run's CPU slots
    (one per core, :mod:`clamu_helpers.runtime.workers`): the extra notebook keeps the slots busy while
    another is between its seeds. Each kernel and worker holds a model, its data and cached
    features (about 1 GB at the ``cpu`` profile), which is what caps it."""
    return max(1, min(4, (os.cpu_count() or 1) + 1))


def _busy_seconds() -> float | None:
    """CPU seconds the machine has been busy since boot (all cores, /proc/stat), or None."""
    try:
        fields = [float(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)   # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    """CPU seconds (user + system) of this process and every descendant it has reaped."""
    import resource
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _order(notebooks: list[Path], timings: Path, profile: str) -> list[Path]:
    """Longest first by the last recorded wall times (unknown ones first, in number order):
    with several jobs this keeps one long notebook from starting last."""
    old = json.loads(timings.read_text()) if timings.exists() else {}
    seconds = {r["notebook"]: r["seconds"] for r in old.get("notebooks", []) if old.get("profile") == profile}
    return sorted(notebooks, key=lambda p: -seconds.get(p.stem, float("inf")))


def _last_seconds(timings: Path, profile: str) -> dict[str, float]:
    """Each notebook's wall seconds in the last recorded run of ``profile`` (for the estimate)."""
    try:
        old = json.loads(timings.read_text())
    except (OSError, ValueError):
        return {}
    return {r["notebook"]: r["seconds"] for r in old.get("notebooks", []) if old.get("profile") == profile}


def _started(out_dir: Path, nb: Path, wall_start: float) -> bool:
    """Whether ``nb`` has started in this run (its worker (re)creates its log when it starts)."""
    log = out_dir / "logs" / f"{nb.stem}.log"
    try:
        return log.stat().st_mtime >= wall_start - 1
    except OSError:
        return False


@functools.lru_cache(maxsize=64)
def _cell_count(path: str) -> int | None:
    """Cells papermill executes in ``path`` (+ its injected one); read once per run, not at
    every refresh of the status lines."""
    try:
        import nbformat
        return len(nbformat.read(path, as_version=4).cells) + 1
    except Exception:
        return None


_CELL = re.compile(r"Executing Cell (\d+)")
_BAR = re.compile(r"(?:^|INFO |\r)\s*([^\r\n|:]{1,60}?):\s+\d+%\|[^|\r\n]*\|\s*(\d+)/(\d+)", re.M)


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def status_line(log: Path, nb: Path, expected: float | None = None, now: float | None = None) -> str:
    """One line for a running notebook, from its papermill log: the cell it executes (of all
    cells), the progress bar its kernel drew last (finetunes, masks, seeds), the elapsed time,
    and the time left if it takes as long as in the last recorded run."""
    try:
        started = log.stat().st_mtime   # until the log's first timestamped line says better
    except OSError:
        return f"{nb.stem}: starting"
    tail = _tail(log)
    cells = _CELL.findall(tail)
    n_cells = _cell_count(str(nb))
    parts = [nb.stem]
    if cells:
        parts.append(f"cell {cells[-1]}/{n_cells}" if n_cells else f"cell {cells[-1]}")
    bars = _BAR.findall(tail)
    if bars and cells and tail.rfind("Executing Cell") < tail.rfind(bars[-1][0]):
        desc, k, n = bars[-1]
        parts.append(f"{desc.strip()} {k}/{n}")
    first = re.search(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", _head(log))
    now = time.time() if now is None else now
    if first:
        import datetime as _dt
        started = _dt.datetime.strptime(first.group(1), "%Y-%m-%d %H:%M:%S").timestamp()
    elapsed = max(0.0, now - started)
    clock = f"{_clock(elapsed)} elapsed"
    if expected:
        left = expected - elapsed
        clock += f", ~{_clock(left)} left" if left > 0 else f", {_clock(-left)} over the last run"
    parts.append(clock)
    return " · ".join(parts)


def _head(log: Path) -> str:
    try:
        with open(log, "rb") as fh:
            return fh.read(200).decode("utf-8", "replace")
    except OSError:
        return ""


@contextlib.contextmanager
def _stderr_to(fh):
    """Send this process's file descriptor 2 (and so a kernel it starts) to ``fh``."""
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(fh.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _run_notebook(nb: Path, out_dir: Path, profile: str, timeout: int | None, stall: float | None = None) -> dict:
    """Execute one notebook with papermill into ``out_dir/notebooks`` (its own kernel); its log
    in ``out_dir/logs`` has each cell's start and end (timestamped) and what the cell printed.
    With ``stall`` (seconds), a :class:`~clamu_helpers.reproduction.watchdog.Watchdog` stops a kernel with no
    new output and no CPU for that long, and the notebook is run once more; the result says
    so (``stalled``: how many times, and the cell each stall was at). Never raises: a failure
    is returned in the result."""
    t0 = time.perf_counter()
    _running_marker(out_dir, nb.stem).write_text(f"{os.getpid()}\n")   # removed once its row is recorded
    stalls: list[str] = []
    for attempt in range(2):
        ok, error, fired = _execute(nb, out_dir, profile, timeout, stall, append=attempt > 0)
        if not fired:
            break
        stalls.append(fired)
        error = f"stalled: {fired}" + ("; stalled again when run once more" if attempt else "")
    result = {"notebook": nb.stem, "ok": ok, "seconds": round(time.perf_counter() - t0, 1), "error": error}
    if stalls:
        result["stalled"] = stalls
    return result


def _execute(nb: Path, out_dir: Path, profile: str, timeout: int | None, stall: float | None,
             append: bool = False) -> tuple[bool, str, str]:
    """One papermill execution of ``nb``: (ok, error, what the watchdog saw: "" when it did not
    fire)."""
    import logging

    import papermill as pm

    from .watchdog import Watchdog

    target = out_dir / "notebooks" / nb.name
    working = target.with_name(f".{nb.stem}.running.ipynb")   # papermill rewrites it after every cell
    log = out_dir / "logs" / f"{nb.stem}.log"
    ok, error, fired = True, "", ""
    with open(log, "a" if append else "w", buffering=1) as fh, _stderr_to(fh):
        if append:
            fh.write("\n--- the watchdog stopped the kernel; running the notebook once more ---\n")
        handler = logging.StreamHandler(fh)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        pm_log = logging.getLogger("papermill")
        old = pm_log.level, pm_log.propagate
        pm_log.addHandler(handler)
        pm_log.setLevel(logging.INFO)
        pm_log.propagate = False   # into the log, not over the progress bar
        dog = Watchdog(log, stall) if stall else contextlib.nullcontext()
        try:
            with dog:
                pm.execute_notebook(str(nb), str(working), parameters={"profile": profile}, cwd=str(nb.parent),
                                    log_output=True, stdout_file=fh, stderr_file=fh, progress_bar=False,
                                    execution_timeout=timeout, kernel_name="python3")
        except Exception as e:  # a failing notebook stops nothing else
            ok, error = False, f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
            fh.write(f"\nFAILED: {error}\n")
        finally:
            pm_log.removeHandler(handler)
            pm_log.setLevel(old[0])
            pm_log.propagate = old[1]
            if working.exists():   # the executed notebook replaces the old one whole, failed or not
                os.replace(working, target)
        if stall and dog.fired:
            cells = _CELL.findall(_tail(log))
            where = f"cell {cells[-1]}" if cells else "before the first cell"
            fired = f"no output and no CPU for {dog.quiet_for:.0f} s at {where}"
            fh.write(f"\nSTALLED: {fired}; the watchdog stopped the kernel\n")
    return ok, error, fired


def _tail(log: Path, size: int = 65536) -> str:
    try:
        with open(log, "rb") as fh:
            fh.seek(max(0, fh.seek(0, 2) - size))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def report_only(profile: str = "cpu", out: str | None = None) -> int:
    """Write REPORT.md again from the notebooks' saved rows and ``timings.json`` (and the
    benchmarks' results beside them), running nothing."""
    out_dir = Path(out) if out else ROOT / "figures" / profile
    path = out_dir / "timings.json"
    if not path.exists():
        print(f"no {path}: run `reproduce --profile {profile}` first")
        return 2
    timings = json.loads(path.read_text())
    runs = {k: timings.get(k) for k in ("last_run", "last_full_run")}
    print(f"wrote {write_report(out_dir, profile, timings['notebooks'], runs=runs)}")
    return 0


def reproduce(profile: str = "cpu", only: str | None = None, out: str | None = None,
              notebooks_dir: str | None = None, timeout: int | None = None, write_back: bool = False,
              jobs: int | None = None, stall_after: float | None = None, resume: bool = False) -> int:
    """Run the notebooks (``jobs`` at once, each in its own kernel), then write timings.json
    and REPORT.md. A kernel with no new output and no CPU for ``stall_after`` seconds (default:
    :func:`~clamu_helpers.reproduction.watchdog.default_stall` of the notebook's last recorded time; 0: never)
    is stopped and its notebook run once more (:mod:`clamu_helpers.reproduction.watchdog`). With ``resume``,
    only the notebooks without a finished run at this source digest in ``out`` run
    (:func:`finished_here`), e.g. after a run was killed; ``last_full_run`` is left to whole runs. Notebooks that run at once share the finetune store: a finetune one of them
    is computing is waited for, not repeated (see :meth:`TaskVectorStore.claim`), and each
    kernel gets ``cores / jobs`` threads for what is not pinned (finetunes always use one)."""
    missing = _missing_dependencies()
    if missing:
        print(f"reproduce needs {', '.join(missing)}: run `bash scripts/setup.sh` "
              f"(or pip install {' '.join(missing)})")
        return 2
    jobs = default_jobs() if jobs is None else int(jobs)
    if jobs < 1:
        raise ClamuError(f"--jobs must be at least 1, got {jobs}")
    _stall(stall_after, None)   # a bad --stall-after is refused before anything runs
    folder = Path(notebooks_dir) if notebooks_dir else ROOT / "notebooks"
    out_dir = Path(out) if out else ROOT / "figures" / profile
    try:
        for sub in ("notebooks", "logs", "report"):
            (out_dir / sub).mkdir(parents=True, exist_ok=True)
            probe = out_dir / sub / f".write-probe-{os.getpid()}"
            probe.write_bytes(b"")   # a read-only or full folder fails here, before any notebook runs
            probe.unlink()
    except OSError as e:
        from ..core.errors import storage_error
        raise storage_error(out_dir / sub, e, "the reproduction's outputs (--out)") from e
    notebooks = _notebooks(folder, only)
    from . import provenance
    digest = provenance.source_digest()   # what runs: taken before any notebook starts
    skipped = []
    if resume:
        done = finished_here(out_dir, profile, digest)
        skipped = [nb.stem for nb in notebooks if nb.stem in done]
        notebooks = [nb for nb in notebooks if nb.stem not in done]
        print(f"resume: {len(skipped)} notebook{'s' if len(skipped) != 1 else ''} already ran whole at this source "
              f"({', '.join(skipped) or 'none'}); running {len(notebooks)}")
        if not notebooks:
            return report_only(profile=profile, out=str(out_dir))
    jobs = min(jobs, len(notebooks))
    env = {"CLAMU_PROFILE": profile, "CLAMU_FIGURES": str(out_dir.resolve()), "OMP_WAIT_POLICY": "PASSIVE",
           "MPLBACKEND": "module://matplotlib_inline.backend_inline", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "CLAMU_TEXT_PROGRESS": "1",   # bars the log (and the status lines) see
           "CLAMU_STATIC_WIDGETS": "1",   # widget cells draw a static view (clamu_helpers.runtime.progress.static_widgets)
           "TQDM_MININTERVAL": os.environ.get("TQDM_MININTERVAL", "10")}
    if jobs > 1 and "OMP_NUM_THREADS" not in os.environ:  # no oversubscription of the cores
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    import tempfile

    from ..runtime.workers import SLOTS_ENV, make_slots
    given = os.environ.get(SLOTS_ENV)
    if given and list(Path(given).glob("slot-*")):   # slots shared with other jobs (e.g. a benchmark)
        slots = None
    else:
        slots = tempfile.TemporaryDirectory(prefix="clamu-slots-")
        env[SLOTS_ENV] = str(make_slots(slots.name, os.cpu_count() or 1))   # one CPU slot per core
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)   # inherited by the workers and kernels; restored when done
    results = []
    t_start, wall_start = time.perf_counter(), time.time()
    cpu_start, busy_start = _children_cpu(), _busy_seconds()
    expected = _last_seconds(out_dir / "timings.json", profile)
    bar = tqdm(total=len(notebooks), desc=f"reproduce ({profile}, {jobs} at once)", unit="notebook")
    lines = [tqdm(total=0, position=i + 1, bar_format="{desc}", leave=False) for i in range(jobs)]
    try:
        import multiprocessing as mp
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
        # every notebook runs in a worker process whose stderr (and so its kernel's) goes to the
        # notebook's log: the console keeps the progress lines, not the kernels' warnings
        with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(_run_notebook, nb, out_dir, profile, timeout,
                                   _stall(stall_after, expected.get(nb.stem))): nb
                       for nb in _order(notebooks, out_dir / "timings.json", profile)}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=2.0, return_when=FIRST_COMPLETED)
                for fut in done:
                    nb = futures[fut]
                    results.append(_finish({**fut.result(), "source_digest": digest}, nb, out_dir, profile,
                                           write_back, bar))
                running = [futures[f] for f in pending if _started(out_dir, futures[f], wall_start)]
                for i, line in enumerate(lines):
                    line.set_description_str(status_line(out_dir / "logs" / f"{running[i].stem}.log", running[i],
                                                         expected.get(running[i].stem)) if i < len(running) else "")
    finally:
        for line in lines:
            line.close()
        bar.close()
        if slots is not None:
            slots.cleanup()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    wall = time.perf_counter() - t_start
    cores = os.cpu_count() or 1
    busy_end = _busy_seconds()
    usage = {"cpu_seconds": round(_children_cpu() - cpu_start, 1),
             "machine_busy_seconds": round(busy_end - busy_start, 1) if busy_start is not None and busy_end else None}
    usage["utilisation"] = round(usage["cpu_seconds"] / (wall * cores), 3) if wall > 0 else None
    results.sort(key=lambda r: r["notebook"])
    total = sum(r["seconds"] for r in results)
    merged, runs = _merge_timings(out_dir / "timings.json", profile, results, wall=wall, jobs=jobs, usage=usage,
                                  resumed=skipped if resume else None)
    write_report(out_dir, profile, merged, runs=runs)
    print(f"\nreproduce --profile {profile}: {sum(r['ok'] for r in results)}/{len(results)} notebooks ok, "
          f"{wall / 60:.1f} min wall clock ({jobs} at once; {total / 60:.1f} min of notebook time; "
          f"CPU utilisation {usage['utilisation']:.0%} of {cores} cores)")
    for r in results:
        print(f"  {'ok ' if r['ok'] else 'FAIL'} {r['notebook']:<32} {r['seconds']:>7.1f} s  {r['error']}")
        for why in r.get("stalled", []) if r["ok"] else []:
            print(f"       (the watchdog stopped its kernel once: {why}; it ran whole the second time)")
    print(f"figures, tables and REPORT.md in {out_dir}")
    return 0 if all(r["ok"] for r in results) else 1


def _stall(stall_after: float | None, last_seconds: float | None) -> float | None:
    """The watchdog's stall time for one notebook: ``stall_after`` when given (0: no watchdog),
    else :func:`~clamu_helpers.reproduction.watchdog.default_stall` of its last recorded time."""
    from .watchdog import default_stall
    if stall_after is None:
        return default_stall(last_seconds)
    if stall_after < 0:
        raise ClamuError(f"--stall-after must be 0 (no watchdog) or positive seconds, got {stall_after}")
    return float(stall_after) or None


def _finish(result: dict, nb: Path, out_dir: Path, profile: str, write_back: bool, bar) -> dict:
    if result["ok"] and write_back:
        _write_back(out_dir / "notebooks" / nb.name, nb, profile)
    _record_row(out_dir / "timings.json", profile, result)
    _running_marker(out_dir, nb.stem).unlink(missing_ok=True)
    bar.set_postfix_str(f"{nb.stem} {'ok' if result['ok'] else 'FAILED'} in {result['seconds']:.0f} s")
    bar.update(1)
    return result


def _write_back(executed: Path, source: Path, profile: str) -> None:
    """Copy an executed notebook over its source without papermill's injected cell and
    metadata (:func:`notebook_files.clean`), and bring its paired script in step; the
    parameters cell still reads ``$CLAMU_PROFILE``, so nbval in CI runs it at smoke."""
    import nbformat
    if profile != "cpu":
        print(f"note: {source.name} now holds outputs of profile={profile}; its parameters cell says cpu")
    notebook_files.write(nbformat.read(executed, as_version=4), source)


def _write_atomically(path: Path, text: str) -> None:
    """A reader (or a run killed now) sees the old file or the new one, never half of one."""
    from ..core.atomic import replace_with
    replace_with(path, lambda tmp: tmp.write_text(text))


def _running_marker(out_dir: Path, stem: str) -> Path:
    """``logs/<notebook>.running``: written when a notebook starts, removed when its row is in
    ``timings.json``; one left behind marks a notebook a killed run left halfway."""
    return out_dir / "logs" / f"{stem}.running"


def _record_row(path: Path, profile: str, row: dict) -> None:
    """Put one finished notebook's row into ``timings.json`` at once (atomically), so a run
    killed later keeps it; the run's totals are written when it ends (:func:`_merge_timings`)."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        old = {}
    if old.get("profile") != profile:
        old = {"profile": profile, "last_run": None, "last_full_run": None, "notebooks": []}
    rows = {r["notebook"]: r for r in old.get("notebooks", [])}
    rows[row["notebook"]] = row
    old["notebooks"] = [rows[k] for k in sorted(rows)]
    old["total_seconds"] = round(sum(r["seconds"] for r in old["notebooks"]), 1)
    _write_atomically(path, json.dumps(old, indent=2) + "\n")


def finished_here(out_dir: Path, profile: str, digest: str) -> set[str]:
    """The notebooks that ran whole into ``out_dir`` at source ``digest``: their row in
    ``timings.json`` is ok, of ``profile`` and that digest, their executed notebook is there,
    and no run left them halfway since (no ``.running`` marker, :func:`_running_marker`)."""
    try:
        timings = json.loads((out_dir / "timings.json").read_text())
    except (OSError, ValueError):
        return set()
    if timings.get("profile") != profile:
        return set()
    return {r["notebook"] for r in timings.get("notebooks", [])
            if r.get("ok") and r.get("source_digest") == digest
            and (out_dir / "notebooks" / f"{r['notebook']}.ipynb").exists()
            and not _running_marker(out_dir, r["notebook"]).exists()}


def _merge_timings(path: Path, profile: str, results: list[dict], wall: float | None = None,
                   jobs: int = 1, usage: dict | None = None, resumed: list[str] | None = None
                   ) -> tuple[list[dict], dict]:
    """timings.json keeps the latest result of every notebook run into this folder (an
    ``--only`` run updates its notebooks and keeps the others), sorted by notebook, the wall
    clock and job count of the last run (``last_run``) and of the last run of every notebook
    found (``last_full_run``, which an ``--only`` or ``--resume`` run leaves alone: it is the
    record of one whole run); returns the rows and a dict of those two runs."""
    old = json.loads(path.read_text()) if path.exists() else {}
    same = old.get("profile") == profile
    rows = {r["notebook"]: r for r in old.get("notebooks", []) if same}
    rows.update({r["notebook"]: r for r in results})
    merged = [rows[k] for k in sorted(rows)]
    from . import provenance
    last = {"notebooks": [r["notebook"] for r in results], "jobs": jobs, **provenance.record(),
            "wall_seconds": round(wall, 1) if wall is not None else None, "cpus": os.cpu_count(),
            "notebook_seconds": round(sum(r["seconds"] for r in results), 1), **(usage or {})}
    if resumed is not None:
        last["resumed"] = sorted(resumed)   # these ran whole in an earlier run at this source
    whole = resumed is None and {r["notebook"] for r in results} >= set(rows)
    full = last if whole else (old.get("last_full_run") if same else None)
    runs = {"last_run": last, "last_full_run": full}
    _write_atomically(path, json.dumps({"profile": profile, "total_seconds": round(sum(r["seconds"] for r in merged), 1),
                                        **runs, "notebooks": merged}, indent=2) + "\n")
    return merged, runs


def _report_data(out_dir: Path, notebook: str) -> tuple[list[dict], dict, str | None] | None:
    """(rows, time, source digest) of a notebook's report file (None: not there; the digest is
    None for a file written before provenance was recorded)."""
    path = out_dir / "report" / f"{notebook}.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    if isinstance(data, list):   # written before the claims module: rows without intervals
        return [{**r, "kind": "legacy", "verdict": None} for r in data], {}, None
    return data["rows"], data.get("time", {}), data.get("source_digest")


def stale_notebooks(data: dict, current: str) -> dict[str, str | None]:
    """Notebook → the source digest its rows ran at, for every notebook whose rows come from
    another source than ``current`` (None: not recorded)."""
    return {nb: d[2] for nb, d in data.items() if d and d[2] != current}


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def protocol_lines(profile: str) -> list[str]:
    """REPORT.md's "Protocol" section: the choices this profile's run was made with, each read from
    where it is declared, and where the effect of each choice was measured before it was taken."""
    from .experiments import CLAMU_PROTOCOL
    from .profiles import MORE_SEEDS, SEEDS, default
    more = MORE_SEEDS.get(profile, {})
    fewer = default("sift_text_seeds", profile)
    search = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in CLAMU_PROTOCOL.items())
    return ["## Protocol", "",
            f"- **Seeds**: {len(SEEDS[profile])} per claim (`profiles.SEEDS`)"
            + (", more where a notebook's claims are cheap (`profiles.MORE_SEEDS`): "
               + ", ".join(f"{nb} {len(s)}" for nb, s in more.items()) if more else "")
            + (f"; SIFT-Masks' accuracy on the text and author settings on the first {fewer} (each of their tasks "
               "finetuned again with fixed signs; `profiles.KNOBS[\"sift_text_seeds\"]`)" if isinstance(fewer, int) else "")
            + ".",
            f"- **ClAMU's validation search** (`experiments.CLAMU_PROTOCOL`: {search}): one α/η search per seed over "
            "per-task masks, shared by every K, every clustering and the supermask control, re-run on every refresh "
            "after unlearning; successive halving keeping 1/4 of the candidates. Taken for the time of a whole run, "
            "after its effect was measured (benchmarks/RESULTS.md, \"A shared α/η search and a more aggressive "
            "halving\": wall time, executed and charged steps, chosen values, accuracy).",
            precision_line(profile), ""]


def precision_line(profile: str) -> str:
    """The Protocol's precision: what the text and author settings declare at ``profile``
    (``PROFILE_SIZES[profile].precision``), what it resolves to on this machine, and the rest."""
    from ..runtime.precision import AUTO, native_bf16, resolve_precision
    from ..settings import authors, text
    declared = {"text": text.PROFILE_SIZES[profile].precision, "authors": authors.PROFILE_SIZES[profile].precision}
    used = {k: resolve_precision(v) for k, v in declared.items()}
    if set(used.values()) == {"float32"}:
        return ("- **Precision**: float32 everywhere"
                + (" (the profile's \"auto\" resolved to float32: this processor has no native bfloat16)"
                   if AUTO in declared.values() else "") + ".")
    bf16 = [k for k in declared if used[k] == "bf16"]
    auto = [k for k in bf16 if declared[k] == AUTO]
    how = " and ".join(bf16) + (" (declared \"auto\": bf16 where the processor computes bfloat16 natively"
                                + (", as this one does)" if native_bf16() else "; set by $CLAMU_PRECISION here)")
                                if auto else "")
    return (f"- **Precision**: finetunes and ClAMU's mask optimisation under bfloat16 autocast for {how}; "
            + "".join(f"{k} in float32; " for k in declared if used[k] == "float32") + "images in float32; every evaluation in float32 (`settings.text`/`settings.authors` "
            "`PROFILE_SIZES`, `$CLAMU_PRECISION` overrides). Taken for the time of a whole run after its effect on "
            "local models was measured (benchmarks/RESULTS.md, \"bfloat16 autocast\"); its effect on the verdicts, "
            "against the float32 run before: benchmarks/RESULTS.md, \"bfloat16 for every method\".")


def settings_lines(claims: Iterable[str]) -> list[str]:
    """The settings named in ``claims`` (the summary's claim cells, which carry the kit's setting and
    T), each with what it stands in for, its M0, and the model of the paper's own setting
    (``settings.REGISTRY``)."""
    from ..settings import REGISTRY
    text = " ".join(claims)
    named = [e for n, e in REGISTRY.items() if n in text and e.paper_twin]
    if not named:
        return []
    lines = ["The settings of these rows (each row names its setting and T here; the *paper* cell names the "
             "paper's setting, model and T):", "", "| setting here | stands in for | M0 here | M0 in the paper |",
             "|---|---|---|---|"]
    for e in named:
        twin = REGISTRY.get(e.paper_twin)
        lines.append(f"| `{e.name}` | {_cell(e.analog_of)} | {_cell(e.model)} | {_cell(twin.model if twin else '')} |")
    return lines + [""]


def write_report(out_dir: Path, profile: str, results: list[dict], runs: dict | None = None) -> Path:
    """REPORT.md: a one-screen summary (each claim, the paper's value, ours with its 95%
    interval over seeds, the verdict, and for a claim that does not reproduce the likeliest
    reason), the wall clock and where the time went, then each notebook's claims,
    measurements and cost-model arithmetic (the last without verdicts)."""
    from . import provenance
    from .claims import NOT_JUDGED, REPRODUCES
    lines = [f"# Reproduction report ({profile} profile)", "",
             "Each claim of the paper is measured once per seed and judged on the 95% interval [lo, hi] over "
             "seeds (Student t; `clamu_helpers.reproduction.claims`), against the null n (no effect) and the edge L where "
             "the paper's band starts: **reproduces** (lo ≥ L), **direction only** (an effect in the paper's "
             "direction, confidently short of its band: n < lo, hi < L), **does not reproduce** (the band ruled "
             "out and no effect established: hi < L, lo ≤ n), **inconclusive** (the band not ruled out: "
             "lo < L ≤ hi; the reason says whether an effect is present and how many seeds would settle it). "
             "*Detectable* is the interval's half-width: the smallest effect these seeds could tell from none. "
             "The embedded settings are small offline analogs of the paper's (README, Settings): bands are the "
             "paper's, read as stated in each claim's note.", ""]
    data = {r["notebook"]: _report_data(out_dir, r["notebook"]) for r in results}
    current = provenance.source_digest()
    stale = stale_notebooks(data, current)
    lines += [f"Source: commit `{provenance.commit()}`, source digest `{current[:16]}` "
              "(`clamu_helpers.reproduction.provenance`: the library and notebook sources)."
              + (" Every notebook's rows come from this source." if not stale else ""), ""]
    if stale:
        lines += ["**Rows from another source** (re-run these notebooks to bring them to this one): "
                  + ", ".join(f"{nb} (`{(d or 'not recorded')[:16]}`)" for nb, d in stale.items()) + ".", ""]
    claim_rows = [(nb, row) for nb, d in data.items() if d for row in d[0] if row.get("kind") == "claim"]
    lines += ["## Summary", ""]
    if claim_rows:
        lines += ["| claim | source | paper | ours (mean ± 95% half-width [interval], seeds) | detectable | verdict | reason, from the row's numbers |",
                  "|---|---|---|---|---|---|---|"]
        for nb, row in claim_rows:
            v = row["verdict"]
            shown = f"**{v}**" if v not in (REPRODUCES, NOT_JUDGED) else v
            if nb in stale:
                shown += " (other source)"
            det = row.get("detectable")
            det = "" if det is None else (f"×/÷ {det:.3g}" if row.get("interval", {}).get("log") else f"± {det:.3g}")
            paper = row["paper"] + (f" ({row['paper_at']})" if row.get("paper_at") else "")
            lines.append(f"| {_cell(row['claim'])} | {_cell(row.get('source', ''))} | {_cell(paper)} | "
                         f"{_cell(row['ours'].split('; ')[0])} | {det} | {shown} | {_cell(row.get('why', ''))} |")
        counts = {}
        for _, row in claim_rows:
            counts[row["verdict"]] = counts.get(row["verdict"], 0) + 1
        lines += ["", "Verdicts: " + ", ".join(f"{v} {n}" for v, n in counts.items()) + ".", ""]
        lines += settings_lines(row["claim"] for _, row in claim_rows)
    legacy = [nb for nb, d in data.items() if d and any(r.get("kind") == "legacy" for r in d[0])]
    if legacy:
        lines += [f"Not re-run since claims were judged on intervals (one seed, shown below without verdicts): "
                  f"{', '.join(legacy)}.", ""]
    lines += protocol_lines(profile)
    runs = runs or {}
    full, last = runs.get("last_full_run"), runs.get("last_run")
    for label, run in (("Last run of every notebook", full), ("Last run", last if last != full else None)):
        if run and run.get("wall_seconds") is not None:
            which = "" if run is full else f" ({', '.join(run['notebooks'])})"
            util = (f"; CPU utilisation {run['utilisation']:.0%} ({run['cpu_seconds'] / 60:.1f} CPU-min ÷ "
                    f"(wall × {run['cpus']} cores))" if run.get("utilisation") is not None else "")
            lines += [f"{label}{which}: **{run['wall_seconds'] / 60:.1f} min wall clock**, {run['jobs']} "
                      f"notebook{'s' if run['jobs'] > 1 else ''} at once on {run['cpus']} cores "
                      f"({run.get('notebook_seconds', 0) / 60:.1f} min of notebook time{util}).", ""]
    from .bench_results import search_agreement_rows
    beside = search_agreement_rows(profile)
    if beside:
        lines += ["## Measured by benchmarks beside the run", "",
                  "| measurement (benchmarks/, their JSON under benchmarks/results/) | result |", "|---|---|"]
        lines += [f"| {_cell(row['claim'])} | {_cell(row['ours'])} |" for row in beside]
        lines.append("")
    times = {nb: d[1] for nb, d in data.items() if d and d[1]}
    if times:
        cats = ["finetuning", "mask optimisation", "evaluation", "other"]
        lines += ["## Where the time went (seconds of compute, per notebook: its kernel and its seed workers)", "",
                  "| notebook | " + " | ".join(cats) + " | seed workers | kernel wall |", "|---" * (len(cats) + 3) + "|"]
        for nb, t in times.items():
            lines.append(f"| {nb} | " + " | ".join(f"{t.get(c, 0):.0f}" for c in cats)
                         + f" | {t.get('workers', 0):.0f} | {t.get('wall', 0):.0f} |")
        tot = {c: sum(t.get(c, 0) for t in times.values()) for c in cats + ["workers", "wall"]}
        lines += [f"| **all** | " + " | ".join(f"**{tot[c]:.0f}**" for c in cats)
                  + f" | **{tot['workers']:.0f}** | **{tot['wall']:.0f}** |", "",
                  "The categories count the seconds of the kernel and of its seed workers (which run side by side, "
                  "`clamu_helpers.runtime.workers`); *seed workers* is their wall seconds (waits for a CPU slot excluded), "
                  "*kernel wall* the notebook's own.", ""]
    lines += ["Each notebook's own time is in its heading and in `timings.json`.", ""]
    for r in results:
        d = data[r["notebook"]]
        lines.append(f"## {r['notebook']} ({'ok' if r['ok'] else 'FAILED: ' + r['error']}, {r['seconds']} s)")
        lines.append("")
        if r.get("stalled") and r["ok"]:
            lines += [f"The watchdog stopped this notebook's kernel once ({r['stalled'][0]}); the second run "
                      "ran whole and wrote what follows.", ""]
        if not d:
            lines += ["(no report rows)", ""]
            continue
        rows = d[0]
        groups = (("claim", "| claim | paper | this run | verdict |"),
                  ("measurement", "| measurement (no paper claim) | this run |"),
                  ("legacy", "| claim (one seed, before intervals: no verdict) | paper | this run |"))
        for kind, header in groups:
            sub = [row for row in rows if row.get("kind") == kind]
            if not sub:
                continue
            lines += [header, "|---" * header.count(" | ") + "|---|"]
            for row in sub:
                if kind == "claim":
                    lines.append(f"| {_cell(row['claim'])} | {_cell(row['paper'])} | {_cell(row['ours'])} | {row['verdict']} |")
                elif kind == "measurement":
                    lines.append(f"| {_cell(row['claim'])} | {_cell(row['ours'])} |")
                else:
                    lines.append(f"| {_cell(row['claim'])} | {_cell(row['paper'])} | {_cell(row['ours'])} |")
            lines.append("")
        arith = [row for row in rows if row.get("kind") == "arithmetic"]
        if arith:
            lines += ["Cost model (arithmetic from the paper's counting rules: not a measurement, no verdict):", "",
                      "| quantity | value |", "|---|---|"]
            lines += [f"| {_cell(row['claim'])} | {_cell(row['ours'])} |" for row in arith]
            lines.append("")
    path = out_dir / "REPORT.md"
    _write_atomically(path, "\n".join(lines) + "\n")
    return path
