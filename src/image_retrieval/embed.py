"""Embed a table of images with a saved embedder and store the vectors with their row order.

An embeddings directory contains:

    embeddings.npy   float32 [N, D], L2-normalised rows
    rows.parquet     image_id, path, label: row i describes embeddings[i]
    info.json        model directory and fingerprint, resolution, dimension, throughput
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch

from image_retrieval.data.prepare import image_source_paths
from image_retrieval.io import atomic_path, read_json, write_json
from image_retrieval.model.embedder import Embedder, embed_paths, model_fingerprint

logger = logging.getLogger(__name__)

EMBEDDINGS_FILE = "embeddings.npy"
ROWS_FILE = "rows.parquet"
INFO_FILE = "info.json"


@dataclass
class StoredEmbeddings:
    embeddings: np.ndarray  # float32 [N, D]
    rows: pl.DataFrame      # N rows: image_id, path, label
    info: dict


def embed_table(model_dir: Path, table: pl.DataFrame, output_dir: Path, *, batch_size: int = 128) -> dict:
    """Embed every image of `table` (columns image_id, path, label, optional cache_path) and write `output_dir`.

    Returns the info written to info.json.
    """
    embedder = Embedder.from_pretrained(model_dir)
    device = "cuda" if torch.cuda.is_available() else "cpu"

    started = time.perf_counter()
    embeddings = embed_paths(embedder, image_source_paths(table), batch_size=batch_size, device=device)
    seconds = time.perf_counter() - started

    info = {
        "model_dir": str(model_dir),
        "model_fingerprint": model_fingerprint(model_dir),
        "resolution": embedder.preprocessing.resolution,
        "dimension": int(embeddings.shape[1]),
        "num_images": int(embeddings.shape[0]),
        "images_per_second": len(table) / seconds if seconds > 0 else None,
    }
    with atomic_path(output_dir) as temporary:
        temporary.mkdir()
        np.save(temporary / EMBEDDINGS_FILE, embeddings)
        table.select("image_id", "path", "label").write_parquet(temporary / ROWS_FILE)
        write_json(temporary / INFO_FILE, info)
    logger.info("Embedded %d images from %s at %.1f images/s", len(table), model_dir, info["images_per_second"] or 0)
    return info


def load_embeddings(directory: Path) -> StoredEmbeddings:
    """Read an embeddings directory and check that its three files agree."""
    directory = Path(directory)
    for name in (EMBEDDINGS_FILE, ROWS_FILE, INFO_FILE):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name} not found; run `dvc repro embed` to write it")

    embeddings = np.load(directory / EMBEDDINGS_FILE)
    rows = pl.read_parquet(directory / ROWS_FILE)
    info = read_json(directory / INFO_FILE)
    if embeddings.ndim != 2 or embeddings.shape[0] != len(rows) or embeddings.shape[1] != info["dimension"]:
        raise ValueError(
            f"{directory} is inconsistent: embeddings {embeddings.shape}, {len(rows)} rows, "
            f"dimension {info['dimension']} in {INFO_FILE}; delete it and run `dvc repro embed`"
        )
    return StoredEmbeddings(embeddings.astype(np.float32, copy=False), rows, info)
