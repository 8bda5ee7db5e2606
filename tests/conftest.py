"""Shared fixtures: small real images from the demo set and a tiny random DINOv2."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_IMAGES = REPO_ROOT / "data" / "demo" / "images"


def copy_demo_subset(destination: Path, num_classes: int, images_per_class: int) -> Path:
    """Copy the first images of the first classes of the demo set into destination/<class>/."""
    for class_dir in sorted(DEMO_IMAGES.iterdir())[:num_classes]:
        target = destination / class_dir.name
        target.mkdir(parents=True)
        for image in sorted(class_dir.iterdir())[:images_per_class]:
            shutil.copy2(image, target / image.name)
    return destination


def save_tiny_dinov2(directory: Path) -> Path:
    """Save a randomly initialised two-layer Dinov2Model (hidden size 32) with save_pretrained."""
    import torch
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        mlp_ratio=2,
        image_size=28,
        patch_size=14,
    )
    Dinov2Model(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return save_tiny_dinov2(tmp_path_factory.mktemp("tiny-dinov2"))
