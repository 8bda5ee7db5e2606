"""Prepare stage: split and check the raw images into data/prepared/{train,val,test}.parquet,
and the catalog named by data.gallery, if any, into data/gallery/."""

import shutil
from pathlib import Path

import polars as pl

from image_retrieval.config import load_params
from image_retrieval.data.datasets import PAIR_GALLERY, read_dataset, read_gallery, read_pair_roles_of_dataset
from image_retrieval.data.prepare import prepare_dataset, prepare_gallery, prepare_pair_gallery
from image_retrieval.io import write_json
from image_retrieval.stage import run_stage

PREPARED_DIR = Path("data/prepared")
GALLERY_DIR = Path("data/gallery")


def main() -> None:
    config = load_params("prepare")
    data = load_params("data")
    table = read_dataset(data, Path("data/raw"))
    source = getattr(data, data.dataset).source
    metrics = prepare_dataset(table, config, PREPARED_DIR, source_hint=f"data.{data.dataset}.source={source!r}")

    test_table = pl.read_parquet(PREPARED_DIR / "test.parquet")
    try:
        if data.gallery == PAIR_GALLERY:
            query_ids, positive_ids = read_pair_roles_of_dataset(Path("data/raw"))
            gallery_metrics = prepare_pair_gallery(test_table, query_ids, positive_ids, GALLERY_DIR)
        else:
            gallery_metrics = prepare_gallery(
                read_gallery(data, Path("data/raw")),
                test_table,
                config,
                GALLERY_DIR,
                source_hint=f"data.gallery={data.gallery!r}",
            )
    except Exception:
        # Leave no half of the stage's outputs: the splits without their gallery.
        shutil.rmtree(PREPARED_DIR, ignore_errors=True)
        raise
    if gallery_metrics:
        metrics["gallery"] = gallery_metrics
    write_json("metrics/prepare.json", metrics)


if __name__ == "__main__":
    run_stage(main)
