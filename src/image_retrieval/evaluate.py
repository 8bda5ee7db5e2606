"""Score the base and fine-tuned embeddings of the test split and draw the evaluation plots.

Both models are scored by the protocol in `image_retrieval.metrics`
(leave-one-out, exact inner-product search, ties broken by ascending row
index). The saved faiss index of each model is checked against its
embeddings, and its Recall@10 against the exact search is reported so that an
approximate index shows what it costs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from image_retrieval.config import EvaluateConfig
from image_retrieval.embed import StoredEmbeddings, load_embeddings
from image_retrieval.index import load_index
from image_retrieval.io import write_json
from image_retrieval.metrics import evaluate_retrieval
from image_retrieval.plots import plot_example_queries, plot_recall_curves

logger = logging.getLogger(__name__)

MODELS = ("base", "finetuned")
PROTOCOL = "leave-one-out on the test split, exact inner-product search"
# K values of the Recall@K curve, on top of the headline evaluate.recall_at.
CURVE_KS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000)
INDEX_RECALL_K = 10


def _index_recall_against_exact(index, exact_neighbors: np.ndarray, embeddings: np.ndarray) -> float:
    """Fraction of the exact top 10 (self excluded) that the index also returns in its top 10.

    A returned row counts when its exact inner product reaches the exact 10th
    score (within 1e-6), so rows tied at the boundary count for either order
    and an exact index scores 1.0.
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


def evaluate_models(
    embeddings_root: Path,
    index_root: Path,
    config: EvaluateConfig,
    metrics_path: Path,
    plots_dir: Path,
) -> dict:
    """Evaluate every model in MODELS and write the metrics JSON, the curve data and two PNGs."""
    stored: dict[str, StoredEmbeddings] = {name: load_embeddings(embeddings_root / name) for name in MODELS}
    reference_ids = stored[MODELS[0]].rows["image_id"]
    for name, model_embeddings in stored.items():
        if not model_embeddings.rows["image_id"].equals(reference_ids):
            raise ValueError(
                f"{embeddings_root / name} embeds other images, or in another order, than "
                f"{embeddings_root / MODELS[0]}; run `dvc repro embed` so both embed the same test split"
            )

    labels = stored[MODELS[0]].rows["label"].to_numpy()
    requested_ks = sorted(set(config.recall_at) | set(CURVE_KS))
    results, curves, neighbors_by_model = {}, {}, {}
    for name, model_embeddings in stored.items():
        metrics, neighbors = evaluate_retrieval(
            model_embeddings.embeddings,
            labels,
            recall_at=requested_ks,
            chunk_size=config.chunk_size,
            return_neighbors=True,
        )
        index, metadata = load_index(
            index_root / name,
            expected_fingerprint=model_embeddings.info["model_fingerprint"],
            expected_dimension=model_embeddings.info["dimension"],
        )

        headline = {
            f"recall@{k}": value for k, value in metrics.recall_at_k.items() if k in config.recall_at
        }
        results[name] = {
            **headline,
            "map@r": metrics.map_at_r,
            "r_precision": metrics.r_precision,
            "num_queries": metrics.num_queries,
            "num_excluded_queries": metrics.num_excluded_queries,
            "index_factory": metadata.factory,
            f"index_recall@{INDEX_RECALL_K}_vs_exact": _index_recall_against_exact(
                index, neighbors, model_embeddings.embeddings
            ),
        }
        curves[name] = metrics.recall_at_k
        neighbors_by_model[name] = neighbors
        logger.info("%s: %s", name, {key: round(value, 4) for key, value in headline.items()})

    metric_names = [key for key in results[MODELS[0]] if key.startswith("recall@")] + ["map@r", "r_precision"]
    payload = {
        "protocol": PROTOCOL,
        **results,
        "difference": {key: results["finetuned"][key] - results["base"][key] for key in metric_names},
    }
    write_json(metrics_path, payload)

    curve_ks = sorted(set.intersection(*(set(curve) for curve in curves.values())))
    write_json(
        plots_dir / "recall_at_k.json",
        [{"k": k, **{name: curves[name][k] for name in MODELS}} for k in curve_ks],
    )
    plot_recall_curves(curves, plots_dir / "recall_at_k.png")

    rng = np.random.default_rng(0)
    num_examples = min(config.example_queries, len(labels))
    query_rows = np.sort(rng.choice(len(labels), size=num_examples, replace=False))
    top_k = min(config.example_top_k, neighbors_by_model[MODELS[0]].shape[1])
    example_results = {name: neighbors_by_model[name][query_rows, :top_k] for name in MODELS}
    example_scores = {
        name: np.einsum(
            "qd,qkd->qk", stored[name].embeddings[query_rows], stored[name].embeddings[example_results[name]]
        )
        for name in MODELS
    }
    plot_example_queries(
        query_rows.tolist(),
        example_results,
        example_scores,
        stored[MODELS[0]].rows["path"].to_list(),
        labels,
        plots_dir / "example_queries.png",
    )
    return payload
