"""Trainable backbone parameters and their learning rates.

`train.mode: lora` trains LoRA adapters only. `full` trains every backbone
parameter except the mask token, which only masked-image pre-training uses.
Left trainable, it would get no gradient and stall DDP's all-reduce.
`train.freeze_patch_embedding` keeps the patch projection fixed in full mode.
`train.layer_lr_decay` < 1 gives deeper layers larger learning rates: with L
transformer blocks, the embeddings (layer 0) train at lr * decay^(L + 1),
block i (1..L) at lr * decay^(L + 1 - i), and the final layer norm and the
head at lr.
"""

from __future__ import annotations

import logging
import re

import torch

from image_retrieval.config import TrainConfig
from image_retrieval.model.embedder import Embedder
from image_retrieval.model.lora import apply_lora

logger = logging.getLogger(__name__)

_BLOCK_INDEX = re.compile(r"encoder\.layer\.(\d+)\.")


def prepare_backbone(embedder: Embedder, config: TrainConfig) -> int:
    """Set up the backbone for training in place; return the number of LoRA-adapted modules (0 in full mode)."""
    if config.gradient_checkpointing:
        # Non-reentrant checkpointing also works when the inputs need no gradient,
        # as with LoRA on a frozen backbone. transformers 5 renamed the method.
        backbone = embedder.backbone
        if hasattr(backbone, "activation_checkpointing_enable"):
            backbone.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    if config.mode == "lora":
        embedder.backbone, lora_modules = apply_lora(embedder.backbone, config.lora)
        return lora_modules

    for name, parameter in embedder.backbone.named_parameters():
        frozen = name.endswith("mask_token") or (
            config.freeze_patch_embedding and "patch_embeddings" in name
        )
        parameter.requires_grad_(not frozen)
    trainable = sum(parameter.numel() for parameter in embedder.parameters() if parameter.requires_grad)
    logger.info("Full fine-tuning: %d trainable parameters", trainable)
    return 0


def layer_id(parameter_name: str, num_layers: int) -> int:
    """Return 0 for embeddings, i + 1 for transformer block i, and num_layers + 1 for everything after."""
    match = _BLOCK_INDEX.search(parameter_name)
    if match:
        return int(match.group(1)) + 1
    if ".embeddings." in f".{parameter_name}":
        return 0
    return num_layers + 1


def parameter_groups(model: torch.nn.Module, config: TrainConfig, num_layers: int) -> list[dict]:
    """AdamW parameter groups of the trainable parameters, one per layer, each with its own `lr`."""
    groups: dict[int, list[torch.nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            groups.setdefault(layer_id(name, num_layers), []).append(parameter)
    return [
        {"params": parameters, "lr": config.lr * config.layer_lr_decay ** (num_layers + 1 - layer)}
        for layer, parameters in sorted(groups.items())
    ]
