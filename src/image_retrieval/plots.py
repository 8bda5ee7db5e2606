"""Pictures written by the evaluate stage: Recall@K curves and example queries."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from image_retrieval.data.images import load_rgb  # noqa: E402
from image_retrieval.io import atomic_path  # noqa: E402

CORRECT_COLOUR = "#1a9641"
WRONG_COLOUR = "#d7191c"


def plot_recall_curves(curves: dict[str, dict[int, float]], output_path: Path) -> None:
    """Draw Recall@K against K (log scale) for each model: `curves` maps model name to {K: recall}."""
    figure, axes = plt.subplots(figsize=(6, 4), dpi=120)
    for model_name, recall_at_k in curves.items():
        ks = sorted(recall_at_k)
        axes.plot(ks, [100 * recall_at_k[k] for k in ks], marker="o", label=model_name)
    axes.set_xscale("log")
    axes.set_xlabel("K")
    axes.set_ylabel("Recall@K (%)")
    axes.set_title("Recall@K on the test split")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    _save_figure(figure, output_path)


def plot_example_queries(
    queries: Sequence[tuple[str, int]],
    results_by_model: dict[str, np.ndarray],
    scores_by_model: dict[str, np.ndarray],
    gallery_paths: Sequence[str],
    gallery_labels: np.ndarray,
    output_path: Path,
) -> None:
    """Draw each query beside its top results for every model, marked right (green) or wrong (red) by label.

    `queries` lists (image path, label) per query. `results_by_model` maps a
    model name to gallery row indices [num_queries, top_k], one row per query,
    and `scores_by_model` to their inner products.
    """
    top_k = next(iter(results_by_model.values())).shape[1]
    num_rows = len(queries) * len(results_by_model)
    figure, axes_grid = plt.subplots(
        num_rows, top_k + 1, figsize=(1.4 * (top_k + 1), 1.5 * num_rows), dpi=100, squeeze=False
    )

    grid_row = 0
    for query_position, (query_path, query_label) in enumerate(queries):
        for model_name, results in results_by_model.items():
            axes = axes_grid[grid_row]
            _draw_tile(axes[0], query_path, f"query\n({model_name})", "black")
            scores = scores_by_model[model_name][query_position]
            for rank, gallery_row in enumerate(results[query_position], start=1):
                correct = gallery_labels[gallery_row] == query_label
                colour = CORRECT_COLOUR if correct else WRONG_COLOUR
                mark = "right" if correct else "wrong"
                _draw_tile(axes[rank], gallery_paths[gallery_row], f"#{rank} {scores[rank - 1]:.3f}\n{mark}", colour)
            grid_row += 1

    figure.suptitle("Example queries: green = same class as the query, red = other class")
    figure.tight_layout()
    _save_figure(figure, output_path)


def _draw_tile(axes, image_path: str, title: str, frame_colour: str) -> None:
    axes.imshow(load_rgb(image_path))
    axes.set_title(title, fontsize=8)
    axes.set_xticks([])
    axes.set_yticks([])
    for spine in axes.spines.values():
        spine.set_edgecolor(frame_colour)
        spine.set_linewidth(3)


def _save_figure(figure, output_path: Path) -> None:
    with atomic_path(output_path) as temporary:
        figure.savefig(temporary, format="png")
    plt.close(figure)
