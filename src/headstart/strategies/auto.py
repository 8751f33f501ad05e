"""``--strategy auto``: the strategy chosen from the data, with the reason printed.

Measured on every bundled image and text set at 1 to 20 labels per class
(``benchmarks/bench_small_data.py``): a probe fitted on the frozen backbone's features is
at or above every fine-tuning strategy there, at a hundredth of the cost, and fine-tuning
from 10 labels per class moved test accuracy by -2 to +3 points from seed to seed. So:

- with one example in a class nothing can be cross-validated: ``prototypes`` for text
  encoders (trained to compare sentences by cosine: class means by cosine won at one
  label per class on both text sets), ``linear-probe`` for images;
- otherwise the cross-validated accuracy of the fitted probe is compared with the
  leave-one-out accuracy of nearest class means, and the better one is used (the probe
  on ties);
- from :data:`FINETUNE_MIN_PER_CLASS` labelled examples in every class, with a backbone
  that can be trained, and a probe that leaves room (cross-validated accuracy below
  :data:`PROBE_GOOD_ENOUGH`): ``lp-ft``, the probe followed by fine-tuning from it.
"""

from __future__ import annotations

from dataclasses import dataclass

from headstart.strategies.base import STRATEGIES, Strategy

#: fine-tuning is considered from this many labelled examples in every class
FINETUNE_MIN_PER_CLASS = 50
#: a probe this good is kept: fine-tuning has little room and costs minutes
PROBE_GOOD_ENOUGH = 0.97


@STRATEGIES.register(
    "auto",
    help="Chosen from the data: prototypes or linear-probe with few labels per class (by "
    "cross-validation), lp-ft from 50 per class where the probe leaves room; the choice "
    "and its reason are printed and saved in metrics.json.",
)
class Auto(Strategy):
    """A placeholder resolved by the pipeline into a concrete strategy before training."""

    name = "auto"
    phases = ("probe",)  # every candidate starts from the frozen backbone's features
    min_per_class = 1  # one labelled example per class is enough


@dataclass
class Choice:
    strategy: str
    reason: str
    per_class: int
    probe_cv_accuracy: float | None = None
    prototype_loo_accuracy: float | None = None

    def to_dict(self) -> dict[str, object]:
        return dict(vars(self))


def choose(
    per_class: int,
    modality: str,
    trainable_body: bool,
    probe_cv: float | None,
    prototype_loo: float | None,
) -> Choice:
    """The strategy for data whose smallest class has ``per_class`` labelled examples."""
    if per_class < 2 or probe_cv is None:
        if modality == "text":
            return Choice(
                "prototypes",
                f"{per_class} labelled example(s) in the smallest class: nothing to "
                "cross-validate; class means by cosine suit a sentence encoder",
                per_class,
            )
        return Choice(
            "linear-probe",
            f"{per_class} labelled example(s) in the smallest class: nothing to "
            "cross-validate; a strongly regularised probe on the frozen features",
            per_class,
        )
    scores = f"probe {probe_cv:.3f} cross-validated" + (
        f", class means {prototype_loo:.3f} leave-one-out" if prototype_loo is not None else ""
    )
    if per_class >= FINETUNE_MIN_PER_CLASS and trainable_body and probe_cv < PROBE_GOOD_ENOUGH:
        return Choice(
            "lp-ft",
            f"{per_class} labelled examples per class (>= {FINETUNE_MIN_PER_CLASS}) and a "
            f"probe below {PROBE_GOOD_ENOUGH} ({scores}): fine-tune from the probe",
            per_class,
            probe_cv,
            prototype_loo,
        )
    if prototype_loo is not None and prototype_loo > probe_cv:
        return Choice(
            "prototypes",
            f"class means beat the probe on the labelled examples ({scores})",
            per_class,
            probe_cv,
            prototype_loo,
        )
    why = (
        f"fewer than {FINETUNE_MIN_PER_CLASS} labelled examples per class"
        if per_class < FINETUNE_MIN_PER_CLASS
        else "fine-tuning has little room"
        if trainable_body
        else "the backbone cannot be trained"
    )
    return Choice(
        "linear-probe",
        f"{why}; the probe is at least as good as class means ({scores})",
        per_class,
        probe_cv,
        prototype_loo,
    )


def is_auto(strategy: Strategy) -> bool:
    return isinstance(strategy, Auto)
