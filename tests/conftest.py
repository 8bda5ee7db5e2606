"""Shared fixtures: small real images from the demo set and a tiny random DINOv2."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_IMAGES = REPO_ROOT / "data" / "demo" / "images"


def copy_demo_subset(destination: Path, num_classes: int, images_per_class: int, skip: int = 0) -> Path:
    """Copy images of the first classes of the demo set into destination/<class>/, skipping the first `skip` of each."""
    for class_dir in sorted(DEMO_IMAGES.iterdir())[:num_classes]:
        target = destination / class_dir.name
        target.mkdir(parents=True)
        for image in sorted(class_dir.iterdir())[skip : skip + images_per_class]:
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


def make_sop_archive(
    archive_path: Path, *, train_classes: int, test_classes: int, images_per_class: int, side: int = 64
) -> Path:
    """Write a zip in the Stanford Online Products layout, built from demo images.

    Each product class takes its images from one demo class folder, enlarged to
    `side` x `side` JPEGs. Super-classes are the demo class names, and the zip
    contains Stanford_Online_Products/{Ebay_train.txt, Ebay_test.txt, <super>_final/...}.
    """
    import io
    import zipfile

    from PIL import Image

    class_dirs = sorted(DEMO_IMAGES.iterdir())
    lines = {"train": ["image_id class_id super_class_id path"], "test": ["image_id class_id super_class_id path"]}
    image_id = 1
    with zipfile.ZipFile(archive_path, "w") as archive:
        for class_id in range(1, train_classes + test_classes + 1):
            split = "train" if class_id <= train_classes else "test"
            super_class = (class_id - 1) % len(class_dirs)
            super_dir = f"{class_dirs[super_class].name}_final"
            sources = sorted(class_dirs[super_class].glob("*.png"))
            for position in range(images_per_class):
                source = sources[((class_id - 1) // len(class_dirs)) * images_per_class + position]
                relative = f"{super_dir}/{class_id}_{position}.JPG"
                buffer = io.BytesIO()
                Image.open(source).convert("RGB").resize((side, side)).save(buffer, format="JPEG", quality=90)
                archive.writestr(f"Stanford_Online_Products/{relative}", buffer.getvalue())
                lines[split].append(f"{image_id} {class_id} {super_class + 1} {relative}")
                image_id += 1
        for split, split_lines in lines.items():
            archive.writestr(f"Stanford_Online_Products/Ebay_{split}.txt", "\n".join(split_lines) + "\n")
    return archive_path
