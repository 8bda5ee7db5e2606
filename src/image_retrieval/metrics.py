"""Exact nearest-neighbour search and the retrieval metrics of the evaluate stage.

Protocol
--------
Each query is scored against each gallery row by inner product, which equals
cosine similarity when the embeddings are L2-normalised. There are two modes:

* leave-one-out (no gallery given): the queries are the gallery, and each
  query is removed from its own results by its row index, not by rank. A
  duplicate of the query at another row can still be retrieved, even at rank 1.
* query/gallery: each query is scored against the gallery rows only.

Ties between equal scores are broken by ascending gallery row index. This rule
also applies at the k-th result: when more rows share the k-th score than fit in the
top k, the rows with the lowest indices are kept.

The search scores `chunk_size` queries at a time with one float32 matrix
product, so peak memory is a small multiple of chunk_size x gallery rows
float32 values, never a full query x gallery matrix. The top k of a chunk's
rows are selected in one thread per available CPU core, each thread taking a
block of rows, because numpy's partition and sort run on one core.

Metrics
-------
R is the number of relevant gallery rows of a query: the rows with the query's
label, not counting the query itself in leave-one-out mode.

* Recall@K: 1 if at least one of the top K results is relevant, else 0.
* MAP@R: (1/R) * sum over ranks i = 1..R of P(i) * rel(i), where P(i) is the
  precision of the top i results and rel(i) is 1 if result i is relevant.
  This is the metric of Musgrave, Belongie and Lim, "A Metric Learning Reality
  Check" (ECCV 2020).
* R-precision: the number of relevant results in the top R, divided by R.

Each metric is the mean over the queries. A query with R == 0 has no relevant
row, so it is left out of every metric and counted in `num_excluded_queries`.
Recall@K is reported only for K up to the number of candidate gallery rows
(N - 1 in leave-one-out mode).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal, overload

import numpy as np

DEFAULT_RECALL_AT = (1, 10, 100, 1000)

# When a row has at least SAMPLE_STRIDE * k columns, its top k is selected
# among the columns at or above a threshold taken from every SAMPLE_STRIDE-th
# column, set so that about CANDIDATE_FACTOR * k columns pass on average.
SAMPLE_STRIDE = 16
CANDIDATE_FACTOR = 2


@dataclass
class RetrievalMetrics:
    """Retrieval metrics averaged over the scored queries, each in [0, 1]."""

    # K -> Recall@K, for each requested K up to the number of candidate gallery rows.
    recall_at_k: dict[int, float]
    map_at_r: float
    r_precision: float
    # Queries that count towards the metrics, which are those with R > 0.
    num_queries: int
    # Queries with R == 0, left out of every metric.
    num_excluded_queries: int

    def to_dict(self) -> dict[str, float | int]:
        """Flatten into a JSON-ready dict with keys "recall@K", "map@r", "r_precision" and the query counts."""
        flat: dict[str, float | int] = {
            f"recall@{top_k}": value for top_k, value in sorted(self.recall_at_k.items())
        }
        flat["map@r"] = self.map_at_r
        flat["r_precision"] = self.r_precision
        flat["num_queries"] = self.num_queries
        flat["num_excluded_queries"] = self.num_excluded_queries
        return flat


def exact_search(
    query_embeddings: np.ndarray,
    gallery_embeddings: np.ndarray,
    k: int,
    *,
    chunk_size: int = 1024,
    exclude_self: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Find the k gallery rows with the highest inner product for each query.

    Args:
        query_embeddings: [Q, D] float array, converted to float32.
        gallery_embeddings: [G, D] float array, converted to float32.
        k: results per query, from 1 to G (to G - 1 with exclude_self).
        chunk_size: queries scored per matrix product. Peak memory is a small
            multiple of chunk_size x G float32 values.
        exclude_self: drop gallery row i from the results of query i, as when
            the queries are the gallery. Requires Q == G.

    Returns:
        scores: [Q, k] float32 inner products, in descending order per row.
        indices: [Q, k] int64 gallery row indices. Rows with equal scores are
            ordered by ascending index, also at the k-th result.

    Raises:
        ValueError: on an array that is not 2-D, is empty or contains NaN or
            infinite values, on different embedding dimensions, on k or
            chunk_size below 1, on k above the number of candidate gallery
            rows, and on exclude_self with Q != G.
    """
    queries = _as_embeddings(query_embeddings, "query_embeddings")
    gallery = _as_embeddings(gallery_embeddings, "gallery_embeddings")
    _check_same_dimension(queries, gallery)
    _check_positive_int(k, "k")
    _check_positive_int(chunk_size, "chunk_size")

    if exclude_self and len(queries) != len(gallery):
        raise ValueError(
            f"exclude_self=True requires as many queries as gallery rows, got "
            f"{len(queries)} queries and {len(gallery)} gallery rows; pass exclude_self=False "
            "when the queries are not the gallery"
        )

    num_candidates = len(gallery) - 1 if exclude_self else len(gallery)
    if k > num_candidates:
        raise ValueError(
            f"k={k} is larger than the {num_candidates} candidate gallery rows per query; "
            f"use k <= {num_candidates}"
        )

    scores = np.empty((len(queries), k), dtype=np.float32)
    indices = np.empty((len(queries), k), dtype=np.int64)
    num_threads = min(_available_cores(), chunk_size, len(queries))
    with ThreadPoolExecutor(max_workers=num_threads) as pool:
        for start in range(0, len(queries), chunk_size):
            stop = min(start + chunk_size, len(queries))
            chunk_scores = _chunk_scores(queries, gallery, start, stop, exclude_self)
            positions = _top_k_positions_in_blocks(pool, num_threads, chunk_scores, k)
            scores[start:stop] = np.take_along_axis(chunk_scores, positions, axis=1)
            indices[start:stop] = positions

    return scores, indices


def _chunk_scores(
    queries: np.ndarray, gallery: np.ndarray, start: int, stop: int, exclude_self: bool
) -> np.ndarray:
    """Return the [stop - start, G] inner products of query rows start..stop - 1, with -inf at their own rows if exclude_self.

    Raises ValueError when an inner product overflows float32.
    """
    # An overflow raises the ValueError below instead of a numpy warning.
    with np.errstate(over="ignore", invalid="ignore"):
        chunk_scores = queries[start:stop] @ gallery.T

    if not np.isfinite(chunk_scores).all():
        raise ValueError(
            f"inner products of query rows {start}..{stop - 1} overflow float32; "
            "L2-normalise the embeddings"
        )

    if exclude_self:
        # -inf ranks below every finite score, and k <= G - 1 leaves at least
        # k finite candidates, so the query's own row is never selected and
        # column j stays gallery row j.
        rows = np.arange(stop - start)
        chunk_scores[rows, start + rows] = -np.inf
    return chunk_scores


def _top_k_positions_in_blocks(
    pool: ThreadPoolExecutor, num_blocks: int, scores: np.ndarray, k: int
) -> np.ndarray:
    """Run `_top_k_positions` on up to num_blocks blocks of rows in the pool and stack the results."""
    bounds = np.linspace(0, len(scores), min(num_blocks, len(scores)) + 1).astype(int)
    blocks = [scores[first:last] for first, last in zip(bounds[:-1], bounds[1:])]
    return np.concatenate(list(pool.map(_top_k_positions, blocks, [k] * len(blocks))))


def _available_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@overload
def evaluate_retrieval(
    query_embeddings: np.ndarray,
    query_labels: np.ndarray,
    gallery_embeddings: np.ndarray | None = None,
    gallery_labels: np.ndarray | None = None,
    *,
    recall_at: Iterable[int] = DEFAULT_RECALL_AT,
    chunk_size: int = 1024,
    return_neighbors: Literal[False] = False,
) -> RetrievalMetrics: ...


@overload
def evaluate_retrieval(
    query_embeddings: np.ndarray,
    query_labels: np.ndarray,
    gallery_embeddings: np.ndarray | None = None,
    gallery_labels: np.ndarray | None = None,
    *,
    recall_at: Iterable[int] = DEFAULT_RECALL_AT,
    chunk_size: int = 1024,
    return_neighbors: Literal[True],
) -> tuple[RetrievalMetrics, np.ndarray]: ...


def evaluate_retrieval(
    query_embeddings,
    query_labels,
    gallery_embeddings=None,
    gallery_labels=None,
    *,
    recall_at=DEFAULT_RECALL_AT,
    chunk_size=1024,
    return_neighbors=False,
):
    """Compute Recall@K, MAP@R and R-precision with an exact search.

    Leave-one-out mode when gallery_embeddings is None, else query/gallery mode.
    The module docstring defines the protocol, the tie rule and the metrics.

    Args:
        query_embeddings: [Q, D] float array, L2-normalised so that the inner
            product is cosine similarity.
        query_labels: [Q] integer class labels.
        gallery_embeddings: [G, D] float array, or None for leave-one-out.
        gallery_labels: [G] integer class labels; given exactly when
            gallery_embeddings is.
        recall_at: the K values of Recall@K. A K above the number of candidate
            gallery rows is left out of `recall_at_k`.
        chunk_size: queries scored per matrix product (see `exact_search`).
        return_neighbors: also return the neighbours that the metrics used.

    Returns:
        The metrics, or with return_neighbors=True a tuple (metrics, neighbors).
        `neighbors` is a [Q, k] int64 array of gallery row indices, best first,
        with k = min(candidate rows, max(max K requested, max R)). It has a row
        for every query, also for the queries that the metrics exclude.

    Raises:
        ValueError: on invalid embeddings (see `exact_search`), on labels that
            are not a 1-D integer array with one label per embedding, on a
            gallery given without its labels or the reverse, on a K or
            chunk_size below 1, and when every query has R == 0, so that no
            metric is defined.
    """
    leave_one_out = gallery_embeddings is None
    if leave_one_out and gallery_labels is not None:
        raise ValueError(
            "gallery_labels was given without gallery_embeddings; pass both for "
            "query/gallery mode, or neither for leave-one-out mode"
        )
    if not leave_one_out and gallery_labels is None:
        raise ValueError(
            "gallery_embeddings was given without gallery_labels; pass both for "
            "query/gallery mode, or neither for leave-one-out mode"
        )

    queries = _as_embeddings(query_embeddings, "query_embeddings")
    query_labels = _as_labels(query_labels, "query_labels", len(queries), "query_embeddings")
    if leave_one_out:
        gallery, gallery_labels = queries, query_labels
    else:
        gallery = _as_embeddings(gallery_embeddings, "gallery_embeddings")
        gallery_labels = _as_labels(
            gallery_labels, "gallery_labels", len(gallery), "gallery_embeddings"
        )
        _check_same_dimension(queries, gallery)

    recall_ks = _as_recall_ks(recall_at)
    _check_positive_int(chunk_size, "chunk_size")

    relevant_counts = _count_relevant(query_labels, gallery_labels, leave_one_out)
    is_scored = relevant_counts > 0
    if not is_scored.any():
        raise ValueError(
            f"none of the {len(queries)} queries has a relevant gallery row (R == 0 for "
            "every query), so no metric is defined; each query label needs at least one "
            "other gallery image with that label"
        )

    num_candidates = len(gallery) - 1 if leave_one_out else len(gallery)
    reported_ks = [top_k for top_k in recall_ks if top_k <= num_candidates]
    k = min(num_candidates, max([*recall_ks, int(relevant_counts.max())]))

    _, neighbors = exact_search(
        queries, gallery, k, chunk_size=chunk_size, exclude_self=leave_one_out
    )

    is_relevant = gallery_labels[neighbors[is_scored]] == query_labels[is_scored, None]
    metrics = _average_metrics(is_relevant, relevant_counts[is_scored], reported_ks)
    metrics.num_excluded_queries = int(np.count_nonzero(~is_scored))

    if return_neighbors:
        return metrics, neighbors
    return metrics


def _average_metrics(
    is_relevant: np.ndarray, relevant_counts: np.ndarray, recall_ks: list[int]
) -> RetrievalMetrics:
    """Average the metrics over n queries from the [n, k] relevance of their ranked results and their [n] R values, all > 0."""
    recall_at_k = {
        top_k: float(is_relevant[:, :top_k].any(axis=1).mean()) for top_k in recall_ks
    }

    average_precision_at_r, r_precision = _precision_within_r(is_relevant, relevant_counts)

    return RetrievalMetrics(
        recall_at_k=recall_at_k,
        map_at_r=float(average_precision_at_r.mean()),
        r_precision=float(r_precision.mean()),
        num_queries=len(relevant_counts),
        num_excluded_queries=0,
    )


def _precision_within_r(is_relevant: np.ndarray, relevant_counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return each query's average precision at R and R-precision from its [k] ranked relevance and its R.

    Only the top R results count. A query with R == 0 gets 0 for both.
    """
    ranks = np.arange(1, is_relevant.shape[1] + 1)
    is_relevant_within_r = is_relevant & (ranks <= relevant_counts[:, None])
    precision_at_rank = np.cumsum(is_relevant_within_r, axis=1) / ranks
    divisor = np.maximum(relevant_counts, 1)
    average_precision_at_r = (precision_at_rank * is_relevant_within_r).sum(axis=1) / divisor
    return average_precision_at_r, is_relevant_within_r.sum(axis=1) / divisor


def _top_k_positions(scores: np.ndarray, k: int) -> np.ndarray:
    """Return [rows, k] column positions of the k highest scores per row, ties by ascending column.

    A row's candidates are its columns at or above a threshold taken from a
    sample of its columns. When a row has at least k candidates, its k-th
    highest score is at or above the threshold. Every column that
    `_top_k_positions_exhaustive` could select over the whole row is then a
    candidate, so selecting among the candidates gives the same result.
    """
    num_rows, num_columns = scores.shape
    if num_columns < SAMPLE_STRIDE * k:
        return _top_k_positions_exhaustive(scores, k)

    # At least sample_rank columns reach the sample_rank-th highest sampled
    # score, and about sample_rank * SAMPLE_STRIDE = CANDIDATE_FACTOR * k do
    # when the sample is typical of the row.
    sample = scores[:, ::SAMPLE_STRIDE]
    sample_rank = -(-CANDIDATE_FACTOR * k // SAMPLE_STRIDE)
    thresholds = np.partition(sample, sample.shape[1] - sample_rank, axis=1)[:, sample.shape[1] - sample_rank, None]
    candidates = np.flatnonzero(scores >= thresholds)
    candidate_rows = candidates // num_columns
    counts = np.bincount(candidate_rows, minlength=num_rows)

    # A row with fewer than k candidates, because its sampled columns score
    # higher than the rest, is searched in full.
    positions = np.empty((num_rows, k), dtype=np.int64)
    is_short = counts < k
    if is_short.any():
        positions[is_short] = _top_k_positions_exhaustive(scores[is_short], k)
        is_kept = ~is_short[candidate_rows]
        candidates, candidate_rows = candidates[is_kept], candidate_rows[is_kept]
        counts[is_short] = 0
        if not candidates.size:
            return positions

    # Pack each row's candidates, in ascending column order, into the first
    # slots of a matrix padded with -inf, which is never selected because
    # each packed row has at least k finite candidates.
    offsets = np.cumsum(counts) - counts
    slots = np.arange(len(candidates)) - offsets[candidate_rows]
    packed_scores = np.full((num_rows, counts.max()), -np.inf, dtype=scores.dtype)
    packed_columns = np.zeros((num_rows, counts.max()), dtype=np.int64)
    packed_scores[candidate_rows, slots] = scores.ravel()[candidates]
    packed_columns[candidate_rows, slots] = candidates - candidate_rows * num_columns

    is_packed = ~is_short
    packed_positions = _top_k_positions_exhaustive(packed_scores[is_packed], k)
    positions[is_packed] = np.take_along_axis(packed_columns[is_packed], packed_positions, axis=1)
    return positions


def _top_k_positions_exhaustive(scores: np.ndarray, k: int) -> np.ndarray:
    """Return [rows, k] column positions of the k highest scores per row, ties by ascending column."""
    num_rows, num_columns = scores.shape
    kth_scores = np.partition(scores, num_columns - k, axis=1)[:, num_columns - k, None]
    is_selected = scores >= kth_scores

    # Flat row-major indices list each row's columns in ascending order. Every
    # row has at least k columns at or above its k-th score, so exactly
    # rows x k selected columns means that no row has a tie at the boundary.
    selected = np.flatnonzero(is_selected)
    if len(selected) > num_rows * k:
        # A row with more than k such columns keeps only the lowest columns
        # among those equal to the k-th score.
        counts = np.bincount(selected // num_columns, minlength=num_rows)
        tied_rows = np.flatnonzero(counts > k)
        is_above = scores[tied_rows] > kth_scores[tied_rows]
        is_at_kth = scores[tied_rows] == kth_scores[tied_rows]
        num_needed = k - is_above.sum(axis=1, keepdims=True)
        rank_among_tied = np.cumsum(is_at_kth, axis=1)
        is_selected[tied_rows] = is_above | (is_at_kth & (rank_among_tied <= num_needed))
        selected = np.flatnonzero(is_selected)

    positions = selected.reshape(num_rows, k) - np.arange(num_rows)[:, None] * num_columns

    # The stable sort keeps the ascending column order among equal scores.
    order = np.argsort(-np.take_along_axis(scores, positions, axis=1), axis=1, kind="stable")
    return np.take_along_axis(positions, order, axis=1)


def _count_relevant(
    query_labels: np.ndarray, gallery_labels: np.ndarray, leave_one_out: bool
) -> np.ndarray:
    """Return R per query: [Q] int64 counts of gallery rows with its label, minus itself in leave-one-out."""
    labels, counts = np.unique(gallery_labels, return_counts=True)
    positions = np.minimum(np.searchsorted(labels, query_labels), len(labels) - 1)
    is_in_gallery = labels[positions] == query_labels
    relevant_counts = np.where(is_in_gallery, counts[positions], 0).astype(np.int64)
    if leave_one_out:
        relevant_counts -= 1
    return relevant_counts


def _as_embeddings(embeddings: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(embeddings)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [rows, dimension], got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} must have at least one row and one column, got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{name} must be a real-valued array, got dtype {array.dtype}")

    array = np.ascontiguousarray(array, dtype=np.float32)
    is_finite_row = np.isfinite(array).all(axis=1)
    if not is_finite_row.all():
        first_bad_row = int(np.flatnonzero(~is_finite_row)[0])
        raise ValueError(f"{name} contains NaN or infinite values, first in row {first_bad_row}")
    return array


def _as_labels(labels: np.ndarray, name: str, num_rows: int, embeddings_name: str) -> np.ndarray:
    array = np.asarray(labels)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {array.shape}")
    if len(array) != num_rows:
        raise ValueError(
            f"{name} has {len(array)} labels but {embeddings_name} has {num_rows} rows; "
            "pass one label per embedding"
        )
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must contain integers, got dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


def _as_recall_ks(recall_at: Iterable[int]) -> list[int]:
    recall_ks = list(recall_at)
    for top_k in recall_ks:
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
            raise ValueError(f"recall_at must contain positive integers, got {top_k!r} in {recall_ks!r}")
    return sorted({int(top_k) for top_k in recall_ks})


def _check_same_dimension(queries: np.ndarray, gallery: np.ndarray) -> None:
    if queries.shape[1] != gallery.shape[1]:
        raise ValueError(
            f"query_embeddings have dimension {queries.shape[1]} but gallery_embeddings have "
            f"dimension {gallery.shape[1]}; embed both with the same model"
        )


def _check_positive_int(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


@dataclass
class PerQueryResults:
    """Each query's results from the neighbours that `evaluate_retrieval` returns; arrays have one entry per query."""

    # R: relevant gallery rows of the query; 0 for the queries the metrics exclude.
    relevant_counts: np.ndarray
    # 1-based rank of the first relevant neighbour; 0 when none is among the k neighbours.
    first_relevant_ranks: np.ndarray
    # Average precision over the top R results (MAP@R's term) and R-precision; 0 where R == 0.
    average_precision_at_r: np.ndarray
    r_precision: np.ndarray

    def recall_at(self, top_k: int) -> np.ndarray:
        """Return a [Q] bool array: does a relevant neighbour rank within the top `top_k`?"""
        return (self.first_relevant_ranks >= 1) & (self.first_relevant_ranks <= top_k)


def per_query_results(
    neighbors: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray, *, leave_one_out: bool
) -> PerQueryResults:
    """Score every query separately from its [Q, k] ranked neighbours (gallery row indices, best first).

    `neighbors` must come from `evaluate_retrieval(..., return_neighbors=True)`
    on the same labels, so that k covers every query's R. The mean of each
    array over the queries with R > 0 equals the corresponding metric of
    `evaluate_retrieval`.
    """
    query_labels = np.asarray(query_labels)
    gallery_labels = np.asarray(gallery_labels)
    relevant_counts = _count_relevant(query_labels, gallery_labels, leave_one_out)
    is_relevant = gallery_labels[neighbors] == query_labels[:, None]

    has_relevant = is_relevant.any(axis=1)
    first_relevant_ranks = np.where(has_relevant, is_relevant.argmax(axis=1) + 1, 0)
    average_precision_at_r, r_precision = _precision_within_r(is_relevant, relevant_counts)

    return PerQueryResults(
        relevant_counts=relevant_counts,
        first_relevant_ranks=first_relevant_ranks.astype(np.int64),
        average_precision_at_r=average_precision_at_r,
        r_precision=r_precision,
    )
