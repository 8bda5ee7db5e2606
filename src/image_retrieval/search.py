"""Query an index with a new image, after checking that the index belongs to the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from image_retrieval.data.images import load_rgb
from image_retrieval.index import load_index
from image_retrieval.model.embedder import Embedder, embed_paths, model_fingerprint


def search_image(image: Path, *, model_dir: Path, index_dir: Path, top_k: int = 5) -> list[tuple[float, str]]:
    """Embed `image` with the model in `model_dir` and return its `top_k` (score, path) neighbours.

    Raises IndexMismatchError when the index was built by another model.
    """
    # Decode the query first, so that a wrong path fails before the model loads.
    load_rgb(image)
    embedder = Embedder.from_pretrained(model_dir)
    index, metadata = load_index(
        index_dir, expected_fingerprint=model_fingerprint(model_dir), expected_dimension=embedder.embedding_dim
    )
    query = embed_paths(embedder, [str(image)], batch_size=1, show_progress=False)

    scores, rows = index.search(np.ascontiguousarray(query), min(top_k, index.ntotal))
    return [(float(score), metadata.paths[row]) for score, row in zip(scores[0], rows[0]) if row >= 0]
