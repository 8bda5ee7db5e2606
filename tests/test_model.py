"""Embedder save/load, fingerprints, LoRA target resolution and backbone loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import Dinov2Model

from conftest import DEMO_IMAGES
from image_retrieval.config import LoraConfig
from image_retrieval.model.backbone import BackboneLoadError, load_backbone
from image_retrieval.model.embedder import Embedder, PreprocessingConfig, embed_paths, model_fingerprint
from image_retrieval.model.lora import LoraTargetError, apply_lora, resolve_lora_targets

PREPROCESSING = PreprocessingConfig(resolution=28, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def demo_image_paths(count: int) -> list[str]:
    return [str(path) for path in sorted(DEMO_IMAGES.glob("*/*.png"))[:count]]


def test_embeddings_unit_norm(tiny_model_dir: Path) -> None:
    embedder = Embedder(Dinov2Model.from_pretrained(tiny_model_dir), PREPROCESSING)

    embeddings = embed_paths(embedder, demo_image_paths(5), batch_size=2, show_progress=False)

    assert embeddings.shape == (5, 32)
    assert embeddings.dtype == np.float32
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)


def test_save_load_round_trip(tiny_model_dir: Path, tmp_path: Path) -> None:
    embedder = Embedder(Dinov2Model.from_pretrained(tiny_model_dir), PREPROCESSING, head=torch.nn.Linear(32, 8))
    embedder.save_pretrained(tmp_path / "embedder")

    reloaded = Embedder.from_pretrained(tmp_path / "embedder")
    paths = demo_image_paths(3)

    assert reloaded.preprocessing == PREPROCESSING
    assert reloaded.embedding_dim == 8
    assert np.allclose(
        embed_paths(embedder.eval(), paths, show_progress=False),
        embed_paths(reloaded, paths, show_progress=False),
        atol=1e-6,
    )


def test_mean_pooling_differs_from_cls(tiny_model_dir: Path) -> None:
    backbone = Dinov2Model.from_pretrained(tiny_model_dir)
    mean_pooling = PreprocessingConfig(resolution=28, mean=(0.5,) * 3, std=(0.25,) * 3, pooling="mean")
    paths = demo_image_paths(2)

    cls_embeddings = embed_paths(Embedder(backbone, PREPROCESSING), paths, show_progress=False)
    mean_embeddings = embed_paths(Embedder(backbone, mean_pooling), paths, show_progress=False)

    assert not np.allclose(cls_embeddings, mean_embeddings)


def test_fingerprint_follows_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    backbone = Dinov2Model.from_pretrained(tiny_model_dir)
    Embedder(backbone, PREPROCESSING).save_pretrained(tmp_path / "first")
    Embedder(backbone, PREPROCESSING).save_pretrained(tmp_path / "same")
    with torch.no_grad():
        backbone.layernorm.weight.add_(1.0)
    Embedder(backbone, PREPROCESSING).save_pretrained(tmp_path / "changed")

    assert model_fingerprint(tmp_path / "first") == model_fingerprint(tmp_path / "same")
    assert model_fingerprint(tmp_path / "first") != model_fingerprint(tmp_path / "changed")


def test_missing_embedder_dir_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="embedder.json not found"):
        Embedder.from_pretrained(tmp_path / "absent")


def test_lora_targets_transformers_names(tiny_model_dir: Path) -> None:
    backbone = Dinov2Model.from_pretrained(tiny_model_dir)

    targets = resolve_lora_targets(backbone, ["query", "value"], num_layers=2)

    assert len(targets) == 4
    assert all(name.rsplit(".", 1)[-1] in ("q_proj", "v_proj", "query", "value") for name in targets)


class LegacyAttention(torch.nn.Module):
    """Attention projections under the transformers 4.x DINOv2 names."""

    def __init__(self) -> None:
        super().__init__()
        self.query = torch.nn.Linear(4, 4)
        self.key = torch.nn.Linear(4, 4)
        self.value = torch.nn.Linear(4, 4)


def test_lora_targets_legacy_names() -> None:
    legacy_model = torch.nn.ModuleList([LegacyAttention() for _ in range(3)])

    targets = resolve_lora_targets(legacy_model, ["q_proj", "v_proj"], num_layers=3)

    assert targets == ["0.query", "1.query", "2.query", "0.value", "1.value", "2.value"]


def test_lora_unknown_target_named(tiny_model_dir: Path) -> None:
    backbone = Dinov2Model.from_pretrained(tiny_model_dir)

    with pytest.raises(LoraTargetError, match="'attn_out'"):
        resolve_lora_targets(backbone, ["attn_out"], num_layers=2)


def test_lora_partial_match_rejected(tiny_model_dir: Path) -> None:
    backbone = Dinov2Model.from_pretrained(tiny_model_dir)

    with pytest.raises(LoraTargetError, match="matched 2 linear layers"):
        resolve_lora_targets(backbone, ["query"], num_layers=12)


def test_apply_lora_counts_modules(tiny_model_dir: Path) -> None:
    backbone = Dinov2Model.from_pretrained(tiny_model_dir)

    peft_model, num_modules = apply_lora(backbone, LoraConfig(r=2, alpha=4, target_modules=["query", "value", "fc1"]))
    trainable = [name for name, parameter in peft_model.named_parameters() if parameter.requires_grad]

    assert num_modules == 6
    assert len(trainable) == 12
    assert all("lora_" in name for name in trainable)


def test_local_backbone_loads(tiny_model_dir: Path) -> None:
    backbone = load_backbone(str(tiny_model_dir))

    assert backbone.config.hidden_size == 32


@pytest.mark.parametrize("name", ["not-a-model", "./missing-dir", "a/b/c"])
def test_invalid_model_name_named(name: str) -> None:
    with pytest.raises(BackboneLoadError, match=f"model.name={name!r}"):
        load_backbone(name)


def test_dir_without_config_rejected(tmp_path: Path) -> None:
    with pytest.raises(BackboneLoadError, match="without config.json"):
        load_backbone(str(tmp_path))
