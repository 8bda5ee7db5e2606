"""Tests for reading users' image folders into the common image table."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from PIL import Image

from image_retrieval.data.folder import TABLE_SCHEMA, find_missing_files, read_folder
from image_retrieval.data.prepare import PrepareError

DEMO_IMAGES = Path(__file__).resolve().parents[1] / "data" / "demo" / "images"


def write_images(folder: Path, count: int, suffix: str = ".png") -> list[Path]:
    """Write `count` small greyscale images named img_000<suffix>, img_001<suffix>, ... into folder."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"img_{index:03d}{suffix}"
        Image.new("L", (5, 4), index * 30 % 256).save(path)
        paths.append(path)
    return paths


def make_nested_folder(root: Path) -> Path:
    write_images(root / "vehicle" / "car", 2)
    write_images(root / "vehicle" / "bicycle", 1, ".jpg")
    write_images(root / "furniture" / "table", 2)
    write_images(root / "furniture" / "chair", 1)
    return root


def test_read_folder_flat_from_demo_images():
    table = read_folder(DEMO_IMAGES)

    class_names = sorted(path.name for path in DEMO_IMAGES.iterdir() if path.is_dir())
    assert table.schema == TABLE_SCHEMA
    assert table.get_column("split").null_count() == table.height
    assert table.get_column("super_label").null_count() == table.height
    assert table.get_column("label_name").unique().sort().to_list() == class_names
    assert table.get_column("image_id").is_sorted()


def test_read_folder_flat_labels(tmp_path):
    write_images(tmp_path / "zebra", 1)
    write_images(tmp_path / "apple", 2)

    table = read_folder(tmp_path, layout="flat")

    assert table.get_column("image_id").to_list() == ["apple/img_000.png", "apple/img_001.png", "zebra/img_000.png"]
    assert table.get_column("label").to_list() == [0, 0, 1]
    assert table.get_column("path").to_list() == [str(tmp_path / image_id) for image_id in table["image_id"]]


def test_read_folder_nested_labels(tmp_path):
    root = make_nested_folder(tmp_path / "images")

    table = read_folder(root, layout="nested")

    assert table.schema == TABLE_SCHEMA
    assert table.rows() == [
        ("furniture/chair/img_000.png", str(root / "furniture/chair/img_000.png"), 0, "furniture/chair", 0, None),
        ("furniture/table/img_000.png", str(root / "furniture/table/img_000.png"), 1, "furniture/table", 0, None),
        ("furniture/table/img_001.png", str(root / "furniture/table/img_001.png"), 1, "furniture/table", 0, None),
        ("vehicle/bicycle/img_000.jpg", str(root / "vehicle/bicycle/img_000.jpg"), 2, "vehicle/bicycle", 1, None),
        ("vehicle/car/img_000.png", str(root / "vehicle/car/img_000.png"), 3, "vehicle/car", 1, None),
        ("vehicle/car/img_001.png", str(root / "vehicle/car/img_001.png"), 3, "vehicle/car", 1, None),
    ]


def test_read_folder_nested_sorts_pairs_not_names(tmp_path):
    # "a-b/x" sorts before "a/x" as a string, but the pair ("a", "x") sorts before ("a-b", "x").
    write_images(tmp_path / "a" / "x", 1)
    write_images(tmp_path / "a-b" / "x", 1)

    table = read_folder(tmp_path, layout="nested")

    assert table.select("label_name", "label", "super_label").rows() == [("a-b/x", 1, 1), ("a/x", 0, 0)]


def test_read_folder_nested_hidden_and_subfolders(tmp_path):
    root = make_nested_folder(tmp_path / "images")
    write_images(root / ".cache" / "thumbs", 1)
    write_images(root / "vehicle" / "car" / "side", 1)

    table = read_folder(root, layout="nested")

    assert "vehicle/car/side/img_000.png" in table.get_column("image_id").to_list()
    assert table.filter(pl.col("image_id").str.starts_with(".")).height == 0
    assert table.filter(pl.col("image_id") == "vehicle/car/side/img_000.png").item(0, "label") == 3


def test_read_folder_nested_relative_root(tmp_path, monkeypatch):
    make_nested_folder(tmp_path / "images")
    monkeypatch.chdir(tmp_path)

    table = read_folder(Path("images"), layout="nested")

    assert table.item(0, "path") == "images/furniture/chair/img_000.png"


def test_read_folder_nested_images_in_super_folder(tmp_path):
    root = make_nested_folder(tmp_path / "images")
    write_images(root / "vehicle", 2, ".jpg")

    with pytest.raises(PrepareError) as excinfo:
        read_folder(root, layout="nested")

    message = str(excinfo.value)
    assert "2 images sit directly in a super-class folder" in message
    assert str(root / "vehicle" / "img_000.jpg") in message
    assert str(root / "vehicle" / "img_001.jpg") in message


def test_read_folder_nested_empty_super_folder(tmp_path):
    root = make_nested_folder(tmp_path / "images")
    (root / "empty").mkdir()

    with pytest.raises(PrepareError, match="contains no class folders") as excinfo:
        read_folder(root, layout="nested")

    assert str(root / "empty") in str(excinfo.value)


def test_read_folder_nested_without_super_folders(tmp_path):
    (tmp_path / "images").mkdir()

    with pytest.raises(PrepareError, match="contains no super-class folders"):
        read_folder(tmp_path / "images", layout="nested")


def test_read_folder_nested_missing_root(tmp_path):
    with pytest.raises(PrepareError) as excinfo:
        read_folder(tmp_path / "absent", layout="nested")

    assert f"image folder {tmp_path / 'absent'} not found" in str(excinfo.value)


def test_read_folder_invalid_layout(tmp_path):
    with pytest.raises(ValueError) as excinfo:
        read_folder(tmp_path, layout="tree")

    assert "invalid folder layout 'tree'" in str(excinfo.value)
    assert "flat, nested" in str(excinfo.value)


def test_find_missing_files_keeps_input_order(tmp_path):
    write_images(tmp_path / "a", 2)
    (tmp_path / "a" / "folder.png").mkdir()
    image_ids = ["b/img_000.png", "a/img_001.png", "a/folder.png", "a/img_009.png", "a/img_000.png"]

    assert find_missing_files(tmp_path, image_ids) == ["b/img_000.png", "a/folder.png", "a/img_009.png"]


def test_find_missing_files_at_top_level(tmp_path):
    write_images(tmp_path, 1)

    assert find_missing_files(tmp_path, ["img_000.png", "img_001.png"]) == ["img_001.png"]
