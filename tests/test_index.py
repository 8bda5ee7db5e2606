"""faiss index: save/load round trip and rejection of corrupt or mismatched files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from image_retrieval.index import (
    INDEX_FILE,
    METADATA_FILE,
    IndexMetadata,
    IndexMismatchError,
    build_index,
    load_index,
    save_index,
)


def random_unit_vectors(rows: int, dimension: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((rows, dimension)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def saved_index(directory: Path, factory: str = "Flat", rows: int = 50, dimension: int = 16) -> np.ndarray:
    vectors = random_unit_vectors(rows, dimension)
    metadata = IndexMetadata(
        factory=factory,
        dimension=dimension,
        num_vectors=rows,
        model_fingerprint="a" * 64,
        resolution=28,
        row_ids=[f"image-{row}" for row in range(rows)],
        paths=[f"images/image-{row}.png" for row in range(rows)],
    )
    save_index(build_index(vectors, factory), metadata, directory)
    return vectors


def test_round_trip_search(tmp_path: Path) -> None:
    vectors = saved_index(tmp_path / "index")

    index, metadata = load_index(tmp_path / "index", expected_fingerprint="a" * 64, expected_dimension=16)
    scores, rows = index.search(vectors[:3], 1)

    assert rows[:, 0].tolist() == [0, 1, 2]
    assert np.allclose(scores[:, 0], 1.0, atol=1e-5)
    assert metadata.row_ids[2] == "image-2"


def test_trained_factory_builds(tmp_path: Path) -> None:
    vectors = random_unit_vectors(400, 16)

    index = build_index(vectors, "IVF4,Flat", seed=0)

    assert index.ntotal == 400


def test_invalid_factory_named() -> None:
    with pytest.raises(ValueError, match="index.factory='NotAnIndex'"):
        build_index(random_unit_vectors(10, 16), "NotAnIndex")


def test_fingerprint_mismatch_rejected(tmp_path: Path) -> None:
    saved_index(tmp_path / "index")

    with pytest.raises(IndexMismatchError, match="model fingerprint"):
        load_index(tmp_path / "index", expected_fingerprint="b" * 64)


def test_dimension_mismatch_rejected(tmp_path: Path) -> None:
    saved_index(tmp_path / "index")

    with pytest.raises(IndexMismatchError, match="16-dimensional vectors but the model outputs 32"):
        load_index(tmp_path / "index", expected_dimension=32)


def test_corrupt_index_file_rejected(tmp_path: Path) -> None:
    saved_index(tmp_path / "index")
    (tmp_path / "index" / INDEX_FILE).write_bytes(b"not a faiss index")

    with pytest.raises(IndexMismatchError, match="is not a readable faiss index"):
        load_index(tmp_path / "index")


def test_row_count_mismatch_rejected(tmp_path: Path) -> None:
    saved_index(tmp_path / "index")
    metadata_path = tmp_path / "index" / METADATA_FILE
    metadata = json.loads(metadata_path.read_text())
    metadata["row_ids"] = metadata["row_ids"][:-1]
    metadata_path.write_text(json.dumps(metadata))

    with pytest.raises(IndexMismatchError, match="contains 50 vectors"):
        load_index(tmp_path / "index")


def test_stored_dimension_mismatch_rejected(tmp_path: Path) -> None:
    saved_index(tmp_path / "index")
    metadata_path = tmp_path / "index" / METADATA_FILE
    metadata = json.loads(metadata_path.read_text())
    metadata["dimension"] = 8
    metadata_path.write_text(json.dumps(metadata))

    with pytest.raises(IndexMismatchError, match="has dimension 16"):
        load_index(tmp_path / "index")


def test_missing_index_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="index.faiss not found"):
        load_index(tmp_path / "absent")
