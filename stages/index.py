"""Index stage: `python stages/index.py {base|finetuned}` builds data/index/<name> from its embeddings."""

import sys
from pathlib import Path

from image_retrieval.config import load_params
from image_retrieval.embed import GALLERY_SUBDIR
from image_retrieval.index import index_embeddings
from image_retrieval.stage import run_stage

MODELS = ("base", "finetuned")


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1] not in MODELS:
        sys.exit("usage: python stages/index.py {base|finetuned}")
    model = sys.argv[1]
    embeddings_dir = Path("data/embeddings") / model
    # With data.gallery set to a catalog, the index contains the catalog, not the test split.
    gallery_dir = embeddings_dir / GALLERY_SUBDIR
    source_dir = gallery_dir if gallery_dir.is_dir() else embeddings_dir
    index_embeddings(source_dir, load_params("index"), Path("data/index") / model)


if __name__ == "__main__":
    run_stage(main)
