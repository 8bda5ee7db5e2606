"""Tests for the exact search and the retrieval metrics in image_retrieval.metrics."""

import numpy as np
import pytest
import torch
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

from image_retrieval import metrics
from image_retrieval.metrics import RetrievalMetrics, evaluate_retrieval, exact_search


def unit_vectors(degrees):
    """Return [N, 2] float32 unit vectors at the given angles, so inner products are cos(angle difference)."""
    radians = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    return np.stack([np.cos(radians), np.sin(radians)], axis=1).astype(np.float32)


def brute_force_search(queries, gallery, k, exclude_self):
    """Rank the full score matrix with a stable argsort, which orders equal scores by ascending index."""
    scores = queries @ gallery.T
    order = np.argsort(-scores, axis=1, kind="stable")
    if exclude_self:
        order = np.array([row[row != query] for query, row in enumerate(order)])
    order = order[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


def clustered_embeddings(seed, num_images=5000, dimension=64):
    """Return L2-normalised [num_images, dimension] float32 embeddings and [num_images] labels, shuffled.

    Classes have 1 to 19 images, except that the last one is cut to fit num_images.
    """
    rng = np.random.default_rng(seed)
    class_sizes = rng.integers(1, 20, size=num_images)
    labels = np.repeat(np.arange(num_images), class_sizes)[:num_images]
    num_classes = labels[-1] + 1

    centers = rng.normal(size=(num_classes, dimension))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    embeddings = centers[labels] + rng.normal(scale=0.12, size=(len(labels), dimension))
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)

    order = rng.permutation(len(labels))
    return embeddings[order].astype(np.float32), labels[order]


# On the 64-dimensional embeddings of clustered_embeddings, faiss's float32 L2
# distances d, taken as 1 - d / 2, differ from numpy's float32 inner products
# by up to 4.8e-7 (measured with faiss 1.15.1 and numpy 2.4.6 on x86_64). A
# pair can therefore be ranked differently only when its score gap is below
# about 1e-6.
MIN_SAFE_SCORE_GAP = 1e-6


def min_score_gap_at_metric_swaps(queries, query_labels, gallery, gallery_labels, exclude_self):
    """Return the smallest score gap between the neighbours at ranks i and i + 1 (i <= R) where exactly one is relevant.

    Swapping such a pair changes Recall@1, MAP@R or R-precision. A gap above
    twice the float32 rounding error of the scores means that faiss's L2
    search and the inner product of exact_search rank these pairs the same way
    on L2-normalised embeddings.
    """
    max_relevant = np.bincount(gallery_labels).max()
    _, neighbors = brute_force_search(queries, gallery, max_relevant + 1, exclude_self)
    scores = np.take_along_axis(queries @ gallery.T, neighbors, axis=1)
    is_relevant = gallery_labels[neighbors] == query_labels[:, None]

    relevant_counts = (gallery_labels == query_labels[:, None]).sum(axis=1) - int(exclude_self)
    ranks = np.arange(1, neighbors.shape[1])
    swap_changes_metrics = (is_relevant[:, :-1] != is_relevant[:, 1:]) & (ranks <= relevant_counts[:, None])
    gaps = scores[:, :-1] - scores[:, 1:]
    return gaps[swap_changes_metrics].min()


# Six unit vectors at these angles, so query rankings follow angular distance.
# Label 0: a, b, d. Label 1: c, e, f. R = 2 for every query.
SIX_DEGREES = [0, 10, 30, 65, 105, 150]
SIX_LABELS = np.array([0, 0, 1, 0, 1, 1])


def test_leave_one_out_hand_computed():
    # Rankings by angular distance, with relevant results marked *:
    #   a(0):   b* c  d* e  f    AP@R = (1/1)/2 = 0.5    R-precision 1/2
    #   b(10):  a* c  d* e  f    AP@R = 0.5              R-precision 1/2
    #   c(30):  b  a  d  e* f*   AP@R = 0                R-precision 0
    #   d(65):  c  e  b* a* f    AP@R = 0                R-precision 0
    #   e(105): d  f* c* b  a    AP@R = (1/2)/2 = 0.25   R-precision 1/2
    #   f(150): e* d  c* b  a    AP@R = 0.5              R-precision 1/2
    # First relevant rank per query: 1, 1, 4, 3, 2, 1.
    metrics = evaluate_retrieval(
        unit_vectors(SIX_DEGREES), SIX_LABELS, recall_at=(1, 2, 3, 5, 6, 100)
    )

    assert metrics.recall_at_k == pytest.approx({1: 3 / 6, 2: 4 / 6, 3: 5 / 6, 5: 1.0})
    assert metrics.map_at_r == pytest.approx((0.5 + 0.5 + 0 + 0 + 0.25 + 0.5) / 6)
    assert metrics.r_precision == pytest.approx((0.5 + 0.5 + 0 + 0 + 0.5 + 0.5) / 6)
    assert metrics.num_queries == 6
    assert metrics.num_excluded_queries == 0


def test_recall_omits_k_above_candidates():
    # Six images leave five candidates per query, so K = 6 and K = 100 are omitted.
    metrics = evaluate_retrieval(unit_vectors(SIX_DEGREES), SIX_LABELS, recall_at=(100, 5, 6, 1, 1))

    assert list(metrics.recall_at_k) == [1, 5]


def test_leave_one_out_neighbors_hand_computed():
    metrics, neighbors = evaluate_retrieval(
        unit_vectors(SIX_DEGREES), SIX_LABELS, recall_at=(1,), return_neighbors=True
    )

    # k = max(max K, max R) = max(1, 2) = 2, and the rankings are those of the hand-computed test.
    expected = np.array([[1, 2], [0, 2], [1, 0], [2, 4], [3, 5], [4, 3]])
    np.testing.assert_array_equal(neighbors, expected)
    assert neighbors.dtype == np.int64
    assert metrics.recall_at_k == pytest.approx({1: 0.5})


def test_query_gallery_hand_computed():
    gallery = unit_vectors([0, 40, 90, 130])
    gallery_labels = np.array([0, 1, 0, 2])
    queries = unit_vectors([15, 55, 100, 60])
    query_labels = np.array([0, 0, 2, 3])

    # Rankings of the gallery rows, with relevant rows marked *:
    #   q(15,  label 0): 0* 1  2* 3    R = 2, AP@R = 0.5, R-precision 1/2
    #   q(55,  label 0): 1  2* 0* 3    R = 2, AP@R = (1/2)/2 = 0.25, R-precision 1/2
    #   q(100, label 2): 2  3* 1  0    R = 1, AP@R = 0, R-precision 0
    #   q(60,  label 3): no gallery row has label 3, so R = 0 and it is excluded.
    metrics, neighbors = evaluate_retrieval(
        queries, query_labels, gallery, gallery_labels, recall_at=(1, 2, 4, 5), return_neighbors=True
    )

    assert metrics.recall_at_k == pytest.approx({1: 1 / 3, 2: 1.0, 4: 1.0})
    assert metrics.map_at_r == pytest.approx((0.5 + 0.25 + 0) / 3)
    assert metrics.r_precision == pytest.approx((0.5 + 0.5 + 0) / 3)
    assert metrics.num_queries == 3
    assert metrics.num_excluded_queries == 1

    # k = min(4 gallery rows, max(5, 2)) = 4, and the excluded query keeps its row.
    expected = np.array([[0, 1, 2, 3], [1, 2, 0, 3], [2, 3, 1, 0], [1, 2, 0, 3]])
    np.testing.assert_array_equal(neighbors, expected)


def test_lone_label_queries_excluded_and_counted():
    # Two images with labels of their own, at 240 and 250 degrees. Neither enters
    # the top 2 of another query, nor the top 3 of c and d (the queries without a
    # hit in their top 2), so the six scored queries keep their metrics.
    embeddings = unit_vectors([*SIX_DEGREES, 240, 250])
    labels = np.array([*SIX_LABELS, 7, 8])

    metrics = evaluate_retrieval(embeddings, labels, recall_at=(1, 2, 3))

    assert metrics.num_queries == 6
    assert metrics.num_excluded_queries == 2
    assert metrics.recall_at_k == pytest.approx({1: 3 / 6, 2: 4 / 6, 3: 5 / 6})
    assert metrics.map_at_r == pytest.approx(1.75 / 6)
    assert metrics.r_precision == pytest.approx(2 / 6)


def test_all_queries_lone_raises():
    with pytest.raises(ValueError, match="none of the 3 queries"):
        evaluate_retrieval(unit_vectors([0, 10, 20]), np.array([0, 1, 2]))


def test_single_image_raises():
    with pytest.raises(ValueError, match="none of the 1 queries"):
        evaluate_retrieval(unit_vectors([0]), np.array([0]))


def test_search_ties_by_ascending_index():
    # With a one-dimensional query [1], each score is the gallery value itself.
    query = np.ones((1, 1), dtype=np.float32)
    gallery = np.array([[2], [1], [2], [3], [2]], dtype=np.float32)

    scores, indices = exact_search(query, gallery, 5)

    np.testing.assert_array_equal(indices, [[3, 0, 2, 4, 1]])
    np.testing.assert_array_equal(scores, [[3, 2, 2, 2, 1]])
    assert scores.dtype == np.float32
    assert indices.dtype == np.int64


@pytest.mark.parametrize(
    ("k", "expected_indices"),
    [(1, [3]), (2, [3, 0]), (3, [3, 0, 2]), (4, [3, 0, 2, 4])],
)
def test_search_tie_at_k_boundary(k, expected_indices):
    # Rows 0, 2 and 4 share the second-highest score, so a cut inside that
    # group keeps its lowest indices.
    query = np.ones((1, 1), dtype=np.float32)
    gallery = np.array([[2], [1], [2], [3], [2]], dtype=np.float32)

    _, indices = exact_search(query, gallery, k)

    np.testing.assert_array_equal(indices, [expected_indices])


def test_search_excludes_self_by_index():
    # Rows 0 and 2 are the same vector. Each must find the other at rank 1,
    # with score 1, and never itself.
    embeddings = np.array([[1, 0], [0, 1], [1, 0], [0.6, 0.8]], dtype=np.float32)

    scores, indices = exact_search(embeddings, embeddings, 3, exclude_self=True)

    # Query 1 scores 0 against rows 0 and 2, a tie kept in index order.
    # Query 3 scores 0.6 against rows 0 and 2, the same tie.
    np.testing.assert_array_equal(indices, [[2, 3, 1], [3, 0, 2], [0, 3, 1], [1, 0, 2]])
    np.testing.assert_array_equal(scores[:, 0], np.array([1, 0.8, 1, 0.8], dtype=np.float32))


def test_evaluate_retrieves_duplicate_of_query():
    # Rows 0 and 2 are the same vector with the same label. Excluding the
    # query by rank would drop whichever of the two sorts first, which for
    # query 2 is its duplicate, row 0.
    embeddings = np.array([[1, 0], [0, 1], [1, 0], [0.6, 0.8]], dtype=np.float32)
    labels = np.array([0, 1, 0, 1])

    metrics, neighbors = evaluate_retrieval(embeddings, labels, recall_at=(1,), return_neighbors=True)

    # R = 1 for every query, so k = 1.
    np.testing.assert_array_equal(neighbors, [[2], [3], [0], [1]])
    assert metrics.recall_at_k == {1: 1.0}
    assert metrics.map_at_r == 1.0


def test_search_chunked_matches_brute_force():
    # Small integers make every inner product exact in float32, whatever the
    # summation order of the matrix product, and they create many ties.
    rng = np.random.default_rng(0)
    queries = rng.integers(-2, 3, size=(37, 4)).astype(np.float32)
    gallery = rng.integers(-2, 3, size=(53, 4)).astype(np.float32)

    for k in (1, 5, 17, 53):
        expected_scores, expected_indices = brute_force_search(queries, gallery, k, exclude_self=False)
        for chunk_size in (1, 3, 1024):
            scores, indices = exact_search(queries, gallery, k, chunk_size=chunk_size)

            np.testing.assert_array_equal(indices, expected_indices, err_msg=f"k={k} chunk_size={chunk_size}")
            np.testing.assert_array_equal(scores, expected_scores, err_msg=f"k={k} chunk_size={chunk_size}")


def test_search_chunked_exclude_self_matches_brute_force():
    rng = np.random.default_rng(1)
    embeddings = rng.integers(-2, 3, size=(41, 4)).astype(np.float32)
    embeddings[7] = embeddings[30]  # a duplicate pair, each retrievable by the other

    for k in (1, 6, 19, 40):
        expected_scores, expected_indices = brute_force_search(embeddings, embeddings, k, exclude_self=True)
        for chunk_size in (1, 3, 1024):
            scores, indices = exact_search(embeddings, embeddings, k, chunk_size=chunk_size, exclude_self=True)

            np.testing.assert_array_equal(indices, expected_indices, err_msg=f"k={k} chunk_size={chunk_size}")
            np.testing.assert_array_equal(scores, expected_scores, err_msg=f"k={k} chunk_size={chunk_size}")


def test_sampled_search_matches_brute_force():
    # 2,000 gallery rows are at least 16 times k for k <= 125, so the top k
    # is selected among the candidates above a sampled threshold. Small
    # integers give few distinct scores, so most rows tie at the k-th score.
    rng = np.random.default_rng(3)
    queries = rng.integers(-2, 3, size=(70, 4)).astype(np.float32)
    gallery = rng.integers(-2, 3, size=(2000, 4)).astype(np.float32)

    for k in (1, 7, 50, 125):
        expected_scores, expected_indices = brute_force_search(queries, gallery, k, exclude_self=False)
        for chunk_size in (1, 16, 1024):
            scores, indices = exact_search(queries, gallery, k, chunk_size=chunk_size)

            np.testing.assert_array_equal(indices, expected_indices, err_msg=f"k={k} chunk_size={chunk_size}")
            np.testing.assert_array_equal(scores, expected_scores, err_msg=f"k={k} chunk_size={chunk_size}")


def test_sampled_search_exclude_self_exact():
    # 1,600 rows are at least 16 times k for k <= 100, as in the test above.
    rng = np.random.default_rng(4)
    embeddings = rng.integers(-2, 3, size=(1600, 3)).astype(np.float32)
    embeddings[5] = embeddings[1200]  # a duplicate pair, each retrievable by the other

    for k in (1, 40, 100):
        expected_scores, expected_indices = brute_force_search(embeddings, embeddings, k, exclude_self=True)
        scores, indices = exact_search(embeddings, embeddings, k, chunk_size=512, exclude_self=True)

        np.testing.assert_array_equal(indices, expected_indices, err_msg=f"k={k}")
        np.testing.assert_array_equal(scores, expected_scores, err_msg=f"k={k}")


def test_unrepresentative_sample_searched_in_full(monkeypatch):
    # Every 16th gallery row, the sampled columns, contains the 100 highest
    # gallery values. For query [1] the sampled threshold, the 10th highest
    # sampled score, then passes only 10 columns, fewer than k = 80, so its
    # row is searched in full. For query [-1] those rows score lowest, and
    # the threshold passes enough columns.
    gallery = np.arange(1600, dtype=np.float32)[:, None]
    gallery[::16, 0] += 10_000
    queries = np.array([[1], [-1]], dtype=np.float32)

    searched_shapes = []
    exhaustive = metrics._top_k_positions_exhaustive

    def recording_exhaustive(scores, k):
        searched_shapes.append(scores.shape)
        return exhaustive(scores, k)

    monkeypatch.setattr(metrics, "_top_k_positions_exhaustive", recording_exhaustive)
    monkeypatch.setattr(metrics, "_available_cores", lambda: 1)

    scores, indices = exact_search(queries, gallery, 80)

    expected_scores, expected_indices = brute_force_search(queries, gallery, 80, exclude_self=False)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_array_equal(scores, expected_scores)
    # One call on query [1]'s whole row, one on query [-1]'s packed candidates.
    assert len(searched_shapes) == 2
    assert (1, 1600) in searched_shapes


def test_search_row_blocks_match_brute_force(monkeypatch):
    rng = np.random.default_rng(5)
    queries = rng.integers(-2, 3, size=(23, 4)).astype(np.float32)
    gallery = rng.integers(-2, 3, size=(300, 4)).astype(np.float32)
    expected_scores, expected_indices = brute_force_search(queries, gallery, 12, exclude_self=False)

    for cores in (1, 3, 64):
        monkeypatch.setattr(metrics, "_available_cores", lambda: cores)
        scores, indices = exact_search(queries, gallery, 12, chunk_size=10)

        np.testing.assert_array_equal(indices, expected_indices, err_msg=f"cores={cores}")
        np.testing.assert_array_equal(scores, expected_scores, err_msg=f"cores={cores}")


def test_search_overflow_raises():
    embeddings = np.full((2, 4), 1e20, dtype=np.float32)

    with pytest.raises(ValueError, match=r"inner products of query rows 0\.\.1 overflow float32"):
        exact_search(embeddings, embeddings, 1)


def test_evaluate_chunk_size_does_not_change_results():
    # Small integers keep the scores exact, as in the search tests above.
    rng = np.random.default_rng(2)
    embeddings = rng.integers(-2, 3, size=(60, 4)).astype(np.float32)
    labels = rng.integers(0, 8, size=60)

    results = [
        evaluate_retrieval(embeddings, labels, recall_at=(1, 5), chunk_size=chunk_size, return_neighbors=True)
        for chunk_size in (1, 3, 1024)
    ]

    for metrics, neighbors in results[1:]:
        assert metrics == results[0][0]
        np.testing.assert_array_equal(neighbors, results[0][1])


def test_matches_pytorch_metric_learning_leave_one_out():
    embeddings, labels = clustered_embeddings(seed=0)

    # Precondition: faiss ranks by float32 L2 distance and we rank by float32
    # inner product, which agree only where score gaps exceed rounding error.
    min_gap = min_score_gap_at_metric_swaps(embeddings, labels, embeddings, labels, exclude_self=True)
    assert min_gap > MIN_SAFE_SCORE_GAP, f"test data has a near-tie ({min_gap:.2e}); pick another seed"

    calculator = AccuracyCalculator(
        include=("precision_at_1", "mean_average_precision_at_r", "r_precision"),
        k="max_bin_count",
        device=torch.device("cpu"),
    )
    expected = calculator.get_accuracy(embeddings, labels, embeddings, labels, ref_includes_query=True)

    metrics = evaluate_retrieval(embeddings, labels, recall_at=(1,))

    # AccuracyCalculator (pytorch-metric-learning 2.9.0) drops lone-label
    # queries from every metric, as evaluate_retrieval does.
    lone_queries = int(np.count_nonzero(np.bincount(labels)[labels] == 1))
    assert lone_queries > 0
    assert metrics.num_excluded_queries == lone_queries
    assert metrics.num_queries == len(labels) - lone_queries
    assert metrics.recall_at_k[1] == pytest.approx(expected["precision_at_1"], abs=1e-6)
    assert metrics.map_at_r == pytest.approx(expected["mean_average_precision_at_r"], abs=1e-6)
    assert metrics.r_precision == pytest.approx(expected["r_precision"], abs=1e-6)


def test_matches_pytorch_metric_learning_query_gallery():
    embeddings, labels = clustered_embeddings(seed=0)
    queries, query_labels = embeddings[:500], labels[:500]
    gallery, gallery_labels = embeddings[500:], labels[500:]

    min_gap = min_score_gap_at_metric_swaps(queries, query_labels, gallery, gallery_labels, exclude_self=False)
    assert min_gap > MIN_SAFE_SCORE_GAP, f"test data has a near-tie ({min_gap:.2e}); pick another seed"

    calculator = AccuracyCalculator(
        include=("precision_at_1", "mean_average_precision_at_r", "r_precision"),
        k="max_bin_count",
        device=torch.device("cpu"),
    )
    expected = calculator.get_accuracy(queries, query_labels, gallery, gallery_labels, ref_includes_query=False)

    metrics = evaluate_retrieval(queries, query_labels, gallery, gallery_labels, recall_at=(1,))

    queries_without_gallery_label = int(np.count_nonzero(~np.isin(query_labels, gallery_labels)))
    assert queries_without_gallery_label > 0
    assert metrics.num_excluded_queries == queries_without_gallery_label
    assert metrics.recall_at_k[1] == pytest.approx(expected["precision_at_1"], abs=1e-6)
    assert metrics.map_at_r == pytest.approx(expected["mean_average_precision_at_r"], abs=1e-6)
    assert metrics.r_precision == pytest.approx(expected["r_precision"], abs=1e-6)


def test_to_dict_keys_in_order():
    metrics = RetrievalMetrics(
        recall_at_k={10: 0.75, 1: 0.5}, map_at_r=0.25, r_precision=0.3, num_queries=8, num_excluded_queries=2
    )

    flat = metrics.to_dict()

    assert list(flat) == ["recall@1", "recall@10", "map@r", "r_precision", "num_queries", "num_excluded_queries"]
    assert flat["recall@1"] == 0.5
    assert flat["recall@10"] == 0.75
    assert flat["map@r"] == 0.25
    assert flat["num_excluded_queries"] == 2


def test_to_dict_values_are_python_numbers():
    flat = evaluate_retrieval(unit_vectors(SIX_DEGREES), SIX_LABELS, recall_at=(1,)).to_dict()

    for key, value in flat.items():
        assert type(value) in (float, int), f"{key} is {type(value).__name__}"


EMBEDDINGS = unit_vectors([0, 10, 20, 30])
LABELS = np.array([0, 0, 1, 1])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: exact_search(EMBEDDINGS[0], EMBEDDINGS, 1), r"query_embeddings must be a 2-D array .* shape \(2,\)"),
        (lambda: exact_search(EMBEDDINGS, EMBEDDINGS[None], 1), r"gallery_embeddings must be a 2-D array .* shape \(1, 4, 2\)"),
        (lambda: exact_search(EMBEDDINGS[:0], EMBEDDINGS, 1), r"query_embeddings must have at least one row .* shape \(0, 2\)"),
        (lambda: exact_search(EMBEDDINGS, np.ones((4, 3), np.float32), 1), "dimension 2 but gallery_embeddings have dimension 3"),
        (lambda: exact_search(EMBEDDINGS, EMBEDDINGS, 0), "k must be a positive integer, got 0"),
        (lambda: exact_search(EMBEDDINGS, EMBEDDINGS, 2.0), "k must be a positive integer, got 2.0"),
        (lambda: exact_search(EMBEDDINGS, EMBEDDINGS, 5), "k=5 is larger than the 4 candidate"),
        (lambda: exact_search(EMBEDDINGS, EMBEDDINGS, 4, exclude_self=True), "k=4 is larger than the 3 candidate"),
        (lambda: exact_search(EMBEDDINGS, EMBEDDINGS, 1, chunk_size=0), "chunk_size must be a positive integer, got 0"),
        (lambda: exact_search(EMBEDDINGS[:3], EMBEDDINGS, 1, exclude_self=True), "got 3 queries and 4 gallery rows"),
        (lambda: exact_search(np.array([[np.nan, 0]]), EMBEDDINGS, 1), "query_embeddings contains NaN or infinite values, first in row 0"),
        (lambda: exact_search(np.array([["a", "b"]]), EMBEDDINGS, 1), "query_embeddings must be a real-valued array, got dtype <U1"),
        (lambda: evaluate_retrieval(EMBEDDINGS, LABELS[:3]), "query_labels has 3 labels but query_embeddings has 4 rows"),
        (lambda: evaluate_retrieval(EMBEDDINGS, LABELS[:, None]), r"query_labels must be a 1-D array, got shape \(4, 1\)"),
        (lambda: evaluate_retrieval(EMBEDDINGS, LABELS.astype(np.float32)), "query_labels must contain integers, got dtype float32"),
        (lambda: evaluate_retrieval(EMBEDDINGS, LABELS, EMBEDDINGS, LABELS[:2]), "gallery_labels has 2 labels but gallery_embeddings has 4 rows"),
        (lambda: evaluate_retrieval(EMBEDDINGS, LABELS, EMBEDDINGS), "gallery_embeddings was given without gallery_labels"),
        (lambda: evaluate_retrieval(EMBEDDINGS, LABELS, gallery_labels=LABELS), "gallery_labels was given without gallery_embeddings"),
        (lambda: evaluate_retrieval(EMBEDDINGS, LABELS, np.ones((4, 3), np.float32), LABELS), "dimension 2 but gallery_embeddings have dimension 3"),
        (lambda: evaluate_retrieval(EMBEDDINGS, LABELS, recall_at=(1, 0)), r"recall_at must contain positive integers, got 0 in \[1, 0\]"),
        (lambda: evaluate_retrieval(EMBEDDINGS, LABELS, chunk_size=-1), "chunk_size must be a positive integer, got -1"),
    ],
)
def test_invalid_input_raises(call, message):
    with pytest.raises(ValueError, match=message):
        call()
