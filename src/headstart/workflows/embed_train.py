"""``headstart embed-train``: word vectors for a domain, from an unlabelled corpus and
pretrained vectors (gensim's word2vec or fastText), written as a vectors folder that
``headstart fit DATA --backbone OUT`` uses.

The words the pretrained vectors have keep their vectors (``--keep frozen``) or move a
little (``--keep slow``, at most ``--max-shift`` of their length); the corpus's own words
are learned in the same space. How, and how gensim's lock factors enforce it:
:mod:`headstart.backbones.vectors_train`.
"""

from __future__ import annotations

import dataclasses
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from headstart.backbones.catalog import entry_for
from headstart.backbones.vectors_io import TENSORS_FILE, VOCAB_FILE, WordVectors
from headstart.backbones.vectors_train import TrainSettings, require_gensim, train_vectors
from headstart.backbones.word_vectors import WordVectorsFamily
from headstart.config import BackboneConfig, EmbedTrainConfig
from headstart.data import read_corpus
from headstart.errors import BackboneError, DataError, RunFolderError
from headstart.storage import LOCK_NAME, locked, replaced_folder


@dataclass
class EmbedTrainResult:
    """What ``embed_train`` wrote: the folder, the vectors and their ``info``."""

    out: Path
    vectors: WordVectors
    domain_words: list[str]

    @property
    def info(self) -> dict[str, Any]:
        return self.vectors.info


@locked("word vectors")
def embed_train(
    corpus: str | Path | Sequence[str],
    out: str | Path,
    cfg: EmbedTrainConfig | None = None,
    console: Console | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> EmbedTrainResult:
    """Train word vectors on ``corpus`` (a ``.txt`` file, a table, a bundled text dataset,
    or a list of texts) starting from ``cfg.init``, and write them to the folder ``out``."""
    t0 = time.perf_counter()
    cfg = cfg or EmbedTrainConfig()
    console = console or Console()
    out = Path(out).expanduser().absolute()
    _check_out(out, overwrite)
    require_gensim()
    texts, name = _corpus_texts(corpus, cfg)
    init, digest = _load_init(cfg.init)
    settings = TrainSettings(
        **{f.name: getattr(cfg, f.name) for f in dataclasses.fields(TrainSettings)}
    )
    console.print(
        f"[bold]embed-train[/] {cfg.model} on {escape(name)} ({len(texts):,} documents), "
        f"from {escape(cfg.init)} ({len(init.words):,} words, {init.dim}-d)",
        highlight=False,
    )
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=console, transient=True, disable=not progress) as bar:
        task = bar.add_task("epochs", total=cfg.epochs)
        trained = train_vectors(init, texts, settings, on_epoch=lambda _: bar.advance(task))
    vectors, stats = trained.vectors, trained.stats
    vectors.info = {
        "made_by": "headstart embed-train",
        "init": cfg.init,
        "init_sha256": digest,
        "corpus": name,
        "model": cfg.model,
        "epochs": cfg.epochs,
        "window": cfg.window,
        "min_count": cfg.min_count,
        "keep": cfg.keep,
        "max_shift": cfg.max_shift,
        "seed": cfg.seed,
        "workers": cfg.workers,
        **stats,
        "seconds": time.perf_counter() - t0,
    }
    with replaced_folder(out) as tmp:  # a kill leaves the old folder or the new one
        vectors.save(tmp)
    _summary(vectors.info, trained.domain_words, out, console)
    return EmbedTrainResult(out, vectors, trained.domain_words)


def _check_out(out: Path, overwrite: bool) -> None:
    """``out`` is new, empty, or holds earlier vectors (replaced only with ``overwrite``):
    the folder is replaced as a whole, so nothing else may be in it."""
    ours = {VOCAB_FILE, TENSORS_FILE}
    names = {p.name for p in out.iterdir()} - {LOCK_NAME}
    names = {n for n in names if not (n.startswith(".") and n.endswith(".tmp"))}
    others = sorted(names - ours)
    if others:
        raise RunFolderError(
            "an --out folder for the word vectors alone (new, empty, or written by "
            "embed-train): it is replaced as a whole",
            f"{out} holding {', '.join(others[:5])}" + (" ..." if len(others) > 5 else ""),
            "pass another --out, a new folder",
        )
    if names and not overwrite:
        raise RunFolderError(
            "a new or empty --out folder",
            f"word vectors already in {out}",
            "pass --overwrite to replace them, or another --out",
        )


def _corpus_texts(
    corpus: str | Path | Sequence[str], cfg: EmbedTrainConfig
) -> tuple[list[str], str]:
    if isinstance(corpus, str | Path):
        samples = read_corpus(corpus, cfg.text_cols)
        return list(samples.texts), samples.name
    texts = [str(t) for t in corpus if str(t).strip()]
    if not texts:
        raise DataError(
            "a corpus with at least one non-empty document",
            f"{len(corpus)} texts, all empty",
            "pass the texts of your domain",
        )
    return texts, "texts"


def _load_init(name: str) -> tuple[WordVectors, str | None]:
    """The init vectors ``name`` names, and their sha256 (None for the toy vectors)."""
    family = WordVectorsFamily()
    if not family.claims_name(name):
        entry = entry_for(name)  # an unknown name: the error with suggestions
        if entry.kind != "vectors":
            raise BackboneError(
                "word vectors to start from (--init)",
                f"{name}, a {entry.modality} backbone that is not word vectors",
                "pass --init glove-6b-50d, a word2vec / fastText / GloVe file, or a vectors folder",
            )
    return family.load(BackboneConfig(name=name))


def _summary(info: dict[str, Any], domain: list[str], out: Path, console: Console) -> None:
    shown = escape(", ".join(domain[:8]) + (", ..." if len(domain) > 8 else ""))
    kept = (
        "frozen"
        if info["keep"] == "frozen"
        else f"moved at most {info['max_shift']:g} of their length"
    )
    console.print(
        f"[bold green]embed-train[/] {info['model']}: "
        f"{info['shared_words']:,} words shared with {escape(info['init'])} ({kept}), "
        f"{info['domain_words']:,} domain words learned (seen {info['min_count']}+ times)"
        + (f": {shown}" if domain else ""),
        highlight=False,
    )
    console.print(
        f"  OOV token rate of the corpus: {100 * info['oov_token_rate_before']:.2f}% -> "
        f"{100 * info['oov_token_rate_after']:.2f}%; {info['seconds']:.1f} s; "
        f"vectors in {escape(str(out))}",
        highlight=False,
    )
    console.print(
        f"next: headstart fit DATA --backbone {escape(shlex.quote(str(out)))}",
        highlight=False,
        soft_wrap=True,
    )
