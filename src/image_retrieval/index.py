"""A faiss index over stored embeddings, saved with metadata that every reader checks.

An index directory contains `index.faiss` and `metadata.json`. The metadata
records the fingerprint and resolution of the model that produced the
vectors, the dimension, and the image id and path of every row. Readers use
it to reject a query embedded by another model, or an index that no longer
matches its rows, before any search runs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import faiss
import numpy as np

from image_retrieval.config import IndexConfig
from image_retrieval.io import atomic_path, read_json, write_json

logger = logging.getLogger(__name__)

INDEX_FILE = "index.faiss"
METADATA_FILE = "metadata.json"


class IndexMismatchError(RuntimeError):
    """An index file is unreadable or does not match its metadata or the model asked to query it."""


@dataclass
class IndexMetadata:
    factory: str
    dimension: int
    num_vectors: int
    model_fingerprint: str
    resolution: int
    row_ids: list[str]
    paths: list[str]
    metric: str = "inner_product"
    build_seconds: float | None = None
    # faiss search parameters (nprobe, efSearch) that load_index applies.
    search_parameters: dict[str, int] = field(default_factory=dict)


def build_index(embeddings: np.ndarray, factory: str, *, seed: int = 0, train_sample: int = 100_000) -> faiss.Index:
    """Build an inner-product faiss index from a factory string and add every row.

    Indexes that need training (IVF, PQ) train on a seeded random sample of
    at most `train_sample` rows.
    """
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    try:
        index = faiss.index_factory(embeddings.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as error:
        raise ValueError(
            f"index.factory={factory!r} is not a valid faiss factory string ({error}); try 'Flat' or 'HNSW32'"
        ) from None

    # index_factory turns on polysemous training for IVF-PQ, which only serves
    # Hamming-distance filtering at search time (off by default) and dominates
    # the build time.
    inverted_lists = faiss.try_extract_index_ivf(index)
    if inverted_lists is not None:
        inverted_lists = faiss.downcast_index(inverted_lists)
    if isinstance(inverted_lists, faiss.IndexIVFPQ):
        inverted_lists.do_polysemous_training = False

    if not index.is_trained:
        rng = np.random.default_rng(seed)
        sample_size = min(train_sample, len(embeddings))
        num_lists = inverted_lists.nlist if inverted_lists is not None else 0
        if sample_size < num_lists:
            raise ValueError(
                f"index.factory={factory!r} has {num_lists} inverted lists but only {sample_size} vectors to "
                f"train them on; use at most one list per 39 vectors (for example IVF{max(1, sample_size // 39)},Flat) "
                "or Flat"
            )
        sample = embeddings[np.sort(rng.choice(len(embeddings), size=sample_size, replace=False))]
        index.train(sample)
    index.add(embeddings)
    return index


def apply_search_parameters(index: faiss.Index, parameters: dict[str, int], factory: str) -> None:
    """Set faiss search parameters such as {"nprobe": 16} or {"efSearch": 128} on `index`.

    Raises ValueError when a parameter does not apply to the index type, for
    example nprobe on an HNSW index.
    """
    space = faiss.ParameterSpace()
    for name, value in parameters.items():
        try:
            space.set_index_parameter(index, name, value)
        except RuntimeError:
            params_name = {"nprobe": "index.nprobe", "efSearch": "index.ef_search"}.get(name, name)
            raise ValueError(
                f"{params_name}={value} does not apply to index.factory={factory!r}; set it to 0 "
                "(nprobe applies to IVF indexes, ef_search to HNSW)"
            ) from None


def save_index(index: faiss.Index, metadata: IndexMetadata, directory: Path) -> None:
    """Write index.faiss and metadata.json into `directory` atomically."""
    with atomic_path(directory) as temporary:
        temporary.mkdir()
        faiss.write_index(index, str(temporary / INDEX_FILE))
        write_json(temporary / METADATA_FILE, asdict(metadata))


def load_index(
    directory: Path,
    *,
    expected_fingerprint: str | None = None,
    expected_dimension: int | None = None,
) -> tuple[faiss.Index, IndexMetadata]:
    """Read an index directory and check it against its metadata and the caller's model.

    Raises IndexMismatchError naming the file and the mismatching values.
    """
    directory = Path(directory)
    index_path, metadata_path = directory / INDEX_FILE, directory / METADATA_FILE
    for path in (index_path, metadata_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found; build the index with `dvc repro index`, or with "
                "`image-retrieval index DIR --output OUT` for a folder of images"
            )

    try:
        metadata = IndexMetadata(**read_json(metadata_path))
    except (ValueError, TypeError) as error:
        raise IndexMismatchError(f"{metadata_path} is not valid index metadata ({error}); rebuild the index") from None

    try:
        index = faiss.read_index(str(index_path))
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else "unknown error"
        raise IndexMismatchError(f"{index_path} is not a readable faiss index ({first_line}); rebuild the index") from None

    if index.d != metadata.dimension:
        raise IndexMismatchError(
            f"{index_path} has dimension {index.d} but {metadata_path} records {metadata.dimension}; rebuild the index"
        )
    if not index.ntotal == metadata.num_vectors == len(metadata.row_ids) == len(metadata.paths):
        raise IndexMismatchError(
            f"{index_path} contains {index.ntotal} vectors but {metadata_path} lists {metadata.num_vectors} "
            f"({len(metadata.row_ids)} row ids); rebuild the index"
        )
    if expected_dimension is not None and expected_dimension != metadata.dimension:
        raise IndexMismatchError(
            f"{index_path} contains {metadata.dimension}-dimensional vectors but the model outputs "
            f"{expected_dimension}; query it with the model that built it"
        )
    if expected_fingerprint is not None and expected_fingerprint != metadata.model_fingerprint:
        raise IndexMismatchError(
            f"{index_path} was built with model fingerprint {metadata.model_fingerprint[:12]}, but the model "
            f"given has {expected_fingerprint[:12]}; rebuild the index with `dvc repro` or pass the matching model"
        )
    try:
        apply_search_parameters(index, metadata.search_parameters, metadata.factory)
    except ValueError as error:
        raise IndexMismatchError(f"{metadata_path}: {error}") from None
    return index, metadata


def index_embeddings(embeddings_dir: Path, config: IndexConfig, output_dir: Path) -> IndexMetadata:
    """Build and save the index of one embeddings directory (the index stage and `image-retrieval index`)."""
    from image_retrieval.embed import load_embeddings

    stored = load_embeddings(embeddings_dir)
    started = time.perf_counter()
    index = build_index(stored.embeddings, config.factory, seed=config.seed, train_sample=config.train_sample)
    build_seconds = time.perf_counter() - started
    apply_search_parameters(index, config.search_parameters(), config.factory)
    metadata = IndexMetadata(
        factory=config.factory,
        dimension=int(stored.embeddings.shape[1]),
        num_vectors=int(index.ntotal),
        model_fingerprint=stored.info["model_fingerprint"],
        resolution=int(stored.info["resolution"]),
        row_ids=stored.rows["image_id"].to_list(),
        paths=stored.rows["path"].to_list(),
        build_seconds=build_seconds,
        search_parameters=config.search_parameters(),
    )
    save_index(index, metadata, output_dir)
    logger.info("Built %s index of %d vectors in %s (%.1f s)", config.factory, index.ntotal, output_dir, build_seconds)
    return metadata
