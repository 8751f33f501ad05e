"""Which adaptation to keep, decided without target labels, and when to keep none.

Every label-free criterion can be fooled, and the benchmark (benchmarks/adapt_results.md)
shows how: the soft neighbourhood density (SND) is highest for a model that collapsed onto
one class; the deep embedded validation risk (DEV) has importance weights that degenerate
when the domains are separable (most of the shifted pairs: proxy A-distance near 2), so it
swings by an order of magnitude between seeds of one method; the information maximisation
score (infomax: the entropy of the mean target prediction minus the mean entropy) rewards
confident predictions, so a method that trains on its own confident target predictions
(self-training, FixMatch) raises it whether or not it is right. So the recommendation is
conservative. A method is recommended over source-only only when, in every seed, against
that seed's source-only run:

- its **infomax** is higher by at least ``INFOMAX_GAIN`` (relative) and ``INFOMAX_MARGIN``
  nats: its target predictions are both more confident and more evenly spread;
- its **source validation accuracy** is not lower by more than ``SOURCE_TOLERANCE`` (a
  method that lost the source task is not trusted on the target; the tolerance is wide
  because a small validation split is noisy);
- and, for a method that optimises its own target confidence (``confident`` below), whose
  infomax is no evidence, its **DEV risk** is lower by at least ``DEV_MARGIN`` (relative).

Among the methods that pass, the one with the largest mean infomax gain is recommended;
when none passes, source-only is, and the sentence names the method that came closest.
The confidence says how much evidence there was: every seed with at least twice the
margin and three seeds or more is "high", one seed is "low", anything between "moderate".
SND is reported beside them but not used: it cannot tell a good model from a collapsed one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

BASELINE = "source-only"
INFOMAX_GAIN = 0.10
INFOMAX_MARGIN = 0.05
SOURCE_TOLERANCE = 0.10
DEV_MARGIN = 0.20


def beats(row: dict[str, Any], base: dict[str, Any], confident: bool = False) -> dict[str, bool]:
    """For each criterion of the recommendation: is ``row`` better than ``base`` (by its
    margin)? ``confident``: the method optimises its own target confidence."""
    im, im0 = row["target_infomax"], base["target_infomax"]
    out = {
        "infomax": im >= im0 + max(INFOMAX_MARGIN, INFOMAX_GAIN * abs(im0)),
        "source-val": row["source_val_accuracy"] >= base["source_val_accuracy"] - SOURCE_TOLERANCE,
    }
    if confident:
        out["dev"] = row["dev_risk"] < base["dev_risk"] - DEV_MARGIN * abs(base["dev_risk"])
    return out


def recommend(runs: list[dict[str, Any]], confident: Iterable[str] = ()) -> dict[str, Any]:
    """The recommendation over ``runs`` (rows with ``seed``, ``method`` and the label-free
    scores, ``target_infomax`` included; ``confident``: the methods that optimise their own
    target confidence): a dict with the method, the criterion, the confidence, how many
    seeds each method passed in and one sentence."""
    confident = set(confident)
    seeds = sorted({r["seed"] for r in runs})
    by = {(r["seed"], r["method"]): r for r in runs}
    methods = [m for m in dict.fromkeys(r["method"] for r in runs) if m != BASELINE]
    passed: dict[str, int] = {}
    strong: dict[str, int] = {}
    gains: dict[str, float] = {}
    for m in methods:
        n = k = 0
        gain = []
        for seed in seeds:
            if (seed, m) not in by or (seed, BASELINE) not in by:
                continue
            row, base = by[(seed, m)], by[(seed, BASELINE)]
            ok = all(beats(row, base, m in confident).values())
            n += int(ok)
            margin = max(INFOMAX_MARGIN, INFOMAX_GAIN * abs(base["target_infomax"]))
            gain.append(row["target_infomax"] - base["target_infomax"])
            k += int(ok and gain[-1] >= 2 * margin)
        passed[m], strong[m] = n, k
        gains[m] = float(np.mean(gain)) if gain else float("-inf")
    every = [m for m in methods if passed[m] == len(seeds)]
    out: dict[str, Any] = {"seeds": len(seeds), "passed": passed}

    def val(m: str) -> float:
        return float(np.mean([by[(s, m)]["source_val_accuracy"] for s in seeds if (s, m) in by]))

    if every:
        pick = max(every, key=lambda m: gains[m])
        n = len(seeds)
        confidence = "high" if n >= 3 and strong[pick] == n else "moderate"
        if n == 1:
            confidence = "low"
        evidence = "infomax" + (" and DEV" if pick in confident else "")
        out.update(
            method=pick,
            criterion=f"{evidence} over source-only in every seed, source accuracy kept",
            confidence=confidence,
            sentence=(
                f"Recommended: {pick}, by {evidence}: in {n} of {n} seeds its target "
                f"predictions were more confident and more evenly spread than source-only's "
                f"(infomax +{gains[pick]:.2f} nats on average) and it kept the source task "
                f"(validation accuracy {val(pick):.3f} vs {val(BASELINE):.3f}); confidence "
                f"{confidence}"
                + (" (one seed only: run more with --seeds)" if n == 1 else "")
                + "."
            ),
        )
        return out
    closest = max(methods, key=lambda m: (passed[m], gains[m]), default=None)
    near = (
        f" The closest was {closest}, which passed in {passed[closest]} of {len(seeds)} seeds."
        if closest is not None and passed[closest]
        else ""
    )
    out.update(
        method=BASELINE,
        criterion="no method better than source-only under the label-free criteria in every seed",
        confidence="high" if not any(passed.values()) else "moderate",
        sentence=(
            "Recommended: source-only (keep the model trained on the source): no method made "
            "the target predictions clearly more confident and evenly spread (infomax) while "
            "keeping the source task, in every seed, so adapting is not clearly better "
            f"here.{near}"
        ),
    )
    return out
