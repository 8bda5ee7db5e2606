"""Train stage: fine-tune models/base on the train split, select on val, save models/finetuned."""

from pathlib import Path

import polars as pl
from dvclive import Live

from image_retrieval.config import load_params, to_dict
from image_retrieval.io import write_json
from image_retrieval.stage import run_stage
from image_retrieval.train.checkpoint import CheckpointStore, training_fingerprint
from image_retrieval.train.loop import train_embedder

INPUTS = [Path("models/base"), Path("data/prepared/train.parquet"), Path("data/prepared/val.parquet")]


def main() -> None:
    config = load_params("train")
    # Resume only a run with the same parameters and inputs; anything else starts fresh.
    checkpoints = CheckpointStore(training_fingerprint(to_dict(config), INPUTS))
    # dvcyaml=None: the plots are declared in dvc.yaml, so dvclive must not edit it.
    with Live(dir="metrics/train", save_dvc_exp=False, dvcyaml=None) as live:
        summary = train_embedder(
            Path("models/base"),
            pl.read_parquet("data/prepared/train.parquet"),
            pl.read_parquet("data/prepared/val.parquet"),
            config,
            Path("models/finetuned"),
            live=live,
            checkpoints=checkpoints,
        )
    write_json("metrics/train.json", summary.to_dict())


if __name__ == "__main__":
    run_stage(main)
