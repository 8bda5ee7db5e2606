"""Fetch and read each dataset kind into the common image table.

`data.dataset` selects the adapter. Every adapter returns the same columns
(image_id, path, label, label_name, super_label, split), so the stages after
prepare never know which dataset they are working on. `split` is "train" or
"test" where the dataset defines an official split (SOP) and null elsewhere.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import polars as pl

from image_retrieval.config import DataConfig
from image_retrieval.data.fetch import fetch_dataset
from image_retrieval.data.prepare import scan_image_folder
from image_retrieval.io import atomic_path

logger = logging.getLogger(__name__)

JSONL_FILE = "pairs.jsonl"
JSONL_IMAGES = "images"
# data.gallery's values for "the test split" and for "the positives of a JSONL pair file",
# and the folder of a fetched catalog under data/raw.
TEST_GALLERY = "test"
PAIR_GALLERY = "positives"
GALLERY_DIR = "gallery"


def fetch_raw_dataset(data: DataConfig, raw_dir: Path) -> Path:
    """Copy, extract or download the selected dataset into `raw_dir / data.dataset`."""
    destination = raw_dir / data.dataset
    if data.dataset == "demo":
        return fetch_dataset(data.demo.source, destination, parameter="data.demo.source")
    if data.dataset == "sop":
        return fetch_dataset(data.sop.source, destination, md5=data.sop.md5 or None, parameter="data.sop.source")
    if data.dataset == "folder":
        return fetch_dataset(data.folder.source, destination, parameter="data.folder.source")

    jsonl_path = Path(data.jsonl.source)
    if not jsonl_path.is_file():
        raise FileNotFoundError(f"data.jsonl.source={data.jsonl.source!r} not found; point it at a JSONL file")
    image_root = Path(data.jsonl.image_root) if data.jsonl.image_root else jsonl_path.parent
    with atomic_path(destination) as temporary:
        temporary.mkdir()
        fetch_dataset(str(image_root), temporary / JSONL_IMAGES, parameter="data.jsonl.image_root")
        shutil.copy2(jsonl_path, temporary / JSONL_FILE)
    return destination


def read_dataset(data: DataConfig, raw_dir: Path) -> pl.DataFrame:
    """Read the fetched dataset in `raw_dir / data.dataset` into the common image table."""
    root = raw_dir / data.dataset
    if data.dataset == "demo":
        return scan_image_folder(root / "images").with_columns(split=pl.lit(None, dtype=pl.String))
    if data.dataset == "sop":
        from image_retrieval.data.sop import read_sop

        return read_sop(root)
    if data.dataset == "folder":
        from image_retrieval.data.folder import read_folder

        return read_folder(root, layout=data.folder.layout)

    from image_retrieval.data.jsonl import read_jsonl

    return read_jsonl(root / JSONL_FILE, image_root=root / JSONL_IMAGES)


def fetch_gallery(data: DataConfig, raw_dir: Path) -> Path | None:
    """Copy, extract or download the catalog named by `data.gallery` into `raw_dir / GALLERY_DIR`.

    Returns None when the gallery is (part of) the test split, which needs no fetch.
    """
    if data.gallery in (TEST_GALLERY, PAIR_GALLERY):
        return None
    return fetch_dataset(data.gallery, raw_dir / GALLERY_DIR, parameter="data.gallery")


def read_gallery(data: DataConfig, raw_dir: Path) -> pl.DataFrame | None:
    """Read the fetched catalog into the common image table, or return None when the gallery is the test split.

    Image ids start with "gallery/", so they never collide with the dataset's ids.
    Returns None as well for JSONL positives, which are rows of the dataset.
    """
    if data.gallery in (TEST_GALLERY, PAIR_GALLERY):
        return None
    from image_retrieval.data.folder import read_folder

    return read_folder(raw_dir / GALLERY_DIR, layout="flat").with_columns(
        image_id=pl.lit(f"{GALLERY_DIR}/") + pl.col("image_id")
    )


def read_pair_roles_of_dataset(raw_dir: Path) -> tuple[set[str], set[str]]:
    """Return the query_image ids and positive ids of the fetched JSONL pair file."""
    from image_retrieval.data.jsonl import read_pair_roles

    root = raw_dir / "jsonl"
    return read_pair_roles(root / JSONL_FILE, image_root=root / JSONL_IMAGES)
