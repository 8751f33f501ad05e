"""N-way K-shot episodes (Vinyals et al. 2016) and their evaluation with a confidence
interval.

An episode draws ``ways`` classes, then ``shots`` support and ``queries`` query examples of
each, all distinct: no example is ever in both the support and the query set of an
episode. The accuracy of many episodes is reported as the mean with a 95 % Student-t
confidence interval, the usual way few-shot results are given.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from headstart.errors import DataError
from headstart.heads.prototypes import class_means, nearest_prototype
from headstart.intervals import mean_ci as stats_mean_ci


@dataclass(frozen=True)
class Episode:
    """Indices into the dataset: ``support[i]`` and ``query[i]`` are of ``classes[i]``."""

    classes: np.ndarray
    support: np.ndarray  # (ways, shots)
    query: np.ndarray  # (ways, queries)

    @property
    def support_labels(self) -> np.ndarray:
        """The episode's class (0..ways-1) of each support example, flattened."""
        return np.repeat(np.arange(len(self.classes)), self.support.shape[1])

    @property
    def query_labels(self) -> np.ndarray:
        """The episode's class (0..ways-1) of each query example, flattened."""
        return np.repeat(np.arange(len(self.classes)), self.query.shape[1])

    def accuracy(self, predicted: np.ndarray) -> float:
        """The fraction of queries whose predicted episode class is right."""
        return float(np.mean(np.asarray(predicted) == self.query_labels))


def sample_episodes(
    labels: np.ndarray,
    ways: int,
    shots: int,
    queries: int = 15,
    episodes: int = 600,
    seed: int = 0,
    classes: list[int] | None = None,
) -> list[Episode]:
    """``episodes`` seeded episodes over ``classes`` (default: every class present)."""
    labels = np.asarray(labels)
    pool = sorted(set(labels[labels >= 0].tolist())) if classes is None else list(classes)
    if ways < 2 or shots < 1 or queries < 1 or episodes < 1:
        raise DataError(
            "ways >= 2, shots >= 1, queries >= 1 and episodes >= 1",
            f"ways {ways}, shots {shots}, queries {queries}, episodes {episodes}",
            "e.g. --ways 5 --shots 1,5",
        )
    if len(pool) < ways:
        raise DataError(
            f"at least {ways} classes for {ways}-way episodes",
            f"{len(pool)} classes",
            "ask for fewer ways or use data with more classes",
        )
    members = {c: np.flatnonzero(labels == c) for c in pool}
    short = [f"{c} ({len(m)})" for c, m in members.items() if len(m) < shots + queries]
    if short:
        raise DataError(
            f"at least {shots + queries} examples ({shots} support + {queries} query) in "
            "every class",
            "fewer in class(es) " + ", ".join(short),
            "ask for fewer shots or queries, or leave those classes out",
        )
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(episodes):
        chosen = rng.choice(pool, size=ways, replace=False)
        picks = np.stack(
            [rng.choice(members[c], size=shots + queries, replace=False) for c in chosen]
        )
        out.append(Episode(np.asarray(chosen), picks[:, :shots], picks[:, shots:]))
    return out


def episode_accuracy(embeddings: np.ndarray, episode: Episode) -> float:
    """Query accuracy of the nearest prototype (cosine) built from the support set."""
    ways = len(episode.classes)
    prototypes = class_means(embeddings[episode.support.reshape(-1)], episode.support_labels, ways)
    return episode.accuracy(nearest_prototype(embeddings[episode.query.reshape(-1)], prototypes))


def mean_ci(values: list[float] | np.ndarray, confidence: float = 0.95) -> dict[str, float]:
    """Mean and the half-width of its Student-t confidence interval (``ci95``)."""
    summary = stats_mean_ci(list(np.asarray(values, dtype=np.float64)), confidence)
    half = np.nan if summary["ci_high"] is None else summary["ci_high"] - summary["mean"]
    return {"mean": float(summary["mean"]), "ci95": float(half), "n": int(summary["n"])}


def evaluate_episodes(
    embeddings: np.ndarray, labels: np.ndarray, ways: int, shots: int, **kwargs: object
) -> dict[str, float]:
    """Mean query accuracy over episodes with its 95 % confidence interval."""
    episodes = sample_episodes(labels, ways, shots, **kwargs)  # type: ignore[arg-type]
    return mean_ci([episode_accuracy(np.asarray(embeddings), e) for e in episodes])
