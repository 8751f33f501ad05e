"""Folder scanning, arrays and spec resolution."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from headstart.data import from_arrays, resolve_images, scan_image_folder
from headstart.errors import DataError


def _img(path: Path, value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (value, 0, 0)).save(path)
    return path


def test_scan_sorts_classes_and_skips_hidden_and_non_images(tmp_path: Path) -> None:
    _img(tmp_path / "dog" / "b.PNG")
    _img(tmp_path / "cat" / "a.jpg")
    _img(tmp_path / "cat" / "nested" / "c.png")
    _img(tmp_path / "cat" / ".ipynb_checkpoints" / "a-checkpoint.png")
    _img(tmp_path / ".ipynb_checkpoints" / "x.png")
    _img(tmp_path / "__MACOSX" / "cat" / "._a.jpg")
    _img(tmp_path / "dog" / "._b.png")
    (tmp_path / "cat" / "labels.csv").write_text("a,b")
    samples = scan_image_folder(tmp_path)
    assert samples.classes == ["cat", "dog"]
    rel = [p.relative_to(tmp_path).as_posix() for p in samples.paths or []]
    assert rel == ["cat/a.jpg", "cat/nested/c.png", "dog/b.PNG"]
    assert samples.labels.tolist() == [0, 0, 1]
    assert samples.name == str(tmp_path)
    assert samples.image(2).mode == "RGB"


def test_symlinks_outside_the_root_are_not_followed(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    _img(root / "cat" / "a.png")
    _img(root / "dog" / "b.png")
    secret = _img(outside / "secret.png")
    _img(outside / "more" / "c.png")
    os.symlink(secret, root / "cat" / "leak.png")
    os.symlink(outside / "more", root / "eel")  # a class folder leading outside
    os.symlink(root / "dog" / "b.png", root / "dog" / "inside.png")  # inside: followed
    samples = scan_image_folder(root)
    assert samples.classes == ["cat", "dog"]
    names = [p.name for p in samples.paths or []]
    assert names == ["a.png", "b.png", "inside.png"]
    assert sorted(p.name for p in samples.skipped_links) == ["eel", "leak.png"]


def test_scan_with_given_classes(tmp_path: Path) -> None:
    _img(tmp_path / "dog" / "a.png")
    samples = scan_image_folder(tmp_path, classes=["cat", "dog"])
    assert samples.classes == ["cat", "dog"] and samples.labels.tolist() == [1]
    _img(tmp_path / "yak" / "b.png")
    with pytest.raises(DataError, match="'yak'"):
        scan_image_folder(tmp_path, classes=["cat", "dog"])


def test_scan_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        scan_image_folder(tmp_path / "missing")
    file = _img(tmp_path / "x.png")
    with pytest.raises(DataError, match="is a file"):
        scan_image_folder(file)
    with pytest.raises(DataError, match=r"root/<class>/<image>") as info:
        scan_image_folder(tmp_path)
    assert "1 image files lie directly in it" in str(info.value)


@pytest.mark.parametrize(
    ("shape", "channels"),
    [
        ((4, 6, 5), None),
        ((4, 6, 5, 1), None),
        ((4, 6, 5, 3), 3),
        ((4, 3, 6, 5), 3),
        ((4, 1, 6, 5), None),
    ],
)
def test_from_arrays_shapes(shape: tuple[int, ...], channels: int | None) -> None:
    X = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    samples = from_arrays(X, [0, 1, 0, 1])
    assert samples.arrays is not None and samples.arrays.dtype == np.uint8
    assert samples.arrays.shape == ((4, 6, 5, 3) if channels else (4, 6, 5))
    img = samples.image(1)
    assert img.mode == "RGB" and img.size == (5, 6)
    if shape == (4, 3, 6, 5):  # channel-first is moved to channel-last, values intact
        assert np.asarray(img)[2, 3].tolist() == X[1, :, 2, 3].tolist()


def test_from_arrays_scales_floats_and_encodes_labels() -> None:
    unit = np.full((2, 3, 3), 0.5)
    assert (from_arrays(unit).arrays == 128).all()
    wide = np.full((2, 3, 3), 200.0)
    assert (from_arrays(wide).arrays == 200).all()
    samples = from_arrays(np.zeros((3, 2, 2), np.uint8), ["dog", "cat", "dog"])
    assert samples.classes == ["cat", "dog"] and samples.labels.tolist() == [1, 0, 1]
    unlabelled = from_arrays(np.zeros((2, 2, 2), np.uint8))
    assert unlabelled.labels.tolist() == [-1, -1]
    ints = from_arrays(np.zeros((3, 2, 2), np.uint8), [7, 3, 7])
    assert ints.classes == ["3", "7"] and ints.labels.tolist() == [1, 0, 1]
    given = from_arrays(np.zeros((2, 2, 2), np.uint8), [1, 0], classes=["a", "b", "c"])
    assert given.classes == ["a", "b", "c"] and given.labels.tolist() == [1, 0]


def test_from_arrays_errors() -> None:
    with pytest.raises(DataError, match=r"Expected a 3-D or 4-D image array.*\(5, 28\)"):
        from_arrays(np.zeros((5, 28)))
    with pytest.raises(DataError, match="Expected"):
        from_arrays(np.zeros((2, 5, 5, 4)))
    with pytest.raises(DataError, match="values from"):
        from_arrays(np.full((2, 3, 3), 300.0))
    with pytest.raises(DataError, match="one label per image"):
        from_arrays(np.zeros((2, 3, 3)), [0, 1, 1])
    with pytest.raises(DataError, match="'z'"):
        from_arrays(np.zeros((2, 3, 3)), ["a", "z"], classes=["a", "b"])


def test_from_arrays_accepts_file_paths(tmp_path: Path) -> None:
    paths = [str(_img(tmp_path / f"{i}.png", 50 * i)) for i in range(2)]
    samples = from_arrays(paths, ["x", "y"])
    assert samples.arrays is None and samples.paths == [Path(p) for p in paths]
    assert np.asarray(samples.image(1))[0, 0, 0] == 50


def test_resolve_images(tmp_path: Path) -> None:
    digits = resolve_images("digits:test")
    assert digits.name == "digits[test]" and len(digits) == 360
    _img(tmp_path / "a" / "1.png")
    assert resolve_images(tmp_path).classes == ["a"]
    assert resolve_images(str(tmp_path)).name == str(tmp_path)
    with pytest.raises(DataError, match="did you mean 'fashion-mnist'") as info:
        resolve_images("fashon-mnist")
    assert "digits" in info.value.fix and "mnist-5k" in info.value.fix


def test_subset_keeps_paths_labels_and_classes() -> None:
    samples = from_arrays(np.arange(4 * 4, dtype=np.uint8).reshape(4, 2, 2), ["a", "b", "a", "b"])
    sub = samples.subset(np.array([3, 0]))
    assert len(sub) == 2 and sub.labels.tolist() == [1, 0] and sub.classes == ["a", "b"]
    assert sub.arrays is not None and sub.arrays[0, 0, 0] == 12


def test_symlink_loop_in_an_image_folder_is_skipped(tmp_path):
    import numpy as np
    from PIL import Image

    from headstart.data import scan_image_folder

    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(2):
            Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / c / f"{i}.png")
    (tmp_path / "a" / "loop.png").symlink_to(tmp_path / "a" / "loop.png")
    s = scan_image_folder(tmp_path)
    assert len(s) == 4 and any(p.name == "loop.png" for p in s.skipped_links)
