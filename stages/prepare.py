"""Prepare stage: index, split and check the raw images into data/prepared/{train,val,test}.parquet."""

from pathlib import Path

from image_retrieval.config import load_params
from image_retrieval.data.datasets import read_dataset
from image_retrieval.data.prepare import prepare_dataset
from image_retrieval.io import write_json
from image_retrieval.stage import run_stage


def main() -> None:
    config = load_params("prepare")
    table = read_dataset(load_params("data"), Path("data/raw"))
    metrics = prepare_dataset(table, config, Path("data/prepared"))
    write_json("metrics/prepare.json", metrics)


if __name__ == "__main__":
    run_stage(main)
