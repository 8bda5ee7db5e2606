"""The `image-retrieval` command: search the built index and report the evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from image_retrieval.logs import configure_logging

console = Console()


@click.group()
@click.option("--log-level", default="WARNING", show_default=True, help="Logging level: DEBUG, INFO, WARNING or ERROR.")
def main(log_level: str) -> None:
    """Fine-tuned DINOv2 image search, built by the DVC pipeline in this repository."""
    configure_logging(log_level)


@main.command()
@click.argument("image", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--top-k", default=5, show_default=True, type=click.IntRange(min=1), help="Number of results to print.")
@click.option(
    "--model-dir", default=Path("models/finetuned"), show_default=True,
    type=click.Path(file_okay=False, path_type=Path), help="Saved embedder that embeds the query image.",
)
@click.option(
    "--index-dir", default=Path("data/index/finetuned"), show_default=True,
    type=click.Path(file_okay=False, path_type=Path), help="Index built from the same embedder.",
)
def search(image: Path, top_k: int, model_dir: Path, index_dir: Path) -> None:
    """Print the gallery images nearest to IMAGE, with their inner-product scores."""
    from image_retrieval.data.images import ImageError
    from image_retrieval.index import IndexMismatchError
    from image_retrieval.search import search_image

    try:
        results = search_image(image, model_dir=model_dir, index_dir=index_dir, top_k=top_k)
    except (ImageError, IndexMismatchError, FileNotFoundError) as error:
        raise click.ClickException(str(error)) from None

    table = Table(title=f"Nearest images to {image}")
    table.add_column("rank", justify="right")
    table.add_column("score", justify="right")
    table.add_column("image")
    for rank, (score, path) in enumerate(results, start=1):
        table.add_row(str(rank), f"{score:.4f}", path)
    console.print(table)


@main.command()
@click.option(
    "--metrics-file", default=Path("metrics/evaluate.json"), show_default=True,
    type=click.Path(dir_okay=False, path_type=Path), help="Output of the evaluate stage.",
)
def report(metrics_file: Path) -> None:
    """Print the base and fine-tuned models' test metrics side by side."""
    if not metrics_file.is_file():
        raise click.ClickException(f"{metrics_file} not found; run `dvc repro` first")
    results = json.loads(metrics_file.read_text())
    base, finetuned = results["base"], results["finetuned"]

    table = Table(title=f"Test split: {finetuned['num_queries']} queries ({results['protocol']})")
    table.add_column("metric")
    table.add_column("base", justify="right")
    table.add_column("fine-tuned", justify="right")
    table.add_column("difference", justify="right")
    for key in [name for name in base if name.startswith("recall@")] + ["map@r", "r_precision"]:
        difference = 100 * (finetuned[key] - base[key])
        difference_text = f"{difference:+.2f}"
        if difference > 0:
            difference_text = f"[green]{difference_text}[/green]"
        elif difference < 0:
            difference_text = f"[red]{difference_text}[/red]"
        table.add_row(key, f"{100 * base[key]:.2f}", f"{100 * finetuned[key]:.2f}", difference_text)
    console.print(table)
    console.print("Values in percent; difference in percentage points.")


@main.command()
@click.argument("name")
@click.option(
    "--params-file", default=Path("params.yaml"), show_default=True,
    type=click.Path(dir_okay=False, path_type=Path), help="Parameters the preset is checked against.",
)
def preset(name: str, params_file: Path) -> None:
    """Print presets/NAME.yaml as `-S key=value` arguments for `dvc exp run`.

    Use it as `dvc exp run $(image-retrieval preset sop-1gpu)`. The preset is
    applied to params.yaml in memory and validated first.
    """
    from image_retrieval.config import ParamsError
    from image_retrieval.presets import load_preset, set_param_arguments

    try:
        arguments = set_param_arguments(load_preset(name, params_file))
    except ParamsError as error:
        raise click.ClickException(str(error)) from None
    click.echo(" ".join(arguments))


@main.command(name="index")
@click.argument("catalog_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--model-dir", default=Path("models/finetuned"), show_default=True,
    type=click.Path(file_okay=False, path_type=Path), help="Saved embedder that embeds the catalog.",
)
@click.option(
    "--output", "output_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
    help="Index directory to write (index.faiss and metadata.json); query it with `search --index-dir`.",
)
@click.option(
    "--params-file", default=Path("params.yaml"), show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Reads the index and embed sections (factory, search parameters, batch size) from this file.",
)
def index_command(catalog_dir: Path, model_dir: Path, output_dir: Path, params_file: Path) -> None:
    """Embed every image under CATALOG_DIR and build a searchable index of them."""
    from image_retrieval.catalog import index_catalog
    from image_retrieval.config import EmbedConfig, IndexConfig, ParamsError, load_params
    from image_retrieval.data.images import ImageError

    try:
        # Outside a project, without params.yaml, the defaults apply.
        use_params = params_file.is_file()
        metadata = index_catalog(
            catalog_dir,
            model_dir,
            output_dir,
            index_config=load_params("index", params_file) if use_params else IndexConfig(),
            embed_config=load_params("embed", params_file) if use_params else EmbedConfig(),
        )
    except (ImageError, ParamsError, FileNotFoundError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    console.print(
        f"Indexed {metadata.num_vectors} images from {catalog_dir} into {output_dir} "
        f"({metadata.factory}, {metadata.dimension} dimensions)"
    )
