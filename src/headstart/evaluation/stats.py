"""Statistics for comparing strategies: confidence intervals over seeds, McNemar's test on
paired test predictions, the verdict on whether transfer helped, and the trade-off of
accuracy against forgetting and trainable parameters.

Written here rather than imported from statsmodels (not a dependency): each function is a
few lines of scipy, and the tests check them against statsmodels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from headstart.intervals import mean_ci

#: below this many discordant pairs McNemar's test uses the exact binomial distribution
EXACT_BELOW = 25
HELPS, NO_DIFFERENCE, NEGATIVE = "helps", "no significant difference", "negative transfer"


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, Any]:
    """McNemar's test of two classifiers on the same examples.

    ``b``: examples only A got right, ``c``: only B got right. With fewer than
    :data:`EXACT_BELOW` discordant pairs the exact two-sided binomial test (statistic
    min(b, c)), else the chi-square test with continuity correction,
    (|b - c| - 1)^2 / (b + c), on one degree of freedom."""
    a = np.asarray(correct_a, dtype=bool)
    b_ = np.asarray(correct_b, dtype=bool)
    if a.shape != b_.shape:
        raise ValueError(f"paired predictions of one shape, got {a.shape} and {b_.shape}")
    b = int((a & ~b_).sum())
    c = int((~a & b_).sum())
    n = b + c
    if n == 0:
        return {"b": b, "c": c, "exact": True, "statistic": 0.0, "p_value": 1.0}
    if n < EXACT_BELOW:
        p = min(1.0, 2.0 * float(stats.binom.cdf(min(b, c), n, 0.5)))
        return {"b": b, "c": c, "exact": True, "statistic": float(min(b, c)), "p_value": p}
    stat = (abs(b - c) - 1.0) ** 2 / n
    return {
        "b": b,
        "c": c,
        "exact": False,
        "statistic": float(stat),
        "p_value": float(stats.chi2.sf(stat, 1)),
    }


@dataclass
class Cell:
    """One trained model of a comparison: a strategy at a label budget and seed."""

    strategy: str
    budget: int
    seed: int
    accuracy: float
    macro_f1: float
    correct: np.ndarray  # per test example, in one fixed test order for every cell
    ece_before: float | None = None
    ece_after: float | None = None
    seconds: float = 0.0


def compare_to_baseline(
    cells: Sequence[Cell], strategy: str, baseline: str, budget: int, confidence: float = 0.95
) -> dict[str, Any] | None:
    """Gain of ``strategy`` over ``baseline`` at ``budget``, over the seeds both finished:
    the mean accuracy difference with its paired t interval (in accuracy, 0-1), and
    McNemar's test per seed on that seed's two models' predictions of the same test
    examples. Seeds are not pooled into one test: the same example seen once per seed is
    not an independent pair, and pooling would overstate significance."""
    by_seed = {(c.strategy, c.seed): c for c in cells if c.budget == budget}
    seeds = sorted(s for (name, s) in by_seed if name == strategy and (baseline, s) in by_seed)
    if not seeds:
        return None
    diffs = [by_seed[(strategy, s)].accuracy - by_seed[(baseline, s)].accuracy for s in seeds]
    f1_diffs = [by_seed[(strategy, s)].macro_f1 - by_seed[(baseline, s)].macro_f1 for s in seeds]
    tests = [mcnemar(by_seed[(baseline, s)].correct, by_seed[(strategy, s)].correct) for s in seeds]
    return {
        "seeds": seeds,
        "accuracy_gain": mean_ci(diffs, confidence),
        "macro_f1_gain": mean_ci(f1_diffs, confidence),
        "mcnemar_per_seed": tests,
        # the weakest evidence among the seeds: significant only if every seed is
        "mcnemar_max_p": max(t["p_value"] for t in tests),
        "same_sign": bool(all(d > 0 for d in diffs) or all(d < 0 for d in diffs)),
    }


def verdict(
    gains: dict[str, dict[str, Any] | None],
    alpha: float = 0.05,
) -> dict[str, Any]:
    """The plain answer for one label budget, from the best pretrained strategy (highest
    mean gain over the baseline). A difference is significant when McNemar's test rejects
    in every seed, at alpha divided by the number of pretrained strategies (Bonferroni:
    the best one was picked after seeing them all), and every seed's gain has the same
    sign. Then transfer *helps* by X points, or it is **negative transfer** (even the best
    pretrained strategy is worse than the baseline); otherwise there is no significant
    difference."""
    candidates = {s: g for s, g in gains.items() if g is not None}
    if not candidates:
        return {"verdict": None, "best": None, "text": "no pretrained strategy to compare"}
    best = max(candidates, key=lambda s: candidates[s]["accuracy_gain"]["mean"])
    g = candidates[best]
    gain = float(g["accuracy_gain"]["mean"])
    p = float(g["mcnemar_max_p"])
    level = alpha / len(candidates)
    significant = p < level and g["same_sign"]
    points = 100 * gain
    seeds = len(g["seeds"])
    where = f"{best}; McNemar p <= {p:.2g} in each of {seeds} seeds"
    if significant and gain > 0:
        kind, text = HELPS, f"transfer helps by {points:+.1f} points ({where})"
    elif significant and gain < 0:
        kind = NEGATIVE
        text = (
            f"negative transfer: the best pretrained strategy is {-points:.1f} points worse "
            f"than the baseline ({where})"
        )
    else:
        kind = NO_DIFFERENCE
        text = (
            f"no significant difference ({best} {points:+.1f} points; McNemar p up to "
            f"{p:.2g} over {seeds} seeds, needed < {level:.2g} in every seed)"
        )
    return {
        "verdict": kind,
        "best": best,
        "gain": gain,
        "p_value": p,
        "alpha_corrected": level,
        "text": text,
    }


def summarise(
    cells: Sequence[Cell],
    baseline: str = "scratch",
    alpha: float = 0.05,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Per label budget: each strategy's accuracy / macro-F1 / ECE over seeds (mean, std,
    confidence interval), each pretrained strategy's gain over ``baseline``, the verdict."""
    out: dict[str, Any] = {
        "baseline": baseline,
        "alpha": alpha,
        "confidence": confidence,
        "budgets": {},
    }
    for budget in sorted({c.budget for c in cells}):
        here = [c for c in cells if c.budget == budget]
        names = list(dict.fromkeys(c.strategy for c in here))
        per: dict[str, Any] = {}
        for s in names:
            mine = [c for c in here if c.strategy == s]
            per[s] = {
                "seeds": sorted(c.seed for c in mine),
                "accuracy": mean_ci([c.accuracy for c in mine], confidence),
                "macro_f1": mean_ci([c.macro_f1 for c in mine], confidence),
                "ece_before": mean_ci([_num(c.ece_before) for c in mine], confidence),
                "ece_after": mean_ci([_num(c.ece_after) for c in mine], confidence),
                "seconds": float(sum(c.seconds for c in mine)),
            }
        gains = {
            s: compare_to_baseline(cells, s, baseline, budget, confidence)
            for s in names
            if s != baseline
        }
        out["budgets"][str(budget)] = {
            "strategies": per,
            "gain_over_baseline": gains,
            "verdict": verdict(gains, alpha)
            if baseline in names
            else {"verdict": None, "best": None, "text": f"no {baseline} baseline finished"},
        }
    return out


def _num(v: float | None) -> float:
    return float("nan") if v is None else float(v)


#: the share of the source task a strategy must keep to be named by the trade-off verdict
KEEP_AT_LEAST = 0.9
_MEASURE_WORDS = {
    "top1_agreement": "source agreement",
    "similarity_retention": "similarity retention",
}


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """The names whose (accuracy, kept) no other point matches or beats in both with one
    strictly better (both higher is better), by accuracy, best first."""
    front = [
        name
        for name, (acc, kept) in points.items()
        if not any(
            a >= acc and k >= kept and (a > acc or k > kept)
            for other, (a, k) in points.items()
            if other != name
        )
    ]
    return sorted(front, key=lambda n: -points[n][0])


def tradeoff(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per label budget, accuracy against what each strategy keeps of the source task and
    its trainable parameters (means over seeds), the Pareto front of accuracy and kept,
    and a verdict naming the most accurate strategy that keeps at least
    :data:`KEEP_AT_LEAST`. ``rows``: one per cell, with ``strategy``, ``budget``,
    ``accuracy``, ``kept`` (None where not measured), ``measure`` and ``trainable``."""
    out: dict[str, Any] = {}
    for budget in sorted({int(r["budget"]) for r in rows}):
        here = [r for r in rows if int(r["budget"]) == budget]
        measure = next((r["measure"] for r in here if r.get("measure")), "top1_agreement")
        words = _MEASURE_WORDS.get(measure, measure)
        table = []
        for s in dict.fromkeys(r["strategy"] for r in here):
            mine = [r for r in here if r["strategy"] == s]
            kept = [float(r["kept"]) for r in mine if r.get("kept") is not None]
            trainable = [int(r["trainable"]) for r in mine if r.get("trainable") is not None]
            table.append(
                {
                    "strategy": s,
                    "accuracy": float(np.mean([r["accuracy"] for r in mine])),
                    "kept": float(np.mean(kept)) if kept else None,
                    "trainable": int(np.mean(trainable)) if trainable else None,
                    "seeds": len(mine),
                }
            )
        points = {t["strategy"]: (t["accuracy"], t["kept"]) for t in table if t["kept"] is not None}
        front = pareto_front(points)
        for t in table:
            t["pareto"] = t["strategy"] in front
        keeping = [t for t in table if t["kept"] is not None and t["kept"] >= KEEP_AT_LEAST]
        best = max(keeping, key=lambda t: t["accuracy"]) if keeping else None
        if best is not None:
            text = (
                f"best keeping at least {KEEP_AT_LEAST:.0%} {words}: {best['strategy']} "
                f"(accuracy {best['accuracy']:.4f}, {words} {best['kept']:.3f})"
            )
        elif points:
            closest = max(points, key=lambda n: points[n][1])
            text = (
                f"no strategy keeps {KEEP_AT_LEAST:.0%} {words}; the most faithful is "
                f"{closest} ({words} {points[closest][1]:.3f})"
            )
        else:
            text = "forgetting not measured (no source head or text encoder to check)"
        out[str(budget)] = {
            "measure": measure,
            "rows": table,
            "front": front,
            "best_keeping": best["strategy"] if best else None,
            "text": text,
        }
    return out
