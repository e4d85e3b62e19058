"""The paper's claims as data, and verdicts that can say "no".

Each :class:`Claim` names its source (draft section, figure or table, or the final version's
abstract), the quantity this kit measures for it, the paper's value or band in that quantity's
units, and the direction the paper claims. A notebook measures the quantity once per seed,
:func:`check` turns the values into a 95% interval [lo, hi] (Student t over seeds: the seed
changes task sampling, finetuning and forget orders) and the interval into one of four
outcomes. For a claim in the positive direction with null n (no effect) and a band starting at
L (mirrored for the negative direction; a directional claim with no size has L = n):

* **reproduces**: lo ≥ L — the paper's effect size is established;
* **direction only**: n < lo and hi < L — an effect in the paper's direction, confidently
  short of its band;
* **does not reproduce**: hi < L and lo ≤ n — the paper's effect size is ruled out and no
  effect in its direction is established (the opposite direction included);
* **inconclusive**: lo < L ≤ hi — the band is not ruled out; the row says whether an effect is
  at least present and how many seeds would settle it at the observed spread
  (:func:`seeds_to_settle`).

A claim whose quantity is a ratio (``unit="ratio"``) is judged on the log scale: the t interval
is taken over the seeds' log ratios and transformed back (its centre is the geometric mean),
because ratios multiply — three seeds at 189×, 545× and 579× give [82, 1867], where a linear
interval would reach below zero and read as "no effect".

A claim of equality (``direction=0``, e.g. "about equal", "flat") reproduces when its interval
lies inside the band, does not reproduce when it lies entirely outside it, and is inconclusive
when it overlaps an edge. A number computed from the paper's own formula (the
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
INCONCLUSIVE = "inconclusive"
NOT_JUDGED = "not judged (one seed)"
VERDICTS = (REPRODUCES, DIRECTION_ONLY, DOES_NOT, INCONCLUSIVE)
#: at most this many seeds are proposed to settle an inconclusive claim (more reads "over 100")
MAX_SEEDS = 100

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


def edge(claim: Claim) -> float:
    """L, where the paper's band starts in the claimed direction (its lower end for +1, its
    upper end for −1)."""
    return claim.band[0] if claim.direction >= 0 else claim.band[1]


def verdict(claim: Claim, interval: Interval) -> str:
    """The outcome the interval gives on the claim (see the module docstring)."""
    if interval.n < 2:
        return NOT_JUDGED
    lo, hi = claim.band
    if claim.direction == 0:
        if lo <= interval.lo and interval.hi <= hi:
            return REPRODUCES
        return DOES_NOT if interval.hi < lo or interval.lo > hi else INCONCLUSIVE
    # mirror a negative claim onto the positive side: x → −x
    d = claim.direction
    L, n = d * edge(claim), d * claim.null
    i_lo, i_hi = sorted((d * interval.lo, d * interval.hi))
    if i_lo >= L:
        return REPRODUCES
    if i_hi >= L:
        return INCONCLUSIVE
    return DIRECTION_ONLY if i_lo > n else DOES_NOT


def seeds_to_settle(interval: Interval, target: float, level: float = 0.95) -> int | None:
    """The fewest seeds whose interval, at the observed mean and spread, would leave ``target``
    (a band's edge) outside it; None when more than :data:`MAX_SEEDS` (or the mean sits on it)."""
    vals = interval.values
    if interval.n < 2 or len(vals) < 2:
        return None
    xs = [math.log(v) for v in vals] if interval.log else list(vals)
    if interval.log:
        target = math.log(target) if target > 0 else -INF
    mean = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))
    gap = abs(mean - target)
    if sd == 0:
        return len(xs)
    for n in range(2, MAX_SEEDS + 1):
        if t_quantile((1 + level) / 2, n - 1) * sd / math.sqrt(n) < gap:
            return max(n, len(xs))
    return None


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
    Claim("table1-recovery", "draft Sec. 4.3, Table 1",
          "ClAMU's optimized masks recover most of what merging loses (TOFU, GPT2-Small)",
          "recovery share (ClAMU − Global) / (Local − Global) of answer probability at the largest author count",
          "0.31 at 200 authors ((0.35 − 0.06) / (1.00 − 0.06)); 0.36 at 50", (0.31, INF), unit="fraction",
          note="the share of the local models' lead over the merge that ClAMU wins back (not a difference to "
               "TALL/EMR, whose own recovery leaves ClAMU little headroom); the band starts at the paper's "
               "smallest share, at 200 authors"),
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
    # -- the draft's claims beyond its figures and tables (abstract, introduction, Sec. 5 text)
    Claim("abstract-accuracy-storage", "draft abstract",
          "relative to merging and localization baselines, ClAMU serves models with up to 20% improved "
          "accuracy while reducing storage costs by up to 75%",
          "largest ClAMU − max(TALL, EMR) accuracy with the same K cluster masks, over the K ≤ T/4 (their K "
          "masks are at most a quarter of per-task masks) (points)", "+20 points at −75% storage", (0.20, INF),
          note="'up to 20%' read as the largest gain over K reaching 20 points; '−75% storage' as K ≤ T/4 "
               "masks instead of T (the masks' bytes; the served model and τ̄ are stored either way)"),
    Claim("masks-storage-32x", "draft Sec. 1",
          "local masks reduce storage by ∼32× over naively storing all the local models",
          "T local models' bytes ÷ (one model + T packed masks) bytes, as the system stores them, at the largest T",
          "∼32×", (25.6, 38.4), direction=0, null=1.0, unit="ratio",
          note="'∼32×' read as within ±20%; bytes of the stored state, compression included"),
    Claim("fig3-clamu-local", "draft Sec. 4, Fig. 3",
          "ClAMU simultaneously outperforms the local models while storing less than other localization baselines",
          "ClAMU (per-task masks) − local accuracy (points)", "ClAMU > local", (0.0, INF)),
    Claim("fig4-clusters-local", "draft Sec. 4",
          "data-driven clustering outperforms random clusters or even the local models (no clustering)",
          "best feature-cluster merge − local accuracy over K (points)", "clusters > local", (0.0, INF)),
    Claim("fig2-within-15", "draft Sec. 1, contribution 1",
          "there are settings where the merged model is within (above or below) 15% accuracy of the local models",
          "merged − local accuracy at the largest T, on the settings the draft names (CLIP (i), Sent140) (points)",
          "within ±15 points", (-0.15, 0.15), direction=0, note="'15%' read as accuracy points"),
    Claim("table3-clamu-above-tall", "draft Sec. 5, Table 3",
          "with localization, ClAMU stays above TALL as tasks are unlearned (80.0 vs 64.0 … 82.0 vs 73.0 on Reddit)",
          "ClAMU − TALL accuracy on the remaining tasks, mean over the checkpoints before the last (points)",
          "+13.8 points (16.0, 16.0, 14.6, 13.4, 9.0)", (0.09, INF),
          note="the band starts at the paper's smallest gap before the last checkpoint (+9.0 at 495 unlearned)"),
    Claim("table3-clustered-rises", "draft Sec. 5, Table 3",
          "ClAMU with 20 clusters rises on the remaining tasks as tasks are unlearned (70.3 → 82.6 on Reddit)",
          "clustered ClAMU accuracy on the remaining tasks at the last checkpoint − at 0% (points)", "+12.3 points",
          (0.123, INF)),
    Claim("table3-parallel-2x", "draft Sec. 5",
          "unlearning with localization takes 2× the parallel steps of merging alone (retrain, then relearn the masks)",
          "parallel steps the system executes to unlearn one task with ClAMU ÷ with merging alone",
          "2×", (1.9, 2.1), direction=0, null=1.0, unit="ratio",
          note="executed steps are counted as the system runs them: every seed gives the same value, so this "
               "checks the implementation against the draft's counting, not a random effect"),
    Claim("table4-head-localization", "draft App., Table 4",
          "Reddit: the LM head's lead over the CLS head becomes even more apparent with localization",
          "(label-name − CLS head accuracy with ClAMU) − (the same with the cluster merge alone) (points)",
          "larger with localization", (0.0, INF),
          note="the label-name head is this kit's analog of the LM head"),
)


#: where the paper measured each claim: its setting, model and task count (draft Table 6 and the
#: section of the claim), shown beside the kit's setting and T in REPORT.md's summary
PAPER_AT: dict[str, str] = {
    "fig2-uniform": "CLIP (i): ViT-B-32, 1–500 tasks",
    "fig2-label-subsets": "CLIP (ii): ViT-B-32, 1–500 tasks",
    "fig2-reviews": "Sent140: GPT2, 1–500 tasks",
    "fig2-fortunes": "Reddit: GPT2, 1–500 tasks",
    "fig2-within-15": "CLIP (i), Sent140: 500 tasks",
    "fig4-features": "Reddit: GPT2, 500 tasks, K ∈ {4, 20, 100}",
    "fig4-clusters-local": "Reddit: GPT2, 500 tasks",
    "table1-recovery": "TOFU: GPT2-Small, 2–200 authors",
    "table1-clamu": "TOFU: GPT2-Small, 200 authors",
    "table1-degrades": "TOFU: GPT2-Small, 2–200 authors",
    "fig3-clamu": "CLIP (ii): ViT-B-32, 500 tasks",
    "fig3-clamu-local": "CLIP (ii): ViT-B-32, 500 tasks",
    "masks-storage-32x": "500 tasks",
    "fig5-clamu": "Reddit: GPT2, 500 tasks, K 4–100",
    "abstract-accuracy-storage": "the draft's settings, 500 tasks",
    "sift-accuracy": "final version's settings, up to 500 tasks",
    "sift-compute": "final version's settings, up to 500 tasks",
    "table2-sent140": "Sent140: GPT2, 500 tasks, 475 unlearned",
    "table2-clip-i": "CLIP (i): ViT-B-32, 500 tasks, 475 unlearned",
    "table3-tall": "Reddit: GPT2-XL, 500 tasks, 499 unlearned",
    "table3-clamu-above-tall": "Reddit: GPT2-XL, 500 tasks, 0–495 unlearned",
    "table3-clustered-rises": "Reddit: GPT2-XL, 500 tasks, 20 clusters, 499 unlearned",
    "table3-parallel-2x": "Reddit: GPT2-XL, 500 tasks",
    "table4-lm-head": "Reddit: GPT2, CLS vs LM head",
    "table4-head-localization": "Reddit: GPT2, CLS vs LM head",
    "table5-cls-head": "Sent140: GPT2, CLS vs LM head",
    "table5-clamu-equal": "Sent140: GPT2, CLS vs LM head",
}


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


def check(key: str, values: Sequence[float], label: str = "", detail: str = "",
          why: str | Sequence[tuple[bool, str]] = "") -> dict:
    """A report row: the claim ``key`` judged on ``values`` (one per seed). ``label`` narrows the
    claim (a setting, a K), ``detail`` lists the numbers behind the quantity. ``why`` is what a
    notebook measured about a claim that does not reproduce: a sentence, or (condition, sentence)
    pairs of which only those whose condition holds are kept (a reason is built from the row's
    own numbers, never a fixed sentence that could be false). :func:`reading` adds what the
    interval itself says. ``row["detectable"]`` is the interval's half-width: the smallest
    effect (from the null) that these seeds could have told from none."""
    c = claim(key)
    iv = t_interval(values, log=c.unit == "ratio")
    fmt, scale, suffix = _fmt(c)
    v = verdict(c, iv)
    if not isinstance(why, str):
        why = "; ".join(text for holds, text in why if holds)
    if v not in (REPRODUCES, NOT_JUDGED):
        why = "; ".join(x for x in (reading(c, iv), why) if x)
    return {"kind": "claim", "key": key, "claim": c.statement + (f" [{label}]" if label else ""),
            "source": c.source, "quantity": c.quantity, "paper": c.paper, "paper_at": PAPER_AT[key],
            "ours": iv.text(fmt, scale, suffix) + (f"; {detail}" if detail else ""),
            "interval": iv.as_dict(), "verdict": v, "why": why if v != REPRODUCES else "",
            "seeds": iv.n, "detectable": detectable(iv)}


def detectable(iv: Interval) -> float | None:
    """The smallest effect the interval could tell from none: its half-width (on the log scale,
    the factor ×/÷); None for one seed."""
    if iv.n < 2:
        return None
    return iv.factor if iv.log else iv.half_width


def reading(c: Claim, iv: Interval) -> str:
    """What the interval itself says about a claim that does not fully reproduce, from its own
    numbers: where the mean and the interval lie against the null and the band's edge L, and
    for an inconclusive claim whether an effect is present and the seeds that would settle it."""
    fmt, scale, suffix = _fmt(c)
    f = lambda x: f"{scale * x:{fmt}}{suffix}"  # noqa: E731
    ivs = f"[{f(iv.lo)}, {f(iv.hi)}]"
    v = verdict(c, iv)
    if c.direction == 0:
        a, b = c.band
        if v == DOES_NOT:
            return f"the interval {ivs} lies entirely outside the band [{f(a)}, {f(b)}]"
        side = a if iv.lo < a else b
        n = seeds_to_settle(iv, side)
        return (f"the interval {ivs} crosses the band's edge {f(side)} (mean {f(iv.mean)}); "
                + (f"about {n} seeds would settle it at this spread" if n else f"more than {MAX_SEEDS} seeds would be needed"))
    L, d = edge(c), c.direction
    present = (iv.lo - c.null) * d > 0 if d > 0 else (iv.hi - c.null) * d > 0
    if v == DIRECTION_ONLY:
        return (f"an effect in the paper's direction (interval {ivs} excludes {f(c.null)}), "
                f"but short of the band's {f(L)} (mean {f(iv.mean)})")
    if v == DOES_NOT:
        if ((iv.hi if d > 0 else iv.lo) - c.null) * d < 0:   # the whole interval on the other side
            return (f"the interval {ivs} lies entirely on the other side of {f(c.null)} (mean {f(iv.mean)}): "
                    f"the effect is opposite to the paper's")
        against = (iv.mean - c.null) * d < 0
        return (f"the interval {ivs} rules out the band's {f(L)} and still holds {f(c.null)} (no effect)"
                + ("; the mean points the other way" if against else ""))
    n = seeds_to_settle(iv, L)
    settle = f"about {n} seeds would settle it at this spread" if n else f"more than {MAX_SEEDS} seeds would be needed"
    if L == c.null:   # a direction without a size: the band's edge is the null itself
        way = "the paper's way" if (iv.mean - c.null) * d > 0 else "the other way"
        return (f"the interval {ivs} holds {f(c.null)} (mean {f(iv.mean)}, pointing {way}): neither an effect "
                f"nor its absence is established; {settle}")
    where = "inside the band" if (iv.mean - L) * d >= 0 else f"short of the band's {f(L)}"
    return (f"the interval {ivs} still holds the band's {f(L)} (mean {f(iv.mean)}, {where}); "
            + ("an effect is present" if present else f"no effect is excluded either ({f(c.null)} is inside)")
            + "; " + settle)


def measurement(title: str, values: Sequence[float], detail: str = "", fmt: str = ".3f", log: bool = False) -> dict:
    """A measured quantity with its interval and no paper claim (a control gap, a ratio; ``log``:
    the interval over log values, for ratios)."""
    iv = t_interval(values, log=log)
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
    # rows written before the four outcomes (no "seeds" field) were judged by the three-verdict rule
    want = verdict(claim(row["key"]), iv) if "seeds" in row else _three_verdicts(claim(row["key"]), iv)
    if v != want:
        raise ValueError(f"claim row {row['claim']!r}: verdict {v!r}, but its interval gives {want!r}")


def _three_verdicts(c: Claim, iv: Interval) -> str:
    """The rule of rows written before :data:`INCONCLUSIVE` existed: reproduces / direction only
    (the null excluded, the band not reached) / does not reproduce (the null included, or the
    band missed for an equivalence claim)."""
    if iv.n < 2:
        return NOT_JUDGED
    lo, hi = c.band
    if c.direction == 0:
        return REPRODUCES if lo <= iv.lo and iv.hi <= hi else DOES_NOT
    if c.direction == 1:
        return REPRODUCES if iv.lo >= lo else DIRECTION_ONLY if iv.lo > c.null else DOES_NOT
    return REPRODUCES if iv.hi <= hi else DIRECTION_ONLY if iv.hi < c.null else DOES_NOT


def summary(rows: Sequence[dict]) -> list[dict]:
    """The claim rows only, for the one-screen summary at the top of REPORT.md."""
    return [r for r in rows if r.get("kind") == "claim"]
