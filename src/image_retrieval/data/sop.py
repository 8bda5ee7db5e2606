"""Read Stanford Online Products (SOP; Song, Xiang, Jegelka and Savarese, CVPR 2016).

The official archive extracts to a folder Stanford_Online_Products/ that contains
Ebay_train.txt, Ebay_test.txt and one image folder per super-class, such as
bicycle_final/. Each list file starts with the header line
`image_id class_id super_class_id path` and has one space-separated row per image:
`1 1 1 bicycle_final/111085122871_0.JPG`. A class appears in only one of the two
files, so the official split is a split by class.
"""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl

from image_retrieval.data.folder import TABLE_SCHEMA, find_missing_files

logger = logging.getLogger(__name__)

SOP_FOLDER_NAME = "Stanford_Online_Products"
LIST_FILES = {"train": "Ebay_train.txt", "test": "Ebay_test.txt"}
HEADER = ("image_id", "class_id", "super_class_id", "path")
INTEGER_FIELDS = ("image_id", "class_id", "super_class_id")
# Maximum number of rows that an error message lists.
MAX_LISTED_ROWS = 10


class SopFormatError(ValueError):
    """The SOP folder, a list file or an image it names does not match the official layout."""


def find_sop_root(root: Path) -> Path:
    """Return the folder that contains Ebay_train.txt and Ebay_test.txt.

    This is `root` itself or `root/Stanford_Online_Products`, the folder that the
    official archive extracts to. Raises SopFormatError when neither contains both files.
    """
    root = Path(root)
    if not root.is_dir():
        raise SopFormatError(
            f"SOP folder {root} not found; extract the official Stanford_Online_Products archive there"
        )

    candidates = (root, root / SOP_FOLDER_NAME)
    for candidate in candidates:
        if all((candidate / name).is_file() for name in LIST_FILES.values()):
            return candidate

    for candidate in candidates:
        found = [name for name in LIST_FILES.values() if (candidate / name).is_file()]
        if found:
            missing = [name for name in LIST_FILES.values() if name not in found]
            raise SopFormatError(
                f"{candidate} contains {found[0]} but not {missing[0]}; "
                "extract the complete Stanford_Online_Products archive again"
            )
    raise SopFormatError(
        f"neither {root} nor {root / SOP_FOLDER_NAME} contains {' and '.join(LIST_FILES.values())}; "
        "pass the folder that contains them or the folder that the archive was extracted into"
    )


def read_sop(root: Path) -> pl.DataFrame:
    """Read the SOP list files under `root` into a table with the columns of TABLE_SCHEMA.

    `root` is the folder with the list files or its parent (see find_sop_root).
    image_id is the `path` field, label is class_id, label_name is str(class_id),
    super_label is super_class_id, and split is "train" for the rows of
    Ebay_train.txt and "test" for those of Ebay_test.txt.

    Raises SopFormatError naming the file and line for a missing or wrong header,
    a row without exactly four fields, an id that is not an integer, or an absolute
    path or one with `..`. It also raises for a repeated image_id within a file, a
    repeated path, a class with more than one super_class_id or a class in both
    files, and lists the images that are not found.
    """
    sop_root = find_sop_root(root)
    table = pl.concat([
        _read_list_file(sop_root / file_name, split) for split, file_name in LIST_FILES.items()
    ])

    _check_unique_image_numbers(table)
    _check_unique_paths(table)
    _check_one_super_class_per_class(table)
    _check_classes_in_one_split(table)
    _check_images_exist(sop_root, table)

    paths = [str(sop_root / image_id) for image_id in table.get_column("image_id")]
    result = table.select(
        "image_id",
        path=pl.Series(paths, dtype=pl.String),
        label="class_id",
        label_name=pl.col("class_id").cast(pl.String),
        super_label="super_class_id",
        split="split",
    ).sort("image_id")

    logger.info(
        "Read %d SOP images of %d classes from %s (%s)",
        result.height,
        result.get_column("label").n_unique(),
        sop_root,
        ", ".join(f"{split} {count}" for split, count in result.group_by("split").len().sort("split").rows()),
    )
    return result


def super_label_names(table: pl.DataFrame) -> dict[int, str]:
    """Map each super_label of a read_sop table to its image folder name without `_final`.

    For example, images under bicycle_final/ give the name "bicycle". Raises
    SopFormatError when the images of one super-class lie in more than one folder.
    """
    pairs = table.select(
        "super_label",
        folder=pl.col("image_id").str.split("/").list.first(),
    ).unique().sort("super_label", "folder")

    conflicting = pairs.filter(pl.len().over("super_label") > 1)
    if conflicting.height:
        super_label = conflicting.item(0, "super_label")
        folders = conflicting.filter(pl.col("super_label") == super_label).get_column("folder").to_list()
        raise SopFormatError(
            f"super_class_id {super_label} has images in the folders {', '.join(folders)}, "
            "so it has no single name; each super-class must use one folder"
        )
    return {super_label: folder.removesuffix("_final") for super_label, folder in pairs.rows()}


def _read_list_file(list_path: Path, split: str) -> pl.DataFrame:
    """Parse one list file into the columns file, line, image_number, class_id, super_class_id, image_id and split."""
    try:
        # utf-8-sig drops a byte order mark, which would otherwise spoil the header.
        text = list_path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise SopFormatError(f"{list_path} is not UTF-8 text ({error}); restore the file from the archive") from None

    lines = text.split("\n")
    header = lines[0].split()
    if not header:
        raise SopFormatError(
            f"{list_path} line 1: the header line {' '.join(HEADER)!r} is missing; "
            "restore the file from the archive"
        )
    if header != list(HEADER):
        raise SopFormatError(
            f"{list_path} line 1: expected the header {' '.join(HEADER)!r}, found {lines[0].strip()!r}; "
            "restore the file from the archive"
        )

    rows = (
        pl.DataFrame({"text": lines[1:]}, schema={"text": pl.String})
        .with_row_index("line", offset=2)
        .with_columns(pl.col("line").cast(pl.Int64), pl.col("text").str.strip_chars())
        .filter(pl.col("text") != "")
        .with_columns(fields=pl.col("text").str.extract_all(r"\S+"))
    )
    if rows.height == 0:
        raise SopFormatError(f"{list_path} has a header but no image rows; restore the file from the archive")

    wrong_length = rows.filter(pl.col("fields").list.len() != len(HEADER))
    if wrong_length.height:
        line, row_text, fields = wrong_length.row(0)
        raise SopFormatError(
            f"{list_path} line {line}: expected {len(HEADER)} space-separated fields "
            f"({' '.join(HEADER)}), found {len(fields)} in {row_text!r}"
            f"{_more_rows_note(wrong_length.height)}"
        )

    table = rows.select(
        "line",
        *(pl.col("fields").list.get(index).alias(name) for index, name in enumerate(HEADER)),
    )
    for name in INTEGER_FIELDS:
        not_integer = table.filter(pl.col(name).cast(pl.Int64, strict=False).is_null())
        if not_integer.height:
            raise SopFormatError(
                f"{list_path} line {not_integer.item(0, 'line')}: {name} {not_integer.item(0, name)!r} "
                f"is not an integer{_more_rows_note(not_integer.height)}"
            )

    invalid_path = table.filter(
        pl.col("path").str.starts_with("/") | pl.col("path").str.contains(r"(^|/)\.\.(/|$)")
    )
    if invalid_path.height:
        raise SopFormatError(
            f"{list_path} line {invalid_path.item(0, 'line')}: path {invalid_path.item(0, 'path')!r} "
            f"must be relative to {list_path.parent} and must not contain '..'"
            f"{_more_rows_note(invalid_path.height)}"
        )

    return table.select(
        file=pl.lit(str(list_path)),
        line="line",
        image_number=pl.col("image_id").cast(pl.Int64),
        class_id=pl.col("class_id").cast(pl.Int64),
        super_class_id=pl.col("super_class_id").cast(pl.Int64),
        image_id="path",
        split=pl.lit(split),
    )


def _more_rows_note(count: int) -> str:
    if count <= 1:
        return ""
    return f" ({count - 1} more rows have the same problem)"


def _location(row: dict) -> str:
    return f"{row['file']} line {row['line']}"


def _check_unique_image_numbers(table: pl.DataFrame) -> None:
    # NOTE: a number may repeat across the two files, because the official
    # Ebay_test.txt may number its rows from 1 again (not verified against the
    # archive). Images are keyed by path, and _check_unique_paths covers both files.
    repeated = table.filter(pl.len().over("file", "image_number") > 1)
    if repeated.height:
        first, second = repeated.filter(
            (pl.col("file") == repeated.item(0, "file"))
            & (pl.col("image_number") == repeated.item(0, "image_number"))
        ).head(2).rows(named=True)
        raise SopFormatError(
            f"image_id {first['image_number']} is repeated: {_location(first)} and line {second['line']}; "
            "every row of a list file needs its own image_id"
        )


def _check_unique_paths(table: pl.DataFrame) -> None:
    repeated = table.filter(pl.len().over("image_id") > 1)
    if repeated.height:
        first, second = repeated.filter(pl.col("image_id") == repeated.item(0, "image_id")).head(2).rows(named=True)
        count = repeated.get_column("image_id").n_unique()
        raise SopFormatError(
            f"path {first['image_id']!r} is repeated: {_location(first)} and {_location(second)}; "
            f"list every image once ({count} paths repeat)"
        )


def _check_one_super_class_per_class(table: pl.DataFrame) -> None:
    conflicting = table.filter(pl.col("super_class_id").n_unique().over("class_id") > 1)
    if not conflicting.height:
        return

    class_id = conflicting.item(0, "class_id")
    # The first row of each super_class_id that this class uses.
    examples = (
        conflicting.filter(pl.col("class_id") == class_id)
        .group_by("super_class_id", maintain_order=True)
        .first()
        .rows(named=True)
    )
    details = ", ".join(f"{row['super_class_id']} at {_location(row)}" for row in examples)
    count = conflicting.get_column("class_id").n_unique()
    raise SopFormatError(
        f"class {class_id} has rows with different super_class_id values ({details}); every image of a "
        f"class must have the same super_class_id ({count} classes have this problem)"
    )


def _check_classes_in_one_split(table: pl.DataFrame) -> None:
    shared = table.filter(pl.col("split").n_unique().over("class_id") > 1)
    if not shared.height:
        return

    class_id = shared.item(0, "class_id")
    examples = (
        shared.filter(pl.col("class_id") == class_id)
        .group_by("split", maintain_order=True)
        .first()
        .rows(named=True)
    )
    count = shared.get_column("class_id").n_unique()
    raise SopFormatError(
        f"class {class_id} appears in both list files ({' and '.join(_location(row) for row in examples)}); "
        f"the official split puts each class in one file only ({count} classes appear in both)"
    )


def _check_images_exist(sop_root: Path, table: pl.DataFrame) -> None:
    missing = set(find_missing_files(sop_root, table.get_column("image_id")))
    if not missing:
        return

    missing_rows = table.filter(pl.col("image_id").is_in(list(missing)))
    listed = "\n".join(
        f"  {_location(row)}: {row['image_id']}" for row in missing_rows.head(MAX_LISTED_ROWS).rows(named=True)
    )
    raise SopFormatError(
        f"{missing_rows.height} of {table.height} images in the SOP list files are not found under "
        f"{sop_root}; the first {min(missing_rows.height, MAX_LISTED_ROWS)} are:\n{listed}\n"
        "Extract the complete Stanford_Online_Products archive, or delete those rows."
    )
