"""Embed a table of images with a saved embedder and store the vectors with their row order.

An embeddings directory contains:

    embeddings.npy   float32 or float16 [N, D] (embed.storage_dtype), L2-normalised rows
    rows.parquet     image_id, path, label: row i describes embeddings[i]
    info.json        model directory and fingerprint, resolution, dimension, storage dtype, throughput

Under a multi-process launcher each process embeds a shard of the rows, and
the main process gathers them, checks that every row came back exactly once,
and writes the directory alone.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import polars as pl
import torch
from accelerate import Accelerator

from image_retrieval.config import EmbedConfig
from image_retrieval.data.prepare import image_source_paths
from image_retrieval.distributed import check_process_count
from image_retrieval.io import atomic_path, read_json, write_json
from image_retrieval.model.embedder import (
    Embedder,
    ImageDataset,
    autocast_dtype,
    embed_batch,
    embedding_loader,
    embedding_progress,
    model_fingerprint,
)

logger = logging.getLogger(__name__)

EMBEDDINGS_FILE = "embeddings.npy"
ROWS_FILE = "rows.parquet"
# Subfolder of a model's embeddings directory with the catalog's embeddings, when data.gallery names a catalog.
GALLERY_SUBDIR = "gallery"
INFO_FILE = "info.json"
STORAGE_DTYPES = {"float32": np.float32, "float16": np.float16}
# Image ids listed in a row-coverage error, at most.
LISTED_IDS = 5


@dataclass
class StoredEmbeddings:
    embeddings: np.ndarray  # float32 [N, D]
    rows: pl.DataFrame      # N rows: image_id, path, label
    info: dict


class RowIndexedDataset(torch.utils.data.Dataset):
    """A dataset whose items are (item, row index), so that gathered results can be put back in row order."""

    def __init__(self, dataset: torch.utils.data.Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return self.dataset[index], index


def check_each_row_once(row_indices: np.ndarray, image_ids: Sequence[str]) -> None:
    """Raise ValueError unless `row_indices` contains each of 0 .. len(image_ids) - 1 exactly once.

    The message names duplicated and missing rows by image id and lists out-of-range indices.
    """
    num_rows = len(image_ids)
    row_indices = np.asarray(row_indices, dtype=np.int64)
    in_range = (row_indices >= 0) & (row_indices < num_rows)
    counts = np.bincount(row_indices[in_range], minlength=num_rows)
    duplicated = np.flatnonzero(counts > 1)
    missing = np.flatnonzero(counts == 0)
    out_of_range = row_indices[~in_range]
    if len(duplicated) == 0 and len(missing) == 0 and len(out_of_range) == 0:
        return

    def listed(rows: np.ndarray) -> str:
        names = ", ".join(str(image_ids[row]) for row in rows[:LISTED_IDS])
        return names + (", ..." if len(rows) > LISTED_IDS else "")

    problems = []
    if len(duplicated):
        problems.append(f"{len(duplicated)} image ids appear more than once ({listed(duplicated)})")
    if len(missing):
        problems.append(f"{len(missing)} image ids are missing ({listed(missing)})")
    if len(out_of_range):
        first = out_of_range[:LISTED_IDS].tolist()
        problems.append(f"{len(out_of_range)} row indices are outside 0..{num_rows - 1} ({first})")
    raise ValueError(
        f"the gathered embeddings do not contain each of the {num_rows} images exactly once: "
        f"{'; '.join(problems)}. Nothing was written. The images were sharded wrongly across processes; "
        "set embed.launcher to python to embed in one process"
    )


def embed_across_processes(
    accelerator: Accelerator,
    embedder: Embedder,
    paths: Sequence[str],
    image_ids: Sequence[str],
    config: EmbedConfig,
    *,
    show_progress: bool = True,
) -> np.ndarray | None:
    """Embed `paths`, sharded across accelerate's processes; return float32 [N, D] in path order on the main process.

    accelerate gives each process every num_processes-th batch and pads the
    last round with images from the start, so that all processes run the same
    number of batches. `gather_for_metrics` collects each round's batches and
    drops that padding. The main process then checks that each row came back
    exactly once and puts the rows back in path order. The other processes
    return None.
    """
    if len(paths) != len(image_ids):
        raise ValueError(f"{len(paths)} paths but {len(image_ids)} image ids; pass one id per path")
    # NOTE: only the CPU path (gloo) has been run. The CUDA path (NCCL gather, bf16 autocast) is untested.
    device = accelerator.device
    embedder.to(device).eval()
    if len(paths) == 0:
        return np.zeros((0, embedder.embedding_dim), dtype=np.float32) if accelerator.is_main_process else None
    dtype = autocast_dtype(config.precision, device)
    dataset = RowIndexedDataset(ImageDataset(paths, embedder.preprocessing))
    loader = accelerator.prepare_data_loader(
        embedding_loader(dataset, batch_size=config.batch_size, num_workers=config.num_workers, device=device)
    )

    gathered_embeddings: list[np.ndarray] = []
    gathered_rows: list[np.ndarray] = []
    show_progress = show_progress and accelerator.is_main_process
    with embedding_progress() if show_progress else contextlib.nullcontext() as progress:
        task = None if progress is None else progress.add_task("embedding", total=len(dataset))
        for pixels, rows in loader:
            embeddings = embed_batch(embedder, pixels, device, dtype)
            # Every process takes part in the gather, but only the main process keeps the result.
            all_embeddings, all_rows = accelerator.gather_for_metrics((embeddings, rows.to(device)))
            if accelerator.is_main_process:
                gathered_embeddings.append(all_embeddings.cpu().numpy())
                gathered_rows.append(all_rows.cpu().numpy())
                if progress is not None:
                    progress.advance(task, len(all_rows))

    if not accelerator.is_main_process:
        return None
    row_indices = np.concatenate(gathered_rows)
    check_each_row_once(row_indices, image_ids)
    embeddings = np.concatenate(gathered_embeddings).astype(np.float32, copy=False)
    ordered = np.empty_like(embeddings)
    ordered[row_indices] = embeddings
    return ordered


def embed_table(
    model_dir: Path, table: pl.DataFrame, output_dir: Path, config: EmbedConfig | None = None
) -> dict | None:
    """Embed every image of `table` (columns image_id, path, label, optional cache_path) and write `output_dir`.

    Runs in one process, or sharded across the processes of a launcher such as
    torchrun or `accelerate launch`. Returns the info written to info.json on
    the main process, which alone writes, and None on the others.
    """
    config = config or EmbedConfig()
    accelerator = Accelerator()
    check_process_count(accelerator, "embed.launcher")
    embedder = Embedder.from_pretrained(model_dir)
    image_ids = table.get_column("image_id").to_list()

    started = time.perf_counter()
    embeddings = embed_across_processes(accelerator, embedder, image_source_paths(table), image_ids, config)
    seconds = time.perf_counter() - started
    if embeddings is None:
        return None

    dtype = autocast_dtype(config.precision, accelerator.device)
    info = {
        "model_dir": str(model_dir),
        "model_fingerprint": model_fingerprint(model_dir),
        "resolution": embedder.preprocessing.resolution,
        "dimension": int(embedder.embedding_dim),
        "num_images": int(embeddings.shape[0]),
        "storage_dtype": config.storage_dtype,
        "precision": "fp32" if dtype is None else "bf16",
        "processes": accelerator.num_processes,
        "seconds": seconds,
        "images_per_second": len(table) / seconds if seconds > 0 else None,
    }
    # The rows are unit vectors in float32 already (see embed_batch), so a
    # float16 file stores the rounded unit vectors.
    stored = embeddings.astype(STORAGE_DTYPES[config.storage_dtype], copy=False)
    with atomic_path(output_dir) as temporary:
        temporary.mkdir()
        np.save(temporary / EMBEDDINGS_FILE, stored)
        table.select("image_id", "path", "label").write_parquet(temporary / ROWS_FILE)
        write_json(temporary / INFO_FILE, info)
    logger.info(
        "Embedded %d images from %s in %d process(es) at %.1f images/s",
        len(table), model_dir, accelerator.num_processes, info["images_per_second"] or 0,
    )
    return info


def throughput_metrics(info: dict) -> dict:
    """Select the embed stage's metrics from the info that `embed_table` returns."""
    return {
        "images": info["num_images"],
        "seconds": info["seconds"],
        "images_per_second": info["images_per_second"],
        "processes": info["processes"],
        "storage_dtype": info["storage_dtype"],
        "precision": info["precision"],
    }


def load_embeddings(directory: Path) -> StoredEmbeddings:
    """Read an embeddings directory, check that its three files agree, and return float32 embeddings."""
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
    if embeddings.dtype not in (np.float32, np.float16):
        raise ValueError(
            f"{directory / EMBEDDINGS_FILE} has dtype {embeddings.dtype}, expected float32 or float16; "
            "delete it and run `dvc repro embed`"
        )
    return StoredEmbeddings(embeddings.astype(np.float32, copy=False), rows, info)
