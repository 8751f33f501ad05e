"""The commands, each a thin orchestration over the stages: ``fit`` (one run, the one the
others build on), ``evaluate``, ``predict``, ``compare``, ``rank``, ``adapt``,
``fewshot``, ``zeroshot``, ``meta_train``, ``embed_train`` (word vectors for a domain)
and ``demo``; ``sweep`` is the one resumable grid of run folders that compare and adapt
(and later sweeps) share.

Nothing is imported here, so that a command loads only what it uses."""
