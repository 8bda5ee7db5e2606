"""Embed and index a folder of catalog images outside the pipeline (`image-retrieval index DIR`).

The result is an index directory like the pipeline's data/index/<model>, so
`image-retrieval search --index-dir` queries it and rejects queries embedded by
another model.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import polars as pl

from image_retrieval.config import EmbedConfig, IndexConfig
from image_retrieval.data.cache import check_images
from image_retrieval.data.prepare import IMAGE_EXTENSIONS
from image_retrieval.embed import embed_table
from image_retrieval.index import IndexMetadata, index_embeddings

logger = logging.getLogger(__name__)

# Catalog images outside the pipeline have no class; their rows carry this label.
NO_LABEL = -1


def list_catalog_images(catalog_dir: Path) -> pl.DataFrame:
    """List every image under `catalog_dir`, at any depth, sorted by path.

    Returns a table with image_id (the path relative to `catalog_dir`), path and
    label (NO_LABEL). Raises FileNotFoundError for a missing folder and
    ValueError for a folder without images.
    """
    catalog_dir = Path(catalog_dir)
    if not catalog_dir.is_dir():
        raise FileNotFoundError(f"catalog folder {catalog_dir} not found; pass a folder of images")
    paths = sorted(
        path for path in catalog_dir.rglob("*") if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not paths:
        raise ValueError(
            f"no images in {catalog_dir}; expected files ending in {', '.join(sorted(IMAGE_EXTENSIONS))}"
        )
    return pl.DataFrame(
        {
            "image_id": [path.relative_to(catalog_dir).as_posix() for path in paths],
            "path": [str(path) for path in paths],
            "label": [NO_LABEL] * len(paths),
        },
        schema={"image_id": pl.String, "path": pl.String, "label": pl.Int64},
    )


def index_catalog(
    catalog_dir: Path,
    model_dir: Path,
    output_dir: Path,
    *,
    index_config: IndexConfig,
    embed_config: EmbedConfig,
) -> IndexMetadata:
    """Check, embed and index every image under `catalog_dir` with the embedder in `model_dir`.

    Every image is decoded first: one unreadable file stops the command with a
    list of all of them, before any embedding. `output_dir` receives index.faiss
    and metadata.json and appears only when complete.
    """
    table = list_catalog_images(catalog_dir)
    logger.info("Checking %d catalog images in %s", table.height, catalog_dir)
    check_images(
        table.get_column("path").to_list(),
        num_workers=0,
        advice="Replace or delete these files, then run `image-retrieval index` again.",
    )

    with tempfile.TemporaryDirectory(prefix="catalog-embeddings-") as scratch:
        embeddings_dir = Path(scratch) / "embeddings"
        embed_table(Path(model_dir), table, embeddings_dir, embed_config)
        return index_embeddings(embeddings_dir, index_config, Path(output_dir))
