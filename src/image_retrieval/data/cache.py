"""Check every image once, and write the image cache in the same pass.

The cache keeps a copy of each large image resized so that its shorter side
is `shorter_side` pixels, as JPEG at quality 95, so that train and embed
decode a small file instead of the original. An image whose shorter side is
already at most `shorter_side` is not copied: its `cache_path` is null and
readers use the original. Cached images are already RGB and EXIF-oriented.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Sequence

from PIL import Image
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from image_retrieval.data.images import ImageError, load_rgb_and_mode

logger = logging.getLogger(__name__)

CACHE_JPEG_QUALITY = 95


@dataclass
class ImageCheck:
    """The outcome of decoding one image: its size and mode, or why it failed."""

    width: int | None = None
    height: int | None = None
    mode: str | None = None
    cache_path: str | None = None
    error: str | None = None


def cache_file_name(image_id: str) -> str:
    """Return the cache file's path relative to the cache folder: the image_id with a .jpg suffix."""
    return str(PurePosixPath(image_id).with_suffix(".jpg"))


def _check_and_cache_one(
    path: str, image_id: str, write_dir: Path | None, final_dir: Path | None, shorter_side: int
) -> ImageCheck:
    try:
        image, mode = load_rgb_and_mode(path)
    except ImageError as error:
        return ImageCheck(error=error.reason or str(error))

    width, height = image.size
    cache_path = None
    if write_dir is not None and min(width, height) > shorter_side:
        scale = shorter_side / min(width, height)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        relative = cache_file_name(image_id)
        target = write_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        image.resize(size, Image.Resampling.BICUBIC).save(target, format="JPEG", quality=CACHE_JPEG_QUALITY)
        cache_path = str(final_dir / relative)
    image.close()
    return ImageCheck(width=width, height=height, mode=mode, cache_path=cache_path)


def check_and_cache_images(
    paths: Sequence[str],
    image_ids: Sequence[str],
    *,
    write_dir: Path | None = None,
    final_dir: Path | None = None,
    shorter_side: int = 0,
    num_workers: int = 0,
) -> list[ImageCheck]:
    """Decode every image and, when `write_dir` is given, cache the large ones.

    Cache files are written under `write_dir` (a temporary folder) and their
    recorded `cache_path` points into `final_dir`, where the folder will be
    renamed once complete. `num_workers` threads decode (0: one per CPU core),
    which helps because Pillow releases the GIL while decoding, resizing and
    encoding. An image that fails to load does not raise: its check carries
    the reason. Failing to write a cache file does raise.
    """
    if (write_dir is None) != (final_dir is None):
        raise ValueError("write_dir and final_dir must be given together")
    if write_dir is not None and shorter_side <= 0:
        raise ValueError(f"shorter_side must be positive when caching, got {shorter_side}")

    workers = num_workers or os.cpu_count() or 1
    columns = ("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as progress, concurrent.futures.ThreadPoolExecutor(workers) as executor:
        task = progress.add_task("checking images", total=len(paths))
        futures = [
            executor.submit(_check_and_cache_one, path, image_id, write_dir, final_dir, shorter_side)
            for path, image_id in zip(paths, image_ids)
        ]
        results = []
        for future in futures:
            results.append(future.result())
            progress.advance(task)
    return results


def images_failed_error(failures: Sequence[tuple[str, str]], total: int, advice: str) -> ImageError:
    """Build one ImageError that lists every (path, reason) in `failures`, followed by `advice`."""
    lines = "\n".join(f"  {path}: {reason}" for path, reason in failures)
    return ImageError(
        f"{len(failures)} of {total} images failed to load:\n{lines}\n{advice}",
        failures=list(failures),
    )


def check_images(
    paths: Sequence[str],
    *,
    num_workers: int = 0,
    advice: str = "Replace or delete these files, then run the stage again.",
) -> list[tuple[int, int, str]]:
    """Decode every image in `paths` and return (width, height, original mode) for each.

    Width and height are those of the RGB image that load_rgb returns, so they
    follow the EXIF orientation. `num_workers` > 0 decodes in a pool of that many
    threads, and 0 decodes in one thread. When any file fails, raises one ImageError
    that lists every failed file with its reason, followed by `advice`, and its
    `failures` attribute contains the (path, reason) pairs.
    """
    if num_workers < 0:
        raise ValueError(f"num_workers must be 0 (serial) or a positive thread count, got {num_workers}")

    checks = check_and_cache_images(paths, paths, num_workers=num_workers or 1)
    failures = [(str(path), check.error) for path, check in zip(paths, checks) if check.error is not None]
    if failures:
        raise images_failed_error(failures, len(paths), advice)
    return [(check.width, check.height, check.mode) for check in checks]
