"""Which adaptation to keep, decided without target labels, and when to keep none.

Every label-free criterion can be fooled: a model that collapses onto a few confident
classes has a low entropy and a high neighbourhood density, a model that forgets the
source task can still look well spread over the target, and importance weights are noisy
when the domains barely overlap. So no single criterion decides. A method is recommended
over source-only only when, in every seed, it is better than that seed's source-only run
under *all* of these at once, each by a margin:

- ``dev``: deep embedded validation (You et al. 2019), the importance-weighted source
  validation loss, an estimate of the target risk: lower by at least ``DEV_MARGIN``
  (relative);
- ``snd``: soft neighbourhood density of the target predictions (Saito et al. 2021):
  higher;
- ``infomax``: the entropy of the mean target prediction minus the mean entropy (spread
  over the classes and confident): higher by at least ``INFOMAX_MARGIN`` nats;
- ``source-val``: the source validation accuracy not lower by more than
  ``SOURCE_TOLERANCE`` (a method that loses the source task is not trusted on the target).

Among the methods that pass in every seed, the one with the lowest mean DEV risk is
recommended; when none passes, source-only is, and the sentence says which method came
closest. The confidence says how much evidence there was: the number of seeds, and how
far the pick's DEV risk was below source-only's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

BASELINE = "source-only"
DEV_MARGIN = 0.05
INFOMAX_MARGIN = 0.01
SOURCE_TOLERANCE = 0.05

#: the criteria of the recommendation: (key of a run's row, higher is better)
RECOMMENDATION_CRITERIA: dict[str, tuple[str, bool]] = {
    "dev": ("dev_risk", False),
    "snd": ("target_snd", True),
    "infomax": ("target_infomax", True),
    "source-val": ("source_val_accuracy", True),
}


def beats(row: dict[str, Any], base: dict[str, Any]) -> dict[str, bool]:
    """For each criterion: is ``row`` better than ``base`` by its margin?"""
    return {
        "dev": row["dev_risk"] < base["dev_risk"] * (1.0 - DEV_MARGIN),
        "snd": row["target_snd"] > base["target_snd"],
        "infomax": row["target_infomax"] > base["target_infomax"] + INFOMAX_MARGIN,
        "source-val": row["source_val_accuracy"] >= base["source_val_accuracy"] - SOURCE_TOLERANCE,
    }


def recommend(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The recommendation over ``runs`` (rows with ``seed``, ``method`` and the label-free
    scores; ``target_infomax`` included): a dict with the method, the criterion, the
    confidence, the per-method seed counts and one sentence."""
    seeds = sorted({r["seed"] for r in runs})
    by = {(r["seed"], r["method"]): r for r in runs}
    methods = [m for m in dict.fromkeys(r["method"] for r in runs) if m != BASELINE]
    passed: dict[str, int] = {}
    detail: dict[str, dict[str, int]] = {}
    for m in methods:
        counts = dict.fromkeys(RECOMMENDATION_CRITERIA, 0)
        n = 0
        for seed in seeds:
            if (seed, m) not in by or (seed, BASELINE) not in by:
                continue
            verdict = beats(by[(seed, m)], by[(seed, BASELINE)])
            for k, ok in verdict.items():
                counts[k] += int(ok)
            n += int(all(verdict.values()))
        passed[m], detail[m] = n, counts
    every = [m for m in methods if passed[m] == len(seeds)]

    def mean_dev(m: str) -> float:
        return float(np.mean([by[(s, m)]["dev_risk"] for s in seeds if (s, m) in by]))

    base_dev = mean_dev(BASELINE)
    out: dict[str, Any] = {"seeds": len(seeds), "passed": passed, "criteria": detail}
    if every:
        pick = min(every, key=mean_dev)
        gain = 1.0 - mean_dev(pick) / base_dev if base_dev > 0 else 0.0
        confidence = "high" if len(seeds) >= 3 and gain >= 2 * DEV_MARGIN else "moderate"
        if len(seeds) == 1:
            confidence = "low"
        out.update(
            method=pick,
            criterion="dev+snd+infomax+source-val",
            confidence=confidence,
            sentence=(
                f"Recommended: {pick}. In {len(seeds)} of {len(seeds)} seeds it beat "
                f"source-only under every label-free criterion at once (DEV risk "
                f"{100 * gain:.0f}% lower, higher neighbourhood density and infomax, source "
                f"accuracy kept); confidence {confidence}"
                + (" (one seed only: run more with --seeds)" if len(seeds) == 1 else "")
                + "."
            ),
        )
        return out
    closest = max(methods, key=lambda m: (passed[m], -mean_dev(m)), default=None)
    near = (
        f" The closest was {closest}, better under all criteria in {passed[closest]} of "
        f"{len(seeds)} seeds."
        if closest is not None and passed[closest]
        else ""
    )
    out.update(
        method=BASELINE,
        criterion="no method better under every criterion in every seed",
        confidence="high" if not any(passed.values()) else "moderate",
        sentence=(
            "Recommended: source-only (keep the model trained on the source). No method "
            "was better than it under every label-free criterion (DEV, SND, infomax, source "
            f"accuracy) in every seed, so adapting is not clearly better here.{near}"
        ),
    )
    return out
