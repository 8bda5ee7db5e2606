"""Read Fashion-MNIST's IDX files (Xiao, Rasul and Vollgraf, Zalando, 2017; MIT licence)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

# Index of each name is its label in the IDX label files.
CLASS_NAMES = (
    "t-shirt_top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle_boot",
)

_IMAGES_MAGIC = 2051
_LABELS_MAGIC = 2049


def _read_idx(path: Path, expected_magic: int) -> tuple[np.ndarray, tuple[int, ...]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as stream:
        payload = stream.read()

    magic = int.from_bytes(payload[0:4], "big")
    if magic != expected_magic:
        raise ValueError(f"{path} is not an IDX file of the expected kind: magic {magic}, expected {expected_magic}")

    num_dims = payload[3]
    dims = tuple(int.from_bytes(payload[4 + 4 * i: 8 + 4 * i], "big") for i in range(num_dims))
    data = np.frombuffer(payload, dtype=np.uint8, offset=4 + 4 * num_dims)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path} is truncated: {data.size} bytes of data for dimensions {dims}")
    return data.reshape(dims), dims


def read_fashion_mnist(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Return images [N, 28, 28] uint8 and labels [N] int64 from a pair of IDX files."""
    images, _ = _read_idx(Path(images_path), _IMAGES_MAGIC)
    labels, _ = _read_idx(Path(labels_path), _LABELS_MAGIC)
    if len(images) != len(labels):
        raise ValueError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels")
    return images, labels.astype(np.int64)
