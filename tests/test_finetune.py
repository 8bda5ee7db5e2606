"""Full fine-tuning, frozen patch embedding, layer-wise learning-rate decay and gradient checkpointing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pytorch_metric_learning import losses
from transformers import Dinov2Model

from image_retrieval.config import LoraConfig, ParamsError, TrainConfig
from image_retrieval.model.embedder import Embedder, PreprocessingConfig
from image_retrieval.train.finetune import layer_id, parameter_groups, prepare_backbone

PREPROCESSING = PreprocessingConfig(resolution=28, mean=(0.5,) * 3, std=(0.25,) * 3)


def embedder_from(tiny_model_dir: Path) -> Embedder:
    return Embedder(Dinov2Model.from_pretrained(tiny_model_dir), PREPROCESSING)


def test_full_mode_trains_backbone(tiny_model_dir: Path) -> None:
    embedder = embedder_from(tiny_model_dir)

    lora_modules = prepare_backbone(embedder, TrainConfig(mode="full"))

    frozen = [name for name, parameter in embedder.named_parameters() if not parameter.requires_grad]
    assert lora_modules == 0
    assert frozen == ["backbone.embeddings.mask_token"]


def test_frozen_patch_embedding(tiny_model_dir: Path) -> None:
    embedder = embedder_from(tiny_model_dir)

    prepare_backbone(embedder, TrainConfig(mode="full", freeze_patch_embedding=True))

    frozen = {name for name, parameter in embedder.named_parameters() if not parameter.requires_grad}
    assert frozen == {
        "backbone.embeddings.mask_token",
        "backbone.embeddings.patch_embeddings.projection.weight",
        "backbone.embeddings.patch_embeddings.projection.bias",
    }


def test_layer_ids() -> None:
    assert layer_id("backbone.embeddings.cls_token", 2) == 0
    assert layer_id("backbone.encoder.layer.0.mlp.fc1.weight", 2) == 1
    assert layer_id("backbone.base_model.model.encoder.layer.1.attention.q_proj.lora_A.default.weight", 2) == 2
    assert layer_id("backbone.layernorm.weight", 2) == 3
    assert layer_id("head.weight", 2) == 3


def test_layer_lr_decay_groups(tiny_model_dir: Path) -> None:
    embedder = embedder_from(tiny_model_dir)
    config = TrainConfig(mode="full", lr=1.0, layer_lr_decay=0.5)
    prepare_backbone(embedder, config)

    groups = parameter_groups(embedder, config, num_layers=2)

    assert [group["lr"] for group in groups] == [0.125, 0.25, 0.5, 1.0]
    grouped = sum(len(group["params"]) for group in groups)
    assert grouped == sum(1 for parameter in embedder.parameters() if parameter.requires_grad)


def test_invalid_layer_decay_named() -> None:
    with pytest.raises(ParamsError, match="train.layer_lr_decay=1.5"):
        TrainConfig(layer_lr_decay=1.5)


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_gradient_checkpointing_same_gradients(tiny_model_dir: Path, mode: str) -> None:
    pixels = torch.randn(8, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(4).repeat_interleave(2)
    gradients = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        embedder = embedder_from(tiny_model_dir).train()
        config = TrainConfig(mode=mode, gradient_checkpointing=checkpointing,
                             lora=LoraConfig(r=2, alpha=4, target_modules=["query", "value"]))
        prepare_backbone(embedder, config)
        if mode == "lora":
            # LoRA's B matrices start at zero; make them non-zero so that A gets a gradient too.
            for name, parameter in embedder.named_parameters():
                if "lora_B" in name:
                    torch.nn.init.normal_(parameter, std=0.1)
        losses.SupConLoss()(embedder(pixels), labels).backward()
        gradients.append({name: p.grad.clone() for name, p in embedder.named_parameters() if p.grad is not None})

    assert gradients[0].keys() == gradients[1].keys()
    assert gradients[0]
    for name in gradients[0]:
        assert torch.allclose(gradients[0][name], gradients[1][name], atol=1e-6), name


def test_full_mode_training_saves_backbone(tiny_model_dir: Path, tmp_path: Path) -> None:
    from conftest import copy_demo_subset
    from test_train import split_table

    from image_retrieval.train.loop import train_embedder

    copy_demo_subset(tmp_path / "train", num_classes=4, images_per_class=6)
    copy_demo_subset(tmp_path / "val", num_classes=4, images_per_class=3)
    embedder_from(tiny_model_dir).save_pretrained(tmp_path / "base")
    config = TrainConfig(mode="full", epochs=1, batch_size=8, images_per_class=2, lr=1e-3, layer_lr_decay=0.8,
                         freeze_patch_embedding=True)

    summary = train_embedder(tmp_path / "base", split_table(tmp_path / "train", "train"),
                             split_table(tmp_path / "val", "val"), config, tmp_path / "finetuned")

    base = Embedder.from_pretrained(tmp_path / "base").backbone
    finetuned = Embedder.from_pretrained(tmp_path / "finetuned").backbone
    assert summary.lora_modules == 0
    assert not torch.equal(base.encoder.layer[0].mlp.fc1.weight, finetuned.encoder.layer[0].mlp.fc1.weight)
    assert torch.equal(base.embeddings.patch_embeddings.projection.weight,
                       finetuned.embeddings.patch_embeddings.projection.weight)
