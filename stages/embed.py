"""Embed stage: `python stages/embed.py {base|finetuned}` embeds the test split with models/<name>.

Under a multi-process launcher (embed.launcher) each process embeds a shard,
and only the main process writes data/embeddings/<name> and metrics/embed/<name>.json.
"""

import logging
import os
import sys
from pathlib import Path

import polars as pl

from image_retrieval.config import load_params
from image_retrieval.embed import embed_table, throughput_metrics
from image_retrieval.io import write_json
from image_retrieval.stage import run_stage

MODELS = ("base", "finetuned")


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1] not in MODELS:
        sys.exit("usage: python stages/embed.py {base|finetuned}")
    model = sys.argv[1]
    config = load_params("embed")
    # Launchers set RANK, and only the main process (rank 0) logs at info level.
    if int(os.environ.get("RANK", "0")) != 0:
        logging.getLogger("image_retrieval").setLevel(logging.WARNING)
    info = embed_table(
        Path("models") / model,
        pl.read_parquet("data/prepared/test.parquet"),
        Path("data/embeddings") / model,
        config,
    )
    if info is not None:
        write_json(Path("metrics/embed") / f"{model}.json", throughput_metrics(info))


if __name__ == "__main__":
    run_stage(main)
