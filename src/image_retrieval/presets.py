"""Named sets of parameter values (presets/*.yaml) and their `dvc exp run -S` form."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import yaml

from image_retrieval.config import SECTIONS, ParamsError, parse_params

PRESETS_DIR = Path("presets")


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Turn nested mappings into dotted keys: {"train": {"lr": 1e-4}} -> {"train.lr": 1e-4}.

    Lists are values, not nested parameters, so they stay whole.
    """
    flat: dict[str, Any] = {}
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def apply_preset(params: dict[str, Any], preset: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of `params` with every dotted key of `preset` set; each key must already exist."""
    merged = copy.deepcopy(params)
    for dotted, value in flatten(preset).items():
        *parents, name = dotted.split(".")
        node = merged
        for parent in parents:
            node = node.get(parent) if isinstance(node, dict) else None
        if not isinstance(node, dict) or name not in node:
            raise ParamsError(f"preset key {dotted} is not a parameter in params.yaml; check its spelling")
        node[name] = value
    return merged


def load_preset(name: str, params_file: Path, presets_dir: Path = PRESETS_DIR) -> dict[str, Any]:
    """Read presets/<name>.yaml and check that params.yaml with it applied is valid.

    Returns the preset's values as dotted keys.
    """
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name) or ".." in name:
        raise ParamsError(f"invalid preset name {name!r}; use the file name of a preset in {presets_dir}, such as sop-1gpu")
    path = presets_dir / f"{name}.yaml"
    if not path.is_file():
        available = ", ".join(sorted(p.stem for p in presets_dir.glob("*.yaml"))) or "none"
        raise ParamsError(f"preset {name!r} not found at {path}; available presets: {available}")
    preset = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    params = yaml.safe_load(params_file.read_text(encoding="utf-8")) or {}
    merged = apply_preset(params, preset)

    # Validate through the same typed config the stages build.
    for section in SECTIONS:
        parse_params(section, merged, f"{params_file} with preset {name}")
    return flatten(preset)


def set_param_arguments(values: dict[str, Any]) -> list[str]:
    """Format dotted values as `-S key=value` arguments for `dvc exp run`.

    Values are written as compact JSON, which DVC's -S parser (Hydra's override
    grammar) reads back as the same values, so that a list such as [0.2,1.0]
    stays one shell word. A string with whitespace cannot
    pass through the shell's word splitting and is refused.
    """
    arguments = []
    for dotted, value in values.items():
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        if any(character.isspace() for character in text) or not text:
            raise ParamsError(
                f"preset value {dotted}={value!r} is empty or contains whitespace; set it in params.yaml instead"
            )
        arguments += ["-S", f"{dotted}={text}"]
    return arguments
