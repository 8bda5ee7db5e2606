"""Fetch stage: `python stages/fetch.py data` copies, extracts or downloads the dataset into data/raw;
`python stages/fetch.py model` saves the base embedder into models/base."""

import sys
from pathlib import Path

from image_retrieval.config import load_params
from image_retrieval.data.datasets import fetch_gallery, fetch_raw_dataset
from image_retrieval.model.backbone import load_backbone
from image_retrieval.model.embedder import Embedder, PreprocessingConfig
from image_retrieval.stage import run_stage

RAW_DIR = Path("data/raw")
BASE_MODEL_DIR = Path("models/base")


def fetch_data() -> None:
    data = load_params("data")
    fetch_raw_dataset(data, RAW_DIR)
    fetch_gallery(data, RAW_DIR)


def fetch_model() -> None:
    model = load_params("model")
    preprocessing = PreprocessingConfig(
        resolution=model.resolution, mean=model.mean, std=model.std, pooling=model.pooling
    )
    Embedder(load_backbone(model.name), preprocessing).save_pretrained(BASE_MODEL_DIR)


def main() -> None:
    targets = {"data": fetch_data, "model": fetch_model}
    if len(sys.argv) != 2 or sys.argv[1] not in targets:
        sys.exit("usage: python stages/fetch.py {data|model}")
    targets[sys.argv[1]]()


if __name__ == "__main__":
    run_stage(main)
