"""Turn an ImageFolder tree into train, val and test tables of checked images.

Each split is written as `<split>.parquet` with the columns image_id, path,
label, label_name, super_label, split, width, height and mode.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import polars as pl

from image_retrieval.config import PrepareConfig
from image_retrieval.data.images import check_images
from image_retrieval.io import atomic_path

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
# by_image needs this many images of every class in every split, so that every
# image has another image of its class: a positive pair in train, a match in val and test.
MIN_IMAGES_PER_CLASS_AND_SPLIT = 2

_SCAN_SCHEMA = {
    "image_id": pl.String,
    "path": pl.String,
    "label": pl.Int64,
    "label_name": pl.String,
    "super_label": pl.Int64,
}


class PrepareError(ValueError):
    """The raw dataset does not have the layout or the size that the prepare stage needs."""


def scan_image_folder(root: Path) -> pl.DataFrame:
    """List the images of an ImageFolder tree `root/<class name>/<image file>`.

    Images may sit in subfolders of a class folder. Files with other extensions,
    and hidden files and folders, are ignored and logged at debug level. Returns one
    row per image, sorted by image_id, with `label` the index of the class name in
    sorted order. Raises PrepareError when `root` is missing, has no class folders,
    or has a class folder without images.
    """
    root = Path(root)
    if not root.is_dir():
        raise PrepareError(f"image folder {root} not found; fetch the dataset into it first")

    class_dirs = _list_class_dirs(root)
    if not class_dirs:
        raise PrepareError(
            f"{root} contains no class folders; expected the layout {root}/<class name>/<image file>"
        )

    rows = []
    for label, class_dir in enumerate(class_dirs):
        image_ids = _list_class_images(root, class_dir)
        if not image_ids:
            raise PrepareError(
                f"class folder {class_dir} contains no images with the extensions "
                f"{', '.join(sorted(IMAGE_EXTENSIONS))}; add images or delete the folder"
            )
        for image_id in image_ids:
            rows.append((image_id, str(root / image_id), label, class_dir.name, None))

    table = pl.DataFrame(rows, schema=_SCAN_SCHEMA, orient="row").sort("image_id")
    logger.info("Found %d images in %d classes under %s", table.height, len(class_dirs), root)
    return table


def _list_class_dirs(root: Path) -> list[Path]:
    class_dirs = []
    stray_images = []
    for entry in sorted(root.iterdir(), key=lambda path: path.name):
        if entry.name.startswith("."):
            logger.debug("Ignoring hidden entry %s", entry)
        elif entry.is_dir():
            class_dirs.append(entry)
        elif entry.suffix.lower() in IMAGE_EXTENSIONS:
            stray_images.append(entry)
        else:
            logger.debug("Ignoring %s, which is not in a class folder", entry)

    if stray_images:
        logger.warning(
            "Ignoring %d images directly under %s, such as %s, because they are not in a class folder",
            len(stray_images), root, stray_images[0].name,
        )
    return class_dirs


def _list_class_images(root: Path, class_dir: Path) -> list[str]:
    """Return the image_ids (posix paths relative to `root`) of every image under `class_dir`."""
    image_ids = []
    for directory, subdirectory_names, file_names in os.walk(class_dir):
        for name in [name for name in subdirectory_names if name.startswith(".")]:
            logger.debug("Ignoring hidden folder %s", Path(directory, name))
            subdirectory_names.remove(name)
        subdirectory_names.sort()

        for name in sorted(file_names):
            file_path = Path(directory, name)
            if name.startswith(".") or file_path.suffix.lower() not in IMAGE_EXTENSIONS:
                logger.debug("Ignoring %s, which is hidden or not an image file", file_path)
                continue
            image_ids.append(file_path.relative_to(root).as_posix())
    return image_ids


def assign_splits(table: pl.DataFrame, config: PrepareConfig) -> pl.DataFrame:
    """Add a `split` column with train, val or test to a table from scan_image_folder.

    by_image shuffles the images of each class and sends round(n * test_fraction)
    to test, round(n * val_fraction) to val and the rest to train. Every class must
    keep MIN_IMAGES_PER_CLASS_AND_SPLIT images in each split. by_class shuffles the
    class names and splits them by the same fractions, and every split needs at
    least one class. The result depends only on the seed and the set of image_ids
    and class names, not on row order. Python's round() rounds halves to even.
    Raises PrepareError naming the classes when a split would be too small.
    """
    missing = [column for column in ("image_id", "label_name") if column not in table.columns]
    if missing:
        raise ValueError(f"table lacks the column(s) {', '.join(missing)}; build it with scan_image_folder")
    duplicated = table.filter(pl.col("image_id").is_duplicated()).get_column("image_id").unique().sort()
    if len(duplicated):
        raise ValueError(
            f"image_id must be unique, but {len(duplicated)} values repeat, such as {duplicated[0]!r}"
        )

    if config.split == "by_image":
        split_of_image = _split_by_image(table, config)
    else:
        split_of_image = _split_by_class(table, config)

    return table.with_columns(
        split=pl.col("image_id").replace_strict(split_of_image, return_dtype=pl.String)
    )


def _split_sizes(count: int, config: PrepareConfig) -> dict[str, int]:
    test = round(count * config.test_fraction)
    val = round(count * config.val_fraction)
    return {"train": count - val - test, "val": val, "test": test}


def _assign_in_order(items: list[str], sizes: dict[str, int]) -> dict[str, str]:
    """Map the first sizes['test'] items to test, the next sizes['val'] to val and the rest to train."""
    val_end = sizes["test"] + sizes["val"]
    split_of_item = {}
    for position, item in enumerate(items):
        if position < sizes["test"]:
            split_of_item[item] = "test"
        elif position < val_end:
            split_of_item[item] = "val"
        else:
            split_of_item[item] = "train"
    return split_of_item


def _split_by_image(table: pl.DataFrame, config: PrepareConfig) -> dict[str, str]:
    images_by_class = (
        table.group_by("label_name")
        .agg(pl.col("image_id").sort())
        .sort("label_name")
        .rows()
    )

    split_of_image: dict[str, str] = {}
    too_small = []
    for label_name, image_ids in images_by_class:
        sizes = _split_sizes(len(image_ids), config)
        if min(sizes.values()) < MIN_IMAGES_PER_CLASS_AND_SPLIT:
            counts = ", ".join(f"{split} {sizes[split]}" for split in SPLITS)
            too_small.append(f"{label_name!r} ({len(image_ids)} images: {counts})")
            continue
        # A string seed is hashed with SHA-512, so each class gets its own shuffle that
        # does not change when other classes are added. The order is reproducible for
        # a given seed and Python version.
        rng = random.Random(f"{config.seed}:{label_name}")
        rng.shuffle(image_ids)
        split_of_image.update(_assign_in_order(image_ids, sizes))

    if too_small:
        raise PrepareError(
            f"prepare.split=by_image needs at least {MIN_IMAGES_PER_CLASS_AND_SPLIT} images of every class in "
            f"each split, but these classes have fewer: {'; '.join(too_small)}. Add images to these classes, "
            "change prepare.val_fraction and prepare.test_fraction, or set prepare.split to by_class"
        )
    return split_of_image


def _split_by_class(table: pl.DataFrame, config: PrepareConfig) -> dict[str, str]:
    class_names = table.get_column("label_name").unique().sort().to_list()
    sizes = _split_sizes(len(class_names), config)
    if min(sizes.values()) < 1:
        counts = ", ".join(f"{split} {sizes[split]}" for split in SPLITS)
        raise PrepareError(
            f"prepare.split=by_class needs at least one class in each split, but {len(class_names)} classes "
            f"split into {counts}. Add classes, change prepare.val_fraction and prepare.test_fraction, "
            "or set prepare.split to by_image"
        )

    random.Random(config.seed).shuffle(class_names)
    split_of_class = _assign_in_order(class_names, sizes)
    return dict(zip(
        table.get_column("image_id").to_list(),
        (split_of_class[name] for name in table.get_column("label_name").to_list()),
    ))


def prepare_dataset(raw_dir: Path, config: PrepareConfig, output_dir: Path, *, num_workers: int = 0) -> dict:
    """Scan `raw_dir/images`, split it, check every image and write one parquet file per split.

    `output_dir` appears with train.parquet, val.parquet and test.parquet only when
    every step succeeds. `num_workers` threads decode images, and 0 decodes them
    serially. Returns the metrics per split (images, classes and the min, median and
    max images per class) and excluded_images, which is always 0 because any
    broken image fails the stage. Raises ImageError listing every broken image.
    """
    images_root = Path(raw_dir) / "images"
    table = assign_splits(scan_image_folder(images_root), config)

    logger.info("Checking %d images (num_workers=%d)", table.height, num_workers)
    sizes = check_images(table.get_column("path").to_list(), num_workers=num_workers)
    table = table.with_columns(
        pl.Series("width", [width for width, _, _ in sizes], dtype=pl.Int64),
        pl.Series("height", [height for _, height, _ in sizes], dtype=pl.Int64),
        pl.Series("mode", [mode for _, _, mode in sizes], dtype=pl.String),
    )

    metrics: dict = {}
    with atomic_path(output_dir) as temporary:
        temporary.mkdir()
        for split in SPLITS:
            split_table = table.filter(pl.col("split") == split).sort("image_id")
            split_table.write_parquet(temporary / f"{split}.parquet")
            metrics[split] = _split_metrics(split_table)
            logger.info(
                "Wrote %d %s images of %d classes", metrics[split]["images"], split, metrics[split]["classes"]
            )
    metrics["excluded_images"] = 0
    return metrics


def _split_metrics(split_table: pl.DataFrame) -> dict:
    images_per_class = split_table.group_by("label").agg(pl.len().alias("images")).get_column("images")
    return {
        "images": split_table.height,
        "classes": len(images_per_class),
        "images_per_class": {
            "min": int(images_per_class.min()),
            "median": float(images_per_class.median()),
            "max": int(images_per_class.max()),
        },
    }
