"""faiss index: save/load round trip and rejection of corrupt or mismatched files."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pytest

from image_retrieval.config import IndexConfig, ParamsError
from image_retrieval.index import (
    INDEX_FILE,
    METADATA_FILE,
    IndexMetadata,
    IndexMismatchError,
    apply_search_parameters,
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


def test_search_parameters_saved_and_applied(tmp_path: Path) -> None:
    vectors = random_unit_vectors(400, 16)
    index = build_index(vectors, "IVF8,Flat", seed=0)
    metadata = IndexMetadata(
        factory="IVF8,Flat", dimension=16, num_vectors=400, model_fingerprint="a" * 64, resolution=28,
        row_ids=[str(row) for row in range(400)], paths=[f"{row}.png" for row in range(400)],
        search_parameters={"nprobe": 8},
    )
    save_index(index, metadata, tmp_path / "index")

    loaded, loaded_metadata = load_index(tmp_path / "index")

    assert loaded_metadata.search_parameters == {"nprobe": 8}
    assert faiss.extract_index_ivf(loaded).nprobe == 8
    # Visiting all 8 lists makes the IVF search exact.
    _, rows = loaded.search(vectors[:20], 1)
    assert rows[:, 0].tolist() == list(range(20))


def test_hnsw_ef_search_applied() -> None:
    index = build_index(random_unit_vectors(200, 16), "HNSW16")

    apply_search_parameters(index, {"efSearch": 77}, "HNSW16")

    assert index.hnsw.efSearch == 77


def test_inapplicable_search_parameter_named() -> None:
    index = build_index(random_unit_vectors(200, 16), "HNSW16")

    with pytest.raises(ValueError, match="index.nprobe=4 does not apply to index.factory='HNSW16'"):
        apply_search_parameters(index, {"nprobe": 4}, "HNSW16")


def test_index_config_search_parameters() -> None:
    assert IndexConfig().search_parameters() == {}
    assert IndexConfig(factory="IVF64,Flat", nprobe=16).search_parameters() == {"nprobe": 16}
    with pytest.raises(ParamsError, match="index.ef_search=-1"):
        IndexConfig(ef_search=-1)


def test_ivf_pq_skips_polysemous_training() -> None:
    index = build_index(random_unit_vectors(2000, 16), "IVF4,PQ4")

    assert index.ntotal == 2000
    assert faiss.downcast_index(faiss.extract_index_ivf(index)).do_polysemous_training is False


def test_ivf_with_more_lists_than_vectors_named() -> None:
    with pytest.raises(ValueError, match="index.factory='IVF64,Flat' has 64 inverted lists but only 40 vectors"):
        build_index(random_unit_vectors(40, 16), "IVF64,Flat")
