"""Train the demo once per loss and report validation and test Recall@1 of each.

Usage (after `make demo`, which writes data/prepared and models/base):
    python bench/losses_demo.py [--losses supcon multi_similarity proxy_anchor triplet]

Every run uses the train section of params.yaml with only `train.loss`
changed, trains on data/prepared/train.parquet, selects the epoch on val,
and scores the test split by the evaluate stage's protocol. The test figures
are reported, never used to choose. Prints Markdown table rows.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import polars as pl

from image_retrieval.config import load_params
from image_retrieval.embed import embed_table, load_embeddings
from image_retrieval.metrics import evaluate_retrieval
from image_retrieval.train.loop import train_embedder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--losses", nargs="+", default=["supcon", "multi_similarity", "proxy_anchor", "triplet"])
    args = parser.parse_args()

    train = pl.read_parquet("data/prepared/train.parquet")
    val = pl.read_parquet("data/prepared/val.parquet")
    test = pl.read_parquet("data/prepared/test.parquet")
    base_config = load_params("train")

    print("| loss | val R@1 (kept epoch) | test R@1 | test MAP@R | train time (s) |")
    print("| --- | --- | --- | --- | --- |")
    for loss_name in args.losses:
        config = dataclasses.replace(base_config, loss=loss_name)
        with tempfile.TemporaryDirectory() as scratch:
            started = time.perf_counter()
            summary = train_embedder(Path("models/base"), train, val, config, Path(scratch) / "model")
            seconds = time.perf_counter() - started
            embed_table(Path(scratch) / "model", test, Path(scratch) / "embeddings")
            stored = load_embeddings(Path(scratch) / "embeddings")
            metrics = evaluate_retrieval(stored.embeddings, stored.rows["label"].to_numpy(), recall_at=(1,))
        print(
            f"| {loss_name} | {100 * summary.best_val_recall_at_1:.2f} (epoch {summary.best_epoch}) "
            f"| {100 * metrics.recall_at_k[1]:.2f} | {100 * metrics.map_at_r:.2f} | {seconds:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
