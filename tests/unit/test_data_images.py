"""load_image: every pixel mode comes out as correct 8-bit RGB; bad files fail clearly."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from headstart.data import DEFAULT_MAX_PIXELS, load_image
from headstart.errors import DataError


def _save(img: Image.Image, path: Path, **kwargs: object) -> Path:
    img.save(path, **kwargs)
    return path


def _rgb(path: Path) -> np.ndarray:
    img = load_image(path)
    assert img.mode == "RGB"
    return np.asarray(img)


def test_default_limit_is_pils() -> None:
    assert DEFAULT_MAX_PIXELS == 89_478_485 == 1024 * 1024 * 1024 // 4 // 3


def test_grey_and_one_bit(tmp_path: Path) -> None:
    grey = _save(Image.new("L", (3, 2), 100), tmp_path / "grey.png")
    assert (_rgb(grey) == 100).all()
    bits = Image.new("1", (2, 1), 0)
    bits.putpixel((1, 0), 1)
    got = _rgb(_save(bits, tmp_path / "bits.png"))
    assert got[0, 0].tolist() == [0, 0, 0]
    assert got[0, 1].tolist() == [255, 255, 255]


def _palette_image() -> Image.Image:
    img = Image.new("P", (2, 1))
    img.putpalette([255, 0, 0, 0, 255, 0] + [0, 0, 0] * 254)
    img.putpixel((0, 0), 0)  # red
    img.putpixel((1, 0), 1)  # green
    return img


def test_palette_without_transparency(tmp_path: Path) -> None:
    got = _rgb(_save(_palette_image(), tmp_path / "p.png"))
    assert got[0].tolist() == [[255, 0, 0], [0, 255, 0]]


def test_palette_with_transparency_becomes_white(tmp_path: Path) -> None:
    got = _rgb(_save(_palette_image(), tmp_path / "p.png", transparency=0))
    assert got[0].tolist() == [[255, 255, 255], [0, 255, 0]]
    gif = _rgb(_save(_palette_image(), tmp_path / "p.gif", transparency=0))
    assert gif[0].tolist() == [[255, 255, 255], [0, 255, 0]]


def test_rgba_is_composited_onto_white(tmp_path: Path) -> None:
    img = Image.new("RGBA", (3, 1))
    img.putpixel((0, 0), (255, 0, 0, 0))  # fully transparent red -> white
    img.putpixel((1, 0), (0, 0, 255, 255))  # opaque blue stays blue
    img.putpixel((2, 0), (0, 0, 0, 128))  # half-transparent black -> mid grey
    got = _rgb(_save(img, tmp_path / "a.png"))
    assert got[0, 0].tolist() == [255, 255, 255]
    assert got[0, 1].tolist() == [0, 0, 255]
    assert np.all(np.abs(got[0, 2].astype(int) - 127) <= 1)
    keyed = Image.new("RGB", (2, 1), (10, 20, 30))
    keyed.putpixel((1, 0), (1, 2, 3))
    got = _rgb(_save(keyed, tmp_path / "key.png", transparency=(10, 20, 30)))
    assert got[0].tolist() == [[255, 255, 255], [1, 2, 3]]  # a PNG colour key is transparent
    la = Image.new("LA", (1, 1), (0, 0))
    assert _rgb(_save(la, tmp_path / "la.png"))[0, 0].tolist() == [255, 255, 255]


def test_sixteen_bit_grey_uses_full_range(tmp_path: Path) -> None:
    values = np.array([[0, 32768, 65535, 256]], dtype=np.uint16)
    img = Image.fromarray(values)
    assert img.mode == "I;16"
    path = _save(img, tmp_path / "deep.png")
    with Image.open(path) as reread:
        assert reread.mode.startswith("I")  # really stored as 16-bit
    got = _rgb(path)[0, :, 0].tolist()
    assert got == [0, 128, 255, 1]  # 32768 * 255 / 65535 = 127.5 -> 128; no clipping at 255


def test_cmyk(tmp_path: Path) -> None:
    img = Image.new("CMYK", (2, 2), (0, 255, 255, 0))  # pure red
    got = _rgb(_save(img, tmp_path / "c.tif"))
    assert (got == [255, 0, 0]).all()


@pytest.mark.parametrize(("orientation", "corner"), [(6, (0, 9)), (8, (19, 0))])
def test_exif_orientation_is_applied(
    tmp_path: Path, orientation: int, corner: tuple[int, int]
) -> None:
    pixels = np.zeros((10, 20, 3), dtype=np.uint8)
    pixels[:, :] = (0, 0, 255)
    pixels[:5, :5] = (255, 0, 0)  # the stored image's top-left corner is red
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = _save(Image.fromarray(pixels), tmp_path / "r.jpg", exif=exif, quality=95)
    img = load_image(path)
    assert img.size == (10, 20)  # width, height swapped
    got = np.asarray(img).astype(int)
    # Orientation 6 is displayed rotated 90 degrees clockwise: top-left -> top-right;
    # 8 is rotated counter-clockwise: top-left -> bottom-left. (row, col) of that corner:
    row, col = corner
    assert got[row, col, 0] > 200 and got[row, col, 2] < 60
    assert got[19 - row, 9 - col, 2] > 200  # the opposite corner stays blue


def test_bad_files_raise_data_error_with_reason(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "text.png"
    text.write_text("not an image")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
        buf, "PNG"
    )
    cut = tmp_path / "cut.png"
    cut.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    for path, reason in [(empty, "zero bytes"), (text, "not an image"), (cut, "truncated")]:
        with pytest.raises(DataError, match=reason) as info:
            load_image(path)
        assert str(path) in str(info.value) and "Fix:" in str(info.value)


def test_pixel_limit_is_explicit_and_leaves_pil_global_alone(tmp_path: Path) -> None:
    path = _save(Image.new("RGB", (100, 100)), tmp_path / "big.png")
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(DataError, match="decompression bomb: 100x100 = 10000 pixels"):
        load_image(path, max_pixels=1000)
    assert before == Image.MAX_IMAGE_PIXELS
    assert load_image(path, max_pixels=10_000).size == (100, 100)
