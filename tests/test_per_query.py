"""Per-query results: their means equal evaluate_retrieval's metrics, and single queries are hand-checked."""

from __future__ import annotations

import numpy as np
import pytest

from image_retrieval.metrics import evaluate_retrieval, per_query_results


def labelled_vectors(rows: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(classes, size=rows)
    vectors = rng.standard_normal((classes, 16))[labels] + 0.8 * rng.standard_normal((rows, 16))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    return vectors, labels


@pytest.mark.parametrize("leave_one_out", [True, False])
def test_means_equal_metrics(leave_one_out: bool) -> None:
    vectors, labels = labelled_vectors(600, 60, seed=3)
    if leave_one_out:
        queries, query_labels, gallery, gallery_labels = vectors, labels, None, None
    else:
        queries, query_labels, gallery, gallery_labels = vectors[:200], labels[:200], vectors[200:], labels[200:]

    metrics, neighbors = evaluate_retrieval(
        queries, query_labels, gallery, gallery_labels, recall_at=(1, 5, 20), return_neighbors=True
    )
    results = per_query_results(
        neighbors, query_labels, labels if leave_one_out else gallery_labels, leave_one_out=leave_one_out
    )

    scored = results.relevant_counts > 0
    assert int(scored.sum()) == metrics.num_queries
    for k in (1, 5, 20):
        assert results.recall_at(k)[scored].mean() == pytest.approx(metrics.recall_at_k[k], abs=1e-12)
    assert results.average_precision_at_r[scored].mean() == pytest.approx(metrics.map_at_r, abs=1e-12)
    assert results.r_precision[scored].mean() == pytest.approx(metrics.r_precision, abs=1e-12)


def test_hand_computed_query() -> None:
    # Query 0 (label 7) ranks rows 3 (label 1), 1 (label 7), 2 (label 7): R = 2.
    neighbors = np.array([[3, 1, 2]])
    gallery_labels = np.array([7, 7, 7, 1])

    results = per_query_results(neighbors, np.array([7]), gallery_labels, leave_one_out=True)

    assert results.relevant_counts.tolist() == [2]
    assert results.first_relevant_ranks.tolist() == [2]
    # Within the top R = 2 only rank 2 is relevant: AP@R = (1/2) * (1/2).
    assert results.average_precision_at_r.tolist() == [0.25]
    assert results.r_precision.tolist() == [0.5]
    assert results.recall_at(1).tolist() == [False]
    assert results.recall_at(2).tolist() == [True]


def test_query_without_relevant_rows_scores_zero() -> None:
    results = per_query_results(np.array([[0, 1]]), np.array([5]), np.array([1, 2]), leave_one_out=False)

    assert results.relevant_counts.tolist() == [0]
    assert results.first_relevant_ranks.tolist() == [0]
    assert results.average_precision_at_r.tolist() == [0.0]
