"""Score the base and fine-tuned embeddings of the test split and draw the evaluation plots.

Both models are scored by the protocol in `image_retrieval.metrics`
(leave-one-out, exact inner-product search, ties broken by ascending row
index), so the headline figures measure the model, not the index. The saved
faiss index of each model is checked against its embeddings and measured
against the exact search (`image_retrieval.index_report`), so that an
approximate index shows what it costs. Results are also written per
super-class, when the dataset has super-classes, and as a table of the
fine-tuned model's worst queries.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import polars as pl

from image_retrieval.config import EvaluateConfig
from image_retrieval.data.prepare import QUERIES_FILE
from image_retrieval.embed import GALLERY_SUBDIR, StoredEmbeddings, load_embeddings
from image_retrieval.index import load_index
from image_retrieval.index_report import index_report
from image_retrieval.io import atomic_path, write_json
from image_retrieval.metrics import PerQueryResults, evaluate_retrieval, per_query_results
from image_retrieval.plots import plot_example_queries, plot_recall_curves

logger = logging.getLogger(__name__)

MODELS = ("base", "finetuned")
LEAVE_ONE_OUT_PROTOCOL = "leave-one-out on the test split, exact inner-product search"
QUERY_GALLERY_PROTOCOL = "test split queries against the catalog gallery, exact inner-product search"
PAIR_PROTOCOL = "JSONL query images against the positive images of the test split, exact inner-product search"
# K values of the Recall@K curve, on top of the headline evaluate.recall_at.
CURVE_KS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000)


def _load_model_embeddings(embeddings_root: Path, subdir: str = "") -> dict[str, StoredEmbeddings]:
    """Load every model's embeddings and check that all of them list the same images in the same order."""
    directories = {name: embeddings_root / name / subdir for name in MODELS}
    stored = {name: load_embeddings(directory) for name, directory in directories.items()}
    reference_ids = stored[MODELS[0]].rows["image_id"]
    for name, model_embeddings in stored.items():
        if not model_embeddings.rows["image_id"].equals(reference_ids):
            raise ValueError(
                f"{directories[name]} embeds other images, or in another order, than "
                f"{directories[MODELS[0]]}; run `dvc repro embed` so both models embed the same images"
            )
    return stored


def load_galleries(embeddings_root: Path) -> dict[str, StoredEmbeddings] | None:
    """Load each model's catalog embeddings, or return None when the test split is its own gallery."""
    present = [(embeddings_root / name / GALLERY_SUBDIR).is_dir() for name in MODELS]
    if not any(present):
        return None
    if not all(present):
        raise ValueError(
            f"only some models have catalog embeddings under {embeddings_root}/<model>/{GALLERY_SUBDIR}; "
            "run `dvc repro embed` so every model embeds the same gallery"
        )
    return _load_model_embeddings(embeddings_root, GALLERY_SUBDIR)


def _with_table_columns(rows: pl.DataFrame, table_path: Path) -> pl.DataFrame:
    """Add label_name and super_label from a prepared table to the embedded rows, keeping their order."""
    table = pl.read_parquet(table_path).select("image_id", "label_name", "super_label")
    joined = rows.join(table, on="image_id", how="left", maintain_order="left")
    missing = joined.filter(pl.col("label_name").is_null())["image_id"]
    if len(missing):
        raise ValueError(
            f"{len(missing)} embedded images are not in {table_path} (first: {missing[0]}); "
            "run `dvc repro embed` so the embeddings match the prepared tables"
        )
    return joined


def _metrics_by_super_class(results: PerQueryResults, super_labels: np.ndarray, recall_ks: list[int]) -> dict:
    """Average each metric over the scored queries of every super-class: {super_label: {metric: value}}."""
    is_scored = results.relevant_counts > 0
    by_super_class = {}
    for super_label in np.unique(super_labels[is_scored]):
        members = is_scored & (super_labels == super_label)
        by_super_class[str(int(super_label))] = {
            **{f"recall@{k}": float(results.recall_at(k)[members].mean()) for k in recall_ks},
            "map@r": float(results.average_precision_at_r[members].mean()),
            "r_precision": float(results.r_precision[members].mean()),
            "num_queries": int(members.sum()),
        }
    return by_super_class


def _worst_queries_table(
    rows: pl.DataFrame,
    embeddings: np.ndarray,
    gallery_rows: pl.DataFrame,
    gallery_embeddings: np.ndarray,
    results: PerQueryResults,
    neighbors: np.ndarray,
    base_results: PerQueryResults,
    count: int,
) -> pl.DataFrame:
    """List the `count` scored queries with the lowest average precision at R, then the latest first hit.

    A first_relevant_rank of 0 means no relevant image among the searched neighbours.
    """
    top_rows = neighbors[:, 0]
    table = rows.select("image_id", "path", "label_name", "super_label").with_columns(
        relevant_images=pl.Series(results.relevant_counts),
        first_relevant_rank=pl.Series(results.first_relevant_ranks),
        base_first_relevant_rank=pl.Series(base_results.first_relevant_ranks),
        average_precision_at_r=pl.Series(results.average_precision_at_r),
        top1_path=pl.Series(gallery_rows["path"].to_numpy()[top_rows]),
        top1_label_name=pl.Series(gallery_rows["label_name"].to_numpy()[top_rows]),
        top1_score=pl.Series(np.einsum("nd,nd->n", embeddings, gallery_embeddings[top_rows])),
    )
    # A query whose first hit lies beyond the searched neighbours sorts as the latest.
    never_found = neighbors.shape[1] + 1
    return (
        table.filter(pl.col("relevant_images") > 0)
        .with_columns(
            sort_rank=pl.when(pl.col("first_relevant_rank") == 0)
            .then(never_found)
            .otherwise(pl.col("first_relevant_rank"))
        )
        .sort(["average_precision_at_r", "sort_rank", "image_id"], descending=[False, True, False])
        .drop("sort_rank")
        .head(count)
    )


def evaluate_models(
    embeddings_root: Path,
    index_root: Path,
    prepared_dir: Path,
    gallery_dir: Path,
    config: EvaluateConfig,
    metrics_dir: Path,
    plots_dir: Path,
) -> dict:
    """Evaluate every model in MODELS and write the metrics, the per-super-class results, the worst queries and plots.

    The test split's embeddings are the queries. When `<model>/gallery/`
    embeddings exist (data.gallery names a catalog), each query is scored
    against the catalog only; otherwise against the rest of the test split.
    Writes, in `metrics_dir`: evaluate.json (headline metrics and index
    measurements per model), evaluate_by_super_class.json and worst_queries.csv;
    in `plots_dir`: recall_at_k.json, recall_at_k.png and example_queries.png.
    """
    stored = _load_model_embeddings(embeddings_root)
    galleries = load_galleries(embeddings_root)
    leave_one_out = galleries is None
    rows = _with_table_columns(stored[MODELS[0]].rows, prepared_dir / "test.parquet")
    protocol = LEAVE_ONE_OUT_PROTOCOL if leave_one_out else QUERY_GALLERY_PROTOCOL

    # JSONL pairs: only the test images named as query_image are queries.
    queries_path = gallery_dir / QUERIES_FILE
    if not leave_one_out and queries_path.is_file():
        is_query = rows["image_id"].is_in(pl.read_parquet(queries_path)["image_id"])
        rows = rows.filter(is_query)
        keep = is_query.to_numpy()
        stored = {
            name: StoredEmbeddings(model.embeddings[keep], model.rows.filter(is_query), model.info)
            for name, model in stored.items()
        }
        protocol = PAIR_PROTOCOL
    gallery_rows = rows if leave_one_out else _with_table_columns(
        galleries[MODELS[0]].rows, gallery_dir / "gallery.parquet"
    )
    labels = rows["label"].to_numpy()
    gallery_labels = gallery_rows["label"].to_numpy()
    super_labels = rows["super_label"].to_numpy()
    requested_ks = sorted(set(config.recall_at) | set(CURVE_KS))

    results, curves, neighbors_by_model, per_query_by_model, by_super_class = {}, {}, {}, {}, {}
    for name, model_embeddings in stored.items():
        queries = model_embeddings.embeddings
        gallery = None if leave_one_out else galleries[name]
        metrics, neighbors = evaluate_retrieval(
            queries,
            labels,
            None if gallery is None else gallery.embeddings,
            None if gallery is None else gallery_labels,
            recall_at=requested_ks,
            chunk_size=config.chunk_size,
            return_neighbors=True,
        )
        indexed = model_embeddings if gallery is None else gallery
        index, metadata = load_index(
            index_root / name,
            expected_fingerprint=indexed.info["model_fingerprint"],
            expected_dimension=indexed.info["dimension"],
        )
        if metadata.row_ids != indexed.rows["image_id"].to_list():
            raise ValueError(
                f"{index_root / name} indexes other images than the gallery embeddings of {name}; "
                "run `dvc repro index`"
            )

        headline = {f"recall@{k}": value for k, value in metrics.recall_at_k.items() if k in config.recall_at}
        results[name] = {
            **headline,
            "map@r": metrics.map_at_r,
            "r_precision": metrics.r_precision,
            "num_queries": metrics.num_queries,
            "num_excluded_queries": metrics.num_excluded_queries,
            **index_report(
                index,
                metadata,
                index_root / name,
                queries,
                neighbors,
                None if gallery is None else gallery.embeddings,
                latency_queries=config.latency_queries,
            ),
        }
        curves[name] = metrics.recall_at_k
        neighbors_by_model[name] = neighbors
        per_query = per_query_results(neighbors, labels, gallery_labels, leave_one_out=leave_one_out)
        per_query_by_model[name] = per_query
        # Folders without super-class directories, JSONL files and the demo have none.
        if rows["super_label"].null_count() == 0:
            reported_ks = sorted(k for k in metrics.recall_at_k if k in config.recall_at)
            by_super_class[name] = _metrics_by_super_class(per_query, super_labels, reported_ks)
        else:
            by_super_class[name] = {}
        logger.info("%s: %s", name, {key: round(value, 4) for key, value in headline.items()})

    metric_names = [key for key in results[MODELS[0]] if key.startswith("recall@")] + ["map@r", "r_precision"]
    payload = {
        "protocol": protocol,
        **results,
        "difference": {key: results["finetuned"][key] - results["base"][key] for key in metric_names},
    }
    write_json(metrics_dir / "evaluate.json", payload)
    write_json(metrics_dir / "evaluate_by_super_class.json", by_super_class)

    finetuned_gallery = stored["finetuned"] if leave_one_out else galleries["finetuned"]
    worst = _worst_queries_table(
        rows,
        stored["finetuned"].embeddings,
        gallery_rows,
        finetuned_gallery.embeddings,
        per_query_by_model["finetuned"],
        neighbors_by_model["finetuned"],
        per_query_by_model["base"],
        config.worst_queries,
    )
    with atomic_path(metrics_dir / "worst_queries.csv") as temporary:
        worst.write_csv(temporary)

    gallery_embeddings = {
        name: (stored[name] if leave_one_out else galleries[name]).embeddings for name in MODELS
    }
    _write_plots(stored, gallery_embeddings, rows, gallery_rows, curves, neighbors_by_model, config, plots_dir)
    return payload


def _write_plots(
    stored: dict[str, StoredEmbeddings],
    gallery_embeddings: dict[str, np.ndarray],
    rows: pl.DataFrame,
    gallery_rows: pl.DataFrame,
    curves: dict[str, dict[int, float]],
    neighbors_by_model: dict[str, np.ndarray],
    config: EvaluateConfig,
    plots_dir: Path,
) -> None:
    """Write the Recall@K curve data and PNG, and the picture of example queries."""
    curve_ks = sorted(set.intersection(*(set(curve) for curve in curves.values())))
    write_json(
        plots_dir / "recall_at_k.json",
        [{"k": k, **{name: curves[name][k] for name in MODELS}} for k in curve_ks],
    )
    plot_recall_curves(curves, plots_dir / "recall_at_k.png")

    rng = np.random.default_rng(0)
    num_examples = min(config.example_queries, len(rows))
    query_rows = np.sort(rng.choice(len(rows), size=num_examples, replace=False))
    top_k = min(config.example_top_k, neighbors_by_model[MODELS[0]].shape[1])
    example_results = {name: neighbors_by_model[name][query_rows, :top_k] for name in MODELS}
    example_scores = {
        name: np.einsum(
            "qd,qkd->qk", stored[name].embeddings[query_rows], gallery_embeddings[name][example_results[name]]
        )
        for name in MODELS
    }
    plot_example_queries(
        [(rows["path"][int(row)], int(rows["label"][int(row)])) for row in query_rows],
        example_results,
        example_scores,
        gallery_rows["path"].to_list(),
        gallery_rows["label"].to_numpy(),
        plots_dir / "example_queries.png",
    )
