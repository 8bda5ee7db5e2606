"""Tests for scanning an ImageFolder tree, splitting it and writing the split tables."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import polars as pl
import pytest
from PIL import Image

from image_retrieval.config import ParamsError, PrepareConfig
from image_retrieval.data.images import ImageError
from image_retrieval.data.prepare import (
    SPLITS,
    PrepareError,
    assign_splits,
    prepare_dataset,
    image_source_paths,
    scan_image_folder,
)

DEMO_IMAGES = Path(__file__).resolve().parents[1] / "data" / "demo" / "images"

SCAN_COLUMNS = {
    "image_id": pl.String,
    "path": pl.String,
    "label": pl.Int64,
    "label_name": pl.String,
    "super_label": pl.Int64,
}
OUTPUT_COLUMNS = [*SCAN_COLUMNS, "split", "width", "height", "mode", "cache_path"]


def read_demo(raw_dir: Path) -> pl.DataFrame:
    """Read a raw demo-layout folder (raw_dir/images/<class>/<image>) as the demo adapter does."""
    return scan_image_folder(raw_dir / "images")


def make_image_folder(root: Path, images_per_class: dict[str, int], size=(6, 4)) -> Path:
    """Write `images_per_class[name]` small greyscale PNGs into root/<name>/."""
    for class_index, (class_name, count) in enumerate(images_per_class.items()):
        class_dir = root / class_name
        class_dir.mkdir(parents=True, exist_ok=True)
        for index in range(count):
            value = (class_index * 40 + index) % 256
            Image.new("L", size, value).save(class_dir / f"img_{index:03d}.png")
    return root


def test_scan_columns_and_order(tmp_path):
    root = make_image_folder(tmp_path / "images", {"zebra": 2, "apple": 3})

    table = scan_image_folder(root)

    assert table.schema == pl.Schema(SCAN_COLUMNS)
    assert table.get_column("image_id").to_list() == [
        "apple/img_000.png", "apple/img_001.png", "apple/img_002.png",
        "zebra/img_000.png", "zebra/img_001.png",
    ]
    assert table.get_column("label").to_list() == [0, 0, 0, 1, 1]
    assert table.get_column("label_name").to_list() == ["apple"] * 3 + ["zebra"] * 2
    assert table.get_column("super_label").null_count() == 5
    assert table.get_column("path").to_list() == [str(root / image_id) for image_id in table["image_id"]]


def test_scan_keeps_relative_root_relative(tmp_path, monkeypatch):
    make_image_folder(tmp_path / "data" / "images", {"cat": 1})
    monkeypatch.chdir(tmp_path)

    table = scan_image_folder(Path("data/images"))

    assert table.get_column("path").to_list() == ["data/images/cat/img_000.png"]
    assert table.get_column("image_id").to_list() == ["cat/img_000.png"]


def test_scan_filters_extensions_and_hidden(tmp_path, caplog):
    root = make_image_folder(tmp_path / "images", {"cat": 1})
    cat = root / "cat"
    Image.new("RGB", (2, 2)).save(cat / "UPPER.PNG")
    Image.new("RGB", (2, 2)).save(cat / "photo.JPeg", format="JPEG")
    Image.new("RGB", (2, 2)).save(cat / "nested.webp")
    (cat / "sub").mkdir()
    Image.new("RGB", (2, 2)).save(cat / "sub" / "deep.bmp")
    (cat / ".hidden").mkdir()
    Image.new("RGB", (2, 2)).save(cat / ".hidden" / "secret.png")
    Image.new("RGB", (2, 2)).save(cat / "._resource_fork.png", format="PNG")
    (cat / ".DS_Store").write_bytes(b"\x00\x01")
    (cat / "notes.txt").write_text("not an image")
    (root / ".git").mkdir()
    (root / "README.md").write_text("about the images")

    with caplog.at_level(logging.DEBUG, logger="image_retrieval.data.prepare"):
        table = scan_image_folder(root)

    assert table.get_column("image_id").to_list() == [
        "cat/UPPER.PNG", "cat/img_000.png", "cat/nested.webp", "cat/photo.JPeg", "cat/sub/deep.bmp",
    ]
    assert table.get_column("label_name").unique().to_list() == ["cat"]
    logged = caplog.text
    for ignored in (".DS_Store", "notes.txt", "._resource_fork.png", ".hidden", ".git", "README.md"):
        assert ignored in logged, f"{ignored} should be logged at debug level"


def test_scan_warns_about_images_outside_class_folders(tmp_path, caplog):
    root = make_image_folder(tmp_path / "images", {"cat": 1})
    Image.new("L", (2, 2)).save(root / "stray.png")

    with caplog.at_level(logging.WARNING, logger="image_retrieval.data.prepare"):
        table = scan_image_folder(root)

    assert table.height == 1
    assert "stray.png" in caplog.text


def test_scan_missing_root(tmp_path):
    with pytest.raises(PrepareError, match="not found"):
        scan_image_folder(tmp_path / "absent")


def test_scan_empty_root(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    with pytest.raises(PrepareError) as caught:
        scan_image_folder(root)
    assert str(root) in str(caught.value)
    assert "no class folders" in str(caught.value)


def test_scan_class_without_images(tmp_path):
    root = make_image_folder(tmp_path / "images", {"cat": 2})
    (root / "dog").mkdir()
    (root / "dog" / "notes.txt").write_text("no images here")

    with pytest.raises(PrepareError) as caught:
        scan_image_folder(root)

    assert str(root / "dog") in str(caught.value)
    assert "contains no images" in str(caught.value)


def test_scan_demo_subset(tmp_path):
    root = tmp_path / "images"
    for class_name in ("bag", "sneaker"):
        (root / class_name).mkdir(parents=True)
        for source in sorted((DEMO_IMAGES / class_name).glob("*.png"))[:3]:
            shutil.copy(source, root / class_name / source.name)

    table = scan_image_folder(root)

    assert table.height == 6
    assert table.filter(pl.col("label_name") == "bag").get_column("label").unique().to_list() == [0]
    assert table.filter(pl.col("label_name") == "sneaker").get_column("label").unique().to_list() == [1]


def split_table(images_per_class: dict[str, int]) -> pl.DataFrame:
    """Build a scan-like table without files, for split tests."""
    class_names = sorted(images_per_class)
    rows = [
        (f"{name}/{index:04d}.png", f"images/{name}/{index:04d}.png", class_names.index(name), name, None)
        for name in class_names
        for index in range(images_per_class[name])
    ]
    return pl.DataFrame(rows, schema=SCAN_COLUMNS, orient="row")


def split_of(table: pl.DataFrame) -> dict[str, str]:
    return dict(zip(table["image_id"].to_list(), table["split"].to_list()))


def test_by_image_every_class_in_every_split():
    table = split_table({"a": 30, "b": 17, "c": 10})
    config = PrepareConfig(split="by_image", val_fraction=0.2, test_fraction=0.4, seed=0)

    result = assign_splits(table, config)

    assert result.height == table.height
    assert set(result["split"].unique().to_list()) == set(SPLITS)
    counts = {
        (label_name, split): count
        for label_name, split, count in result.group_by("label_name", "split").len().rows()
    }
    for label_name, total in (("a", 30), ("b", 17), ("c", 10)):
        assert counts[(label_name, "test")] == round(total * 0.4)
        assert counts[(label_name, "val")] == round(total * 0.2)
        assert counts[(label_name, "train")] == total - round(total * 0.4) - round(total * 0.2)
        for split in SPLITS:
            assert counts[(label_name, split)] >= 2


def test_by_image_splits_are_disjoint():
    result = assign_splits(split_table({"a": 30, "b": 20}), PrepareConfig(split="by_image"))
    images_by_split = {
        split: set(result.filter(pl.col("split") == split)["image_id"].to_list()) for split in SPLITS
    }
    assert images_by_split["train"].isdisjoint(images_by_split["val"])
    assert images_by_split["train"].isdisjoint(images_by_split["test"])
    assert images_by_split["val"].isdisjoint(images_by_split["test"])
    assert sum(len(images) for images in images_by_split.values()) == 50


def test_by_image_deterministic_and_seeded():
    table = split_table({"a": 40, "b": 25})

    first = split_of(assign_splits(table, PrepareConfig(split="by_image", seed=3)))
    again = split_of(assign_splits(table, PrepareConfig(split="by_image", seed=3)))
    other_seed = split_of(assign_splits(table, PrepareConfig(split="by_image", seed=4)))

    assert first == again
    assert first != other_seed


def test_by_image_ignores_row_order():
    table = split_table({"a": 40, "b": 25})
    shuffled = table.sample(fraction=1.0, shuffle=True, seed=11)
    assert shuffled["image_id"].to_list() != table["image_id"].to_list()

    config = PrepareConfig(split="by_image", seed=5)
    result = assign_splits(shuffled, config)

    assert split_of(result) == split_of(assign_splits(table, config))
    assert result["image_id"].to_list() == shuffled["image_id"].to_list()


def test_by_image_too_few_images_names_class():
    table = split_table({"plenty": 30, "sparse": 4})

    with pytest.raises(PrepareError) as caught:
        assign_splits(table, PrepareConfig(split="by_image", val_fraction=0.2, test_fraction=0.4))

    message = str(caught.value)
    assert "'sparse' (4 images: train 1, val 1, test 2)" in message
    assert "plenty" not in message
    assert "prepare.split to by_class" in message


def test_by_class_disjoint_classes():
    table = split_table({name: 5 for name in "abcdefghij"})
    config = PrepareConfig(split="by_class", val_fraction=0.2, test_fraction=0.4, seed=0)

    result = assign_splits(table, config)

    classes_by_split = {
        split: set(result.filter(pl.col("split") == split)["label_name"].to_list()) for split in SPLITS
    }
    assert len(classes_by_split["test"]) == 4
    assert len(classes_by_split["val"]) == 2
    assert len(classes_by_split["train"]) == 4
    assert classes_by_split["train"].isdisjoint(classes_by_split["val"])
    assert classes_by_split["train"].isdisjoint(classes_by_split["test"])
    assert classes_by_split["val"].isdisjoint(classes_by_split["test"])
    assert result.group_by("label_name").agg(pl.col("split").n_unique())["split"].to_list() == [1] * 10


def test_by_class_deterministic_and_seeded():
    table = split_table({name: 3 for name in "abcdefghijklmnop"})
    shuffled = table.sample(fraction=1.0, shuffle=True, seed=2)

    first = split_of(assign_splits(table, PrepareConfig(split="by_class", seed=1)))
    reordered = split_of(assign_splits(shuffled, PrepareConfig(split="by_class", seed=1)))
    other_seed = split_of(assign_splits(table, PrepareConfig(split="by_class", seed=2)))

    assert first == reordered
    assert first != other_seed


def test_by_class_too_few_classes():
    table = split_table({"a": 10, "b": 10})
    with pytest.raises(PrepareError) as caught:
        assign_splits(table, PrepareConfig(split="by_class", val_fraction=0.2, test_fraction=0.4))
    assert "2 classes split into train 1, val 0, test 1" in str(caught.value)


def test_assign_splits_rejects_invalid_fractions():
    table = split_table({"a": 10})
    with pytest.raises(ParamsError, match="leaves no training data"):
        assign_splits(table, PrepareConfig(val_fraction=0.5, test_fraction=0.5))
    with pytest.raises(ParamsError, match="prepare.val_fraction"):
        assign_splits(table, PrepareConfig(val_fraction=0.0))


def test_assign_splits_rejects_duplicate_ids():
    table = split_table({"a": 10})
    with pytest.raises(ValueError, match="must be unique"):
        assign_splits(pl.concat([table, table.head(1)]), PrepareConfig())


@pytest.mark.parametrize("num_workers", [0, 2])
def test_prepare_dataset_writes_splits(tmp_path, num_workers):
    raw_dir = tmp_path / "raw"
    make_image_folder(raw_dir / "images", {"cat": 10, "dog": 12, "fox": 15})
    output_dir = tmp_path / "prepared"

    metrics = prepare_dataset(read_demo(raw_dir), PrepareConfig(split="by_image", num_workers=num_workers), output_dir)

    assert sorted(path.name for path in output_dir.iterdir()) == [
        "excluded.parquet", "test.parquet", "train.parquet", "val.parquet"
    ]
    tables = {split: pl.read_parquet(output_dir / f"{split}.parquet") for split in SPLITS}
    for split, table in tables.items():
        assert table.columns == OUTPUT_COLUMNS
        assert table["split"].unique().to_list() == [split]
        assert table["image_id"].to_list() == sorted(table["image_id"].to_list())
        assert table["width"].unique().to_list() == [6]
        assert table["height"].unique().to_list() == [4]
        assert table["mode"].unique().to_list() == ["L"]
    all_ids = pl.concat(list(tables.values()))["image_id"]
    assert all_ids.n_unique() == 37

    # cat: test 4, val 2, train 4. dog: test 5, val 2, train 5. fox: test 6, val 3, train 6.
    assert metrics == {
        "train": {"images": 15, "classes": 3, "images_per_class": {"min": 4, "median": 5.0, "max": 6}},
        "val": {"images": 7, "classes": 3, "images_per_class": {"min": 2, "median": 2.0, "max": 3}},
        "test": {"images": 15, "classes": 3, "images_per_class": {"min": 4, "median": 5.0, "max": 6}},
        "excluded_images": 0,
        "cached_images": 0,
    }


def test_prepare_dataset_demo_subset(tmp_path):
    raw_dir = tmp_path / "raw"
    for class_name in ("coat", "dress", "trouser"):
        (raw_dir / "images" / class_name).mkdir(parents=True)
        for source in sorted((DEMO_IMAGES / class_name).glob("*.png"))[:10]:
            shutil.copy(source, raw_dir / "images" / class_name / source.name)

    metrics = prepare_dataset(read_demo(raw_dir), PrepareConfig(split="by_image"), tmp_path / "prepared")

    train = pl.read_parquet(tmp_path / "prepared" / "train.parquet")
    assert train["label_name"].unique().sort().to_list() == ["coat", "dress", "trouser"]
    assert train["width"].unique().to_list() == [28]
    assert train["mode"].unique().to_list() == ["L"]
    assert metrics["train"]["images"] == 12
    assert metrics["val"]["images"] == 6
    assert metrics["test"]["images"] == 12


def test_prepare_dataset_corrupt_image(tmp_path):
    raw_dir = tmp_path / "raw"
    make_image_folder(raw_dir / "images", {"cat": 10, "dog": 10})
    corrupt = raw_dir / "images" / "dog" / "img_004.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n but not really")
    output_dir = tmp_path / "prepared"

    with pytest.raises(ImageError) as caught:
        prepare_dataset(
            read_demo(raw_dir), PrepareConfig(split="by_image"), output_dir, source_hint="data.demo.source='photos'"
        )

    assert str(corrupt) in str(caught.value)
    assert "in the dataset source (data.demo.source='photos')" in str(caught.value)
    assert "1 of 20 images failed" in str(caught.value)
    assert not output_dir.exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["raw"]


def test_prepare_dataset_missing_image(tmp_path):
    raw_dir = tmp_path / "raw"
    make_image_folder(raw_dir / "images", {"cat": 10, "dog": 10})
    # A dangling symbolic link is listed like an image but its file is missing.
    missing = raw_dir / "images" / "cat" / "img_999.png"
    missing.symlink_to(tmp_path / "deleted.png")
    output_dir = tmp_path / "prepared"

    with pytest.raises(ImageError) as caught:
        prepare_dataset(read_demo(raw_dir), PrepareConfig(split="by_image"), output_dir)

    assert str(missing) in str(caught.value)
    assert "not found" in str(caught.value)
    assert not output_dir.exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["raw"]


def test_prepare_dataset_failure_keeps_old_output(tmp_path):
    raw_dir = tmp_path / "raw"
    make_image_folder(raw_dir / "images", {"cat": 10})
    (raw_dir / "images" / "cat" / "img_000.png").write_bytes(b"")
    output_dir = tmp_path / "prepared"
    output_dir.mkdir()
    (output_dir / "train.parquet").write_bytes(b"previous run")

    with pytest.raises(ImageError, match="empty"):
        prepare_dataset(read_demo(raw_dir), PrepareConfig(split="by_image"), output_dir)

    assert (output_dir / "train.parquet").read_bytes() == b"previous run"


def test_prepare_dataset_missing_images_folder(tmp_path):
    with pytest.raises(PrepareError) as caught:
        prepare_dataset(read_demo(tmp_path / "raw"), PrepareConfig(), tmp_path / "prepared")
    assert str(tmp_path / "raw" / "images") in str(caught.value)
    assert not (tmp_path / "prepared").exists()


def test_prepare_excludes_bad_images(tmp_path):
    raw_dir = tmp_path / "raw"
    make_image_folder(raw_dir / "images", {"cat": 10, "dog": 10})
    corrupt = raw_dir / "images" / "dog" / "img_004.png"
    corrupt.write_bytes(b"not an image")
    output_dir = tmp_path / "prepared"

    metrics = prepare_dataset(read_demo(raw_dir), PrepareConfig(split="by_image", on_bad_image="exclude"), output_dir)

    excluded = pl.read_parquet(output_dir / "excluded.parquet")
    assert metrics["excluded_images"] == 1
    assert excluded["path"].to_list() == [str(corrupt)]
    assert excluded["reason"][0]
    kept_rows = pl.concat([pl.read_parquet(output_dir / f"{split}.parquet") for split in SPLITS])
    assert kept_rows.height == 19
    assert str(corrupt) not in kept_rows["path"].to_list()


def test_cache_resizes_large_images(tmp_path):
    raw_dir = tmp_path / "raw"
    for class_name in ("cat", "dog", "fox"):
        (raw_dir / "images" / class_name).mkdir(parents=True)
        for index in range(6):
            size = (400, 300) if index % 2 == 0 else (50, 40)
            Image.new("RGB", size, (index * 40, 90, 160)).save(raw_dir / "images" / class_name / f"{index}.jpg")
    output_dir = tmp_path / "prepared"

    metrics = prepare_dataset(
        read_demo(raw_dir), PrepareConfig(split="by_image", test_fraction=0.34, val_fraction=0.33,
                                          cache_shorter_side=100), output_dir
    )

    table = pl.concat([pl.read_parquet(output_dir / f"{split}.parquet") for split in SPLITS])
    large = table.filter(pl.col("width") == 400)
    small = table.filter(pl.col("width") == 50)
    assert metrics["cached_images"] == 9
    assert large["cache_path"].null_count() == 0
    assert small["cache_path"].null_count() == small.height
    for cache_path in large["cache_path"]:
        assert cache_path.startswith(str(output_dir / "cache"))
        with Image.open(cache_path) as cached:
            assert cached.size == (133, 100)
    assert image_source_paths(small) == small["path"].to_list()
    assert image_source_paths(large) == large["cache_path"].to_list()


def test_official_split_carves_val_classes():
    rows = [(f"c{label}/{index}.jpg", f"c{label}/{index}.jpg", label, str(label), None,
             "train" if label < 10 else "test")
            for label in range(14) for index in range(3)]
    table = pl.DataFrame(rows, schema={**dict.fromkeys(SCAN_COLUMNS), "split": pl.String}, orient="row")
    table = table.with_columns(pl.col("label").cast(pl.Int64), pl.col("super_label").cast(pl.Int64))

    result = assign_splits(table, PrepareConfig(val_fraction=0.3, seed=1))

    val_classes = set(result.filter(pl.col("split") == "val")["label"].to_list())
    train_classes = set(result.filter(pl.col("split") == "train")["label"].to_list())
    test_classes = set(result.filter(pl.col("split") == "test")["label"].to_list())
    assert len(val_classes) == 3
    assert val_classes <= set(range(10))
    assert not val_classes & train_classes
    assert test_classes == {10, 11, 12, 13}
    assert result.filter(pl.col("split") == "val").height == 9
