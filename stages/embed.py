"""Embed stage: `python stages/embed.py {base|finetuned}` embeds the test split, and the catalog gallery
if there is one, with models/<name>.

Under a multi-process launcher (embed.launcher) each process embeds a shard,
and only the main process writes data/embeddings/<name> and metrics/embed/<name>.json.
"""

import logging
import os
import sys
from pathlib import Path

import polars as pl

from image_retrieval.config import load_params
from image_retrieval.embed import GALLERY_SUBDIR, embed_table, throughput_metrics
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
    model_dir, output_dir = Path("models") / model, Path("data/embeddings") / model
    info = embed_table(model_dir, pl.read_parquet("data/prepared/test.parquet"), output_dir, config)

    # With data.gallery set to a catalog, prepare wrote data/gallery/gallery.parquet,
    # and the catalog's embeddings go into a subfolder of the test split's.
    gallery_table = Path("data/gallery/gallery.parquet")
    gallery_info = None
    if gallery_table.is_file():
        gallery_info = embed_table(model_dir, pl.read_parquet(gallery_table), output_dir / GALLERY_SUBDIR, config)

    if info is not None:
        metrics = throughput_metrics(info)
        if gallery_info is not None:
            metrics["gallery"] = throughput_metrics(gallery_info)
        write_json(Path("metrics/embed") / f"{model}.json", metrics)


if __name__ == "__main__":
    run_stage(main)
