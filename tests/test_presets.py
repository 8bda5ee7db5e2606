"""Presets: every key exists in params.yaml, the result validates, and DVC's -S parser reads the values back."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from hydra.core.override_parser.overrides_parser import OverridesParser

from conftest import REPO_ROOT
from image_retrieval.cli import main
from image_retrieval.config import ParamsError
from image_retrieval.presets import apply_preset, flatten, load_preset, set_param_arguments

PARAMS_FILE = REPO_ROOT / "params.yaml"
PRESETS_DIR = REPO_ROOT / "presets"


def parse_set_arguments(arguments: list[str]) -> dict:
    """Parse `-S key=value` pairs with the override grammar `dvc exp run -S` uses."""
    overrides = OverridesParser.create().parse_overrides(arguments[1::2])
    return {override.key_or_group: override.value() for override in overrides}


@pytest.mark.parametrize("name", ["demo-2cpu", "sop-1gpu"])
def test_preset_values_survive_dvc_set_param_parsing(name: str) -> None:
    values = load_preset(name, PARAMS_FILE, PRESETS_DIR)

    arguments = set_param_arguments(values)

    assert arguments[0::2] == ["-S"] * len(values)
    assert parse_set_arguments(arguments) == values


def test_demo_preset_matches_shipped_params() -> None:
    params = yaml.safe_load(PARAMS_FILE.read_text())
    preset = yaml.safe_load((PRESETS_DIR / "demo-2cpu.yaml").read_text())

    assert apply_preset(params, preset) == params


def test_demo_preset_undoes_every_other_preset() -> None:
    demo_keys = set(load_preset("demo-2cpu", PARAMS_FILE, PRESETS_DIR))

    for path in PRESETS_DIR.glob("*.yaml"):
        other_keys = set(load_preset(path.stem, PARAMS_FILE, PRESETS_DIR))
        assert other_keys <= demo_keys, f"{path.name} sets keys that demo-2cpu does not reset"


def test_preset_name_with_path_rejected() -> None:
    with pytest.raises(ParamsError, match="invalid preset name '../params'"):
        load_preset("../params", PARAMS_FILE, PRESETS_DIR)


def test_sop_preset_sets_the_scale_out_recipe() -> None:
    values = load_preset("sop-1gpu", PARAMS_FILE, PRESETS_DIR)

    assert values["data.dataset"] == "sop"
    assert values["model.resolution"] == 224
    assert values["train.batch_size"] % values["train.images_per_class"] == 0


def test_unknown_preset_key_is_named(tmp_path: Path) -> None:
    (tmp_path / "typo.yaml").write_text("train:\n  learning_rate: 0.1\n")

    with pytest.raises(ParamsError, match="train.learning_rate"):
        load_preset("typo", PARAMS_FILE, tmp_path)


def test_invalid_preset_value_fails_validation(tmp_path: Path) -> None:
    (tmp_path / "odd.yaml").write_text("train:\n  batch_size: 30\n  images_per_class: 8\n")

    with pytest.raises(ParamsError, match="batch_size=30"):
        load_preset("odd", PARAMS_FILE, tmp_path)


def test_value_with_whitespace_is_refused() -> None:
    with pytest.raises(ParamsError, match="train.launcher"):
        set_param_arguments({"train.launcher": "accelerate launch --num_processes 2"})


def test_flatten_keeps_lists_whole() -> None:
    assert flatten({"a": {"b": [1, 2], "c": {"d": 3}}}) == {"a.b": [1, 2], "a.c.d": 3}


def test_preset_command_prints_arguments_and_names_missing_presets(monkeypatch) -> None:
    monkeypatch.chdir(REPO_ROOT)
    runner = CliRunner()

    printed = runner.invoke(main, ["preset", "sop-1gpu"])
    missing = runner.invoke(main, ["preset", "sop-8gpu"])

    assert printed.exit_code == 0
    assert "-S data.dataset=sop" in printed.output
    assert missing.exit_code != 0
    assert "sop-1gpu" in missing.output
    assert "demo-2cpu" in missing.output
