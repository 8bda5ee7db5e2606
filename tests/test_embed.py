"""Embed stage: storage dtype, DataLoader workers, sharding across two processes and the row check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from transformers import Dinov2Model

from conftest import REPO_ROOT, copy_demo_subset
from image_retrieval.config import EmbedConfig, ParamsError, load_params
from image_retrieval.embed import EMBEDDINGS_FILE, check_each_row_once, embed_table, load_embeddings
from image_retrieval.model.embedder import Embedder, PreprocessingConfig, embed_paths

PREPROCESSING = PreprocessingConfig(resolution=28, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
# An odd number of images, so that two processes get shards of different sizes.
NUM_IMAGES = 13
TWO_PROCESS_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir: Path, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("embedder") / "model"
    Embedder(Dinov2Model.from_pretrained(tiny_model_dir), PREPROCESSING).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def image_table(tmp_path_factory) -> pl.DataFrame:
    images = copy_demo_subset(tmp_path_factory.mktemp("images"), num_classes=2, images_per_class=7)
    paths = sorted(str(path) for path in images.glob("*/*.png"))[:NUM_IMAGES]
    return pl.DataFrame({
        "image_id": [f"image-{index:02d}" for index in range(len(paths))],
        "path": paths,
        "label": [index % 2 for index in range(len(paths))],
    })


def test_float16_storage_round_trip(model_dir: Path, image_table: pl.DataFrame, tmp_path: Path) -> None:
    embed_table(model_dir, image_table, tmp_path / "float32", EmbedConfig(batch_size=4))
    embed_table(model_dir, image_table, tmp_path / "float16", EmbedConfig(batch_size=4, storage_dtype="float16"))

    full = load_embeddings(tmp_path / "float32")
    half = load_embeddings(tmp_path / "float16")

    assert np.load(tmp_path / "float16" / EMBEDDINGS_FILE).dtype == np.float16
    assert np.load(tmp_path / "float32" / EMBEDDINGS_FILE).dtype == np.float32
    assert half.embeddings.dtype == np.float32
    assert half.embeddings.shape == (NUM_IMAGES, 32)
    assert np.abs(half.embeddings - full.embeddings).max() < 1e-3
    assert np.allclose(np.linalg.norm(half.embeddings, axis=1), 1.0, atol=1e-3)
    assert half.info["storage_dtype"] == "float16"
    assert half.rows["image_id"].equals(image_table["image_id"])


def test_embed_table_matches_embed_paths(model_dir: Path, image_table: pl.DataFrame, tmp_path: Path) -> None:
    info = embed_table(model_dir, image_table, tmp_path / "embeddings", EmbedConfig(batch_size=5))
    expected = embed_paths(
        Embedder.from_pretrained(model_dir), image_table["path"].to_list(), batch_size=3, show_progress=False
    )

    stored = load_embeddings(tmp_path / "embeddings")

    assert np.allclose(stored.embeddings, expected, atol=1e-6)
    assert info["processes"] == 1
    assert info["num_images"] == NUM_IMAGES
    assert info["precision"] == "fp32"


def test_workers_match_in_process(model_dir: Path, image_table: pl.DataFrame) -> None:
    embedder = Embedder.from_pretrained(model_dir)
    paths = image_table["path"].to_list()

    in_process = embed_paths(embedder, paths, batch_size=4, num_workers=0, show_progress=False)
    with_workers = embed_paths(embedder, paths, batch_size=4, num_workers=2, show_progress=False)

    assert with_workers.shape == (NUM_IMAGES, 32)
    assert np.array_equal(with_workers, in_process)


def test_bf16_autocast_close_to_fp32(model_dir: Path, image_table: pl.DataFrame) -> None:
    embedder = Embedder.from_pretrained(model_dir)
    paths = image_table["path"].to_list()[:4]

    fp32 = embed_paths(embedder, paths, precision="fp32", show_progress=False)
    bf16 = embed_paths(embedder, paths, precision="bf16", show_progress=False)

    assert bf16.dtype == np.float32
    assert np.allclose(np.linalg.norm(bf16, axis=1), 1.0, atol=1e-5)
    assert np.abs(bf16 - fp32).max() < 0.05


def write_stage_inputs(directory: Path, model_dir: Path, table: pl.DataFrame, embed_params: dict) -> None:
    """Lay out what stages/embed.py reads: params.yaml, models/base and data/prepared/test.parquet."""
    (directory / "params.yaml").write_text(yaml.safe_dump({"embed": embed_params}))
    (directory / "models").mkdir()
    (directory / "models" / "base").symlink_to(model_dir)
    (directory / "data" / "prepared").mkdir(parents=True)
    table.write_parquet(directory / "data" / "prepared" / "test.parquet")


def test_two_processes_shard_rows(model_dir: Path, image_table: pl.DataFrame, tmp_path: Path) -> None:
    # Batches of 4 make the second process's last batch one image long, which
    # accelerate pads with images from the start of the table.
    write_stage_inputs(tmp_path, model_dir, image_table, {"batch_size": 4})
    environment = dict(os.environ)
    environment.update(ACCELERATE_USE_CPU="1", IMAGE_RETRIEVAL_LOG_LEVEL="WARNING")
    torchrun = Path(sys.executable).parent / "torchrun"

    completed = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", str(REPO_ROOT / "stages" / "embed.py"), "base"],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=TWO_PROCESS_TIMEOUT_S,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr

    stored = load_embeddings(tmp_path / "data" / "embeddings" / "base")
    expected = embed_paths(
        Embedder.from_pretrained(model_dir), image_table["path"].to_list(), batch_size=4, show_progress=False
    )
    assert stored.rows["image_id"].to_list() == image_table["image_id"].to_list()
    assert stored.rows["image_id"].n_unique() == NUM_IMAGES
    assert stored.embeddings.shape == (NUM_IMAGES, 32)
    assert np.abs(stored.embeddings - expected).max() < 1e-5

    metrics = json.loads((tmp_path / "metrics" / "embed" / "base.json").read_text())
    assert metrics["processes"] == 2
    assert metrics["images"] == NUM_IMAGES
    assert metrics["images_per_second"] > 0
    assert metrics["storage_dtype"] == "float32"
    # Only the main process writes, so no second process left a temporary directory behind.
    assert sorted(path.name for path in (tmp_path / "data" / "embeddings").iterdir()) == ["base"]


def test_two_processes_without_cpu_flag_rejected(model_dir: Path, image_table: pl.DataFrame, tmp_path: Path) -> None:
    write_stage_inputs(tmp_path, model_dir, image_table, {"batch_size": 4})
    environment = dict(os.environ)
    environment.pop("ACCELERATE_USE_CPU", None)
    torchrun = Path(sys.executable).parent / "torchrun"

    completed = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", str(REPO_ROOT / "stages" / "embed.py"), "base"],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=TWO_PROCESS_TIMEOUT_S,
    )

    assert completed.returncode != 0
    assert "ACCELERATE_USE_CPU=1" in completed.stdout + completed.stderr
    assert "embed.launcher" in completed.stdout + completed.stderr
    assert not (tmp_path / "data" / "embeddings").exists()


IDS = [f"image-{index}" for index in range(6)]


def test_row_check_accepts_permutation() -> None:
    check_each_row_once(np.array([3, 0, 5, 1, 4, 2]), IDS)


@pytest.mark.parametrize(
    ("rows", "expected_message"),
    [
        (np.array([0, 1, 2, 3, 4, 5, 0]), "1 image ids appear more than once (image-0)"),
        (np.array([0, 1, 2, 3, 5]), "1 image ids are missing (image-4)"),
        (np.array([0, 1, 2, 3, 4, 4]), "image-4)"),
        (np.array([0, 1, 2, 3, 4, 5, 6]), "outside 0..5 ([6])"),
        (np.array([], dtype=np.int64), "6 image ids are missing"),
    ],
)
def test_row_check_names_bad_rows(rows: np.ndarray, expected_message: str) -> None:
    with pytest.raises(ValueError) as error:
        check_each_row_once(rows, IDS)

    assert expected_message in str(error.value)
    assert "embed.launcher" in str(error.value)


def test_row_check_names_both_problems() -> None:
    with pytest.raises(ValueError) as error:
        check_each_row_once(np.array([0, 1, 2, 3, 4, 4]), IDS)

    assert "appear more than once (image-4)" in str(error.value)
    assert "are missing (image-5)" in str(error.value)


@pytest.mark.parametrize(
    ("values", "expected_message"),
    [
        ({"num_workers": -1}, "embed.num_workers=-1 is invalid"),
        ({"precision": "fp16"}, "embed.precision='fp16' is invalid"),
        ({"storage_dtype": "int8"}, "embed.storage_dtype='int8' is invalid"),
        ({"launcher": "  "}, "embed.launcher is empty"),
        ({"batch_size": 0}, "embed.batch_size must be positive"),
        ({"num_workers": "two"}, "embed.num_workers must be an integer, got 'two'"),
    ],
)
def test_invalid_embed_params_named(tmp_path: Path, values: dict, expected_message: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"embed": values}))

    with pytest.raises(ParamsError) as error:
        load_params("embed", path)

    assert expected_message in str(error.value)


@pytest.mark.parametrize(
    ("values", "expected_message"),
    [
        ({"num_workers": -2}, "embed.num_workers=-2 is invalid"),
        ({"precision": "fp16"}, "expected one of: auto, fp32, bf16"),
        ({"storage_dtype": "float64"}, "expected one of: float32, float16"),
        ({"batch_size": -1}, "embed.batch_size=-1 must be positive"),
    ],
)
def test_embed_config_checks_direct_values(values: dict, expected_message: str) -> None:
    with pytest.raises(ParamsError) as error:
        EmbedConfig(**values)

    assert expected_message in str(error.value)
