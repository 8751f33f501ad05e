"""preflight: every bad file is listed with its reason; class problems are named."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from headstart.data import from_arrays, preflight, scan_image_folder
from headstart.errors import DataError, PreflightError


def _good(path: Path, value: int = 0, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (value, value, value)).save(path, fmt)
    return path


def _noise_bytes(fmt: str) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt)
    return buf.getvalue()


def _png_header_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture
def messy_folder(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """Two classes of 3 good images each plus one bad file of every kind."""
    root = tmp_path / "data"
    for name in ("cat", "dog"):
        for i in range(3):
            _good(root / name / f"{i}.png", value=40 * i)
    bad = {
        "cat/empty.jpg": "zero bytes",
        "cat/notes.png": "not an image (cannot identify image file)",
        "dog/cut.jpg": "truncated",
        "dog/cut.png": "truncated",
        "dog/bomb.png": "decompression bomb: 20000x20000 = 400000000 pixels is over the limit "
        "of 89478485 pixels",
    }
    (root / "cat/empty.jpg").write_bytes(b"")
    (root / "cat/notes.png").write_text("hello, I am text")
    (root / "dog/cut.jpg").write_bytes(_noise_bytes("JPEG")[:1500])
    png = _noise_bytes("PNG")
    (root / "dog/cut.png").write_bytes(png[: len(png) // 2])
    (root / "dog/bomb.png").write_bytes(_png_header_claiming(20000, 20000))
    (root / "dog/readme.txt").write_text("ignored: not an image extension")
    return root, bad


def test_preflight_lists_every_bad_file_with_reason(messy_folder: tuple[Path, dict]) -> None:
    root, bad = messy_folder
    samples = scan_image_folder(root)
    assert len(samples) == 11  # the .txt file is not an image candidate
    with pytest.raises(PreflightError) as info:
        preflight(samples, progress=False)
    err = info.value
    found = {str(Path(p).relative_to(root)): reason for p, reason in err.bad}
    assert set(found) == set(bad)
    for rel, reason in bad.items():
        assert found[rel].startswith(reason)
        assert f"{root / rel}: {found[rel]}" in str(err)  # one line per file in the message
    assert "--skip-bad" in err.fix


def test_skip_bad_drops_exactly_the_bad_files(messy_folder: tuple[Path, dict]) -> None:
    root, bad = messy_folder
    kept, report = preflight(scan_image_folder(root), skip_bad=True, progress=False)
    assert report.n_skipped == len(bad) == len(report.bad)
    assert report.n_checked == 11
    rel = [p.relative_to(root).as_posix() for p in kept.paths or []]
    assert rel == [f"{c}/{i}.png" for c in ("cat", "dog") for i in range(3)]
    assert report.class_counts == {"cat": 3, "dog": 3}
    assert kept.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert "5 bad skipped" in report.summary()
    kept.image(0)  # the kept samples load


def test_max_pixels_limit_is_applied(tmp_path: Path) -> None:
    for name in ("a", "b"):
        for i in range(2):
            _good(tmp_path / name / f"{i}.png")
    big = tmp_path / "a" / "big.png"
    Image.new("RGB", (100, 100)).save(big)
    with pytest.raises(PreflightError) as info:
        preflight(scan_image_folder(tmp_path), max_pixels=1000, progress=False)
    assert info.value.bad == [
        (str(big), "decompression bomb: 100x100 = 10000 pixels is over the limit of 1000 pixels")
    ]
    kept, report = preflight(scan_image_folder(tmp_path), progress=False)  # default limit
    assert report.n_skipped == 0 and len(kept) == 5


def _folder(root: Path, counts: dict[str, int]) -> Path:
    for name, n in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            _good(root / name / f"{i}.png")
    return root


def test_fewer_than_two_classes(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="at least 2 classes"):
        preflight(scan_image_folder(_folder(tmp_path, {"only": 4})), progress=False)


def test_empty_and_small_classes_are_all_named(tmp_path: Path) -> None:
    samples = scan_image_folder(_folder(tmp_path, {"cat": 3, "dog": 0, "eel": 1, "fox": 3}))
    assert samples.classes == ["cat", "dog", "eel", "fox"]  # empty class kept by the scan
    with pytest.raises(DataError) as info:
        preflight(samples, progress=False)
    message = str(info.value)
    assert "class 'dog' has no images" in message
    assert "class 'eel' has only 1 image" in message
    assert "cat" not in info.value.found and "fox" not in info.value.found
    assert "add images" in info.value.fix


def test_min_per_class_zero_allows_empty_classes(tmp_path: Path) -> None:
    samples = scan_image_folder(_folder(tmp_path, {"cat": 2, "dog": 0}))
    _, report = preflight(samples, min_per_class=0, progress=False)
    assert report.class_counts == {"cat": 2, "dog": 0}


def test_arrays_check_class_counts_only() -> None:
    X = np.zeros((5, 4, 4), dtype=np.uint8)
    kept, report = preflight(from_arrays(X, ["a", "a", "b", "b", "b"]))
    assert len(kept) == 5 and report.class_counts == {"a": 2, "b": 3} and report.n_checked == 5
    with pytest.raises(DataError, match="class 'a' has only 1 image"):
        preflight(from_arrays(X, ["a", "b", "b", "b", "b"]))
    _, unlabelled = preflight(from_arrays(X))  # unlabelled data has no class checks
    assert unlabelled.class_counts == {} and unlabelled.n_unlabelled == 5


def test_preflight_of_many_files_is_quick(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    data = _noise_bytes("PNG")
    for i in range(300):
        (tmp_path / "ab"[i % 2] / f"{i}.png").write_bytes(data)
    kept, report = preflight(scan_image_folder(tmp_path), progress=True)
    assert report.n_checked == 300 and len(kept) == 300
