"""Train stage: fine-tune models/base on the train split, select on val, save models/finetuned."""

from pathlib import Path

import contextlib
import logging
import os

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
    # Under a multi-process launcher (which sets RANK) only the main process logs
    # and writes metrics. Reading RANK, rather than creating accelerate's state
    # here, leaves that state to the Accelerator in the training loop.
    is_main_process = int(os.environ.get("RANK", "0")) == 0
    if not is_main_process:
        logging.getLogger("image_retrieval").setLevel(logging.WARNING)
    # Resume only a run with the same parameters and inputs; anything else starts fresh.
    checkpoints = CheckpointStore(training_fingerprint(to_dict(config), INPUTS))
    # dvcyaml=None: the plots are declared in dvc.yaml, so dvclive must not edit it.
    live_context = (
        Live(dir="metrics/train", save_dvc_exp=False, dvcyaml=None) if is_main_process else contextlib.nullcontext()
    )
    with live_context as live:
        summary = train_embedder(
            Path("models/base"),
            pl.read_parquet("data/prepared/train.parquet"),
            pl.read_parquet("data/prepared/val.parquet"),
            config,
            Path("models/finetuned"),
            live=live,
            checkpoints=checkpoints,
        )
    if is_main_process:
        write_json("metrics/train.json", summary.to_dict())


if __name__ == "__main__":
    run_stage(main)
