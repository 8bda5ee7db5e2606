"""Parameters: defaults, type checks and messages that name the invalid value."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import REPO_ROOT
from image_retrieval.config import SECTIONS, ParamsError, load_params


def write_params(tmp_path: Path, params: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_repository_params_load() -> None:
    for section in SECTIONS:
        load_params(section, REPO_ROOT / "params.yaml")


def test_missing_section_uses_defaults(tmp_path: Path) -> None:
    config = load_params("train", write_params(tmp_path, {}))

    assert config.lr == 1e-3
    assert config.lora.target_modules == ["query", "key", "value", "dense", "fc1", "fc2"]


def test_yaml_string_float_accepted(tmp_path: Path) -> None:
    # YAML 1.1 reads 1e-4 without a dot as a string.
    config = load_params("train", write_params(tmp_path, {"train": {"lr": "1e-4"}}))

    assert config.lr == pytest.approx(1e-4)


@pytest.mark.parametrize(
    ("section", "values", "expected_message"),
    [
        ("prepare", {"split": "by_colour"}, "prepare.split='by_colour' is invalid"),
        ("train", {"precision": "fp8"}, "train.precision='fp8' is invalid"),
        ("train", {"learning_rate": 0.1}, "unknown parameter train.learning_rate"),
        ("train", {"lora": {"rank": 4}}, "unknown parameter train.lora.rank"),
        ("train", {"epochs": "ten"}, "train.epochs must be an integer, got 'ten'"),
        ("train", {"batch_size": 0}, "train.batch_size must be positive"),
        ("train", {"batch_size": 30, "images_per_class": 4}, "train.batch_size=30 is not a multiple"),
        ("model", {"resolution": 100}, "model.resolution=100 is not a multiple"),
        ("model", {"pooling": "max"}, "model.pooling='max' is invalid"),
        ("data", {"dataset": "imagenet"}, "data.dataset='imagenet' is invalid"),
        ("prepare", {"val_fraction": 0.5, "test_fraction": 0.5}, "leaves no training data"),
        ("evaluate", {"recall_at": []}, "evaluate.recall_at must be a non-empty list"),
    ],
)
def test_invalid_value_named(tmp_path: Path, section: str, values: dict, expected_message: str) -> None:
    path = write_params(tmp_path, {section: values})

    with pytest.raises(ParamsError) as error:
        load_params(section, path)

    assert expected_message in str(error.value)


def test_invalid_value_fails_stage(tmp_path: Path) -> None:
    """A stage script run with an invalid parameter exits non-zero and prints the parameter."""
    import subprocess
    import sys

    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"prepare": {"split": "by_colour"}}))
    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "stages" / "prepare.py")], cwd=tmp_path, capture_output=True, text=True
    )

    assert completed.returncode != 0
    assert "prepare.split='by_colour' is invalid" in completed.stderr
