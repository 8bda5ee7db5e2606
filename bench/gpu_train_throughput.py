"""Measure DINOv2 training throughput (images/s) on one GPU, for projecting an SOP epoch.

Usage: python bench/gpu_train_throughput.py [--model small|base] [--resolutions 224]
       [--batch-size 256] [--steps 10]

Needs only torch, transformers and peft, so it runs on a bare GPU machine.
The weights are random: throughput does not depend on their values. Each
configuration (LoRA on all linear layers of every block, and full
fine-tuning) runs 3 warm-up steps and then `steps` timed steps of forward,
a supervised contrastive loss, backward and AdamW, under bf16 autocast on
CUDA (fp32 on CPU). Prints Markdown table rows; the whole run takes a few
minutes on a current GPU.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from transformers import Dinov2Config, Dinov2Model

CONFIGS = {
    # facebook/dinov2-small and facebook/dinov2-base, as released.
    "small": {"hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6},
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12},
}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2"]


def supervised_contrastive_loss(embeddings: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1):
    embeddings = F.normalize(embeddings.float(), dim=-1)
    logits = embeddings @ embeddings.T / temperature
    self_mask = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    log_probabilities = logits.log_softmax(dim=1).masked_fill(~positives, 0.0)
    return -(log_probabilities.sum(1) / positives.sum(1)).mean()


def build_model(size: str, mode: str, device: torch.device) -> torch.nn.Module:
    model = Dinov2Model(Dinov2Config(patch_size=14, image_size=518, mlp_ratio=4, **CONFIGS[size]))
    if mode == "lora":
        present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
        targets = [name for name in LORA_TARGETS if name in present] or ["query", "key", "value", "dense", "fc1", "fc2"]
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=targets))
    return model.to(device).train()


def images_per_second(model, resolution: int, batch_size: int, steps: int, device: torch.device) -> float:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    pixels = torch.randn(batch_size, 3, resolution, resolution, device=device)
    # Batches of classes with 4 images each, as a P x K sampler draws them.
    labels = torch.arange(batch_size, device=device) // 4
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)

    def step() -> None:
        with autocast:
            embeddings = model(pixel_values=pixels).pooler_output
        supervised_contrastive_loss(embeddings, labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch_size * steps / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(CONFIGS), default="small")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[224])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"dinov2-{args.model}, {name}, torch {torch.__version__}, batch {args.batch_size}")
    print("| resolution (px) | mode | train images/s | projected SOP epoch (59,551 images), s |")
    print("| --- | --- | --- | --- |")
    for resolution in args.resolutions:
        for mode in ("lora", "full"):
            torch.manual_seed(0)
            model = build_model(args.model, mode, device)
            rate = images_per_second(model, resolution, args.batch_size, args.steps, device)
            print(f"| {resolution} | {mode} | {rate:.1f} | {59_551 / rate:.0f} |", flush=True)
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
