"""Tests for load_rgb and check_images on real image files written with Pillow."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image, ImageFile

from image_retrieval.data import images
from image_retrieval.data.cache import check_images
from image_retrieval.data.images import ImageError, load_rgb

WHITE = (255, 255, 255)


def save(image: Image.Image, path, **save_options):
    image.save(path, **save_options)
    return path


def pixel(path, xy=(0, 0)):
    image = load_rgb(path)
    assert image.mode == "RGB"
    return image.getpixel(xy)


def test_load_rgb_greyscale_l(tmp_path):
    path = save(Image.new("L", (4, 3), 200), tmp_path / "grey.png")
    image = load_rgb(path)
    assert image.mode == "RGB"
    assert image.size == (4, 3)
    assert image.getpixel((0, 0)) == (200, 200, 200)


def test_load_rgb_rgb_unchanged(tmp_path):
    path = save(Image.new("RGB", (2, 2), (10, 20, 30)), tmp_path / "rgb.png")
    assert pixel(path) == (10, 20, 30)


def test_load_rgb_la_composites_on_white(tmp_path):
    image = Image.new("LA", (2, 1))
    image.putpixel((0, 0), (0, 0))      # black, fully transparent
    image.putpixel((1, 0), (0, 255))    # black, opaque
    path = save(image, tmp_path / "la.png")
    assert pixel(path, (0, 0)) == WHITE
    assert pixel(path, (1, 0)) == (0, 0, 0)


def test_load_rgb_rgba_transparent_becomes_white(tmp_path):
    image = Image.new("RGBA", (3, 1))
    image.putpixel((0, 0), (255, 0, 0, 0))      # red, fully transparent
    image.putpixel((1, 0), (255, 0, 0, 255))    # red, opaque
    image.putpixel((2, 0), (0, 0, 0, 128))      # black, half transparent
    path = save(image, tmp_path / "rgba.png")
    loaded = load_rgb(path)
    assert loaded.getpixel((0, 0)) == WHITE
    assert loaded.getpixel((1, 0)) == (255, 0, 0)
    half = loaded.getpixel((2, 0))
    assert all(126 <= channel <= 128 for channel in half), half


def test_load_rgb_palette_without_transparency(tmp_path):
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 255, 0, 255, 0] + [0] * (256 * 3 - 6))
    image.putpixel((0, 0), 0)
    image.putpixel((1, 0), 1)
    path = save(image, tmp_path / "palette.png")
    assert pixel(path, (0, 0)) == (0, 0, 255)
    assert pixel(path, (1, 0)) == (0, 255, 0)


def test_load_rgb_palette_transparency_becomes_white(tmp_path):
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 255, 0, 255, 0] + [0] * (256 * 3 - 6))
    image.putpixel((0, 0), 0)
    image.putpixel((1, 0), 1)
    path = save(image, tmp_path / "palette_transparent.png", transparency=0)
    with Image.open(path) as stored:
        assert stored.mode == "P"
        assert "transparency" in stored.info
    assert pixel(path, (0, 0)) == WHITE
    assert pixel(path, (1, 0)) == (0, 255, 0)


def test_load_rgb_gif_transparency_becomes_white(tmp_path):
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 255, 0, 255, 0] + [0] * (256 * 3 - 6))
    image.putpixel((0, 0), 0)
    image.putpixel((1, 0), 1)
    path = save(image, tmp_path / "transparent.gif", transparency=0)
    assert pixel(path, (0, 0)) == WHITE
    assert pixel(path, (1, 0)) == (0, 255, 0)


def test_load_rgb_pa_composites_on_white(tmp_path, monkeypatch):
    # No common file format stores PA, so hand load_rgb an in-memory PA image.
    image = Image.new("PA", (2, 1))
    image.putpalette([255, 0, 0] * 256)
    image.putpixel((0, 0), (0, 0))
    image.putpixel((1, 0), (0, 255))
    monkeypatch.setattr(images.Image, "open", lambda path: image)
    loaded = load_rgb("in-memory.png")
    assert loaded.getpixel((0, 0)) == WHITE
    assert loaded.getpixel((1, 0)) == (255, 0, 0)


def test_load_rgb_rgb_colour_key_becomes_white(tmp_path):
    image = Image.new("RGB", (2, 1), (1, 2, 3))
    image.putpixel((1, 0), (9, 9, 9))
    path = save(image, tmp_path / "colour_key.png", transparency=(1, 2, 3))
    assert pixel(path, (0, 0)) == WHITE
    assert pixel(path, (1, 0)) == (9, 9, 9)


def test_load_rgb_cmyk_converts(tmp_path):
    image = Image.new("CMYK", (2, 1))
    image.putpixel((0, 0), (0, 255, 255, 0))    # pure red
    image.putpixel((1, 0), (0, 0, 0, 0))        # white
    path = save(image, tmp_path / "cmyk.tif")
    with Image.open(path) as stored:
        assert stored.mode == "CMYK"
    assert pixel(path, (0, 0)) == (255, 0, 0)
    assert pixel(path, (1, 0)) == WHITE


def test_load_rgb_cmyk_jpeg_converts(tmp_path):
    path = save(Image.new("CMYK", (8, 8), (0, 0, 0, 0)), tmp_path / "cmyk.jpg", quality=100)
    red, green, blue = pixel(path, (4, 4))
    assert min(red, green, blue) >= 250


def test_load_rgb_16_bit_greyscale_scaled(tmp_path):
    values = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    path = save(Image.fromarray(values), tmp_path / "grey16.png")
    with Image.open(path) as stored:
        assert stored.mode == "I;16"
    loaded = load_rgb(path)
    assert loaded.getpixel((0, 0)) == (0, 0, 0)
    assert loaded.getpixel((1, 0)) == (100, 100, 100)
    assert loaded.getpixel((2, 0)) == WHITE


def test_load_rgb_32_bit_integer_scaled(tmp_path):
    values = np.array([[0, 257 * 50, 70000]], dtype=np.int32)
    path = save(Image.fromarray(values), tmp_path / "int32.tif")
    with Image.open(path) as stored:
        assert stored.mode == "I"
    loaded = load_rgb(path)
    assert loaded.getpixel((0, 0)) == (0, 0, 0)
    assert loaded.getpixel((1, 0)) == (50, 50, 50)
    # Values above the 16-bit range are clipped to white.
    assert loaded.getpixel((2, 0)) == WHITE


def test_load_rgb_float_scaled(tmp_path):
    values = np.array([[0.0, 0.5, 1.0, 2.0]], dtype=np.float32)
    path = save(Image.fromarray(values), tmp_path / "float.tif")
    with Image.open(path) as stored:
        assert stored.mode == "F"
    loaded = load_rgb(path)
    assert loaded.getpixel((0, 0)) == (0, 0, 0)
    assert loaded.getpixel((1, 0)) == (128, 128, 128)
    assert loaded.getpixel((2, 0)) == WHITE
    assert loaded.getpixel((3, 0)) == WHITE


def test_load_rgb_bilevel(tmp_path):
    image = Image.new("1", (2, 1), 0)
    image.putpixel((1, 0), 1)
    path = save(image, tmp_path / "bilevel.png")
    with Image.open(path) as stored:
        assert stored.mode == "1"
    assert pixel(path, (0, 0)) == (0, 0, 0)
    assert pixel(path, (1, 0)) == WHITE


def test_load_rgb_applies_exif_orientation(tmp_path):
    # 4 wide x 2 high, red on the left half and blue on the right half.
    image = Image.new("RGB", (4, 2), (255, 0, 0))
    image.paste((0, 0, 255), (2, 0, 4, 2))
    exif = Image.Exif()
    exif[0x0112] = 6    # Orientation: rotate 90 degrees clockwise to display.
    path = save(image, tmp_path / "rotated.jpg", exif=exif, quality=100)

    loaded = load_rgb(path)
    assert loaded.size == (2, 4)
    # Rotating 90 degrees clockwise puts the left (red) half on top.
    top_red, _, top_blue = loaded.getpixel((1, 0))
    bottom_red, _, bottom_blue = loaded.getpixel((1, 3))
    assert top_red > 200
    assert top_blue < 60
    assert bottom_blue > 200
    assert bottom_red < 60


def test_load_rgb_returns_independent_image(tmp_path):
    path = save(Image.new("RGB", (3, 3), (1, 2, 3)), tmp_path / "independent.png")
    image = load_rgb(path)
    os.remove(path)
    assert image.getpixel((2, 2)) == (1, 2, 3)


def test_load_rgb_random_bytes_rejected(tmp_path):
    path = tmp_path / "corrupt.png"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 512, dtype=np.uint8).tobytes())
    with pytest.raises(ImageError) as caught:
        load_rgb(path)
    assert str(path) in str(caught.value)
    assert "not an image file" in str(caught.value)
    assert caught.value.path == str(path)


def test_load_rgb_truncated_jpeg_rejected(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "JPEG", quality=95)
    path = tmp_path / "truncated.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])

    with pytest.raises(ImageError) as caught:
        load_rgb(path)
    assert str(path) in str(caught.value)
    assert "truncated" in str(caught.value)


def test_load_rgb_truncated_png_rejected(tmp_path):
    noise = np.random.default_rng(1).integers(0, 256, (64, 64), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "PNG")
    path = tmp_path / "truncated.png"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])

    with pytest.raises(ImageError) as caught:
        load_rgb(path)
    assert str(path) in str(caught.value)


def test_load_rgb_missing_file(tmp_path):
    path = tmp_path / "absent.png"
    with pytest.raises(ImageError) as caught:
        load_rgb(path)
    assert str(path) in str(caught.value)
    assert "not found" in str(caught.value)


def test_load_rgb_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageError) as caught:
        load_rgb(path)
    assert str(path) in str(caught.value)
    assert "empty" in str(caught.value)


def test_load_rgb_directory_rejected(tmp_path):
    path = tmp_path / "folder.png"
    path.mkdir()
    with pytest.raises(ImageError) as caught:
        load_rgb(path)
    assert str(path) in str(caught.value)
    assert "directory" in str(caught.value)


def test_load_rgb_rejects_too_many_pixels(tmp_path):
    # 90,000,000 pixels: above MAX_IMAGE_PIXELS, below twice Pillow's limit. A bilevel
    # PNG of one colour keeps the file at about 11 kB.
    path = save(Image.new("1", (10_000, 9_000)), tmp_path / "large.png")
    assert 10_000 * 9_000 > images.MAX_IMAGE_PIXELS

    with pytest.warns(Image.DecompressionBombWarning):
        with pytest.raises(ImageError) as caught:
            load_rgb(path)

    message = str(caught.value)
    assert str(path) in message
    assert "decompression bomb" in message
    assert "90,000,000 pixels" in message


def test_load_rgb_converts_pillow_bomb_error(tmp_path):
    # 180,000,000 pixels: above twice Pillow's limit, where Image.open raises
    # DecompressionBombError before load_rgb checks the size itself.
    path = save(Image.new("1", (20_000, 9_000)), tmp_path / "bomb.png")

    with pytest.raises(ImageError) as caught:
        load_rgb(path)

    message = str(caught.value)
    assert str(path) in message
    assert "decompression bomb" in message


def test_load_rgb_pixel_limit_configurable(tmp_path, monkeypatch):
    path = save(Image.new("L", (20, 10)), tmp_path / "small.png")
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 199)

    with pytest.raises(ImageError) as caught:
        load_rgb(path)

    assert "20x10 = 200 pixels" in str(caught.value)


def test_load_rgb_rejects_truncated_images_flag(tmp_path, monkeypatch):
    path = save(Image.new("L", (2, 2)), tmp_path / "fine.png")
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        load_rgb(path)


@pytest.mark.parametrize("num_workers", [0, 3])
def test_check_images_returns_sizes_and_modes(tmp_path, num_workers):
    paths = [
        str(save(Image.new("L", (5, 4)), tmp_path / "grey.png")),
        str(save(Image.new("RGBA", (3, 7)), tmp_path / "rgba.png")),
        str(save(Image.new("RGB", (2, 2)), tmp_path / "rgb.jpg")),
    ]
    assert check_images(paths, num_workers=num_workers) == [(5, 4, "L"), (3, 7, "RGBA"), (2, 2, "RGB")]


@pytest.mark.parametrize("num_workers", [0, 3])
def test_check_images_lists_every_bad_file(tmp_path, num_workers):
    good = str(save(Image.new("L", (2, 2)), tmp_path / "good.png"))
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not an image at all")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    missing = tmp_path / "missing.png"
    paths = [good, str(corrupt), str(empty), str(missing)]

    with pytest.raises(ImageError) as caught:
        check_images(paths, num_workers=num_workers)

    message = str(caught.value)
    assert "3 of 4 images failed" in message
    assert str(corrupt) in message
    assert str(empty) in message
    assert str(missing) in message
    assert good not in message
    assert [path for path, _ in caught.value.failures] == [str(corrupt), str(empty), str(missing)]


def test_check_images_rejects_negative_workers():
    with pytest.raises(ValueError, match="num_workers"):
        check_images([], num_workers=-1)


def test_check_images_reports_oriented_size(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6    # Orientation: rotate 90 degrees clockwise to display.
    path = save(Image.new("RGB", (4, 2)), tmp_path / "rotated.jpg", exif=exif)
    assert check_images([str(path)]) == [(2, 4, "RGB")]
