"""Load any image file as a fully decoded RGB image, or raise ImageError naming the file.

Every stage that reads pixels goes through `load_rgb`, so a file that the
prepare stage accepted decodes the same way during training and evaluation.
Broken files always raise; no placeholder image is ever returned in their place.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

# Largest image, in pixels, that load_rgb decodes. Equal to the default
# Image.MAX_IMAGE_PIXELS of Pillow 13 (89,478,485, about 358 MB as RGBA), above which Pillow
# warns of a possible decompression bomb: a small file that expands to gigabytes.
MAX_IMAGE_PIXELS = 89_478_485

# Alpha is composited on this colour. Product photos are shot or cut out on white,
# so a transparent background becomes the same white as the rest of the catalogue
# instead of the black that dropping the alpha channel would leave.
BACKGROUND_COLOR = (255, 255, 255)

# Exceptions that Pillow raises for files it cannot identify or decode.
# SyntaxError and struct.error come from some format plugins parsing broken headers.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error)


class ImageError(ValueError):
    """An image file is missing, unreadable, corrupt, too large or in an unsupported mode.

    `path` and `reason` describe a single file. An error from cache.check_images lists
    every failed file in `failures` as (path, reason) pairs.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        reason: str | None = None,
        failures: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.path = path
        self.reason = reason
        self.failures = list(failures)


def load_rgb(path: str | Path) -> Image.Image:
    """Decode the image at `path` completely and return it as an RGB image.

    Applies the EXIF orientation tag, composites any alpha channel or transparent
    palette entry on white, and scales 16-bit and float greyscale to 8 bits.
    Raises ImageError naming the file and the reason when the file is missing,
    empty, not an image, truncated, corrupt or larger than MAX_IMAGE_PIXELS.
    """
    image, _ = _load_rgb_with_mode(path)
    return image


def load_rgb_and_mode(path: str | Path) -> tuple[Image.Image, str]:
    """Decode the image like `load_rgb` and also return the mode the file was stored in."""
    return _load_rgb_with_mode(path)


def _image_error(path: str | Path, reason: str) -> ImageError:
    return ImageError(f"{path}: {reason}", path=str(path), reason=reason)


def _load_rgb_with_mode(path: str | Path) -> tuple[Image.Image, str]:
    """Return the decoded RGB image and the mode that the file was stored in."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # With this flag Pillow fills the missing part of a truncated file with grey
        # and reports success, which would hide broken files.
        raise RuntimeError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True, so truncated images would load "
            "with grey filling; set it back to False before loading images"
        )

    try:
        with Image.open(path) as opened:
            original_mode = opened.mode
            _check_pixel_count(path, opened.size)
            # Image.open reads only the header, so decode now to catch truncated data.
            opened.load()
            ImageOps.exif_transpose(opened, in_place=True)
            image = _convert_to_rgb(path, opened)
    except ImageError:
        raise
    except FileNotFoundError:
        raise _image_error(path, "file not found; check the path or restore the file") from None
    except IsADirectoryError:
        raise _image_error(path, "is a directory, not an image file") from None
    except PermissionError as error:
        raise _image_error(path, f"permission denied ({error.strerror}); make the file readable") from None
    except Image.DecompressionBombError as error:
        raise _image_error(path, f"rejected as a possible decompression bomb: {error}") from None
    except UnidentifiedImageError:
        reason = "file is empty (0 bytes)" if _is_empty(path) else "not an image file Pillow can identify"
        raise _image_error(path, reason) from None
    except _DECODE_ERRORS as error:
        raise _image_error(path, f"decoding failed because the file is truncated or corrupt ({error})") from None

    return image, original_mode


def _is_empty(path: str | Path) -> bool:
    try:
        return Path(path).stat().st_size == 0
    except OSError:
        return False


def _check_pixel_count(path: str | Path, size: tuple[int, int]) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise _image_error(path, f"image has zero size ({width}x{height} pixels)")
    if width * height > MAX_IMAGE_PIXELS:
        raise _image_error(
            path,
            f"image is {width}x{height} = {width * height:,} pixels, more than the "
            f"{MAX_IMAGE_PIXELS:,} that load_rgb accepts (a possible decompression bomb); "
            "downscale the file if it is genuine",
        )


def _convert_to_rgb(path: str | Path, image: Image.Image) -> Image.Image:
    mode = image.mode

    if mode == "RGB" and "transparency" not in image.info:
        # A copy, because closing the opened file also invalidates its pixel data.
        return image.copy()

    if mode.startswith("I;16") or mode == "I":
        # Pillow opens 16-bit greyscale PNG and TIFF files as I;16 or I, and its own
        # convert("L") clips every value above 255 to white, so scale 0..65535 to 0..255.
        values = np.asarray(image, dtype=np.float64)
        return _greyscale_to_rgb(values / 257.0)

    if mode == "F":
        # NOTE: float images are assumed to hold intensities in [0, 1]. Values
        # outside that range are clipped, so other scales come out wrong.
        values = np.asarray(image, dtype=np.float64)
        return _greyscale_to_rgb(values * 255.0)

    try:
        if "A" in mode or "a" in mode or "transparency" in image.info:
            # Covers LA, PA, RGBA, premultiplied RGBa, and P, L or RGB files with a
            # transparent palette entry or colour key.
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", image.size, BACKGROUND_COLOR + (255,))
            return Image.alpha_composite(background, rgba).convert("RGB")
        # L, P, 1, CMYK, YCbCr and the other modes Pillow converts directly.
        # CMYK uses Pillow's plain formula, without any embedded ICC profile.
        return image.convert("RGB")
    except ValueError as error:
        raise _image_error(path, f"image mode {mode} cannot be converted to RGB ({error})") from None


def _greyscale_to_rgb(values: np.ndarray) -> Image.Image:
    grey = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")
