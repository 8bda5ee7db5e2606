"""What an index costs against exact search: recall, build time, size and query latency.

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


def recall_against_exact(index: faiss.Index, embeddings: np.ndarray, exact_neighbors: np.ndarray) -> float:
    """Return the fraction of the exact top 10 neighbours that the index also returns in its top 10.

    Args:
        index: the index over `embeddings`, queried with each of its own rows.
        embeddings: [N, D] float32 rows of the index, in index order.
        exact_neighbors: [N, >=10] exact neighbours (self excluded, best first).

    A returned row counts when its exact inner product reaches the exact 10th
    score (within 1e-6), so rows tied at the boundary count for either order
    and an exact index scores 1.0. The query's own row is not a result.
    """
    k = min(INDEX_RECALL_K, exact_neighbors.shape[1])
    _, approximate = index.search(np.ascontiguousarray(embeddings), k + 1)
    hits = 0
    for row, candidates in enumerate(approximate):
        found = np.array([candidate for candidate in candidates if candidate not in (row, -1)][:k], dtype=np.int64)
        kth_score = float(embeddings[exact_neighbors[row, k - 1]] @ embeddings[row])
        found_scores = embeddings[found] @ embeddings[row] if len(found) else np.zeros(0)
        hits += int(np.count_nonzero(found_scores >= kth_score - 1e-6))
    return hits / (k * len(embeddings))


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
    embeddings: np.ndarray,
    exact_neighbors: np.ndarray,
    *,
    latency_queries: int = 200,
    seed: int = 0,
) -> dict[str, float | str]:
    """Measure an index built over `embeddings` against the exact neighbours of every row.

    Latency is timed on `latency_queries` rows drawn with `seed`. Returns flat
    keys for the evaluate metrics: factory, recall@10 against exact search,
    build seconds, bytes per vector of the saved file and p50/p99 latency in ms.
    """
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(len(embeddings), size=min(latency_queries, len(embeddings)), replace=False))
    latencies = single_query_latencies_ms(index, embeddings[sample])
    return {
        "index_factory": metadata.factory,
        f"index_recall@{INDEX_RECALL_K}_vs_exact": recall_against_exact(index, embeddings, exact_neighbors),
        "index_build_seconds": metadata.build_seconds if metadata.build_seconds is not None else float("nan"),
        "index_bytes_per_vector": (Path(index_dir) / INDEX_FILE).stat().st_size / max(index.ntotal, 1),
        "index_latency_p50_ms": float(np.percentile(latencies, 50)),
        "index_latency_p99_ms": float(np.percentile(latencies, 99)),
    }
