"""Write the bundled demo dataset: a class-balanced Fashion-MNIST subset as PNG files.

Usage: python scripts/build_demo_data.py IDX_DIR [--per-class 300] [--output data/demo]

IDX_DIR contains t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz. The
first `per-class` images of each class in the Fashion-MNIST test file are
written to OUTPUT/images/<class name>/t10k-<index>.png, greyscale, 28 x 28.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from image_retrieval.data.fashion_mnist import CLASS_NAMES, read_fashion_mnist


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("idx_dir", type=Path)
    parser.add_argument("--per-class", type=int, default=300)
    parser.add_argument("--output", type=Path, default=Path("data/demo"))
    args = parser.parse_args()

    images, labels = read_fashion_mnist(
        args.idx_dir / "t10k-images-idx3-ubyte.gz", args.idx_dir / "t10k-labels-idx1-ubyte.gz"
    )
    for label, class_name in enumerate(CLASS_NAMES):
        class_dir = args.output / "images" / class_name
        class_dir.mkdir(parents=True, exist_ok=True)
        for index in np.flatnonzero(labels == label)[: args.per_class]:
            Image.fromarray(images[index], mode="L").save(class_dir / f"t10k-{index:05d}.png", optimize=True)


if __name__ == "__main__":
    main()
