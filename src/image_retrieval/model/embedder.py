"""The deployable embedding model: backbone, pooling, optional head, preprocessing.

A saved embedder is a directory that `Embedder.from_pretrained` loads back:

    config.json, model.safetensors   the DINOv2 backbone (`save_pretrained`)
    embedder.json                    preprocessing and pooling settings
    head.safetensors                 the projection head, when there is one

The fetch stage saves the base model in this format and the train stage the
fine-tuned one, so embedding, indexing and search treat both the same way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import Dinov2Model

from image_retrieval.data.images import load_rgb
from image_retrieval.io import atomic_path

if TYPE_CHECKING:
    from image_retrieval.train.augment import TrainAugmentation

logger = logging.getLogger(__name__)

EMBEDDER_CONFIG_FILE = "embedder.json"
HEAD_FILE = "head.safetensors"


@dataclass
class PreprocessingConfig:
    """Resize, normalisation and pooling settings that turn an image into one vector."""

    resolution: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    pooling: str = "cls"

    def __post_init__(self) -> None:
        self.mean = tuple(float(value) for value in self.mean)
        self.std = tuple(float(value) for value in self.std)
        if self.pooling not in ("cls", "mean"):
            raise ValueError(f"pooling={self.pooling!r} is invalid; expected 'cls' or 'mean'")


def image_to_tensor(image: Image.Image, preprocessing: PreprocessingConfig) -> torch.Tensor:
    """Resize an RGB image to a square and normalise it: [3, resolution, resolution] float32."""
    side = preprocessing.resolution
    resized = image.resize((side, side), Image.Resampling.BICUBIC)
    pixels = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor(preprocessing.mean).view(3, 1, 1)
    std = torch.tensor(preprocessing.std).view(3, 1, 1)
    return (pixels - mean) / std


class Embedder(torch.nn.Module):
    """DINOv2 backbone, token pooling and an optional linear head; outputs L2-normalised vectors."""

    def __init__(
        self,
        backbone: Dinov2Model,
        preprocessing: PreprocessingConfig,
        head: torch.nn.Linear | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.preprocessing = preprocessing
        self.head = head

    @property
    def embedding_dim(self) -> int:
        return self.head.out_features if self.head is not None else self.backbone.config.hidden_size

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Embed a batch [B, 3, H, W] into unit vectors [B, embedding_dim]."""
        hidden_states = self.backbone(pixel_values=pixel_values).last_hidden_state
        if self.preprocessing.pooling == "cls":
            pooled = hidden_states[:, 0]
        else:
            pooled = hidden_states[:, 1:].mean(dim=1)
        if self.head is not None:
            pooled = self.head(pooled)
        return F.normalize(pooled, dim=-1)

    def save_pretrained(self, directory: Path | str) -> None:
        """Write the embedder to `directory` atomically, replacing what was there."""
        with atomic_path(directory) as temporary:
            self.backbone.save_pretrained(temporary)
            settings = {
                "preprocessing": dataclasses.asdict(self.preprocessing),
                "head": None if self.head is None else {
                    "in_features": self.head.in_features,
                    "out_features": self.head.out_features,
                },
            }
            (temporary / EMBEDDER_CONFIG_FILE).write_text(json.dumps(settings, indent=2) + "\n")
            if self.head is not None:
                from safetensors.torch import save_file

                save_file({k: v.contiguous() for k, v in self.head.state_dict().items()}, temporary / HEAD_FILE)

    @classmethod
    def from_pretrained(cls, directory: Path | str) -> "Embedder":
        """Load an embedder written by `save_pretrained`, in eval mode."""
        directory = Path(directory)
        settings_path = directory / EMBEDDER_CONFIG_FILE
        if not settings_path.is_file():
            raise FileNotFoundError(
                f"{settings_path} not found: {directory} is not an embedder directory; "
                "run `dvc repro` to build models/base and models/finetuned, or pass a saved embedder "
                "directory (`--model-dir` on the command line)"
            )
        settings = json.loads(settings_path.read_text())
        backbone = Dinov2Model.from_pretrained(directory)

        head = None
        if settings["head"] is not None:
            from safetensors.torch import load_file

            head = torch.nn.Linear(settings["head"]["in_features"], settings["head"]["out_features"])
            head.load_state_dict(load_file(directory / HEAD_FILE))

        return cls(backbone, PreprocessingConfig(**settings["preprocessing"]), head).eval()


def model_fingerprint(directory: Path | str) -> str:
    """SHA-256 over the names and bytes of every file of a saved model, in sorted order."""
    directory = Path(directory)
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(path.relative_to(directory).as_posix().encode())
        digest.update(b"\0")
        with open(path, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


class ImageDataset(torch.utils.data.Dataset):
    """Images from paths as preprocessed tensors, with optional random augmentation for training.

    Per image, the random crop is drawn first, then the horizontal flip, then
    the colour jitter. Augmentations that are disabled draw no random numbers.
    """

    def __init__(
        self,
        paths: Sequence[str],
        preprocessing: PreprocessingConfig,
        labels: Sequence[int] | None = None,
        horizontal_flip: bool = False,
        augmentation: TrainAugmentation | None = None,
    ) -> None:
        self.paths = list(paths)
        self.preprocessing = preprocessing
        self.labels = None if labels is None else torch.as_tensor(list(labels), dtype=torch.long)
        self.horizontal_flip = horizontal_flip
        self.augmentation = augmentation

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        image = load_rgb(self.paths[index])
        if self.augmentation is not None:
            image = self.augmentation.crop(image, self.preprocessing.resolution)
        pixels = image_to_tensor(image, self.preprocessing)
        if self.horizontal_flip and torch.rand(()) < 0.5:
            pixels = pixels.flip(-1)
        if self.augmentation is not None:
            pixels = self.augmentation.jitter_normalized(pixels, self.preprocessing.mean, self.preprocessing.std)
        if self.labels is None:
            return pixels
        return pixels, self.labels[index]


def autocast_dtype(precision: str, device: torch.device | str) -> torch.dtype | None:
    """Return the autocast dtype for `precision` on `device`: bfloat16, or None for plain fp32.

    "auto" means bf16 on CUDA and fp32 elsewhere, as for `train.precision`.
    """
    if precision == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp32":
        return None
    raise ValueError(f"precision={precision!r} is invalid; expected one of: auto, fp32, bf16")


@torch.inference_mode()
def embed_batch(
    embedder: Embedder, pixels: torch.Tensor, device: torch.device, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Embed one batch of pixels on `device`: unit vectors, float32 [B, embedding_dim], left on `device`.

    With an autocast `dtype`, the rows are normalised again in float32, so that
    they have unit norm to float32 precision whatever precision the model ran in.
    """
    pixels = pixels.to(device, non_blocking=True)
    if dtype is None:
        return embedder(pixels).float()
    with torch.autocast(device_type=device.type, dtype=dtype):
        embeddings = embedder(pixels)
    return F.normalize(embeddings.float(), dim=-1)


def embedding_loader(
    dataset: torch.utils.data.Dataset, *, batch_size: int, num_workers: int, device: torch.device
) -> torch.utils.data.DataLoader:
    """Build the DataLoader for embedding: dataset order, no shuffle, pinned memory on CUDA."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        shuffle=False,
        pin_memory=device.type == "cuda",
    )


def embedding_progress():
    """Return a transient rich progress bar with a count of images and the time remaining."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    columns = ("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    return Progress(*columns, transient=True)


@torch.inference_mode()
def embed_tensors(
    embedder: Embedder,
    loader: torch.utils.data.DataLoader,
    device: torch.device,
    progress=None,
    precision: str = "fp32",
) -> np.ndarray:
    """Run the embedder over a loader of pixel batches: float32 [N, embedding_dim].

    `precision` is "fp32", "bf16" or "auto" (bf16 autocast on CUDA only).
    """
    embedder.eval()
    device = torch.device(device)
    dtype = autocast_dtype(precision, device)
    batches = []
    task = None if progress is None else progress.add_task("embedding", total=len(loader.dataset))
    for batch in loader:
        pixels = batch[0] if isinstance(batch, (list, tuple)) else batch
        batches.append(embed_batch(embedder, pixels, device, dtype).cpu().numpy())
        if progress is not None:
            progress.advance(task, len(pixels))
    if not batches:
        return np.zeros((0, embedder.embedding_dim), dtype=np.float32)
    return np.concatenate(batches).astype(np.float32, copy=False)


def embed_paths(
    embedder: Embedder,
    paths: Sequence[str],
    *,
    batch_size: int = 128,
    num_workers: int = 0,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    show_progress: bool = True,
) -> np.ndarray:
    """Embed image files in one process: L2-normalised float32 [len(paths), embedding_dim], in the order given.

    `num_workers` DataLoader processes decode and resize the images (0 decodes
    in this process). The search command embeds a query with it. The embed
    stage embeds the gallery through the same `ImageDataset` and `embed_batch`,
    so both are preprocessed alike. Training validates through `embed_tensors`.
    """
    device = torch.device(device)
    embedder.to(device)
    dataset = ImageDataset(paths, embedder.preprocessing)
    loader = embedding_loader(dataset, batch_size=batch_size, num_workers=num_workers, device=device)

    if not show_progress:
        return embed_tensors(embedder, loader, device, precision=precision)
    with embedding_progress() as progress:
        return embed_tensors(embedder, loader, device, progress, precision=precision)
