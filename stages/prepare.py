"""Prepare stage: index, split and check the raw images into data/prepared/{train,val,test}.parquet."""

from pathlib import Path

from image_retrieval.config import load_params
from image_retrieval.data.datasets import read_dataset, read_gallery
from image_retrieval.data.prepare import prepare_dataset
from image_retrieval.io import write_json
from image_retrieval.stage import run_stage


def main() -> None:
    config = load_params("prepare")
    data = load_params("data")
    table = read_dataset(data, Path("data/raw"))
    source = getattr(data, data.dataset).source
    metrics = prepare_dataset(
        table,
        config,
        Path("data/prepared"),
        source_hint=f"data.{data.dataset}.source={source!r}"
        + ("" if data.gallery == "test" else f" or data.gallery={data.gallery!r}"),
        gallery_table=read_gallery(data, Path("data/raw")),
    )
    write_json("metrics/prepare.json", metrics)


if __name__ == "__main__":
    run_stage(main)
