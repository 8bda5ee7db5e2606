"""Metric losses on a separable toy problem, and tiny training runs with the loss, head and schedule options."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import torch.nn.functional as F
import yaml
from transformers import Dinov2Model

from conftest import copy_demo_subset
from image_retrieval.config import LoraConfig, ParamsError, ProxyAnchorConfig, TrainConfig, load_params
from image_retrieval.model.embedder import Embedder, PreprocessingConfig
from image_retrieval.train import loop
from image_retrieval.train.losses import build_loss
from image_retrieval.train.loop import build_optimizer, contiguous_labels, cosine_schedule_with_warmup, train_embedder

NUM_CLASSES = 4
POINTS_PER_CLASS = 10
EMBEDDING_SIZE = 8
LOSSES = ["supcon", "multi_similarity", "proxy_anchor", "triplet"]


def optimise_embedding_table(config: TrainConfig, steps: int) -> tuple[list[float], list[float], torch.optim.Optimizer]:
    """Train a table of 40 unit vectors in 4 classes with the configured loss.

    Returns the loss per step, the loss without the miner (over every pair or
    triplet) before and after training, and the optimizer.
    """
    torch.manual_seed(0)
    labels = torch.arange(NUM_CLASSES).repeat_interleave(POINTS_PER_CLASS)
    table = torch.nn.Parameter(torch.randn(len(labels), EMBEDDING_SIZE))
    metric_loss = build_loss(config, num_classes=NUM_CLASSES, embedding_size=EMBEDDING_SIZE)
    optimizer = build_optimizer([table], metric_loss, config)

    def unmined_loss() -> float:
        with torch.no_grad():
            return metric_loss.loss(F.normalize(table, dim=-1), labels).item()

    unmined = [unmined_loss()]
    history = []
    for _ in range(steps):
        loss = metric_loss(F.normalize(table, dim=-1), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        history.append(loss.item())
    unmined.append(unmined_loss())
    return history, unmined, optimizer


@pytest.mark.parametrize("loss_name", LOSSES)
def test_loss_decreases_on_toy_problem(loss_name: str) -> None:
    config = TrainConfig(loss=loss_name, lr=0.05, weight_decay=0.0, proxy_anchor=ProxyAnchorConfig(lr_multiplier=2.0))

    history, unmined, _ = optimise_embedding_table(config, steps=60)

    assert history[0] > 0
    assert history[-1] < history[0] * 0.5, f"{loss_name}: loss went from {history[0]:.4f} to {history[-1]:.4f}"
    assert unmined[1] < unmined[0] * 0.5, f"{loss_name}: loss without miner went from {unmined[0]:.4f} to {unmined[1]:.4f}"


@pytest.mark.parametrize("type_of_triplets", ["semihard", "hard", "all"])
def test_triplet_miners_decrease_loss(type_of_triplets: str) -> None:
    config = TrainConfig(loss="triplet", lr=0.05, weight_decay=0.0)
    config.triplet.type_of_triplets = type_of_triplets

    history, unmined, _ = optimise_embedding_table(config, steps=60)

    assert history[0] > 0
    assert history[-1] < history[0] * 0.5, f"{type_of_triplets}: loss went from {history[0]:.4f} to {history[-1]:.4f}"
    assert unmined[1] < unmined[0] * 0.5, f"{type_of_triplets}: loss without miner went from {unmined[0]:.4f} to {unmined[1]:.4f}"


def test_proxy_group_gets_multiplied_lr() -> None:
    config = TrainConfig(loss="proxy_anchor", lr=0.05, weight_decay=0.01, proxy_anchor=ProxyAnchorConfig(lr_multiplier=2.0))

    _, _, optimizer = optimise_embedding_table(config, steps=1)

    model_group, proxy_group = optimizer.param_groups
    assert model_group["lr"] == pytest.approx(0.05)
    assert model_group["weight_decay"] == pytest.approx(0.01)
    assert proxy_group["lr"] == pytest.approx(0.1)
    assert proxy_group["weight_decay"] == 0.0
    assert [tuple(parameter.shape) for parameter in proxy_group["params"]] == [(NUM_CLASSES, EMBEDDING_SIZE)]


def test_only_proxy_anchor_has_extra_groups() -> None:
    for loss_name in LOSSES:
        metric_loss = build_loss(TrainConfig(loss=loss_name), num_classes=NUM_CLASSES, embedding_size=EMBEDDING_SIZE)

        assert bool(metric_loss.extra_param_groups) == (loss_name == "proxy_anchor"), loss_name


def test_miners_match_losses() -> None:
    miners = {
        name: type(build_loss(TrainConfig(loss=name), num_classes=NUM_CLASSES, embedding_size=EMBEDDING_SIZE).miner).__name__
        for name in LOSSES
    }

    assert miners == {
        "supcon": "NoneType",
        "multi_similarity": "MultiSimilarityMiner",
        "proxy_anchor": "NoneType",
        "triplet": "TripletMarginMiner",
    }


def test_proxy_anchor_needs_two_classes() -> None:
    with pytest.raises(ValueError, match="at least 2 training classes, got 1"):
        build_loss(TrainConfig(loss="proxy_anchor"), num_classes=1, embedding_size=EMBEDDING_SIZE)


def test_contiguous_labels_keep_order() -> None:
    mapped, classes = contiguous_labels(np.array([12, 5, 12, 40, 5]))

    assert mapped.tolist() == [1, 0, 1, 2, 0]
    assert classes.tolist() == [5, 12, 40]


@pytest.mark.parametrize(
    ("values", "expected_message"),
    [
        ({"loss": "arcface"}, "train.loss='arcface' is invalid"),
        ({"loss": "triplet", "triplet": {"type_of_triplets": "easy"}}, "train.triplet.type_of_triplets='easy' is invalid"),
        ({"triplet": {"margin": 0.0}}, "train.triplet.margin=0.0 must be positive"),
        ({"proxy_anchor": {"lr_multiplier": -1}}, "train.proxy_anchor.lr_multiplier=-1.0 must be positive"),
        ({"multi_similarity": {"epsilon": -0.1}}, "train.multi_similarity.epsilon=-0.1 must be 0 or positive"),
        ({"warmup_epochs": 10, "epochs": 10}, "train.warmup_epochs=10 is invalid"),
        ({"early_stopping_patience": -1}, "train.early_stopping_patience=-1 must be 0"),
        ({"embedding_dim": -8}, "train.embedding_dim=-8 must be 0"),
    ],
)
def test_invalid_train_option_named(tmp_path: Path, values: dict, expected_message: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"train": values}))

    with pytest.raises(ParamsError) as error:
        load_params("train", path)

    assert expected_message in str(error.value)


def test_no_warmup_is_plain_cosine() -> None:
    total_steps = 37
    factor = cosine_schedule_with_warmup(0, total_steps)

    for step in range(total_steps + 3):
        assert factor(step) == 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))


def test_warmup_then_cosine() -> None:
    factor = cosine_schedule_with_warmup(4, 12)

    assert [factor(step) for step in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert factor(4) == 1.0
    assert factor(8) == pytest.approx(0.5)
    assert factor(12) == pytest.approx(0.0)
    decay = [factor(step) for step in range(4, 13)]
    assert decay == sorted(decay, reverse=True)


def test_warmup_must_leave_decay_steps() -> None:
    with pytest.raises(ValueError, match="lower train.warmup_epochs"):
        cosine_schedule_with_warmup(10, 10)


def split_table(root: Path) -> pl.DataFrame:
    """Rows of root/<class>/<image>.png with labels 10, 20, ... so that they are not 0 .. num_classes - 1."""
    paths = sorted(root.glob("*/*.png"))
    class_names = sorted({path.parent.name for path in paths})
    return pl.DataFrame(
        {
            "image_id": [path.name for path in paths],
            "path": [str(path) for path in paths],
            "label": [10 * (class_names.index(path.parent.name) + 1) for path in paths],
            "split": ["train"] * len(paths),
        }
    )


@pytest.fixture
def tiny_training_data(tiny_model_dir: Path, tmp_path: Path) -> Path:
    copy_demo_subset(tmp_path / "train", num_classes=4, images_per_class=6)
    copy_demo_subset(tmp_path / "val", num_classes=4, images_per_class=3)
    preprocessing = PreprocessingConfig(resolution=28, mean=(0.5,) * 3, std=(0.25,) * 3)
    Embedder(Dinov2Model.from_pretrained(tiny_model_dir), preprocessing).save_pretrained(tmp_path / "base")
    return tmp_path


def tiny_config(**overrides) -> TrainConfig:
    values = dict(epochs=2, batch_size=8, images_per_class=2, lr=1e-2, lora=LoraConfig(r=2, alpha=4, target_modules=["query", "value"]))
    values.update(overrides)
    return TrainConfig(**values)


def test_proxy_anchor_head_saved_and_reloaded(tiny_training_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tiny_training_data
    config = tiny_config(loss="proxy_anchor", embedding_dim=8)
    config.augment.random_resized_crop_scale = [0.5, 1.0]
    config.augment.color_jitter.brightness = 0.2
    optimizers = []

    def record_optimizer(*args):
        optimizers.append(build_optimizer(*args))
        return optimizers[-1]

    monkeypatch.setattr(loop, "build_optimizer", record_optimizer)

    summary = train_embedder(root / "base", split_table(root / "train"), split_table(root / "val"), config, root / "finetuned")

    model_group, proxy_group = optimizers[0].param_groups
    assert model_group["initial_lr"] == pytest.approx(1e-2)
    assert proxy_group["initial_lr"] == pytest.approx(1e-2 * 100)
    assert {(8, 32), (8,)} <= {tuple(parameter.shape) for parameter in model_group["params"]}
    assert [tuple(parameter.shape) for parameter in proxy_group["params"]] == [(4, 8)]

    finetuned = Embedder.from_pretrained(root / "finetuned")
    assert summary.epochs_run == 2
    assert (root / "finetuned" / "head.safetensors").is_file()
    assert finetuned.head is not None
    assert (finetuned.head.in_features, finetuned.head.out_features) == (32, 8)
    assert finetuned.embedding_dim == 8
    embeddings = finetuned(torch.zeros(2, 3, 28, 28))
    assert embeddings.shape == (2, 8)
    assert torch.allclose(embeddings.norm(dim=-1), torch.ones(2))


def test_head_rejected_when_base_has_one(tiny_model_dir: Path, tmp_path: Path) -> None:
    preprocessing = PreprocessingConfig(resolution=28, mean=(0.5,) * 3, std=(0.25,) * 3)
    embedder = Embedder(Dinov2Model.from_pretrained(tiny_model_dir), preprocessing, torch.nn.Linear(32, 4))

    with pytest.raises(ValueError, match="base model already has one"):
        loop._add_projection_head(embedder, 8)


def test_early_stopping_after_patience(tiny_training_data: Path, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    # Base model, then epochs 1 to 3: epoch 1 is best, epochs 2 and 3 do not improve.
    recalls = iter([0.25, 0.5, 0.5, 0.4, 0.9])
    monkeypatch.setattr(loop, "_val_recall_at_1", lambda *args: next(recalls))
    root = tiny_training_data

    with caplog.at_level("INFO", logger=loop.__name__):
        summary = train_embedder(
            root / "base",
            split_table(root / "train"),
            split_table(root / "val"),
            tiny_config(epochs=5, early_stopping_patience=2),
            root / "finetuned",
        )

    assert summary.epochs_run == 3
    assert summary.best_epoch == 1
    assert summary.to_dict()["epochs_run"] == 3
    assert "Early stopping after epoch 3" in caplog.text
