"""A catalog gallery: fetched beside the dataset, labelled by class name, checked and written by prepare."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from PIL import Image

from image_retrieval.config import DataConfig, ParamsError, PrepareConfig
from image_retrieval.data.datasets import GALLERY_DIR, fetch_gallery, read_gallery
from image_retrieval.data.fetch import FetchError
from image_retrieval.data.images import ImageError
from image_retrieval.data.jsonl import read_pair_roles
from image_retrieval.data.prepare import (
    PrepareError,
    label_gallery,
    prepare_dataset,
    prepare_gallery,
    prepare_pair_gallery,
    scan_image_folder,
)


def write_images(root: Path, images_per_class: dict[str, int], shade: int = 0) -> Path:
    for class_index, (class_name, count) in enumerate(images_per_class.items()):
        (root / class_name).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            Image.new("L", (8, 8), (shade + class_index * 30 + index) % 256).save(root / class_name / f"{index}.png")
    return root


def test_gallery_test_needs_no_fetch(tmp_path: Path) -> None:
    data = DataConfig()

    assert fetch_gallery(data, tmp_path) is None
    assert read_gallery(data, tmp_path) is None


def test_gallery_folder_fetched_and_read(tmp_path: Path) -> None:
    catalog = write_images(tmp_path / "catalog", {"boot": 2, "bag": 3})
    data = DataConfig(gallery=str(catalog))

    fetch_gallery(data, tmp_path / "raw")
    table = read_gallery(data, tmp_path / "raw")

    assert (tmp_path / "raw" / GALLERY_DIR / "bag" / "0.png").is_file()
    assert table.height == 5
    assert table["image_id"].str.starts_with(f"{GALLERY_DIR}/").all()


def test_empty_gallery_param_rejected() -> None:
    with pytest.raises(ParamsError, match="data.gallery is empty"):
        DataConfig(gallery=" ")


def test_label_gallery_matches_class_names(tmp_path: Path) -> None:
    dataset = scan_image_folder(write_images(tmp_path / "dataset", {"bag": 2, "boot": 2, "coat": 2}))
    gallery = read_gallery(DataConfig(gallery="catalog"), write_images(tmp_path / "raw" / GALLERY_DIR, {
        "boot": 1, "hat": 1, "bag": 1,
    }).parent)

    labelled = label_gallery(gallery, dataset)

    labels = dict(zip(labelled["label_name"], labelled["label"]))
    dataset_labels = dict(zip(dataset["label_name"], dataset["label"]))
    assert labels["bag"] == dataset_labels["bag"]
    assert labels["boot"] == dataset_labels["boot"]
    # A class the dataset lacks gets a label of its own, above every dataset label.
    assert labels["hat"] == max(dataset_labels.values()) + 1
    assert labelled["split"].to_list() == ["gallery"] * 3
    assert labelled.columns == gallery.columns


def prepared_test_table(tmp_path: Path) -> pl.DataFrame:
    dataset = scan_image_folder(write_images(tmp_path / "dataset", {"bag": 6, "boot": 6}))
    config = PrepareConfig(split="by_image", val_fraction=0.34, test_fraction=0.34, cache_shorter_side=0)
    prepare_dataset(dataset, config, tmp_path / "prepared")
    return pl.read_parquet(tmp_path / "prepared" / "test.parquet")


def test_prepare_gallery_writes_table(tmp_path: Path) -> None:
    test_table = prepared_test_table(tmp_path)
    catalog = write_images(tmp_path / "raw" / GALLERY_DIR, {"bag": 2, "boot": 1, "hat": 1}, shade=100)
    gallery = read_gallery(DataConfig(gallery=str(catalog)), tmp_path / "raw")

    metrics = prepare_gallery(gallery, test_table, PrepareConfig(), tmp_path / "gallery")

    written = pl.read_parquet(tmp_path / "gallery" / "gallery.parquet")
    assert written.height == 4
    assert metrics["images"] == 4
    assert metrics["classes_in_test"] == 2
    assert set(test_table["image_id"]).isdisjoint(set(written["image_id"]))
    bag_label = test_table.filter(pl.col("label_name") == "bag")["label"][0]
    assert set(written.filter(pl.col("label_name") == "bag")["label"]) == {bag_label}


def test_prepare_gallery_without_catalog_writes_marker(tmp_path: Path) -> None:
    test_table = prepared_test_table(tmp_path)

    metrics = prepare_gallery(None, test_table, PrepareConfig(), tmp_path / "gallery")

    assert metrics == {}
    assert (tmp_path / "gallery" / "gallery.json").is_file()
    assert not (tmp_path / "gallery" / "gallery.parquet").exists()


def test_corrupt_gallery_image_named(tmp_path: Path) -> None:
    test_table = prepared_test_table(tmp_path)
    catalog = write_images(tmp_path / "raw" / GALLERY_DIR, {"bag": 2})
    (catalog / "bag" / "1.png").write_bytes(b"not a png")
    gallery = read_gallery(DataConfig(gallery=str(catalog)), tmp_path / "raw")

    with pytest.raises(ImageError, match="bag/1.png") as caught:
        prepare_gallery(gallery, test_table, PrepareConfig(), tmp_path / "gallery", source_hint="data.gallery='shop'")

    assert "gallery source (data.gallery='shop')" in str(caught.value)
    assert not (tmp_path / "gallery").exists()


def test_missing_gallery_source_names_parameter(tmp_path: Path) -> None:
    data = DataConfig(gallery=str(tmp_path / "no-such-catalog"))

    with pytest.raises(FetchError, match="set data.gallery to a folder"):
        fetch_gallery(data, tmp_path / "raw")


def write_pairs(path: Path, pairs: list[tuple[str, str, int]]) -> Path:
    lines = [
        json.dumps({"query_image": query, "positive": positive, "label": label}) for query, positive, label in pairs
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_read_pair_roles(tmp_path: Path) -> None:
    write_images(tmp_path, {"a": 3, "b": 2})
    pairs = write_pairs(
        tmp_path / "pairs.jsonl", [("a/0.png", "a/1.png", 1), ("a/2.png", "a/1.png", 1), ("b/1.png", "b/0.png", 2)]
    )

    query_ids, positive_ids = read_pair_roles(pairs)

    assert query_ids == {"a/0.png", "a/2.png", "b/1.png"}
    assert positive_ids == {"a/1.png", "b/0.png"}


def test_prepare_pair_gallery_splits_roles(tmp_path: Path) -> None:
    test_table = pl.DataFrame({
        "image_id": ["q1", "q2", "p1", "both", "other"],
        "label": [1, 2, 1, 2, 3],
        "label_name": ["1", "2", "1", "2", "3"],
    })

    metrics = prepare_pair_gallery(test_table, {"q1", "q2", "both"}, {"p1", "both"}, tmp_path / "gallery")

    gallery = pl.read_parquet(tmp_path / "gallery" / "gallery.parquet")
    queries = pl.read_parquet(tmp_path / "gallery" / "queries.parquet")
    assert sorted(gallery["image_id"]) == ["both", "p1"]
    # An image in both roles is a gallery image only, so no query can find itself.
    assert sorted(queries["image_id"]) == ["q1", "q2"]
    assert metrics["queries"] == 2
    assert metrics["images_in_both_roles"] == 1


def test_prepare_pair_gallery_without_positives_rejected(tmp_path: Path) -> None:
    test_table = pl.DataFrame({"image_id": ["q1"], "label": [1], "label_name": ["1"]})

    with pytest.raises(PrepareError, match="1 query images and 0 positives"):
        prepare_pair_gallery(test_table, {"q1"}, {"p1"}, tmp_path / "gallery")
    assert not (tmp_path / "gallery").exists()


def test_positives_gallery_needs_jsonl() -> None:
    with pytest.raises(ParamsError, match='data.gallery="positives" needs data.dataset=jsonl'):
        DataConfig(dataset="demo", gallery="positives")
