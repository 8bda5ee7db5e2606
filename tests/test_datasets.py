"""Every dataset adapter feeds the same prepared tables to the stages after prepare."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from conftest import DEMO_IMAGES, copy_demo_subset, make_sop_archive
from image_retrieval.config import DataConfig, FolderDataConfig, JsonlDataConfig, PrepareConfig, SopDataConfig
from image_retrieval.data.datasets import fetch_raw_dataset, read_dataset
from image_retrieval.data.prepare import SPLITS, prepare_dataset

PREPARED_COLUMNS = [
    "image_id", "path", "label", "label_name", "super_label", "split", "width", "height", "mode", "cache_path",
]


def prepare(data: DataConfig, tmp_path: Path, config: PrepareConfig) -> dict[str, pl.DataFrame]:
    fetch_raw_dataset(data, tmp_path / "raw")
    prepare_dataset(read_dataset(data, tmp_path / "raw"), config, tmp_path / "prepared")
    return {split: pl.read_parquet(tmp_path / "prepared" / f"{split}.parquet") for split in SPLITS}


def test_sop_archive_keeps_official_split(tmp_path: Path) -> None:
    archive = make_sop_archive(tmp_path / "sop.zip", train_classes=8, test_classes=4, images_per_class=3)
    data = DataConfig(dataset="sop", sop=SopDataConfig(source=str(archive), md5=""))

    tables = prepare(data, tmp_path, PrepareConfig(val_fraction=0.25, cache_shorter_side=32))

    for table in tables.values():
        assert table.columns == PREPARED_COLUMNS
    assert tables["test"]["label"].unique().sort().to_list() == [9, 10, 11, 12]
    assert tables["val"]["label"].n_unique() == 2
    assert tables["train"]["label"].n_unique() == 6
    assert tables["train"]["super_label"].null_count() == 0
    assert tables["train"]["cache_path"].null_count() == 0


def test_folder_nested_layout(tmp_path: Path) -> None:
    for super_class in ("shoes", "tops"):
        copy_demo_subset(tmp_path / "catalog" / super_class, num_classes=3, images_per_class=4)
    data = DataConfig(dataset="folder", folder=FolderDataConfig(source=str(tmp_path / "catalog"), layout="nested"))

    tables = prepare(data, tmp_path, PrepareConfig(split="by_class", val_fraction=0.34, test_fraction=0.34))

    all_rows = pl.concat(list(tables.values()))
    assert all_rows.columns == PREPARED_COLUMNS
    assert all_rows["label"].n_unique() == 6
    assert sorted(all_rows["super_label"].unique().to_list()) == [0, 1]
    for first, second in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not set(tables[first]["label"]) & set(tables[second]["label"])


def test_jsonl_pairs(tmp_path: Path) -> None:
    image_root = copy_demo_subset(tmp_path / "photos", num_classes=3, images_per_class=6)
    lines = []
    for label, class_dir in enumerate(sorted(image_root.iterdir())):
        images = sorted(path.relative_to(image_root).as_posix() for path in class_dir.iterdir())
        for query, positive in zip(images[0::2], images[1::2]):
            lines.append(json.dumps({"query_image": query, "positive": positive, "label": 1000 + label}))
    jsonl_path = tmp_path / "pairs.jsonl"
    jsonl_path.write_text("\n".join(lines) + "\n")
    data = DataConfig(dataset="jsonl", jsonl=JsonlDataConfig(source=str(jsonl_path), image_root=str(image_root)))

    tables = prepare(data, tmp_path, PrepareConfig(split="by_image", val_fraction=0.34, test_fraction=0.34))

    all_rows = pl.concat(list(tables.values()))
    assert all_rows.columns == PREPARED_COLUMNS
    assert all_rows.height == 18
    assert sorted(all_rows["label"].unique().to_list()) == [1000, 1001, 1002]


def test_missing_jsonl_named(tmp_path: Path) -> None:
    data = DataConfig(dataset="jsonl", jsonl=JsonlDataConfig(source=str(tmp_path / "absent.jsonl")))

    with pytest.raises(FileNotFoundError, match="absent.jsonl"):
        fetch_raw_dataset(data, tmp_path / "raw")


def test_demo_adapter_reads_bundled_layout(tmp_path: Path) -> None:
    shutil.copytree(DEMO_IMAGES.parent, tmp_path / "demo")
    data = DataConfig(dataset="demo")
    data.demo.source = str(tmp_path / "demo")

    fetch_raw_dataset(data, tmp_path / "raw")
    table = read_dataset(data, tmp_path / "raw")

    assert table.height == 3000
    assert table["split"].null_count() == 3000
