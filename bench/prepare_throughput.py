"""Measure prepare throughput and the image cache's read speed-up on generated JPEGs.

Usage: python bench/prepare_throughput.py [--images 10000] [--workdir /tmp/prepare-bench]
       [--shorter-side 256] [--resolution 224] [--read-sample 1000]

Writes `images` JPEG photos of SOP-like sizes (sides drawn uniformly from 400
to 1000 pixels, quality 90, smooth random content so that they compress like
photos) into an ImageFolder tree of 5 images per class, then times:

1. prepare: `prepare_dataset` with the image cache (check every image and
   write the resized copies), in images/s;
2. reading for training: decode + resize to `resolution` x `resolution`
   (what `ImageDataset` does) from the originals and from the cache, over the
   same `read-sample` images, in images/s on one thread.

Prints the figures as Markdown table rows.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image

from image_retrieval.config import ModelConfig, PrepareConfig
from image_retrieval.data.prepare import image_source_paths, prepare_dataset, scan_image_folder
from image_retrieval.model.embedder import PreprocessingConfig, image_to_tensor
from image_retrieval.data.images import load_rgb

IMAGES_PER_CLASS = 5


def write_images(root: Path, count: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for index in range(count):
        class_dir = root / f"class_{index // IMAGES_PER_CLASS:05d}"
        class_dir.mkdir(parents=True, exist_ok=True)
        width, height = (int(side) for side in rng.integers(400, 1001, size=2))
        # A coarse random grid upsampled bilinearly: smooth like a photo, different per image.
        coarse = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR)
        image.save(class_dir / f"{index:06d}.jpg", quality=90)


def read_rate(paths: list[str], preprocessing: PreprocessingConfig) -> float:
    started = time.perf_counter()
    for path in paths:
        image_to_tensor(load_rgb(path), preprocessing)
    return len(paths) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/prepare-bench"))
    parser.add_argument("--shorter-side", type=int, default=256)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--read-sample", type=int, default=1000)
    args = parser.parse_args()

    images_root = args.workdir / "images"
    if not images_root.is_dir() or sum(1 for _ in images_root.rglob("*.jpg")) != args.images:
        shutil.rmtree(args.workdir, ignore_errors=True)
        started = time.perf_counter()
        write_images(images_root, args.images)
        print(f"generated {args.images} JPEGs in {time.perf_counter() - started:.1f} s")

    table = scan_image_folder(images_root)
    config = PrepareConfig(split="by_class", cache_shorter_side=args.shorter_side)
    output_dir = args.workdir / "prepared"
    started = time.perf_counter()
    prepare_dataset(table, config, output_dir)
    prepare_seconds = time.perf_counter() - started

    import polars as pl

    prepared = pl.concat([pl.read_parquet(output_dir / f"{split}.parquet") for split in ("train", "val", "test")])
    sample = prepared.sort("image_id").head(args.read_sample)
    model = ModelConfig(resolution=args.resolution)
    preprocessing = PreprocessingConfig(resolution=model.resolution, mean=model.mean, std=model.std)
    original_rate = read_rate(sample.get_column("path").to_list(), preprocessing)
    cached_rate = read_rate(image_source_paths(sample), preprocessing)
    original_bytes = sum(os.path.getsize(path) for path in sample.get_column("path"))
    cached_bytes = sum(os.path.getsize(path) for path in image_source_paths(sample))

    print(f"{os.cpu_count()} CPU cores, {platform.machine()}, {args.images} images")
    print("| measurement | value |")
    print("| --- | --- |")
    print(f"| prepare (check + cache), images/s | {args.images / prepare_seconds:.1f} |")
    print(f"| prepare wall time, s | {prepare_seconds:.1f} |")
    print(f"| read + resize to {args.resolution} px from originals, images/s (1 thread) | {original_rate:.1f} |")
    print(f"| read + resize to {args.resolution} px from cache, images/s (1 thread) | {cached_rate:.1f} |")
    print(f"| speed-up | {cached_rate / original_rate:.2f}x |")
    print(f"| bytes per image, originals / cache | {original_bytes / len(sample):.0f} / {cached_bytes / len(sample):.0f} |")


if __name__ == "__main__":
    main()
