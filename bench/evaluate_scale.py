"""Compare the evaluate stage's exact search with a full similarity matrix at SOP scale.

Usage: python bench/evaluate_scale.py [--num-vectors 60502] [--dimension 384]
       [--num-classes 11316] [--noise 0.1] [--seed 0] [--chunk-size 1024] [--repeats 1]

Generates seeded synthetic embeddings shaped like the Stanford Online
Products test split (60,502 L2-normalised float32 vectors of 384 dimensions,
11,316 classes of 2 to 12 images, see synthetic_embeddings.py) and scores
them by the SOP protocol: leave-one-out, Recall@1/10/100/1000, MAP@R and
R-precision. Each method runs in its own subprocess, so that the peak RSS
belongs to that method alone. It is VmHWM from /proc/self/status, the
high-water mark of the subprocess's own memory, which includes the
interpreter, the method's imports and the loaded embeddings. ru_maxrss is not
used because Linux carries the parent's RSS at spawn time into it on exec.

* project: `image_retrieval.metrics.evaluate_retrieval`, which scores
  chunk_size queries at a time.
* naive: the full N x N similarity matrix from one `torch.mm`, the diagonal
  set to -inf, `torch.topk` over each row, and the same metrics from the
  labels of the top k. It needs N^2 float32 values, about 13.6 GiB at full
  scale, and is skipped when its estimated allocations exceed 90% of
  MemAvailable in /proc/meminfo.

The wall time covers the method only, not loading the embeddings. With
--repeats R, the methods run R times in turn, each time in a new subprocess,
and the table reports the fastest wall time and the highest peak RSS.

The floor is the time of the 2 * N^2 * d floating-point operations of the
N x N product at the best float32 matrix product rate of this machine. That
rate is measured in the same run, with numpy and with torch, on a
min(4096, N) x d by d x N product.

Prints the machine, a Markdown table of the methods and a table of their
metrics. The baseline RSS is the peak RSS after the imports and the loading,
before the method runs. Exits with status 1 when the two methods' Recall@1
differ by more than 1e-6.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from machine import available_memory_bytes, machine_line
from synthetic_embeddings import SOP_TEST_CLASSES, SOP_TEST_IMAGES, clustered_embeddings, sop_like_class_sizes

logger = logging.getLogger("evaluate_scale")

RECALL_AT = (1, 10, 100, 1000)
# The library that each method imports, loaded before its baseline RSS is read.
METHOD_MODULES = {"project": "image_retrieval.metrics", "naive": "torch"}
METHODS = tuple(METHOD_MODULES)
RECALL_AT_1_TOLERANCE = 1e-6
MATMUL_MAX_ROWS = 4096
GIB = 1024**3


def memory_status_bytes(field: str) -> int:
    """Return a memory field of /proc/self/status, such as VmHWM (peak RSS) or VmRSS, in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not found in /proc/self/status")


def evaluate_project(embeddings: np.ndarray, labels: np.ndarray, chunk_size: int) -> dict[str, float]:
    from image_retrieval.metrics import evaluate_retrieval

    return evaluate_retrieval(embeddings, labels, recall_at=RECALL_AT, chunk_size=chunk_size).to_dict()


def evaluate_naive(embeddings: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Score all pairs with one matrix product and rank each row with torch.topk."""
    import torch

    vectors = torch.from_numpy(embeddings)
    targets = torch.from_numpy(labels)
    num_vectors = len(targets)

    similarities = torch.mm(vectors, vectors.T)
    similarities.fill_diagonal_(float("-inf"))
    relevant_counts = torch.bincount(targets)[targets] - 1
    k = min(num_vectors - 1, max(*RECALL_AT, int(relevant_counts.max())))
    _, neighbors = torch.topk(similarities, k, dim=1)
    del similarities

    is_scored = relevant_counts > 0
    is_relevant = targets[neighbors[is_scored]] == targets[is_scored, None]
    relevant_counts = relevant_counts[is_scored].double()
    ranks = torch.arange(1, k + 1, dtype=torch.float64)

    is_relevant_within_r = is_relevant & (ranks <= relevant_counts[:, None])
    precision_at_rank = is_relevant_within_r.cumsum(dim=1) / ranks
    average_precision = (precision_at_rank * is_relevant_within_r).sum(dim=1) / relevant_counts
    metrics = {
        f"recall@{top_k}": float(is_relevant[:, :top_k].any(dim=1).double().mean())
        for top_k in RECALL_AT
        if top_k <= num_vectors - 1
    }
    metrics["map@r"] = float(average_precision.mean())
    metrics["r_precision"] = float((is_relevant_within_r.sum(dim=1) / relevant_counts).mean())
    metrics["num_queries"] = int(is_scored.sum())
    metrics["num_excluded_queries"] = int((~is_scored).sum())
    return metrics


def run_worker(method: str, data_dir: Path, chunk_size: int) -> None:
    """Run one method on the saved embeddings and print its figures as one JSON line."""
    importlib.import_module(METHOD_MODULES[method])
    embeddings = np.load(data_dir / "embeddings.npy")
    labels = np.load(data_dir / "labels.npy")
    baseline_rss = memory_status_bytes("VmHWM")

    started = time.perf_counter()
    if method == "project":
        metrics = evaluate_project(embeddings, labels, chunk_size)
    else:
        metrics = evaluate_naive(embeddings, labels)
    seconds = time.perf_counter() - started

    result = {
        "seconds": seconds,
        "peak_rss_bytes": memory_status_bytes("VmHWM"),
        "baseline_rss_bytes": baseline_rss,
        "metrics": metrics,
    }
    print(json.dumps(result), flush=True)


def matmul_gflops(embeddings: np.ndarray, repeats: int = 3) -> dict[str, float]:
    """Return the best float32 GFLOP/s of numpy and of torch for a min(4096, N) x d by d x N product."""
    import torch

    queries = embeddings[:MATMUL_MAX_ROWS]
    flops = 2 * len(queries) * embeddings.shape[0] * embeddings.shape[1]
    torch_queries, torch_gallery = torch.from_numpy(queries), torch.from_numpy(embeddings)
    products = {"numpy": lambda: queries @ embeddings.T, "torch": lambda: torch.mm(torch_queries, torch_gallery.T)}

    rates = {}
    for library, product in products.items():
        product()  # warm-up
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            product()
            best = min(best, time.perf_counter() - started)
        rates[library] = flops / best / 1e9
    return rates


def naive_memory_bytes(num_vectors: int) -> int:
    """Estimate the naive method's largest allocations: the N x N matrix and the top-k values and indices."""
    k = min(num_vectors - 1, max(RECALL_AT))
    return num_vectors * num_vectors * 4 + num_vectors * k * (4 + 8)


def run_method(method: str, data_dir: Path, chunk_size: int) -> dict:
    command = [sys.executable, __file__, "--worker", method, "--data-dir", str(data_dir), "--chunk-size", str(chunk_size)]
    logger.info("Running %s in a subprocess", method)
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"the {method} worker failed with exit status {completed.returncode}:\n{completed.stderr}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def summarize_runs(runs: list[dict]) -> dict:
    """Keep the fastest run's figures, with the highest peak RSS of all runs."""
    fastest = dict(min(runs, key=lambda run: run["seconds"]))
    fastest["peak_rss_bytes"] = max(run["peak_rss_bytes"] for run in runs)
    return fastest


def machine_description() -> str:
    import torch

    return (
        f"{machine_line()}, numpy {np.__version__}, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads"
    )


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-vectors", type=int, default=SOP_TEST_IMAGES, help="embeddings N (default: SOP test split)")
    parser.add_argument("--dimension", type=int, default=384, help="embedding dimension d (default: DINOv2-small)")
    parser.add_argument("--num-classes", type=int, help="classes of 2 to 12 images (default: N scaled by SOP's 11,316/60,502)")
    parser.add_argument("--noise", type=float, default=0.1, help="per-dimension standard deviation around each class centre")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk-size", type=int, default=1024, help="queries per matrix product of the project method")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each method, in turn; the table keeps the fastest")
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    return args


def main() -> int:
    args = parse_arguments()
    if args.worker:
        run_worker(args.worker, args.data_dir, args.chunk_size)
        return 0

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    num_classes = args.num_classes or round(args.num_vectors * SOP_TEST_CLASSES / SOP_TEST_IMAGES)
    rng = np.random.default_rng(args.seed)
    embeddings, labels = clustered_embeddings(
        sop_like_class_sizes(args.num_vectors, num_classes, rng), args.dimension, args.noise, rng
    )
    load_before = os.getloadavg()[0]

    needed, available = naive_memory_bytes(args.num_vectors), available_memory_bytes()
    methods = list(METHODS)
    if needed > 0.9 * available:
        logger.warning("Skipping naive: it needs about %.1f GiB and %.1f GiB is available", needed / GIB, available / GIB)
        methods.remove("naive")

    runs: dict[str, list[dict]] = {method: [] for method in methods}
    with tempfile.TemporaryDirectory(prefix="evaluate-scale-") as scratch:
        np.save(Path(scratch) / "embeddings.npy", embeddings)
        np.save(Path(scratch) / "labels.npy", labels)
        for _ in range(args.repeats):
            for method in methods:
                runs[method].append(run_method(method, Path(scratch), args.chunk_size))
                logger.info("%s took %.2f s", method, runs[method][-1]["seconds"])
    results = {method: summarize_runs(method_runs) for method, method_runs in runs.items()}

    logger.info("Measuring the float32 matrix product rate")
    rates = matmul_gflops(embeddings)
    best_rate = max(rates.values())
    floor_seconds = 2 * args.num_vectors**2 * args.dimension / (best_rate * 1e9)

    print(f"Machine: {machine_description()}; 1-minute load average {load_before:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after")
    print(f"Data: {args.num_vectors} x {args.dimension} float32, {num_classes} classes, noise {args.noise}, "
          f"seed {args.seed}; project chunk size {args.chunk_size}")
    print(f"float32 matmul: numpy {rates['numpy']:.1f} GFLOP/s, torch {rates['torch']:.1f} GFLOP/s; "
          f"floor 2*N^2*d / {best_rate:.1f} GFLOP/s = {floor_seconds:.2f} s")
    print()
    print("| method | wall s | peak RSS GiB | baseline RSS GiB | ratio to floor |")
    print("| --- | --- | --- | --- | --- |")
    for method, result in results.items():
        print(f"| {method} | {result['seconds']:.2f} | {result['peak_rss_bytes'] / GIB:.2f} "
              f"| {result['baseline_rss_bytes'] / GIB:.2f} | {result['seconds'] / floor_seconds:.2f} |")
    print()

    metric_names = list(results["project"]["metrics"])
    print("| metric | " + " | ".join(results) + " |")
    print("| --- |" + " --- |" * len(results))
    for name in metric_names:
        print(f"| {name} | " + " | ".join(f"{result['metrics'][name]:.6g}" for result in results.values()) + " |")
    print()

    if "naive" not in results:
        print("Recall@1 check: not run, because the naive method was skipped")
        return 0
    difference = abs(results["project"]["metrics"]["recall@1"] - results["naive"]["metrics"]["recall@1"])
    matches = difference <= RECALL_AT_1_TOLERANCE
    print(f"Recall@1 check: |project - naive| = {difference:.2e}, {'within' if matches else 'ABOVE'} "
          f"the tolerance {RECALL_AT_1_TOLERANCE:.0e}")
    return 0 if matches else 1


if __name__ == "__main__":
    sys.exit(main())
