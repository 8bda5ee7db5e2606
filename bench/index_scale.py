"""Measure build time, size, query latency and recall@10 of faiss indexes on synthetic embeddings.

Usage: python bench/index_scale.py [--num-vectors 1000000] [--num-queries 1000]
       [--dimension 384] [--latent-dimension 64] [--noise 0.1] [--ambient-noise 0.01]
       [--seed 0] [--nprobe 16 64] [--ef-search 64 128]

Generates num-vectors + num-queries seeded clustered embeddings (L2-normalised
float32, classes of 2 to 12 images, see synthetic_embeddings.py), indexes the
first num-vectors and holds out the rest as queries, whose classes also have
indexed images. By default the clusters lie near a random 64-dimensional
subspace. --latent-dimension 384 spreads them over all dimensions, the worst
case for approximate search, where recall@10 drops far lower. Each index is built with the project's `build_index`
(inner product, IVF and PQ trained on a seeded sample of at most 100,000
rows), for these factory strings:

* Flat: exact search, which gives the reference neighbours.
* IVF{nlist},Flat and IVF{nlist},PQ48, where nlist is the power of two
  nearest to 4 * sqrt(num-vectors): 4096 at 1,000,000 vectors.
* HNSW32.

For each index and each search parameter (nprobe for IVF, efSearch for
HNSW) it reports the latency of single-query searches (p50 and p99 over all
queries, k = 10), the throughput of one batch search of all queries, and
recall@10: the mean fraction of a query's 10 exact nearest neighbours (Flat)
found among the 10 returned. Build time covers training and adding; bytes
per vector is the size of `faiss.serialize_index` divided by num-vectors.
faiss uses its default number of OpenMP threads. Prints the machine and a
Markdown table.
"""

from __future__ import annotations

import argparse
import gc
import logging
import math
import os
import time

import faiss
import numpy as np

from image_retrieval.index import build_index
from image_retrieval.index_report import single_query_latencies_ms
from machine import machine_line
from synthetic_embeddings import SOP_TEST_CLASSES, SOP_TEST_IMAGES, clustered_embeddings, sop_like_class_sizes

logger = logging.getLogger("index_scale")

TOP_K = 10


def nearest_power_of_two_nlist(num_vectors: int) -> int:
    """Return the power of two nearest to 4 * sqrt(num_vectors), the IVF list count."""
    return 2 ** round(math.log2(4 * math.sqrt(num_vectors)))


def batch_search(index: faiss.Index, queries: np.ndarray) -> tuple[np.ndarray, float]:
    """Search all queries in one call twice and return the neighbours and the faster call's queries per second."""
    best_seconds = float("inf")
    for _ in range(2):
        started = time.perf_counter()
        _, neighbors = index.search(queries, TOP_K)
        best_seconds = min(best_seconds, time.perf_counter() - started)
    return neighbors, len(queries) / best_seconds


def recall_at_10(neighbors: np.ndarray, exact_neighbors: np.ndarray) -> float:
    """Return the mean fraction of each query's exact top 10 found in its returned top 10."""
    found = [len(np.intersect1d(row, exact_row)) for row, exact_row in zip(neighbors, exact_neighbors)]
    return float(np.mean(found)) / TOP_K


def search_settings(factory: str, nprobes: list[int], ef_searches: list[int]) -> list[tuple[str, int] | None]:
    """Return the (parameter, value) pairs to measure for an index, or [None] when it has no search parameter."""
    if factory.startswith("IVF"):
        return [("nprobe", value) for value in nprobes]
    if factory.startswith("HNSW"):
        return [("efSearch", value) for value in ef_searches]
    return [None]


def measure_index(
    factory: str,
    database: np.ndarray,
    queries: np.ndarray,
    exact_neighbors: np.ndarray | None,
    args: argparse.Namespace,
) -> tuple[list[str], np.ndarray]:
    """Build one index and return its Markdown table rows and its neighbours at the last setting."""
    logger.info("Building %s on %d vectors", factory, len(database))
    started = time.perf_counter()
    index = build_index(database, factory, seed=args.seed)
    build_seconds = time.perf_counter() - started
    bytes_per_vector = len(faiss.serialize_index(index)) / len(database)
    logger.info("Built %s in %.1f s", factory, build_seconds)

    rows = []
    parameter_space = faiss.ParameterSpace()
    for setting in search_settings(factory, args.nprobe, args.ef_search):
        if setting is not None:
            parameter_space.set_index_parameter(index, *setting)
        latencies = single_query_latencies_ms(index, queries, TOP_K)
        neighbors, queries_per_second = batch_search(index, queries)
        reference = neighbors if exact_neighbors is None else exact_neighbors
        setting_text = "-" if setting is None else f"{setting[0]}={setting[1]}"
        rows.append(
            f"| {factory} | {build_seconds:.1f} | {bytes_per_vector:.1f} | {setting_text} "
            f"| {np.percentile(latencies, 50):.3f} | {np.percentile(latencies, 99):.3f} "
            f"| {queries_per_second:.0f} | {recall_at_10(neighbors, reference):.4f} |"
        )
        logger.info("%s %s: recall@10 %.4f", factory, setting_text, recall_at_10(neighbors, reference))

    del index
    gc.collect()
    return rows, neighbors


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-vectors", type=int, default=1_000_000, help="indexed embeddings")
    parser.add_argument("--num-queries", type=int, default=1000, help="held-out query embeddings")
    parser.add_argument("--dimension", type=int, default=384, help="embedding dimension (default: DINOv2-small)")
    parser.add_argument("--latent-dimension", type=int, default=64, help="dimensions that centres and noise span")
    parser.add_argument("--noise", type=float, default=0.1, help="per-dimension standard deviation around each class centre, in the latent dimensions")
    parser.add_argument("--ambient-noise", type=float, default=0.01, help="per-dimension standard deviation added in all dimensions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[16, 64], help="IVF lists searched per query")
    parser.add_argument("--ef-search", type=int, nargs="+", default=[64, 128], help="HNSW candidate list size")
    parser.add_argument("--pq-subquantizers", type=int, default=48, help="PQ codes per vector, one byte each; must divide the dimension")
    args = parser.parse_args()
    if args.dimension % args.pq_subquantizers:
        parser.error(f"--pq-subquantizers {args.pq_subquantizers} does not divide --dimension {args.dimension}")
    return args


def main() -> None:
    args = parse_arguments()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    total = args.num_vectors + args.num_queries
    num_classes = round(total * SOP_TEST_CLASSES / SOP_TEST_IMAGES)
    rng = np.random.default_rng(args.seed)
    logger.info("Generating %d x %d embeddings in %d classes", total, args.dimension, num_classes)
    embeddings, _ = clustered_embeddings(
        sop_like_class_sizes(total, num_classes, rng),
        args.dimension,
        args.noise,
        rng,
        latent_dimension=args.latent_dimension,
        ambient_noise=args.ambient_noise,
    )
    # The rows are in shuffled order, so the last rows are a random held-out sample.
    database, queries = embeddings[: args.num_vectors], embeddings[args.num_vectors :]

    nlist = nearest_power_of_two_nlist(args.num_vectors)
    factories = ["Flat", f"IVF{nlist},Flat", "HNSW32", f"IVF{nlist},PQ{args.pq_subquantizers}"]

    table = []
    exact_neighbors = None
    for factory in factories:
        rows, neighbors = measure_index(factory, database, queries, exact_neighbors, args)
        if factory == "Flat":
            exact_neighbors = neighbors
        table.extend(rows)

    print(f"Machine: {machine_line()}, faiss {faiss.__version__} with {faiss.omp_get_max_threads()} threads; "
          f"1-minute load average {os.getloadavg()[0]:.2f} at the end")
    print(f"Data: {args.num_vectors} indexed and {args.num_queries} held-out query vectors, {args.dimension} "
          f"dimensions, {num_classes} classes, latent dimension {args.latent_dimension}, noise {args.noise}, "
          f"ambient noise {args.ambient_noise}, seed {args.seed}; k = {TOP_K}")
    print()
    print("| index | build s | bytes per vector | search parameter | p50 ms | p99 ms | batch queries/s | recall@10 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in table:
        print(row)


if __name__ == "__main__":
    main()
