"""LoRA adapters on the backbone's attention projections, with target names resolved from the model."""

from __future__ import annotations

import logging

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model

from image_retrieval.config import LoraConfig

logger = logging.getLogger(__name__)

# transformers 4.x and 5 name DINOv2's attention projections differently; a
# requested name matches a module called by either name.
_NAME_ALIASES = {
    "query": ("query", "q_proj"),
    "key": ("key", "k_proj"),
    "value": ("value", "v_proj"),
    "dense": ("dense", "o_proj"),
    "q_proj": ("q_proj", "query"),
    "k_proj": ("k_proj", "key"),
    "v_proj": ("v_proj", "value"),
    "o_proj": ("o_proj", "dense"),
    "fc1": ("fc1",),
    "fc2": ("fc2",),
}


class LoraTargetError(ValueError):
    """train.lora.target_modules does not match the model's linear layers."""


def resolve_lora_targets(model: torch.nn.Module, requested: list[str], num_layers: int) -> list[str]:
    """Translate requested module names into the names this model uses.

    Every requested name must match exactly one linear layer in each of the
    `num_layers` transformer blocks, so that LoRA never adapts only part of
    the network without saying so. Returns the full module paths to adapt.
    """
    linear_names = [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)]

    resolved: list[str] = []
    for requested_name in requested:
        if requested_name not in _NAME_ALIASES:
            raise LoraTargetError(
                f"train.lora.target_modules contains {requested_name!r}; "
                f"expected names among: {', '.join(sorted(_NAME_ALIASES))}"
            )
        aliases = _NAME_ALIASES[requested_name]
        matches = [name for name in linear_names if name.rsplit(".", 1)[-1] in aliases]
        if len(matches) != num_layers:
            raise LoraTargetError(
                f"train.lora.target_modules entry {requested_name!r} matched {len(matches)} linear layers "
                f"(names {aliases}), expected one in each of the {num_layers} layers"
            )
        resolved.extend(matches)

    logger.info("LoRA adapts %d modules for targets %s", len(resolved), requested)
    return resolved


def apply_lora(backbone: torch.nn.Module, config: LoraConfig) -> tuple[torch.nn.Module, int]:
    """Wrap the backbone with LoRA adapters; return the peft model and the number of adapted modules."""
    targets = resolve_lora_targets(backbone, config.target_modules, backbone.config.num_hidden_layers)
    peft_config = PeftLoraConfig(
        r=config.r,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=targets,
        bias="none",
    )
    peft_model = get_peft_model(backbone, peft_config)
    trainable = sum(parameter.numel() for parameter in peft_model.parameters() if parameter.requires_grad)
    logger.info("LoRA trainable parameters: %d", trainable)
    return peft_model, len(targets)
