"""End to end: real `dvc repro` and `dvc exp run` in a temporary git repository.

The pipeline runs on 48 demo images and a tiny random DINOv2 saved with
save_pretrained, so every stage runs for real in about a minute.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO_ROOT, copy_demo_subset, make_sop_archive, save_tiny_dinov2

PROJECT_FILES = ("dvc.yaml", "params.yaml", "stages", "src")
ALL_STAGES = (
    "fetch@data", "fetch@model", "prepare", "train",
    "embed@base", "embed@finetuned", "index@base", "index@finetuned", "evaluate",
)


def run(command: list[str], cwd: Path, extra_environment: dict[str, str] | None = None) -> str:
    environment = dict(os.environ)
    environment.update(extra_environment or {})
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"
    environment["IMAGE_RETRIEVAL_LOG_LEVEL"] = "WARNING"
    completed = subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=600)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, f"{' '.join(command)} failed:\n{output}"
    return output


@pytest.fixture(scope="module")
def pipeline_repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("pipeline")
    for name in PROJECT_FILES:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, repo / name)
    copy_demo_subset(repo / "data" / "demo" / "images", num_classes=4, images_per_class=12)
    save_tiny_dinov2(repo / "tiny-dinov2")

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["model"].update(name="tiny-dinov2", resolution=28)
    params["prepare"].update(val_fraction=0.25, test_fraction=0.25)
    params["train"].update(epochs=2, batch_size=8, images_per_class=2)
    params["embed"].update(batch_size=16)
    params["evaluate"].update(recall_at=[1, 10], example_queries=2, example_top_k=3)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    run(["git", "init", "-q"], repo)
    run(["git", "config", "user.email", "test@example.com"], repo)
    run(["git", "config", "user.name", "Test"], repo)
    run(["dvc", "init", "-q"], repo)
    run(["dvc", "config", "core.analytics", "false"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "Project files"], repo)
    return repo


def test_repro_runs_every_stage(pipeline_repo: Path) -> None:
    output = run(["dvc", "repro"], pipeline_repo)

    for stage in ALL_STAGES:
        assert f"Running stage '{stage}'" in output

    results = json.loads((pipeline_repo / "metrics" / "evaluate.json").read_text())
    for model in ("base", "finetuned"):
        assert 0.0 <= results[model]["recall@1"] <= 1.0
        assert results[model]["num_queries"] == 12
        assert results[model]["index_recall@10_vs_exact"] == 1.0
        assert results[model]["index_latency_p50_ms"] > 0
    worst_queries = (pipeline_repo / "metrics" / "worst_queries.csv").read_text().splitlines()
    assert worst_queries[0].startswith("image_id,path,label_name")
    assert len(worst_queries) == 1 + 12
    assert (pipeline_repo / "metrics" / "plots" / "recall_at_k.png").stat().st_size > 0
    assert (pipeline_repo / "metrics" / "plots" / "example_queries.png").stat().st_size > 0
    assert (pipeline_repo / "models" / "finetuned" / "embedder.json").is_file()


def test_repro_again_does_nothing(pipeline_repo: Path) -> None:
    output = run(["dvc", "repro"], pipeline_repo)

    assert "Running stage" not in output
    status = run(["dvc", "status", "--json"], pipeline_repo)
    assert json.loads(status) == {}


def test_exp_run_reruns_only_train_onwards(pipeline_repo: Path) -> None:
    run(["git", "add", "-A"], pipeline_repo)
    run(["git", "commit", "-q", "-m", "Baseline"], pipeline_repo)

    output = run(["dvc", "exp", "run", "-S", "train.lr=1e-2"], pipeline_repo)

    for stage in ("train", "embed@finetuned", "index@finetuned", "evaluate"):
        assert f"Running stage '{stage}'" in output
    for stage in ("fetch@data", "fetch@model", "prepare", "embed@base", "index@base"):
        assert f"Running stage '{stage}'" not in output

    diff = json.loads(run(["dvc", "metrics", "diff", "--json"], pipeline_repo))
    train_diff = diff["metrics/train.json"]
    assert train_diff["final_train_loss"]["diff"] != 0

    experiments = json.loads(run(["dvc", "exp", "show", "--json"], pipeline_repo))
    experiments_json = json.dumps(experiments)
    assert "0.01" in experiments_json
    assert "final_train_loss" in experiments_json


def test_exp_run_with_catalog_gallery(pipeline_repo: Path, tmp_path: Path) -> None:
    # Three of the four test classes, with images the dataset does not contain.
    catalog = copy_demo_subset(tmp_path / "catalog", num_classes=3, images_per_class=5, skip=20)
    params_path = pipeline_repo / "params.yaml"
    original = params_path.read_text()

    try:
        output = run(["dvc", "exp", "run", "-S", f"data.gallery={catalog}"], pipeline_repo)
    finally:
        # Later tests expect the test split as the gallery.
        params_path.write_text(original)

    for stage in ("fetch@data", "prepare", "embed@base", "embed@finetuned", "index@finetuned", "evaluate"):
        assert f"Running stage '{stage}'" in output
    assert "Running stage 'train'" not in output
    results = json.loads((pipeline_repo / "metrics" / "evaluate.json").read_text())
    assert results["protocol"].startswith("test split queries against the catalog")
    # The queries of the class without catalog images have no relevant image.
    assert results["finetuned"]["num_queries"] == 9
    assert results["finetuned"]["num_excluded_queries"] == 3
    index_metadata = json.loads((pipeline_repo / "data" / "index" / "finetuned" / "metadata.json").read_text())
    assert index_metadata["num_vectors"] == 15
    assert all(row_id.startswith("gallery/") for row_id in index_metadata["row_ids"])
    worst_queries = (pipeline_repo / "metrics" / "worst_queries.csv").read_text()
    assert "data/raw/gallery/" in worst_queries


def test_exp_run_with_jsonl_positives_gallery(pipeline_repo: Path, tmp_path: Path) -> None:
    # Pairs of consecutive demo images per class: the first is the query, the second its positive.
    images = copy_demo_subset(tmp_path / "pairs" / "images", num_classes=4, images_per_class=12, skip=40)
    lines = []
    for label, class_dir in enumerate(sorted(images.iterdir())):
        names = sorted(path.name for path in class_dir.iterdir())
        for query, positive in zip(names[0::2], names[1::2]):
            lines.append(json.dumps({
                "query_image": f"{class_dir.name}/{query}", "positive": f"{class_dir.name}/{positive}", "label": label,
            }))
    pair_file = tmp_path / "pairs" / "pairs.jsonl"
    pair_file.write_text("\n".join(lines) + "\n")
    params_path = pipeline_repo / "params.yaml"
    original = params_path.read_text()

    try:
        run(
            ["dvc", "exp", "run", "-S", "data.dataset=jsonl", "-S", f"data.jsonl.source={pair_file}",
             "-S", f"data.jsonl.image_root={images}", "-S", "data.gallery=positives"],
            pipeline_repo,
        )
    finally:
        params_path.write_text(original)

    results = json.loads((pipeline_repo / "metrics" / "evaluate.json").read_text())
    assert results["protocol"].startswith("JSONL query images against the positive images")
    prepared = json.loads((pipeline_repo / "metrics" / "prepare.json").read_text())
    queries, positives = prepared["gallery"]["queries"], prepared["gallery"]["images"]
    assert queries + positives == prepared["test"]["images"]
    finetuned = results["finetuned"]
    assert finetuned["num_queries"] + finetuned["num_excluded_queries"] == queries
    index_metadata = json.loads((pipeline_repo / "data" / "index" / "finetuned" / "metadata.json").read_text())
    assert index_metadata["num_vectors"] == positives


def test_index_command_builds_searchable_catalog(pipeline_repo: Path, tmp_path: Path) -> None:
    catalog = copy_demo_subset(tmp_path / "shop", num_classes=2, images_per_class=3, skip=30)
    query = next(catalog.glob("*/*.png"))

    built = run(["image-retrieval", "index", str(catalog), "--output", str(tmp_path / "shop-index")], pipeline_repo)
    found = run(
        ["image-retrieval", "search", str(query), "--index-dir", str(tmp_path / "shop-index"), "--top-k", "2"],
        pipeline_repo,
        # Wide enough that rich does not wrap the long temporary paths.
        {"COLUMNS": "300"},
    )

    assert "Indexed 6 images" in built
    assert str(query) in found


def test_index_command_lists_bad_catalog_images(pipeline_repo: Path, tmp_path: Path) -> None:
    catalog = copy_demo_subset(tmp_path / "shop", num_classes=1, images_per_class=2, skip=30)
    broken = next(catalog.glob("*/*.png"))
    broken.write_bytes(b"truncated")
    environment = dict(os.environ)
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"

    completed = subprocess.run(
        ["image-retrieval", "index", str(catalog), "--output", str(tmp_path / "shop-index")],
        cwd=pipeline_repo, env=environment, capture_output=True, text=True, timeout=600,
    )

    assert completed.returncode != 0
    assert broken.name in completed.stderr
    assert not (tmp_path / "shop-index").exists()


def test_exp_run_on_sop_archive(pipeline_repo: Path, tmp_path: Path) -> None:
    archive = make_sop_archive(tmp_path / "sop.zip", train_classes=8, test_classes=4, images_per_class=4)

    output = run(
        ["dvc", "exp", "run", "-S", "data.dataset=sop", "-S", f"data.sop.source={archive}",
         "-S", "data.sop.md5=''", "-S", "prepare.val_fraction=0.25"],
        pipeline_repo,
    )

    for stage in ALL_STAGES:
        if stage != "fetch@model":
            assert f"Running stage '{stage}'" in output
    assert "Running stage 'fetch@model'" not in output
    results = json.loads((pipeline_repo / "metrics" / "evaluate.json").read_text())
    assert results["finetuned"]["num_queries"] == 16
    by_super_class = json.loads((pipeline_repo / "metrics" / "evaluate_by_super_class.json").read_text())
    assert by_super_class["finetuned"], "SOP test classes have super-classes"
    assert sum(group["num_queries"] for group in by_super_class["finetuned"].values()) == 16
    prepared = json.loads((pipeline_repo / "metrics" / "prepare.json").read_text())
    assert prepared["test"]["classes"] == 4
    assert prepared["val"]["classes"] == 2


def test_model_change_keeps_data(pipeline_repo: Path) -> None:
    save_tiny_dinov2(pipeline_repo / "other-dinov2")
    params_path = pipeline_repo / "params.yaml"
    original = params_path.read_text()
    params = yaml.safe_load(original)
    params["model"]["name"] = "other-dinov2"
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        changed = json.loads(run(["dvc", "status", "--json"], pipeline_repo))
    finally:
        params_path.write_text(original)

    assert "fetch@model" in changed
    assert "fetch@data" not in changed
    assert "prepare" not in changed


def test_search_prints_nearest_images(pipeline_repo: Path) -> None:
    query = next((pipeline_repo / "data" / "demo" / "images").glob("*/*.png"))

    output = run(["image-retrieval", "search", str(query), "--top-k", "3"], pipeline_repo)

    assert "rank" in output
    assert output.count("data/raw/") == 3


def test_search_rejects_other_models_index(pipeline_repo: Path) -> None:
    query = next((pipeline_repo / "data" / "demo" / "images").glob("*/*.png"))
    environment = dict(os.environ)
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"

    completed = subprocess.run(
        ["image-retrieval", "search", str(query), "--index-dir", "data/index/base"],
        cwd=pipeline_repo, env=environment, capture_output=True, text=True,
    )

    assert completed.returncode != 0
    assert "model fingerprint" in completed.stderr


def test_search_missing_image_named(pipeline_repo: Path) -> None:
    environment = dict(os.environ)
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"

    completed = subprocess.run(
        ["image-retrieval", "search", "no-such-photo.jpg"],
        cwd=pipeline_repo, env=environment, capture_output=True, text=True,
    )

    assert completed.returncode != 0
    assert "no-such-photo.jpg" in completed.stderr


def _set_train_launcher(repo: Path, launcher: str) -> str:
    """Write train.launcher into the repo's params.yaml and return the previous file text."""
    params_path = repo / "params.yaml"
    original = params_path.read_text()
    params = yaml.safe_load(original)
    params["train"]["launcher"] = launcher
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    return original


def test_train_stage_runs_in_two_processes(pipeline_repo: Path) -> None:
    # accelerate's own launcher starts a single process on a machine without
    # GPUs, so the CPU test launches through torchrun, which accelerate reads.
    original = _set_train_launcher(pipeline_repo, "torchrun --standalone --nproc_per_node 2")
    try:
        output = run(["dvc", "repro", "--force", "--single-item", "train"], pipeline_repo, {"ACCELERATE_USE_CPU": "1"})
    finally:
        (pipeline_repo / "params.yaml").write_text(original)

    assert "Running stage 'train'" in output
    summary = json.loads((pipeline_repo / "metrics" / "train.json").read_text())
    assert summary["processes"] == 2
    assert summary["epochs_run"] == 2
    # Only the main process logs to dvclive: one row per epoch, not two.
    loss_rows = (pipeline_repo / "metrics" / "train" / "plots" / "metrics" / "train" / "loss.tsv").read_text()
    assert len(loss_rows.strip().splitlines()) == 1 + 2
    assert (pipeline_repo / "models" / "finetuned" / "embedder.json").is_file()


def test_train_stage_rejects_ungrouped_processes(pipeline_repo: Path) -> None:
    original = _set_train_launcher(pipeline_repo, "torchrun --standalone --nproc_per_node 2")
    environment = dict(os.environ)
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"
    environment.pop("ACCELERATE_USE_CPU", None)
    try:
        completed = subprocess.run(
            ["dvc", "repro", "--force", "--single-item", "train"],
            cwd=pipeline_repo, env=environment, capture_output=True, text=True, timeout=600,
        )
    finally:
        (pipeline_repo / "params.yaml").write_text(original)

    assert completed.returncode != 0
    assert "ACCELERATE_USE_CPU=1" in completed.stdout + completed.stderr
