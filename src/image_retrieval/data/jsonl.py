"""Read a JSONL file of labelled image pairs into the common image table.

Each non-empty line is one JSON object such as
`{"query_image": "bicycle/111.jpg", "positive": "bicycle/112.jpg", "label": 1001}`.
Both images belong to the class `label`. Other keys are ignored.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path, PurePosixPath, PureWindowsPath

import polars as pl

from image_retrieval.data.folder import find_missing_files

logger = logging.getLogger(__name__)

IMAGE_KEYS = ("query_image", "positive")
REQUIRED_KEYS = (*IMAGE_KEYS, "label")
# Maximum number of missing images that an error message lists.
MAX_LISTED_IMAGES = 10
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

_RECORD_SCHEMA = {"image_id": pl.String, "label": pl.Int64, "line": pl.Int64}


class JsonlFormatError(ValueError):
    """A JSONL pair file has an invalid line, conflicting labels or images that are not found."""


def read_jsonl(jsonl_path: Path, image_root: Path | None = None) -> pl.DataFrame:
    """Read every image named in a JSONL pair file into a table with the columns of TABLE_SCHEMA.

    Image paths in the file are relative to `image_root`, which defaults to the
    folder of `jsonl_path`. Each image becomes one row with the label of its lines,
    so an image that appears on several lines with the same label gives one row.
    label_name is str(label), and super_label and split are null. Raises
    JsonlFormatError naming the line for invalid JSON, a missing key, a label that
    is not an integer, or an absolute image path or one with `..`. It also raises
    for an image with two different labels, naming both lines, and lists the
    images that are not found under `image_root`.
    """
    jsonl_path = Path(jsonl_path)
    image_root = jsonl_path.parent if image_root is None else Path(image_root)
    if not jsonl_path.is_file():
        raise JsonlFormatError(f"pair file {jsonl_path} not found; check the path")

    records = pl.DataFrame(_read_records(jsonl_path, image_root), schema=_RECORD_SCHEMA, orient="row")
    if records.height == 0:
        raise JsonlFormatError(f"{jsonl_path} contains no pairs; add one JSON object per line")

    _check_one_label_per_image(jsonl_path, records)
    # Rows are in line order, so each image keeps the line where it first appears.
    images = records.unique(subset="image_id", keep="first", maintain_order=True)
    _check_images_exist(jsonl_path, image_root, images)

    images = images.sort("image_id")
    paths = [str(image_root / image_id) for image_id in images.get_column("image_id")]
    table = images.select(
        "image_id",
        path=pl.Series(paths, dtype=pl.String),
        label="label",
        label_name=pl.col("label").cast(pl.String),
        super_label=pl.lit(None, dtype=pl.Int64),
        split=pl.lit(None, dtype=pl.String),
    )
    logger.info(
        "Read %d images of %d classes from %s", table.height, table.get_column("label").n_unique(), jsonl_path
    )
    return table


def read_pair_roles(jsonl_path: Path, image_root: Path | None = None) -> tuple[set[str], set[str]]:
    """Return the image ids named as query_image and those named as positive in a JSONL pair file.

    The ids are those of `read_jsonl`'s table. An image may be in both sets.
    """
    jsonl_path = Path(jsonl_path)
    image_root = jsonl_path.parent if image_root is None else Path(image_root)
    records = _read_records(jsonl_path, image_root)
    # Each line adds its images in IMAGE_KEYS order: query_image, then positive.
    query_ids = {image_id for image_id, _, _ in records[0::2]}
    positive_ids = {image_id for image_id, _, _ in records[1::2]}
    return query_ids, positive_ids


def _read_records(jsonl_path: Path, image_root: Path) -> list[tuple[str, int, int]]:
    """Return (image_id, label, line number) for both images of every line."""
    records = []
    try:
        with jsonl_path.open(encoding="utf-8") as stream:
            for line_number, line in enumerate(stream, start=1):
                if line.strip():
                    records.extend(_parse_line(jsonl_path, image_root, line_number, line))
    except UnicodeDecodeError as error:
        raise JsonlFormatError(
            f"{jsonl_path} is not UTF-8 text ({error}); save the file as UTF-8"
        ) from None
    return records


def _parse_line(jsonl_path: Path, image_root: Path, line_number: int, line: str) -> list[tuple[str, int, int]]:
    where = f"{jsonl_path} line {line_number}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise JsonlFormatError(f"{where}: invalid JSON ({error.msg} at column {error.colno})") from None

    if not isinstance(record, dict):
        raise JsonlFormatError(f"{where}: expected a JSON object with the keys {', '.join(REQUIRED_KEYS)}, "
                               f"found a JSON {type(record).__name__}")
    missing = [key for key in REQUIRED_KEYS if key not in record]
    if missing:
        raise JsonlFormatError(f"{where}: the key(s) {', '.join(missing)} are missing; "
                               f"every line needs {', '.join(REQUIRED_KEYS)}")

    label = record["label"]
    # bool is a subclass of int in Python, but true and false are not labels.
    if isinstance(label, bool) or not isinstance(label, int):
        raise JsonlFormatError(f"{where}: label {json.dumps(label)} is not an integer")
    if not _INT64_MIN <= label <= _INT64_MAX:
        raise JsonlFormatError(f"{where}: label {label} does not fit in a 64-bit signed integer")

    return [(_to_image_id(where, key, record[key], image_root), label, line_number) for key in IMAGE_KEYS]


def _to_image_id(where: str, key: str, value: object, image_root: Path) -> str:
    """Return `value` as a normalised posix path relative to `image_root`."""
    if not isinstance(value, str) or not value.strip():
        raise JsonlFormatError(f"{where}: {key} must be a non-empty path string, found {json.dumps(value)}")
    # PureWindowsPath also catches C:\... and \\server\share paths, which a file
    # written on Windows could contain.
    if PurePosixPath(value).is_absolute() or PureWindowsPath(value).anchor:
        raise JsonlFormatError(f"{where}: {key} {value!r} is an absolute path; give it relative to {image_root}")
    if ".." in re.split(r"[/\\]", value):
        raise JsonlFormatError(f"{where}: {key} {value!r} contains '..'; give a path inside {image_root}")
    # Drops "." parts and repeated slashes, so that two spellings of a path merge.
    return PurePosixPath(value).as_posix()


def _check_one_label_per_image(jsonl_path: Path, records: pl.DataFrame) -> None:
    conflicting = records.filter(pl.col("label").n_unique().over("image_id") > 1)
    if not conflicting.height:
        return

    image_rows = conflicting.filter(pl.col("image_id") == conflicting.item(0, "image_id"))
    first = image_rows.row(0, named=True)
    second = image_rows.filter(pl.col("label") != first["label"]).row(0, named=True)
    count = conflicting.get_column("image_id").n_unique()
    raise JsonlFormatError(
        f"{jsonl_path}: image {first['image_id']!r} has label {first['label']} on line {first['line']} "
        f"but label {second['label']} on line {second['line']}; give every image one label "
        f"({count} images have more than one)"
    )


def _check_images_exist(jsonl_path: Path, image_root: Path, images: pl.DataFrame) -> None:
    missing = set(find_missing_files(image_root, images.get_column("image_id")))
    if not missing:
        return

    missing_rows = images.filter(pl.col("image_id").is_in(list(missing))).sort("line", "image_id")
    listed = "\n".join(
        f"  line {row['line']}: {row['image_id']}" for row in missing_rows.head(MAX_LISTED_IMAGES).rows(named=True)
    )
    raise JsonlFormatError(
        f"{missing_rows.height} of {images.height} images named in {jsonl_path} are not found under "
        f"{image_root}; the first {min(missing_rows.height, MAX_LISTED_IMAGES)} are:\n{listed}\n"
        "Add the images, fix their paths, or pass the image_root they are relative to."
    )
