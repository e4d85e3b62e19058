"""The paper's claims as data, and verdicts that can say "no".

Each :class:`Claim` names its source (draft section, figure or table, or the final version's
abstract), the quantity this kit measures for it, the paper's value or band in that quantity's
units, and the direction the paper claims. A notebook measures the quantity once per seed,
:func:`check` turns the values into a 95% interval (Student t over seeds: the seed changes
task sampling, finetuning and forget orders) and the interval into one of three verdicts:

* **reproduces**: the interval lies inside the paper's band, or beyond it in the claimed
  direction;
* **direction only**: the interval excludes the null (no effect) in the claimed direction,
  but does not reach the band;
* **does not reproduce**: the interval includes the null, or lies on the opposite side.

A claim whose quantity is a ratio (``unit="ratio"``) is judged on the log scale: the t interval
is taken over the seeds' log ratios and transformed back (its centre is the geometric mean),
because ratios multiply — three seeds at 189×, 545× and 579× give [82, 1867], where a linear
interval would reach below zero and read as "no effect".

A claim of equality (``direction=0``, e.g. "about equal") reproduces when its interval lies
inside the band and does not otherwise. A number computed from the paper's own formula (the
draft's counting of unlearning steps) is not a claim check: :func:`arithmetic` makes such a
row, labelled as arithmetic, without a verdict. :func:`measurement` records a measured
quantity with its interval and no paper claim (the controls).

Choices made reading the paper (each also in the claim's ``note``): the draft's "+12–30%" and
"+5–20%" are accuracy *points* (Table 4's numbers: ClAMU 65.6 vs TALL 45.7 with feature
clusters is +20 points); the final abstract's "5–80% over naive merging" is *relative*; where
the paper gives a single number the band starts at it ("at least what the paper measured").

(Over 300 lines on purpose: every claim of the paper is one entry of a table that is data, and
the verdict rules sit beside the claims they judge.)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

REPRODUCES = "reproduces"
DIRECTION_ONLY = "direction only"
DOES_NOT = "does not reproduce"
NOT_JUDGED = "not judged (one seed)"
VERDICTS = (REPRODUCES, DIRECTION_ONLY, DOES_NOT)

INF = math.inf


@dataclass(frozen=True)
class Claim:
    """One claim of the paper. ``band`` is (lo, hi) in the units of ``quantity``; ``null`` is
    the value meaning "no effect" (0 for differences, 1 for ratios)."""
    key: str
    source: str
    statement: str
    quantity: str
    paper: str
    band: tuple[float, float]
    direction: int = 1
    null: float = 0.0
    unit: str = "points"
    note: str = ""

    def __post_init__(self):
        lo, hi = self.band
        if self.direction not in (-1, 0, 1):
            raise ValueError(f"claim {self.key!r}: direction must be -1, 0 or +1, got {self.direction!r}")
        if not lo <= hi:
            raise ValueError(f"claim {self.key!r}: band {self.band} has lo > hi")
        if self.direction == 1 and lo < self.null or self.direction == -1 and hi > self.null:
            raise ValueError(f"claim {self.key!r}: band {self.band} lies on the wrong side of the null {self.null}")


@dataclass(frozen=True)
class Interval:
    """Mean and a two-sided interval of a quantity measured once per seed."""
    mean: float
    lo: float
    hi: float
    n: int
    method: str = "t over seeds"
    values: tuple[float, ...] = field(default=(), compare=False)
    log: bool = False   # taken on the log scale: mean is the geometric mean, lo/hi transformed back

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2

    @property
    def factor(self) -> float:
        """For a log-scale interval: hi / mean = mean / lo (the ×/÷ of the interval)."""
        return math.sqrt(self.hi / self.lo)

    def text(self, fmt: str = ".3f", scale: float = 1.0, suffix: str = "") -> str:
        """``0.123 ± 0.010 [0.113, 0.133], 3 seeds`` (``scale=100, suffix='%'`` for percents);
        on the log scale ``391× ×/÷ 4.78 [82, 1867], 3 seeds (geometric mean)``."""
        m, lo, hi = (scale * v for v in (self.mean, self.lo, self.hi))
        if self.n < 2:
            return f"{m:{fmt}}{suffix} (1 seed, no interval)"
        if self.log:
            return (f"{m:{fmt}}{suffix} ×/÷ {self.factor:.3g} [{lo:{fmt}}, {hi:{fmt}}], {self.n} seeds "
                    "(geometric mean)")
        return (f"{m:{fmt}}{suffix} ± {scale * self.half_width:{fmt}} "
                f"[{lo:{fmt}}, {hi:{fmt}}], {self.n} seeds")

    def as_dict(self) -> dict:
        return {"mean": self.mean, "lo": self.lo, "hi": self.hi, "n": self.n, "method": self.method,
                "values": list(self.values), "log": self.log}


def t_quantile(p: float, df: int) -> float:
    """Student t quantile (scipy when present; else a table for small df, normal beyond)."""
    try:
        from scipy.stats import t
        return float(t.ppf(p, df))
    except ImportError:  # pragma: no cover - scipy comes with scikit-learn
        table = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
        if abs(p - 0.975) > 1e-9:
            raise
        return table.get(df, 1.96)


def t_interval(values: Iterable[float], level: float = 0.95, log: bool = False) -> Interval:
    """Mean ± t_{(1+level)/2, n-1} · sd/√n over the values (one per seed). With one value the
    interval is the point itself and ``n=1`` (no verdict is drawn from it). ``log=True`` (for
    ratios, all values > 0): the same over log values, transformed back — geometric mean and
    bounds exp(mean ± half-width)."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("an interval needs at least one value")
    if any(math.isnan(v) for v in vals):
        raise ValueError(f"an interval over NaN values: {vals}")
    if log:
        if any(not 0 < v < INF for v in vals):
            raise ValueError(f"a log-scale interval needs finite values > 0, got {vals}")
        iv = t_interval([math.log(v) for v in vals], level)
        return Interval(math.exp(iv.mean), math.exp(iv.lo), math.exp(iv.hi), iv.n,
                        "t over seeds of log values", values=tuple(vals), log=True)
    n = len(vals)
    mean = sum(vals) / n
    if n == 1:
        return Interval(mean, mean, mean, 1, values=tuple(vals))
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    hw = t_quantile((1 + level) / 2, n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - hw, mean + hw, n, values=tuple(vals))


def verdict(claim: Claim, interval: Interval) -> str:
    """The verdict the interval gives on the claim (see the module docstring)."""
    if interval.n < 2:
        return NOT_JUDGED
    lo, hi = claim.band
    if claim.direction == 0:
        return REPRODUCES if lo <= interval.lo and interval.hi <= hi else DOES_NOT
    if claim.direction == 1:
        if interval.lo >= lo:
            return REPRODUCES
        return DIRECTION_ONLY if interval.lo > claim.null else DOES_NOT
    if interval.hi <= hi:
        return REPRODUCES
    return DIRECTION_ONLY if interval.hi < claim.null else DOES_NOT


def _claims(*cs: Claim) -> dict[str, Claim]:
    out = {}
    for c in cs:
        if c.key in out:
            raise ValueError(f"claim {c.key!r} declared twice")
        out[c.key] = c
    return out


_TO_ZERO_SHOT = dict(band=(-INF, 0.25), direction=-1, null=1.0, unit="fraction",
                    note="'degrades to zero-shot' read as keeping at most a quarter of the local models' gain")

#: every claim the notebooks check
CLAIMS: dict[str, Claim] = _claims(
    Claim("fig2-uniform", "draft Sec. 3.2, Fig. 2 (i)",
          "CLIP (i), uniform tasks: merging improves over the individual models",
          "merged − mean local accuracy at the largest T", "merged > local", (0.0, INF)),
    Claim("fig2-label-subsets", "draft Sec. 3.2, Fig. 2 (ii)",
          "CLIP (ii), label subsets: merging quickly degrades to zero-shot",
          "share of the finetuning gain the merge keeps, (merged − zero-shot) / (local − zero-shot), at the largest T",
          "≈ 0 (zero-shot)", **_TO_ZERO_SHOT),
    Claim("fig2-reviews", "draft Sec. 3.2, Fig. 2 (iii)",
          "Sent140: merging stabilises at non-trivial utility",
          "merged − zero-shot accuracy at the largest T", "above zero-shot", (0.0, INF)),
    Claim("fig2-fortunes", "draft Sec. 3.2, Fig. 2 (iv)",
          "Reddit: merging quickly degrades to zero-shot",
          "share of the finetuning gain the merge keeps at the largest T", "≈ 0 (zero-shot)", **_TO_ZERO_SHOT),
    Claim("fig4-features", "draft Sec. 4.2, Fig. 4",
          "feature clusters offer a 12–30% increase in accuracy over random clusters",
          "feature − random cluster accuracy (points)", "+12–30 points", (0.12, 0.30),
          note="'12–30%' read as accuracy points, as Table 4 reports them"),
    Claim("table1-clamu", "draft Sec. 4.3, Table 1",
          "ClAMU's optimized masks recover most of what merging loses (TOFU, GPT2-Small)",
          "ClAMU − max(TALL, EMR) answer probability at the largest author count",
          "+0.18 (0.35 vs 0.17 at 200 authors)", (0.18, INF),
          note="band starts at the paper's gain at 200 authors, its smallest"),
    Claim("table1-degrades", "draft Sec. 4.3, Table 1",
          "the merged model's answer probability falls as authors are added (0.71 → 0.06)",
          "Global answer probability at the largest author count ÷ at 2 authors", "0.06 / 0.71 = 0.08",
          (-INF, 0.085), direction=-1, null=1.0, unit="ratio"),
    Claim("fig3-clamu", "draft Sec. 4.3, Fig. 3",
          "ClAMU's optimized masks beat TALL and EMR at the same storage (CLIP ii)",
          "ClAMU − max(TALL, EMR) accuracy (points)", "ClAMU > TALL, EMR", (0.0, INF)),
    Claim("fig5-clamu", "draft Sec. 4.4, Fig. 5",
          "with the same clusters, ClAMU improves accuracy by 5–20% over TALL and EMR",
          "ClAMU − max(TALL, EMR) cluster-mask accuracy (points)", "+5–20 points", (0.05, 0.20),
          note="'5% to 20%' read as accuracy points"),
    Claim("sift-accuracy", "final version, abstract",
          "SIFT-Masks improves accuracy by 5–80% over naive merging",
          "(SIFT-Masks − averaging) / averaging accuracy", "+5–80%", (0.05, 0.80), unit="relative",
          note="'5-80%' read as relative to naive merging (averaging)"),
    Claim("sift-compute", "final version, abstract",
          "SIFT-Masks uses up to 250× less compute for exact unlearning than other merging baselines",
          "the larger of TALL's and EMR's wall seconds to unlearn one task ÷ SIFT-Masks' (served at the paper's "
          "fixed 1/T), at T=500 (log ratio fitted linearly in log T over the measured T)", "up to 250×", (250.0, INF),
          null=1.0, unit="ratio",
          note="'up to 250×' read as: the largest baseline ratio at 500 tasks reaches 250; wall seconds, because the "
               "executed gradient steps are fixed at T by the cost rules (one deletion) and could not fail"),
    Claim("table2-sent140", "draft Sec. 5, Table 2",
          "accuracy on the remaining tasks does not fall as tasks are unlearned (Sent140 69.8 → 71.9 at 25 of 500 left)",
          "merged accuracy on the remaining tasks at 95% unlearned − at 0% (points)", "+2.1 points",
          (0.021, INF)),
    Claim("table2-clip-i", "draft Sec. 5, Table 2",
          "CLIP (i): accuracy on the remaining tasks stays flat as tasks are unlearned (83.8 → 83.2 at 25 of 500 left)",
          "merged accuracy on the remaining tasks at 95% unlearned − at 0% (points)", "−0.6 points (flat)",
          (-0.02, 0.02), direction=0, note="'flat' read as within ±2 points"),
    Claim("table3-tall", "draft Sec. 5, Table 3",
          "TALL's accuracy on the remaining tasks rises as tasks are unlearned (64.0 → 82.6 on Reddit)",
          "TALL accuracy on the remaining tasks at the last checkpoint − at 0% (points)", "+18.6 points",
          (0.186, INF)),
    Claim("table4-lm-head", "draft App., Table 4",
          "Reddit: the LM head beats the CLS head for every method",
          "label-name − CLS head accuracy (points)", "LM > CLS (e.g. ClAMU 65.6 vs 48.3)", (0.0, INF),
          note="the label-name head is this kit's analog of the LM head"),
    Claim("table5-cls-head", "draft App., Table 5",
          "Sent140: the CLS head beats the LM head for Local, TALL and EMR",
          "CLS − label-name head accuracy (points)", "CLS > LM (e.g. Local 67.8 vs 63.2)", (0.0, INF)),
    Claim("table5-clamu-equal", "draft App., Table 5",
          "Sent140: the two heads are about equal with ClAMU (65.7 vs 64.7; 66.3 vs 66.3)",
          "label-name − CLS head accuracy with ClAMU (points)", "about equal (−1.0, 0.0 points)",
          (-0.03, 0.03), direction=0, note="'about equal' read as within ±3 points"),
)


def claim(key: str) -> Claim:
    """The claim declared under ``key``; raises ``KeyError`` naming the known keys."""
    if key not in CLAIMS:
        raise KeyError(f"unknown claim {key!r}; known: {sorted(CLAIMS)}")
    return CLAIMS[key]


def _fmt(c: Claim) -> tuple[str, float, str]:
    if c.unit == "relative":
        return ".1f", 100.0, "%"
    if c.unit == "ratio":
        return ".3g", 1.0, "×"
    return ".3f", 1.0, ""


def check(key: str, values: Sequence[float], label: str = "", detail: str = "", why: str = "") -> dict:
    """A report row: the claim ``key`` judged on ``values`` (one per seed). ``label`` narrows the
    claim (a setting, a K), ``detail`` lists the numbers behind the quantity, ``why`` says, for a
    claim that does not reproduce, the likeliest reason (measured where the kit can)."""
    c = claim(key)
    iv = t_interval(values, log=c.unit == "ratio")
    fmt, scale, suffix = _fmt(c)
    v = verdict(c, iv)
    if v not in (REPRODUCES, NOT_JUDGED):
        why = "; ".join(x for x in (reading(c, iv), why) if x)
    return {"kind": "claim", "key": key, "claim": c.statement + (f" [{label}]" if label else ""),
            "source": c.source, "quantity": c.quantity, "paper": c.paper,
            "ours": iv.text(fmt, scale, suffix) + (f"; {detail}" if detail else ""),
            "interval": iv.as_dict(), "verdict": v, "why": why if v != REPRODUCES else ""}


def reading(c: Claim, iv: Interval) -> str:
    """What the interval itself says about a claim that does not fully reproduce."""
    if c.direction == 0:
        inside = c.band[0] <= iv.mean <= c.band[1]
        return ("the mean is inside the band but the interval is wider than it" if inside
                else "the mean lies outside the band")
    toward = (iv.mean - c.null) * c.direction > 0
    straddles = iv.lo <= c.null <= iv.hi
    if toward and straddles:
        return f"the mean points the paper's way, but the interval over {iv.n} seeds includes no effect"
    if toward:
        return "the effect is there, smaller than the paper's band"
    return "on this analog the effect goes the other way" if not straddles else \
        f"the mean points against the paper's direction; the interval over {iv.n} seeds includes no effect"


def measurement(title: str, values: Sequence[float], detail: str = "", fmt: str = ".3f") -> dict:
    """A measured quantity with its interval and no paper claim (a control gap, a ratio)."""
    iv = t_interval(values)
    return {"kind": "measurement", "claim": title, "paper": "", "ours": iv.text(fmt) + (f"; {detail}" if detail else ""),
            "interval": iv.as_dict(), "verdict": None}


def arithmetic(title: str, value: str, source: str = "") -> dict:
    """A number computed from the paper's own formula: no interval, no verdict."""
    return {"kind": "arithmetic", "claim": title, "source": source, "paper": "", "ours": value, "verdict": None}


def validate_row(row: dict) -> None:
    """Raise ``ValueError`` when a row carries a verdict that its interval does not give (or a
    verdict without an interval, or an arithmetic row with a verdict)."""
    kind, v = row.get("kind"), row.get("verdict")
    if kind not in ("claim", "measurement", "arithmetic"):
        raise ValueError(f"report row {row.get('claim')!r}: unknown kind {kind!r}")
    if kind != "claim":
        if v is not None:
            raise ValueError(f"report row {row.get('claim')!r}: a {kind} row has no verdict, got {v!r}")
        return
    if "interval" not in row:
        raise ValueError(f"claim row {row.get('claim')!r} has no interval")
    i = row["interval"]
    log = bool(i.get("log"))   # rows written before log-scale ratios record none: linear
    if log and claim(row["key"]).unit != "ratio":
        raise ValueError(f"claim row {row['claim']!r}: a log-scale interval for a claim that is not a ratio")
    iv = Interval(i["mean"], i["lo"], i["hi"], i["n"], log=log)
    if i.get("values"):
        again = t_interval(i["values"], log=log)
        if not (math.isclose(again.lo, iv.lo, abs_tol=1e-9) and math.isclose(again.hi, iv.hi, abs_tol=1e-9)):
            raise ValueError(f"claim row {row['claim']!r}: interval {iv.lo, iv.hi} does not follow from its values")
    want = verdict(claim(row["key"]), iv)
    if v != want:
        raise ValueError(f"claim row {row['claim']!r}: verdict {v!r}, but its interval gives {want!r}")


def summary(rows: Sequence[dict]) -> list[dict]:
    """The claim rows only, for the one-screen summary at the top of REPORT.md."""
    return [r for r in rows if r.get("kind") == "claim"]
