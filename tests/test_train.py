"""Class-balanced sampling checks and a short training run on a tiny model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from transformers import Dinov2Model

from conftest import copy_demo_subset
from image_retrieval.config import LoraConfig, TrainConfig
from image_retrieval.model.embedder import Embedder, PreprocessingConfig
from image_retrieval.train.sampler import BatchCompositionError, build_class_balanced_sampler
from image_retrieval.train.loop import train_embedder


def test_batches_have_p_classes_by_k() -> None:
    labels = np.repeat(np.arange(6), 5)
    sampler = build_class_balanced_sampler(labels, batch_size=8, images_per_class=2, num_batches=4)

    indices = list(sampler)

    assert len(indices) == 32
    for start in range(0, 32, 8):
        batch_labels = labels[indices[start:start + 8]]
        values, counts = np.unique(batch_labels, return_counts=True)
        assert len(values) == 4
        assert set(counts) == {2}


def test_too_many_classes_per_batch() -> None:
    labels = np.repeat(np.arange(3), 5)

    with pytest.raises(BatchCompositionError, match="needs 4 classes, but the training split has 3"):
        build_class_balanced_sampler(labels, batch_size=8, images_per_class=2, num_batches=1)


def test_k_above_smallest_class() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])

    with pytest.raises(BatchCompositionError, match="exceeds the 2 training images of class 2"):
        build_class_balanced_sampler(labels, batch_size=6, images_per_class=3, num_batches=1)


def test_k_of_one_rejected() -> None:
    with pytest.raises(BatchCompositionError, match="at least 2 images"):
        build_class_balanced_sampler([0, 0, 1, 1], batch_size=2, images_per_class=1, num_batches=1)


def split_table(root: Path, split_name: str) -> pl.DataFrame:
    paths = sorted(root.glob("*/*.png"))
    class_names = sorted({path.parent.name for path in paths})
    return pl.DataFrame(
        {
            "image_id": [path.name for path in paths],
            "path": [str(path) for path in paths],
            "label": [class_names.index(path.parent.name) for path in paths],
            "split": [split_name] * len(paths),
        }
    )


def test_training_saves_merged_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    copy_demo_subset(tmp_path / "train", num_classes=4, images_per_class=6)
    copy_demo_subset(tmp_path / "val", num_classes=4, images_per_class=3)
    preprocessing = PreprocessingConfig(resolution=28, mean=(0.5,) * 3, std=(0.25,) * 3)
    Embedder(Dinov2Model.from_pretrained(tiny_model_dir), preprocessing).save_pretrained(tmp_path / "base")
    config = TrainConfig(epochs=2, batch_size=8, images_per_class=2, lr=1e-2, lora=LoraConfig(r=2, alpha=4, target_modules=["query", "value"]))

    summary = train_embedder(
        tmp_path / "base",
        split_table(tmp_path / "train", "train"),
        split_table(tmp_path / "val", "val"),
        config,
        tmp_path / "finetuned",
    )

    finetuned = Embedder.from_pretrained(tmp_path / "finetuned")
    base = Embedder.from_pretrained(tmp_path / "base")
    assert summary.lora_modules == 4
    assert summary.best_epoch in (1, 2)
    assert not any("lora" in name for name, _ in finetuned.named_parameters())
    changed = [
        name for name, parameter in finetuned.backbone.named_parameters()
        if not torch.equal(parameter, base.backbone.get_parameter(name))
    ]
    assert changed
    assert all(("q_proj" in name or "v_proj" in name) and name.endswith("weight") for name in changed)


class InterruptAfter:
    """A dvclive stand-in that raises KeyboardInterrupt when epoch `stop_epoch` is logged, as a kill would."""

    def __init__(self, stop_epoch: int) -> None:
        self.stop_epoch = stop_epoch
        self.step = 0

    def log_metric(self, name: str, value: float) -> None:
        pass

    def next_step(self) -> None:
        self.step += 1
        if self.step == self.stop_epoch:
            raise KeyboardInterrupt


def resume_fixture(tmp_path: Path) -> tuple[Path, pl.DataFrame, pl.DataFrame]:
    copy_demo_subset(tmp_path / "train", num_classes=4, images_per_class=6)
    copy_demo_subset(tmp_path / "val", num_classes=4, images_per_class=3)
    return tmp_path / "train", split_table(tmp_path / "train", "train"), split_table(tmp_path / "val", "val")


def saved_weights(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(directory / "model.safetensors")


def test_resume_equals_uninterrupted_run(tiny_model_dir: Path, tmp_path: Path) -> None:
    from image_retrieval.train.checkpoint import CheckpointStore

    _, train, val = resume_fixture(tmp_path)
    preprocessing = PreprocessingConfig(resolution=28, mean=(0.5,) * 3, std=(0.25,) * 3)
    Embedder(Dinov2Model.from_pretrained(tiny_model_dir), preprocessing).save_pretrained(tmp_path / "base")
    config = TrainConfig(epochs=3, batch_size=8, images_per_class=2, lr=1e-2, horizontal_flip=True,
                         lora=LoraConfig(r=2, alpha=4, target_modules=["query", "value"]))

    uninterrupted = train_embedder(tmp_path / "base", train, val, config, tmp_path / "uninterrupted")
    store = CheckpointStore("a" * 64, root=tmp_path / "checkpoints")
    with pytest.raises(KeyboardInterrupt):
        train_embedder(tmp_path / "base", train, val, config, tmp_path / "resumed",
                       live=InterruptAfter(stop_epoch=3), checkpoints=store)
    assert (store.directory / "last.pt").is_file()
    assert not (tmp_path / "resumed").exists()

    resumed = train_embedder(tmp_path / "base", train, val, config, tmp_path / "resumed", checkpoints=store)

    expected, actual = saved_weights(tmp_path / "uninterrupted"), saved_weights(tmp_path / "resumed")
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name
    assert resumed.best_epoch == uninterrupted.best_epoch
    assert resumed.final_train_loss == uninterrupted.final_train_loss
    assert not store.directory.exists()


def test_changed_parameters_start_fresh(tmp_path: Path) -> None:
    from image_retrieval.train.checkpoint import CheckpointStore, training_fingerprint

    data_file = tmp_path / "train.parquet"
    data_file.write_bytes(b"rows")
    first = training_fingerprint({"lr": 1e-3}, [data_file])
    CheckpointStore(first, root=tmp_path / "checkpoints").save({"epoch": 1})

    changed = training_fingerprint({"lr": 1e-4}, [data_file])
    store = CheckpointStore(changed, root=tmp_path / "checkpoints")

    assert changed != first
    assert store.load() is None
    assert list((tmp_path / "checkpoints").iterdir()) == []
    data_file.write_bytes(b"other rows")
    assert training_fingerprint({"lr": 1e-3}, [data_file]) != first
