"""Costs of an index against exact search: recall, build time, size and query latency.

evaluate reports these next to the headline metrics, which always come from
exact search, so that an approximate index (IVF, HNSW, PQ) shows what it
trades for speed and memory.
"""

from __future__ import annotations

import time
from pathlib import Path

import faiss
import numpy as np

from image_retrieval.index import INDEX_FILE, IndexMetadata

# Results per query compared with the exact search.
INDEX_RECALL_K = 10


def recall_against_exact(
    index: faiss.Index,
    query_embeddings: np.ndarray,
    exact_neighbors: np.ndarray,
    gallery_embeddings: np.ndarray | None = None,
) -> float:
    """Return the fraction of the exact top 10 neighbours that the index also returns in its top 10.

    Args:
        index: the index over the gallery rows.
        query_embeddings: [Q, D] float32 queries.
        exact_neighbors: [Q, >=10] exact neighbours (gallery rows, best first).
        gallery_embeddings: [G, D] float32 rows of the index, in index order, or
            None when the queries are the gallery (leave-one-out), in which case
            a query's own row is not a result.

    A returned row counts when its exact inner product reaches the exact 10th
    score (within 1e-6), so rows tied at the boundary count for either order
    and an exact index scores 1.0.
    """
    leave_one_out = gallery_embeddings is None
    gallery = query_embeddings if leave_one_out else gallery_embeddings
    k = min(INDEX_RECALL_K, exact_neighbors.shape[1])
    _, approximate = index.search(np.ascontiguousarray(query_embeddings), k + 1 if leave_one_out else k)
    hits = 0
    for row, candidates in enumerate(approximate):
        excluded = (row, -1) if leave_one_out else (-1,)
        found = np.array([candidate for candidate in candidates if candidate not in excluded][:k], dtype=np.int64)
        kth_score = float(gallery[exact_neighbors[row, k - 1]] @ query_embeddings[row])
        found_scores = gallery[found] @ query_embeddings[row] if len(found) else np.zeros(0)
        hits += int(np.count_nonzero(found_scores >= kth_score - 1e-6))
    return hits / (k * len(query_embeddings))


def single_query_latencies_ms(index: faiss.Index, queries: np.ndarray, k: int = INDEX_RECALL_K) -> np.ndarray:
    """Time one search call per query row, as a search service would: [len(queries)] milliseconds."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    k = min(k, index.ntotal)
    index.search(queries[:1], k)  # warm-up
    latencies = np.empty(len(queries))
    for row in range(len(queries)):
        started = time.perf_counter()
        index.search(queries[row : row + 1], k)
        latencies[row] = (time.perf_counter() - started) * 1000.0
    return latencies


def index_report(
    index: faiss.Index,
    metadata: IndexMetadata,
    index_dir: Path,
    query_embeddings: np.ndarray,
    exact_neighbors: np.ndarray,
    gallery_embeddings: np.ndarray | None = None,
    *,
    latency_queries: int = 200,
    seed: int = 0,
) -> dict[str, float | str]:
    """Measure an index against the exact neighbours of every query (see `recall_against_exact`).

    Latency is timed on `latency_queries` queries drawn with `seed`. Returns flat
    keys for the evaluate metrics: factory, recall@10 against exact search,
    build seconds, bytes per vector of the saved file and p50/p99 latency in ms.
    """
    rng = np.random.default_rng(seed)
    sample_size = min(latency_queries, len(query_embeddings))
    sample = np.sort(rng.choice(len(query_embeddings), size=sample_size, replace=False))
    latencies = single_query_latencies_ms(index, query_embeddings[sample])
    recall = recall_against_exact(index, query_embeddings, exact_neighbors, gallery_embeddings)
    return {
        "index_factory": metadata.factory,
        f"index_recall@{INDEX_RECALL_K}_vs_exact": recall,
        "index_build_seconds": metadata.build_seconds if metadata.build_seconds is not None else float("nan"),
        "index_bytes_per_vector": (Path(index_dir) / INDEX_FILE).stat().st_size / max(index.ntotal, 1),
        "index_latency_p50_ms": float(np.percentile(latencies, 50)),
        "index_latency_p99_ms": float(np.percentile(latencies, 99)),
    }
