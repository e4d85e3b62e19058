"""Figures and tables from the experiment frames, and saving them with their provenance.

Every saved figure or table gets a ``<name>.meta.json`` beside it recording the profile, the
environment fingerprint, the commit and the digest of the sources that ran
(:mod:`clamu_helpers.reproduction.provenance`), so a reader knows what produced it; every file is written
atomically.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from .claims import t_interval, validate_row
from . import provenance
from ..core.atomic import replace_with
from ..runtime.determinism import fingerprint
from ..runtime.timing import snapshot

sns.set_theme(style="whitegrid", context="notebook")


def t_band(values) -> tuple[float, float]:
    """The 95% t interval over seeds of the values seaborn groups at one x (the error bars of
    every figure; one value draws no bar)."""
    iv = t_interval(values)
    return iv.lo, iv.hi


def output_dir(profile: str, out: str | os.PathLike | None = None) -> Path:
    """``$CLAMU_FIGURES`` (set by ``reproduce --out``), else ``figures/<profile>``."""
    d = Path(out or os.environ.get("CLAMU_FIGURES") or Path("figures") / profile)
    d.mkdir(parents=True, exist_ok=True)
    return d


def _write_text(path: Path, text: str) -> None:
    """A text file written atomically (a run killed half-way leaves the old file or the new one)."""
    replace_with(path, lambda tmp: tmp.write_text(text))


def _meta(path: Path, profile: str, extra: dict | None) -> None:
    meta = {"profile": profile, "fingerprint": fingerprint(), **provenance.record(), **(extra or {})}
    _write_text(path.with_suffix(".meta.json"), json.dumps(meta, indent=2, default=str) + "\n")


def save_figure(fig, name: str, profile: str, out=None, **extra) -> Path:
    """``<name>.png`` (written atomically) and its ``.meta.json`` (profile, fingerprint, commit and
    source digest: :func:`clamu_helpers.reproduction.provenance.record`)."""
    path = output_dir(profile, out) / f"{name}.png"
    replace_with(path, lambda tmp: fig.savefig(tmp, dpi=130, bbox_inches="tight", format="png"))
    _meta(path, profile, extra)
    return path


def save_table(df: pd.DataFrame, name: str, profile: str, out=None, floatfmt: str = ".3f", **extra) -> Path:
    """``<name>.csv`` (the rows, plus the ``commit`` and ``source_digest`` they ran at),
    ``<name>.md`` (the rows as a table) and ``<name>.meta.json``, each written atomically."""
    d = output_dir(profile, out)
    rec = provenance.record()
    _write_text(d / f"{name}.csv", df.assign(commit=rec["commit"], source_digest=rec["source_digest"])
                .to_csv(index=False))
    _write_text(d / f"{name}.md", df.to_markdown(index=False, floatfmt=floatfmt) + "\n")
    _meta(d / f"{name}.csv", profile, extra)
    return d / f"{name}.md"


def merging_at_scale(df: pd.DataFrame, metric: str = "accuracy"):
    """Figure 2: one panel per setting, score vs number of merged models (log x)."""
    settings = list(dict.fromkeys(df["setting"]))
    fig, axes = plt.subplots(1, len(settings), figsize=(4.2 * len(settings), 3.4), squeeze=False)
    for ax, (i, name) in zip(axes[0], enumerate(settings)):
        sub = df[df["setting"] == name]
        col = metric if metric in sub and sub[metric].notna().any() else sub.columns[-1]
        sns.lineplot(data=sub, x="tasks", y=col, hue="model", marker="o", ax=ax, errorbar=t_band,
                     hue_order=[m for m in ("local", "merged", "zero-shot") if m in set(sub["model"])])
        ax.set_xscale("log")
        ax.set_title(f"({'i ii iii iv v vi'.split()[i]}) {name}")
        ax.set_xlabel("merged models")
        if i:
            ax.get_legend().remove()
    fig.tight_layout()
    return fig


def legend_outside(ax, fontsize: int = 7) -> None:
    """Move the legend to the right of the axes, off the data."""
    if ax.get_legend() is not None:
        sns.move_legend(ax, "upper left", bbox_to_anchor=(1.02, 1.0), fontsize=fontsize, title_fontsize=fontsize,
                        frameon=False)


def mean_over_seeds(df: pd.DataFrame, keys, metric: str) -> pd.DataFrame:
    """One row per ``keys`` group: the mean of every numeric column over seeds, and the 95% t
    interval of ``metric`` as ``<metric>_lo`` / ``<metric>_hi`` (equal to the mean for one seed)."""
    keys = list(dict.fromkeys(k for k in keys if k in df))
    rows = []
    for key, sub in df.groupby(keys, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        iv = t_interval(sub[metric])
        num = sub.select_dtypes("number").mean()
        first = sub.iloc[0]
        rows.append({**{c: first[c] for c in sub.columns if c not in num}, **num.to_dict(), **dict(zip(keys, key)),
                     metric: iv.mean, f"{metric}_lo": iv.lo, f"{metric}_hi": iv.hi, "seeds": iv.n})
    return pd.DataFrame(rows)


def storage_vs_accuracy(df: pd.DataFrame, metric: str = "accuracy", hue: str = "label", title: str = ""):
    """Figures 3–5: storage (bytes, log x) against mean score over seeds, one point per
    method/K with its 95% t interval as a vertical bar; the legend sits outside the axes."""
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    df = mean_over_seeds(df, [hue, "annotation", "K", "clustering", "label"], metric)
    sns.scatterplot(data=df, x="storage_bytes", y=metric, hue=hue, style=hue, s=90, ax=ax, zorder=3)
    ax.errorbar(df["storage_bytes"], df[metric], yerr=[df[metric] - df[f"{metric}_lo"], df[f"{metric}_hi"] - df[metric]],
                fmt="none", ecolor="0.4", elinewidth=1, capsize=3, zorder=2)
    placed: list[tuple[float, float]] = []
    span = max(1e-9, float(df[metric].max() - df[metric].min()))
    for _, r in df.sort_values([metric, "storage_bytes"]).iterrows():
        x, y = float(r["storage_bytes"]), float(r[metric])
        # stack the labels of points that (nearly) coincide instead of printing them on top of each other
        near = sum(abs(math.log10(x / px)) < 0.15 and abs(y - py) < 0.04 * span for px, py in placed)
        placed.append((x, y))
        ax.annotate(str(r.get("annotation", "")), (x, y), fontsize=7, xytext=(4, 3 + 8 * near),
                    textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("storage (bytes)")
    ax.set_title(title)
    legend_outside(ax)
    fig.tight_layout()
    return fig


def lines(df: pd.DataFrame, x: str, y: str, hue: str, title: str = "", logx: bool = False, style: str | None = None):
    """One line per ``hue`` (and dash per ``style``) of ``y`` against ``x``, the mean over seeds
    with its 95% t interval as error bars; legend outside the axes."""
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    sns.lineplot(data=df, x=x, y=y, hue=hue, style=style, marker="o", ax=ax, errorbar=t_band, err_style="bars",
                 err_kws={"capsize": 2, "elinewidth": 0.8})
    if logx:
        ax.set_xscale("log")
        values = sorted(df[x].dropna().unique())
        if len(values) <= 12:  # label the measured x values themselves, not 2×10⁰, 3×10⁰, …
            ax.set_xticks(values, [f"{v:g}" for v in values])
            ax.minorticks_off()
    ax.set_title(title)
    legend_outside(ax)
    fig.tight_layout()
    return fig


def report_rows(notebook: str, rows: list[dict], profile: str, out=None) -> Path:
    """Save a notebook's report rows (made by :func:`clamu_helpers.reproduction.claims.check`,
    ``measurement`` or ``arithmetic``) for REPORT.md, with where this kernel's time went
    (:mod:`clamu_helpers.runtime.timing`). A row whose verdict does not follow from its interval is
    refused (:func:`clamu_helpers.reproduction.claims.validate_row`)."""
    for row in rows:
        validate_row(row)
    d = output_dir(profile, out) / "report"
    d.mkdir(exist_ok=True)
    path = d / f"{notebook}.json"
    rec = provenance.record()
    rows = [{**row, "source_digest": rec["source_digest"]} for row in rows]
    _write_text(path, json.dumps({"rows": rows, "time": snapshot(), **rec}, indent=2, default=str) + "\n")
    return path


def run_shows(rows: list[dict], n_seeds: int) -> str:
    """"What this run shows": one Markdown line per report row (claim, our interval, the
    paper's number, the verdict and its reason), under a header that says the seeds."""
    lines = [f"- {r['claim']}: {r['ours']} — paper {r['paper']}" + (f": **{r['verdict']}**" if r.get("verdict") else "")
             + (f" ({r['why']})" if r.get("why") else "") for r in rows if r]
    return f"**What this run shows** ({n_seeds} seeds; 95% t interval over seeds):\n\n" + "\n".join(lines)


def report(notebook: str, rows: list, profile: str, n_seeds: int, out=None):
    """A notebook's last call: save its report rows for REPORT.md (:func:`report_rows`; rows that
    are None, claims a setting could not check, are dropped) and return "What this run shows"
    as Markdown for the notebook to display."""
    from IPython.display import Markdown
    rows = [r for r in rows if r]
    report_rows(notebook, rows, profile, out=out)
    return Markdown(run_shows(rows, n_seeds))
