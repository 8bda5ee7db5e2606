"""Embed stage: `python stages/embed.py {base|finetuned}` embeds the test split with models/<name>."""

import sys
from pathlib import Path

import polars as pl

from image_retrieval.config import load_params
from image_retrieval.embed import embed_table
from image_retrieval.stage import run_stage

MODELS = ("base", "finetuned")


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1] not in MODELS:
        sys.exit("usage: python stages/embed.py {base|finetuned}")
    model = sys.argv[1]
    embed_table(
        Path("models") / model,
        pl.read_parquet("data/prepared/test.parquet"),
        Path("data/embeddings") / model,
        batch_size=load_params("embed").batch_size,
    )


if __name__ == "__main__":
    run_stage(main)
