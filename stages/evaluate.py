"""Evaluate stage: score base and fine-tuned test embeddings into metrics/evaluate.json and plots."""

from pathlib import Path

from image_retrieval.config import load_params
from image_retrieval.evaluate import evaluate_models
from image_retrieval.stage import run_stage


def main() -> None:
    evaluate_models(
        Path("data/embeddings"),
        Path("data/index"),
        Path("data/prepared"),
        Path("data/gallery"),
        load_params("evaluate"),
        Path("metrics"),
        Path("metrics/plots"),
    )


if __name__ == "__main__":
    run_stage(main)
