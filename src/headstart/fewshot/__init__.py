"""Few-, one- and zero-shot learning: N-way K-shot episodes and their evaluation."""

from headstart.fewshot.episodes import Episode, evaluate_episodes, sample_episodes

__all__ = ["Episode", "evaluate_episodes", "sample_episodes"]
