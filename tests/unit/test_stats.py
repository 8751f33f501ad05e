"""Comparison statistics against scipy / statsmodels, and the verdict on constructed
prediction sets."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

from headstart.evaluation.stats import (
    HELPS,
    NEGATIVE,
    NO_DIFFERENCE,
    Cell,
    mcnemar,
    mean_ci,
    summarise,
)


@pytest.mark.parametrize("values", [[0.8, 0.82, 0.79], [0.5, 0.7], [0.91, 0.93, 0.9, 0.95, 0.88]])
@pytest.mark.parametrize("confidence", [0.9, 0.95])
def test_mean_ci_matches_scipy_t_interval(values, confidence):
    got = mean_ci(values, confidence)
    lo, hi = sps.t.interval(confidence, len(values) - 1, loc=np.mean(values), scale=sps.sem(values))
    assert got["n"] == len(values)
    assert got["mean"] == pytest.approx(np.mean(values))
    assert got["std"] == pytest.approx(np.std(values, ddof=1))
    assert got["ci_low"] == pytest.approx(lo)
    assert got["ci_high"] == pytest.approx(hi)


def test_mean_ci_of_one_value_has_no_interval():
    got = mean_ci([0.7])
    assert got["mean"] == 0.7 and got["ci_low"] is None and got["std"] is None
    assert mean_ci([])["mean"] is None


def _pairs(b: int, c: int, both_right: int = 30, both_wrong: int = 10):
    """Correctness of A and B with b examples only A got right and c only B got right."""
    a = [True] * both_right + [False] * both_wrong + [True] * b + [False] * c
    bb = [True] * both_right + [False] * both_wrong + [False] * b + [True] * c
    return np.array(a), np.array(bb)


@pytest.mark.parametrize("b,c", [(3, 9), (0, 7), (10, 10), (12, 1), (40, 20), (100, 130)])
def test_mcnemar_matches_statsmodels(b, c):
    a, bb = _pairs(b, c)
    got = mcnemar(a, bb)
    assert (got["b"], got["c"]) == (b, c)
    exact = b + c < 25
    table = [[30, b], [c, 10]]
    ref = sm_mcnemar(table, exact=exact, correction=True)
    assert got["exact"] is exact
    assert got["statistic"] == pytest.approx(ref.statistic)
    assert got["p_value"] == pytest.approx(ref.pvalue)


def test_mcnemar_without_disagreement_is_p_one():
    a = np.array([True, False, True])
    assert mcnemar(a, a)["p_value"] == 1.0
    with pytest.raises(ValueError):
        mcnemar(a, a[:2])


N_TEST = 400


def _cells(strategy: str, accuracies: list[float], budget: int = 10, seed0: int = 0):
    """Cells whose test correctness vectors have the given accuracies; the first
    examples are the ones got right, so a better model is right wherever a worse one is."""
    out = []
    for i, acc in enumerate(accuracies):
        correct = np.zeros(N_TEST, dtype=bool)
        correct[: round(acc * N_TEST)] = True
        out.append(Cell(strategy, budget, seed0 + i, acc, acc, correct))
    return out


def test_verdict_transfer_helps():
    cells = _cells("scratch", [0.50, 0.52, 0.48]) + _cells("lp-ft", [0.80, 0.81, 0.79])
    cells += _cells("linear-probe", [0.70, 0.72, 0.71])
    v = summarise(cells)["budgets"]["10"]["verdict"]
    assert v["verdict"] == HELPS
    assert v["best"] == "lp-ft"
    assert v["gain"] == pytest.approx(0.30)
    assert "helps by +30.0 points" in v["text"]


def test_verdict_no_significant_difference():
    # one extra right answer in 400: McNemar cannot tell them apart
    cells = _cells("scratch", [0.800, 0.800]) + _cells("finetune", [0.8025, 0.800])
    v = summarise(cells)["budgets"]["10"]["verdict"]
    assert v["verdict"] == NO_DIFFERENCE
    assert v["p_value"] > 0.05


def test_verdict_negative_transfer():
    cells = _cells("scratch", [0.90, 0.91, 0.89]) + _cells("finetune", [0.60, 0.62, 0.61])
    cells += _cells("linear-probe", [0.55, 0.56, 0.57])
    summary = summarise(cells)
    v = summary["budgets"]["10"]["verdict"]
    assert v["verdict"] == NEGATIVE
    assert v["best"] == "finetune"
    gain = summary["budgets"]["10"]["gain_over_baseline"]["finetune"]
    assert gain["accuracy_gain"]["ci_high"] < 0
    assert gain["mcnemar_max_p"] < 1e-6 and gain["same_sign"]


def test_summary_per_budget_pairs_only_shared_seeds():
    cells = _cells("scratch", [0.5, 0.5], budget=50) + _cells("lp-ft", [0.9], budget=50)
    cells += _cells("lp-ft", [0.9, 0.9], budget=10) + _cells("scratch", [0.6, 0.6], budget=10)
    s = summarise(cells)
    assert list(s["budgets"]) == ["10", "50"]
    assert s["budgets"]["50"]["gain_over_baseline"]["lp-ft"]["seeds"] == [0]
    assert s["budgets"]["50"]["strategies"]["scratch"]["accuracy"]["n"] == 2
    # McNemar per seed, on that seed's pairs: 400 each, never pooled across seeds
    g = s["budgets"]["10"]["gain_over_baseline"]["lp-ft"]
    assert [m["b"] + m["c"] for m in g["mcnemar_per_seed"]] == [round(0.3 * N_TEST)] * 2
    assert g["mcnemar_max_p"] == max(m["p_value"] for m in g["mcnemar_per_seed"])


def test_one_weak_seed_or_a_sign_flip_is_no_significant_difference():
    # two seeds clearly better, one seed equal: not significant in every seed
    cells = _cells("scratch", [0.5, 0.5, 0.5]) + _cells("lp-ft", [0.8, 0.8, 0.5])
    assert summarise(cells)["budgets"]["10"]["verdict"]["verdict"] == NO_DIFFERENCE
    # significant both ways: better in one seed, worse in the other
    cells = _cells("scratch", [0.5, 0.8]) + _cells("lp-ft", [0.8, 0.5])
    assert summarise(cells)["budgets"]["10"]["verdict"]["verdict"] == NO_DIFFERENCE


def test_bonferroni_over_the_strategies_the_best_was_picked_from():
    # p just under 0.05 in every seed: enough for one strategy, not for the best of three
    base = _cells("scratch", [0.5, 0.5])
    one = _cells("lp-ft", [0.5 + 9 / N_TEST] * 2)  # b + c = 9, all for lp-ft: p = 0.0039
    p = summarise(base + one)["budgets"]["10"]["gain_over_baseline"]["lp-ft"]["mcnemar_max_p"]
    assert p < 0.05 / 3
    assert summarise(base + one)["budgets"]["10"]["verdict"]["verdict"] == HELPS
    six = _cells("lp-ft", [0.5 + 6 / N_TEST] * 2)  # p = 0.031: < 0.05, > 0.05 / 3
    others = _cells("finetune", [0.5] * 2) + _cells("gradual", [0.5] * 2)
    v = summarise(base + six + others)["budgets"]["10"]["verdict"]
    assert v["best"] == "lp-ft" and v["verdict"] == NO_DIFFERENCE
    assert v["alpha_corrected"] == pytest.approx(0.05 / 3)


def test_no_baseline_means_no_verdict():
    s = summarise(_cells("lp-ft", [0.9, 0.8]))
    assert s["budgets"]["10"]["verdict"]["verdict"] is None
