"""Split an image table into train, val and test, and check and cache every image.

Each split is written as `<split>.parquet` with the columns image_id, path,
label, label_name, super_label, split, width, height, mode and cache_path
(null when the original is small enough to read directly).
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import polars as pl

from image_retrieval.config import PrepareConfig
from image_retrieval.data.cache import check_and_cache_images, images_failed_error
from image_retrieval.io import atomic_path, write_json

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
# The split value and file name of catalog images (data.gallery), which no split of the dataset contains.
GALLERY_SPLIT = "gallery"
CACHE_DIR = "cache"
GALLERY_INFO_FILE = "gallery.json"
# With data.gallery="positives", the image ids of the test split's queries.
QUERIES_FILE = "queries.parquet"
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

    if "split" in table.columns and table.get_column("split").is_not_null().any():
        return _carve_val_classes(table, config)
    if "split" in table.columns:
        table = table.drop("split")

    if config.split == "by_image":
        split_of_image = _split_by_image(table, config)
    else:
        split_of_image = _split_by_class(table, config)

    return table.with_columns(
        split=pl.col("image_id").replace_strict(split_of_image, return_dtype=pl.String)
    )


def _carve_val_classes(table: pl.DataFrame, config: PrepareConfig) -> pl.DataFrame:
    """Keep an official train/test split and move a seeded fraction of training classes to val.

    The test split is never touched, so no test class ever reaches validation.
    """
    official = set(table.get_column("split").unique().to_list())
    if not official <= {"train", "test"} or None in official:
        raise PrepareError(
            f"an official split must label every image train or test, found {sorted(map(str, official))}"
        )

    train_classes = (
        table.filter(pl.col("split") == "train").get_column("label_name").unique().sort().to_list()
    )
    num_val_classes = round(len(train_classes) * config.val_fraction)
    if num_val_classes < 1 or num_val_classes >= len(train_classes):
        raise PrepareError(
            f"prepare.val_fraction={config.val_fraction} of the {len(train_classes)} training classes gives "
            f"{num_val_classes} validation classes; choose a fraction that leaves at least one class in each"
        )

    random.Random(config.seed).shuffle(train_classes)
    val_classes = train_classes[:num_val_classes]
    return table.with_columns(
        split=pl.when((pl.col("split") == "train") & pl.col("label_name").is_in(val_classes))
        .then(pl.lit("val"))
        .otherwise(pl.col("split"))
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


def label_gallery(gallery_table: pl.DataFrame, dataset_table: pl.DataFrame) -> pl.DataFrame:
    """Give each catalog image the dataset's label of its class name; new class names get new labels.

    A catalog class without a namesake in the dataset has no query, so it only
    adds distractors. Its label is above every dataset label.
    """
    known = dataset_table.select("label_name", "label").unique("label_name")
    next_label = int(dataset_table.get_column("label").max()) + 1
    new_names = sorted(set(gallery_table.get_column("label_name")) - set(known.get_column("label_name")))
    new = pl.DataFrame(
        {"label_name": new_names, "label": list(range(next_label, next_label + len(new_names)))},
        schema={"label_name": pl.String, "label": pl.Int64},
    )
    labels = pl.concat([known, new])
    return gallery_table.drop("label").join(labels, on="label_name", how="left").with_columns(
        split=pl.lit(GALLERY_SPLIT, dtype=pl.String)
    ).select(gallery_table.columns)


def prepare_dataset(
    table: pl.DataFrame, config: PrepareConfig, output_dir: Path, *, source_hint: str | None = None
) -> dict:
    """Split the image table, check every image, cache large ones and write the splits.

    `table` comes from a dataset adapter (see `image_retrieval.data.datasets`).
    `output_dir` receives train.parquet, val.parquet, test.parquet,
    excluded.parquet and the image cache under cache/, and appears only when
    every step succeeds. With prepare.on_bad_image=error, one unreadable image
    raises ImageError listing every unreadable image; with exclude, they are
    left out and listed in excluded.parquet. Returns the metrics per split
    (images, classes, and the min, median and max images per class) and the
    count of excluded images. `source_hint` names where the images came from
    (such as "data.demo.source='data/demo'"), so that an error about a fetched
    copy names the original to fix.
    """
    table = assign_splits(table, config)
    output_dir = Path(output_dir)

    logger.info("Checking %d images", table.height)
    with atomic_path(output_dir) as temporary:
        temporary.mkdir()
        table, excluded = _check_and_cache(table, config, temporary, output_dir, source_hint)

        metrics: dict = {}
        for split in SPLITS:
            split_table = table.filter(pl.col("split") == split).sort("image_id")
            if split_table.height == 0:
                raise PrepareError(f"the {split} split is empty after excluding unreadable images")
            split_table.write_parquet(temporary / f"{split}.parquet")
            metrics[split] = _split_metrics(split_table)
            logger.info(
                "Wrote %d %s images of %d classes", metrics[split]["images"], split, metrics[split]["classes"]
            )
    metrics["excluded_images"] = excluded.height
    metrics["cached_images"] = int(table.get_column("cache_path").is_not_null().sum())
    return metrics


def prepare_gallery(
    gallery_table: pl.DataFrame | None,
    test_table: pl.DataFrame,
    config: PrepareConfig,
    output_dir: Path,
    *,
    source_hint: str | None = None,
) -> dict:
    """Label, check and cache a catalog gallery and write `output_dir`/gallery.parquet.

    `gallery_table` is a catalog read by `datasets.read_gallery`, or None when
    the test split is its own gallery: then `output_dir` receives only
    gallery.json, so that the folder exists either way. Catalog images get the
    label of the test class with the same name (see `label_gallery`). Bad images
    follow prepare.on_bad_image as in `prepare_dataset`. The catalog lives apart
    from data/prepared so that changing it never re-runs training. Returns the
    gallery's metrics, or an empty dict.
    """
    output_dir = Path(output_dir)
    with atomic_path(output_dir) as temporary:
        temporary.mkdir()
        if gallery_table is None:
            write_json(temporary / GALLERY_INFO_FILE, {"gallery": "test"})
            return {}

        logger.info("Checking %d catalog images", gallery_table.height)
        table = label_gallery(gallery_table, test_table)
        table, excluded = _check_and_cache(table, config, temporary, output_dir, source_hint, "gallery")
        if table.height == 0:
            raise PrepareError("the gallery is empty after excluding unreadable images")
        table.sort("image_id").write_parquet(temporary / f"{GALLERY_SPLIT}.parquet")
        write_json(temporary / GALLERY_INFO_FILE, {"gallery": "catalog", "images": table.height})

    test_names = test_table.get_column("label_name").unique()
    return {
        **_split_metrics(table),
        "classes_in_test": int(table.get_column("label_name").unique().is_in(test_names).sum()),
        "excluded_images": excluded.height,
    }


def prepare_pair_gallery(
    test_table: pl.DataFrame, query_ids: set[str], positive_ids: set[str], output_dir: Path
) -> dict:
    """Split the test split of a JSONL pair dataset into queries and a gallery of positives.

    The test images named as `positive` in the pair file form the gallery
    (gallery.parquet, rows as in test.parquet), and those named only as
    `query_image` are the queries (queries.parquet, their image_id). An image
    named in both roles stays in the gallery and is not a query, because a
    query must not find itself. Returns the counts for metrics/prepare.json.
    """
    test_ids = test_table.get_column("image_id")
    gallery = test_table.filter(test_ids.is_in(list(positive_ids)))
    queries = test_table.filter(test_ids.is_in(list(query_ids - positive_ids))).select("image_id")
    if gallery.height == 0 or queries.height == 0:
        raise PrepareError(
            f"the test split has {queries.height} query images and {gallery.height} positives; "
            'data.gallery="positives" needs both, so use data.gallery=test for this pair file'
        )

    with atomic_path(Path(output_dir)) as temporary:
        temporary.mkdir()
        gallery.write_parquet(temporary / f"{GALLERY_SPLIT}.parquet")
        queries.write_parquet(temporary / QUERIES_FILE)
        write_json(temporary / GALLERY_INFO_FILE, {"gallery": "positives", "images": gallery.height})
    return {
        **_split_metrics(gallery),
        "queries": queries.height,
        "images_in_both_roles": int(test_ids.is_in(list(query_ids & positive_ids)).sum()),
    }


def _check_and_cache(
    table: pl.DataFrame,
    config: PrepareConfig,
    temporary: Path,
    output_dir: Path,
    source_hint: str | None,
    source_kind: str = "dataset",
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Decode every image of `table`, cache the large ones and handle the unreadable ones.

    Writes the cache under `temporary`/cache (whose final place is
    `output_dir`/cache) and excluded.parquet. Returns the readable rows with
    width, height, mode and cache_path, and the excluded rows with their reason.
    """
    caching = config.cache_shorter_side > 0
    checks = check_and_cache_images(
        table.get_column("path").to_list(),
        table.get_column("image_id").to_list(),
        write_dir=temporary / CACHE_DIR if caching else None,
        final_dir=output_dir / CACHE_DIR if caching else None,
        shorter_side=config.cache_shorter_side,
        num_workers=config.num_workers,
    )

    failed = [index for index, check in enumerate(checks) if check.error is not None]
    excluded = table[failed].select("image_id", "path").with_columns(
        reason=pl.Series([checks[index].error for index in failed], dtype=pl.String)
    )
    if failed and config.on_bad_image == "error":
        where = f" in the {source_kind} source ({source_hint}), not in the fetched copy" if source_hint else ""
        raise images_failed_error(
            [(path, reason) for _, path, reason in excluded.iter_rows()],
            table.height,
            f"Replace or delete these files{where}, or set prepare.on_bad_image=exclude to leave them out.",
        )
    if failed:
        logger.warning("Excluding %d unreadable images; see %s", len(failed), output_dir / "excluded.parquet")

    table = table.with_columns(
        pl.Series("width", [check.width for check in checks], dtype=pl.Int64),
        pl.Series("height", [check.height for check in checks], dtype=pl.Int64),
        pl.Series("mode", [check.mode for check in checks], dtype=pl.String),
        pl.Series("cache_path", [check.cache_path for check in checks], dtype=pl.String),
    )
    table = table.filter(pl.col("image_id").is_in(excluded.get_column("image_id")).not_())
    excluded.write_parquet(temporary / "excluded.parquet")
    return table, excluded


def image_source_paths(table: pl.DataFrame) -> list[str]:
    """Return, for each row, the cached copy of the image where there is one, else the original."""
    if "cache_path" not in table.columns:
        return table.get_column("path").to_list()
    return table.select(pl.coalesce("cache_path", "path")).to_series().to_list()


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
