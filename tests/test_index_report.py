"""Index measurements against exact search: recall, size and latency on real faiss indexes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from image_retrieval.index import IndexMetadata, apply_search_parameters, build_index, save_index
from image_retrieval.index_report import index_report, recall_against_exact, single_query_latencies_ms
from image_retrieval.metrics import exact_search


def clustered_unit_vectors(rows: int, dimension: int, clusters: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dimension))
    vectors = centres[rng.integers(clusters, size=rows)] + 0.3 * rng.standard_normal((rows, dimension))
    vectors = vectors.astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def exact_top_10(vectors: np.ndarray) -> np.ndarray:
    return exact_search(vectors, vectors, 10, exclude_self=True)[1]


def test_flat_index_recall_is_one() -> None:
    vectors = clustered_unit_vectors(500, 32, clusters=20)

    recall = recall_against_exact(build_index(vectors, "Flat"), vectors, exact_top_10(vectors))

    assert recall == 1.0


def test_flat_index_recall_counts_boundary_ties() -> None:
    vectors = clustered_unit_vectors(300, 16, clusters=10)
    # Exact copies tie with each other, so either of two tied rows may fill the 10th place.
    vectors = np.concatenate([vectors, vectors[:50]])

    recall = recall_against_exact(build_index(vectors, "Flat"), vectors, exact_top_10(vectors))

    assert recall == 1.0


def test_ivf_recall_grows_with_nprobe() -> None:
    vectors = clustered_unit_vectors(2000, 32, clusters=40)
    exact = exact_top_10(vectors)
    index = build_index(vectors, "IVF32,Flat", seed=0)

    apply_search_parameters(index, {"nprobe": 1}, "IVF32,Flat")
    one_probe = recall_against_exact(index, vectors, exact)
    apply_search_parameters(index, {"nprobe": 32}, "IVF32,Flat")
    all_probes = recall_against_exact(index, vectors, exact)

    assert one_probe < 0.99
    assert all_probes == pytest.approx(1.0)


def test_latencies_one_per_query() -> None:
    vectors = clustered_unit_vectors(300, 16, clusters=10)

    latencies = single_query_latencies_ms(build_index(vectors, "Flat"), vectors[:25])

    assert latencies.shape == (25,)
    assert (latencies > 0).all()


def test_report_keys_and_flat_size(tmp_path: Path) -> None:
    vectors = clustered_unit_vectors(400, 32, clusters=10)
    index = build_index(vectors, "Flat")
    metadata = IndexMetadata(
        factory="Flat", dimension=32, num_vectors=400, model_fingerprint="f" * 64, resolution=28,
        row_ids=[str(row) for row in range(400)], paths=[f"{row}.png" for row in range(400)], build_seconds=0.5,
    )
    save_index(index, metadata, tmp_path / "index")

    report = index_report(index, metadata, tmp_path / "index", vectors, exact_top_10(vectors), latency_queries=20)

    assert report["index_factory"] == "Flat"
    assert report["index_recall@10_vs_exact"] == 1.0
    assert report["index_build_seconds"] == 0.5
    # A flat index stores 32 float32 values per vector plus a small header.
    assert 128 <= report["index_bytes_per_vector"] < 130
    assert 0 < report["index_latency_p50_ms"] <= report["index_latency_p99_ms"]


def test_query_gallery_recall_keeps_identical_gallery_rows() -> None:
    gallery = clustered_unit_vectors(400, 16, clusters=10, seed=1)
    # The queries are copies of gallery rows, which must count as results.
    queries = gallery[:30].copy()
    exact = exact_search(queries, gallery, 10)[1]

    recall = recall_against_exact(build_index(gallery, "Flat"), queries, exact, gallery)

    assert recall == 1.0
