"""Tests for reading Stanford Online Products list files into the common image table."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from PIL import Image

from image_retrieval.data.folder import TABLE_SCHEMA
from image_retrieval.data.sop import SopFormatError, find_sop_root, read_sop, super_label_names

HEADER_LINE = "image_id class_id super_class_id path"

# (image_id, class_id, super_class_id, path) rows like those of the official files.
# TEST_ROWS number their rows from 1 again, so an image_id repeats across the files.
TRAIN_ROWS = [
    (1, 1, 1, "bicycle_final/111_0.JPG"),
    (2, 1, 1, "bicycle_final/111_1.JPG"),
    (3, 2, 2, "chair_final/222_0.JPG"),
    (4, 2, 2, "chair_final/222_1.JPG"),
]
TEST_ROWS = [
    (1, 3, 1, "bicycle_final/333_0.JPG"),
    (2, 3, 1, "bicycle_final/333_1.JPG"),
    (3, 4, 2, "chair_final/444_0.JPG"),
    (4, 4, 2, "chair_final/444_1.JPG"),
]


def format_rows(rows) -> list[str]:
    return [" ".join(str(field) for field in row) for row in rows]


def write_sop_layout(
    root: Path,
    train_lines: list[str] | None = None,
    test_lines: list[str] | None = None,
    *,
    images: list[str] | None = None,
) -> Path:
    """Write the two SOP list files and a small JPEG for each path in `images` into root.

    The list files get the given lines, by default the header and TRAIN_ROWS or
    TEST_ROWS. `images` defaults to every path of TRAIN_ROWS and TEST_ROWS.
    """
    if train_lines is None:
        train_lines = [HEADER_LINE, *format_rows(TRAIN_ROWS)]
    if test_lines is None:
        test_lines = [HEADER_LINE, *format_rows(TEST_ROWS)]
    if images is None:
        images = [row[3] for row in TRAIN_ROWS + TEST_ROWS]

    root.mkdir(parents=True, exist_ok=True)
    (root / "Ebay_train.txt").write_text("\n".join(train_lines) + "\n")
    (root / "Ebay_test.txt").write_text("\n".join(test_lines) + "\n")
    for index, image_id in enumerate(images):
        image_path = root / image_id
        image_path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 3), (index * 20 % 256, 80, 160)).save(image_path, format="JPEG")
    return root


def read_error(root: Path) -> str:
    with pytest.raises(SopFormatError) as excinfo:
        read_sop(root)
    return str(excinfo.value)


def test_read_sop_columns_and_order(tmp_path):
    root = write_sop_layout(tmp_path / "sop")

    table = read_sop(root)

    assert table.schema == TABLE_SCHEMA
    assert table.get_column("image_id").to_list() == sorted(row[3] for row in TRAIN_ROWS + TEST_ROWS)
    assert table.get_column("path").to_list() == [str(root / image_id) for image_id in table["image_id"]]


def test_read_sop_keeps_official_split(tmp_path):
    table = read_sop(write_sop_layout(tmp_path / "sop"))

    split_of_image = dict(table.select("image_id", "split").rows())
    assert {split_of_image[row[3]] for row in TRAIN_ROWS} == {"train"}
    assert {split_of_image[row[3]] for row in TEST_ROWS} == {"test"}


def test_read_sop_labels_and_super_labels(tmp_path):
    table = read_sop(write_sop_layout(tmp_path / "sop"))

    rows = {row[0]: row[1:] for row in table.select("image_id", "label", "label_name", "super_label").rows()}
    for _, class_id, super_class_id, path in TRAIN_ROWS + TEST_ROWS:
        assert rows[path] == (class_id, str(class_id), super_class_id)


def test_super_label_names_from_folders(tmp_path):
    table = read_sop(write_sop_layout(tmp_path / "sop"))

    assert super_label_names(table) == {1: "bicycle", 2: "chair"}


def test_super_label_names_rejects_two_folders(tmp_path):
    table = read_sop(write_sop_layout(tmp_path / "sop")).with_columns(
        super_label=pl.when(pl.col("super_label") == 2).then(1).otherwise(pl.col("super_label"))
    )

    with pytest.raises(SopFormatError) as excinfo:
        super_label_names(table)

    assert "super_class_id 1" in str(excinfo.value)
    assert "bicycle_final, chair_final" in str(excinfo.value)


def test_read_sop_finds_archive_subfolder(tmp_path):
    sop_root = write_sop_layout(tmp_path / "download" / "Stanford_Online_Products")

    table = read_sop(tmp_path / "download")

    assert find_sop_root(tmp_path / "download") == sop_root
    assert table.height == len(TRAIN_ROWS) + len(TEST_ROWS)
    assert table.item(0, "image_id") == "bicycle_final/111_0.JPG"
    assert table.item(0, "path") == str(sop_root / "bicycle_final" / "111_0.JPG")


def test_read_sop_relative_root(tmp_path, monkeypatch):
    write_sop_layout(tmp_path / "data" / "Stanford_Online_Products")
    monkeypatch.chdir(tmp_path)

    table = read_sop(Path("data"))

    assert table.item(0, "path") == "data/Stanford_Online_Products/bicycle_final/111_0.JPG"


def test_read_sop_blank_lines_and_crlf(tmp_path):
    train_lines = [HEADER_LINE + "\r", "", *[line + "\r" for line in format_rows(TRAIN_ROWS)], "   "]
    root = write_sop_layout(tmp_path / "sop", train_lines=train_lines)

    table = read_sop(root)

    assert table.filter(pl.col("split") == "train").height == len(TRAIN_ROWS)


def test_read_sop_missing_root(tmp_path):
    message = read_error(tmp_path / "absent")

    assert str(tmp_path / "absent") in message
    assert "not found" in message


def test_read_sop_without_list_files(tmp_path):
    (tmp_path / "sop").mkdir()

    message = read_error(tmp_path / "sop")

    assert f"neither {tmp_path / 'sop'} nor {tmp_path / 'sop' / 'Stanford_Online_Products'}" in message
    assert "Ebay_train.txt and Ebay_test.txt" in message


def test_read_sop_without_test_file(tmp_path):
    root = write_sop_layout(tmp_path / "sop")
    (root / "Ebay_test.txt").unlink()

    message = read_error(root)

    assert f"{root} contains Ebay_train.txt but not Ebay_test.txt" in message


def test_read_sop_empty_list_file(tmp_path):
    root = write_sop_layout(tmp_path / "sop", test_lines=[""])

    message = read_error(root)

    assert f"{root / 'Ebay_test.txt'} line 1" in message
    assert "header line" in message
    assert "missing" in message


def test_read_sop_missing_header(tmp_path):
    root = write_sop_layout(tmp_path / "sop", train_lines=format_rows(TRAIN_ROWS))

    message = read_error(root)

    assert f"{root / 'Ebay_train.txt'} line 1" in message
    assert "expected the header 'image_id class_id super_class_id path'" in message
    assert "found '1 1 1 bicycle_final/111_0.JPG'" in message


def test_read_sop_wrong_header(tmp_path):
    root = write_sop_layout(tmp_path / "sop", test_lines=["id class super path", *format_rows(TEST_ROWS)])

    message = read_error(root)

    assert f"{root / 'Ebay_test.txt'} line 1" in message
    assert "'id class super path'" in message


def test_read_sop_header_without_rows(tmp_path):
    root = write_sop_layout(tmp_path / "sop", test_lines=[HEADER_LINE])

    message = read_error(root)

    assert f"{root / 'Ebay_test.txt'} has a header but no image rows" in message


@pytest.mark.parametrize("row", ["3 2 chair_final/222_0.JPG", "3 2 2 chair_final/222_0.JPG extra"])
def test_read_sop_wrong_field_count(tmp_path, row):
    lines = [HEADER_LINE, *format_rows(TRAIN_ROWS[:2]), row, *format_rows(TRAIN_ROWS[3:])]
    root = write_sop_layout(tmp_path / "sop", train_lines=lines)

    message = read_error(root)

    assert f"{root / 'Ebay_train.txt'} line 4" in message
    assert "expected 4 space-separated fields" in message
    assert repr(row) in message


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ("x 1 1 bicycle_final/111_1.JPG", "image_id 'x'"),
        ("2 1.5 1 bicycle_final/111_1.JPG", "class_id '1.5'"),
        ("2 1 one bicycle_final/111_1.JPG", "super_class_id 'one'"),
    ],
)
def test_read_sop_non_integer_id(tmp_path, row, field):
    lines = [HEADER_LINE, *format_rows(TRAIN_ROWS[:1]), row, *format_rows(TRAIN_ROWS[2:])]
    root = write_sop_layout(tmp_path / "sop", train_lines=lines)

    message = read_error(root)

    assert f"{root / 'Ebay_train.txt'} line 3: {field} is not an integer" in message


@pytest.mark.parametrize("path", ["/tmp/bicycle_final/111_1.JPG", "../bicycle_final/111_1.JPG", "a/../b.JPG"])
def test_read_sop_rejects_path_outside_root(tmp_path, path):
    lines = [HEADER_LINE, *format_rows(TRAIN_ROWS[:1]), f"2 1 1 {path}", *format_rows(TRAIN_ROWS[2:])]
    root = write_sop_layout(tmp_path / "sop", train_lines=lines)

    message = read_error(root)

    assert f"{root / 'Ebay_train.txt'} line 3: path {path!r}" in message
    assert "must be relative" in message


def test_read_sop_repeated_image_id_in_file(tmp_path):
    rows = [TRAIN_ROWS[0], (1, *TRAIN_ROWS[1][1:]), *TRAIN_ROWS[2:]]
    root = write_sop_layout(tmp_path / "sop", train_lines=[HEADER_LINE, *format_rows(rows)])

    message = read_error(root)

    assert f"image_id 1 is repeated: {root / 'Ebay_train.txt'} line 2 and line 3" in message


def test_read_sop_repeated_path_in_file(tmp_path):
    rows = [*TRAIN_ROWS, (5, 2, 2, TRAIN_ROWS[2][3])]
    root = write_sop_layout(tmp_path / "sop", train_lines=[HEADER_LINE, *format_rows(rows)])

    message = read_error(root)

    assert "path 'chair_final/222_0.JPG' is repeated" in message
    assert f"{root / 'Ebay_train.txt'} line 4 and {root / 'Ebay_train.txt'} line 6" in message


def test_read_sop_repeated_path_across_files(tmp_path):
    rows = [*TEST_ROWS, (5, 4, 2, TRAIN_ROWS[1][3])]
    root = write_sop_layout(tmp_path / "sop", test_lines=[HEADER_LINE, *format_rows(rows)])

    message = read_error(root)

    assert "path 'bicycle_final/111_1.JPG' is repeated" in message
    assert f"{root / 'Ebay_train.txt'} line 3 and {root / 'Ebay_test.txt'} line 6" in message


def test_read_sop_class_with_two_super_classes(tmp_path):
    rows = [TRAIN_ROWS[0], (2, 1, 2, TRAIN_ROWS[1][3]), *TRAIN_ROWS[2:]]
    root = write_sop_layout(tmp_path / "sop", train_lines=[HEADER_LINE, *format_rows(rows)])

    message = read_error(root)

    train_file = root / "Ebay_train.txt"
    assert "class 1 has rows with different super_class_id values" in message
    assert f"1 at {train_file} line 2, 2 at {train_file} line 3" in message


def test_read_sop_class_in_both_files(tmp_path):
    rows = [TEST_ROWS[0], (2, 1, 1, TEST_ROWS[1][3]), *TEST_ROWS[2:]]
    root = write_sop_layout(tmp_path / "sop", test_lines=[HEADER_LINE, *format_rows(rows)])

    message = read_error(root)

    assert "class 1 appears in both list files" in message
    assert f"{root / 'Ebay_train.txt'} line 2 and {root / 'Ebay_test.txt'} line 3" in message


def test_read_sop_missing_images(tmp_path):
    extra_rows = [(5 + index, 5 + index, 1, f"bicycle_final/9{index:02d}_0.JPG") for index in range(11)]
    extra_rows.append((16, 16, 3, "lamp_final/999_0.JPG"))
    root = write_sop_layout(tmp_path / "sop", test_lines=[HEADER_LINE, *format_rows(TEST_ROWS + extra_rows)])

    message = read_error(root)

    test_file = root / "Ebay_test.txt"
    assert f"12 of 20 images in the SOP list files are not found under {root}" in message
    assert f"{test_file} line 6: bicycle_final/900_0.JPG" in message
    assert f"{test_file} line 15: bicycle_final/909_0.JPG" in message
    assert "bicycle_final/910_0.JPG" not in message
    assert "lamp_final/999_0.JPG" not in message
