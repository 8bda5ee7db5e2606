"""Read a user's folder of images into the common image table.

Every dataset reader (folder, Stanford Online Products, JSONL pair files) returns a
polars DataFrame with the columns of TABLE_SCHEMA, one row per image, sorted by
image_id. image_id is the image path relative to the dataset root in posix form,
and path is `str(root / image_id)`, so a relative root gives relative paths.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import polars as pl

from image_retrieval.data.prepare import IMAGE_EXTENSIONS, PrepareError, scan_image_folder

logger = logging.getLogger(__name__)

TABLE_SCHEMA = pl.Schema({
    "image_id": pl.String,
    "path": pl.String,
    "label": pl.Int64,
    "label_name": pl.String,
    "super_label": pl.Int64,
    "split": pl.String,
})

FOLDER_LAYOUTS = ("flat", "nested")


def read_folder(root: Path, layout: str = "flat") -> pl.DataFrame:
    """List the images under `root` as a table with the columns of TABLE_SCHEMA.

    `flat` reads `root/<class>/<image>` with scan_image_folder: label is the index
    of the class name in sorted order and super_label is null. `nested` reads
    `root/<super class>/<class>/<image>`: label is the index of the (super class,
    class) pair in sorted order, label_name is "<super class>/<class>" and
    super_label is the index of the super-class name in sorted order. In both
    layouts, images may sit in subfolders of a class folder, and split is null.
    Raises ValueError for an unknown layout and PrepareError for a folder that
    does not match the layout.
    """
    if layout not in FOLDER_LAYOUTS:
        raise ValueError(f"invalid folder layout {layout!r}; use one of {', '.join(FOLDER_LAYOUTS)}")

    root = Path(root)
    if layout == "flat":
        table = scan_image_folder(root)
        return table.with_columns(split=pl.lit(None, dtype=pl.String)).select(TABLE_SCHEMA.names())
    return _read_nested_folder(root)


def _read_nested_folder(root: Path) -> pl.DataFrame:
    if not root.is_dir():
        raise PrepareError(f"image folder {root} not found; check the path or fetch the dataset into it first")

    super_dirs = _list_subfolders(root)
    if not super_dirs:
        raise PrepareError(
            f"{root} contains no super-class folders; expected the layout "
            f"{root}/<super class>/<class>/<image file>"
        )

    stray_images = [image for super_dir in super_dirs for image in _list_images(super_dir)]
    if stray_images:
        examples = "\n".join(f"  {image}" for image in stray_images[:10])
        raise PrepareError(
            f"{len(stray_images)} images sit directly in a super-class folder, but the nested layout "
            f"needs {root}/<super class>/<class>/<image file>. Move them into a class folder:\n{examples}"
        )

    parts = []
    for super_label, super_dir in enumerate(super_dirs):
        # scan_image_folder reads super_dir as a flat tree of class folders, and it
        # raises when super_dir has no class folder or a class folder has no images.
        classes = scan_image_folder(super_dir)
        parts.append(classes.select(
            image_id=pl.lit(f"{super_dir.name}/") + pl.col("image_id"),
            super_name=pl.lit(super_dir.name),
            class_name=pl.col("label_name"),
            super_label=pl.lit(super_label, dtype=pl.Int64),
        ))
    images = pl.concat(parts)

    # Number the (super class, class) pairs in sorted order. Polars sorts strings by
    # their UTF-8 bytes, which is the code-point order that sorted() uses for names.
    pairs = (
        images.select("super_name", "class_name")
        .unique()
        .sort("super_name", "class_name")
        .with_row_index("label")
        .with_columns(pl.col("label").cast(pl.Int64))
    )
    images = images.join(pairs, on=["super_name", "class_name"], how="left").sort("image_id")
    paths = [str(root / image_id) for image_id in images.get_column("image_id")]
    table = images.select(
        "image_id",
        path=pl.Series(paths, dtype=pl.String),
        label="label",
        label_name=pl.col("super_name") + "/" + pl.col("class_name"),
        super_label="super_label",
        split=pl.lit(None, dtype=pl.String),
    )

    logger.info(
        "Found %d images in %d classes of %d super-classes under %s",
        table.height, pairs.height, len(super_dirs), root,
    )
    return table


def _list_subfolders(root: Path) -> list[Path]:
    """Return the non-hidden folders directly under `root`, sorted by name, and warn about images there."""
    folders = []
    for entry in sorted(root.iterdir(), key=lambda path: path.name):
        if entry.name.startswith("."):
            logger.debug("Ignoring hidden entry %s", entry)
        elif entry.is_dir():
            folders.append(entry)
        elif entry.suffix.lower() in IMAGE_EXTENSIONS:
            logger.warning("Ignoring %s, which is not in a super-class folder", entry)
        else:
            logger.debug("Ignoring %s, which is not a folder", entry)
    return folders


def _list_images(directory: Path) -> list[Path]:
    return sorted(
        entry for entry in directory.iterdir()
        if not entry.name.startswith(".") and entry.is_file() and entry.suffix.lower() in IMAGE_EXTENSIONS
    )


def find_missing_files(root: Path, image_ids: Iterable[str]) -> list[str]:
    """Return the image_ids, in input order, that are not files under `root`.

    Lists each folder that contains a requested file once, instead of calling stat
    on every file, which matters for datasets of 100,000 images. A name matches only
    with the exact case, even on a case-insensitive file system.
    """
    root = Path(root)
    image_ids = list(image_ids)
    files_by_folder: dict[str, set[str]] = {}
    missing = []
    for image_id in image_ids:
        folder, _, name = image_id.rpartition("/")
        if folder not in files_by_folder:
            files_by_folder[folder] = _list_file_names(root / folder)
        if name not in files_by_folder[folder]:
            missing.append(image_id)
    return missing


def _list_file_names(directory: Path) -> set[str]:
    try:
        with os.scandir(directory) as entries:
            return {entry.name for entry in entries if entry.is_file()}
    except (FileNotFoundError, NotADirectoryError):
        return set()
