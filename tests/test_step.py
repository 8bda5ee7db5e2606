"""Micro-batches and processes see the whole contrastive batch: gradients equal one full-batch pass."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as multiprocessing
from pytorch_metric_learning import losses
from transformers import Dinov2Config, Dinov2Model

from image_retrieval.model.embedder import Embedder, PreprocessingConfig
from image_retrieval.train.step import backward_in_micro_batches, gather_labels, gather_with_gradient

BATCH = 16
TOLERANCE = 1e-5
WORKER_TIMEOUT_S = 120


def tiny_embedder() -> Embedder:
    """A two-layer DINOv2 with dropout off (the default config has none), identical for every seed-0 call."""
    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2,
                          image_size=28, patch_size=14)
    preprocessing = PreprocessingConfig(resolution=28, mean=(0.5,) * 3, std=(0.25,) * 3)
    backbone = Dinov2Model(config)
    # Only masked-image pre-training uses the mask token. A trainable parameter
    # without a gradient would keep DDP from ever all-reducing its bucket.
    backbone.embeddings.mask_token.requires_grad_(False)
    return Embedder(backbone, preprocessing).train()


def global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    pixels = torch.randn(BATCH, 3, 28, 28, generator=generator)
    labels = torch.arange(4).repeat_interleave(4)
    return pixels, labels


def full_batch_gradients(loss_function) -> tuple[float, dict[str, torch.Tensor]]:
    model = tiny_embedder()
    pixels, labels = global_batch()
    loss = backward_in_micro_batches(model, lambda embeddings: loss_function(embeddings, labels), pixels, 1)
    return float(loss), {
        name: parameter.grad.clone() for name, parameter in model.named_parameters() if parameter.grad is not None
    }


@pytest.mark.parametrize(
    "loss_function",
    [losses.SupConLoss(temperature=0.1), losses.MultiSimilarityLoss()],
    ids=["supcon", "multi_similarity"],
)
def test_micro_batches_match_full_batch(loss_function) -> None:
    expected_loss, expected = full_batch_gradients(loss_function)
    model = tiny_embedder()
    pixels, labels = global_batch()

    loss = backward_in_micro_batches(model, lambda embeddings: loss_function(embeddings, labels), pixels, 4)

    assert float(loss) == pytest.approx(expected_loss, abs=TOLERANCE)
    gradients = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    assert gradients.keys() == expected.keys()
    for name, gradient in gradients.items():
        assert torch.allclose(gradient, expected[name], atol=TOLERANCE, rtol=1e-4), name


def test_micro_batches_hold_fewer_activations() -> None:
    """Only one micro-batch is embedded with gradients at a time."""
    model = tiny_embedder()
    pixels, labels = global_batch()
    seen_sizes = []

    def embed(chunk: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            seen_sizes.append(len(chunk))
        return model(chunk)

    backward_in_micro_batches(embed, lambda e: losses.SupConLoss()(e, labels), pixels, 4)

    assert seen_sizes == [4, 4, 4, 4]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def two_process_worker(rank: int, port: int, output_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        model = torch.nn.parallel.DistributedDataParallel(tiny_embedder())
        pixels, labels = global_batch()
        local = slice(rank * BATCH // 2, (rank + 1) * BATCH // 2)
        local_labels = labels[local]
        loss_function = losses.SupConLoss(temperature=0.1)

        def compute_loss(embeddings: torch.Tensor) -> torch.Tensor:
            return loss_function(gather_with_gradient(embeddings), gather_labels(local_labels))

        loss = backward_in_micro_batches(model, compute_loss, pixels[local], 2, no_sync=model.no_sync)
        gradients = {
            name.removeprefix("module."): p.grad.clone() for name, p in model.named_parameters() if p.grad is not None
        }
        torch.save({"loss": float(loss), "gradients": gradients}, Path(output_dir) / f"rank{rank}.pt")
        # Both ranks finish their collectives before either tears the group down.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_two_processes_match_one(tmp_path: Path) -> None:
    expected_loss, expected = full_batch_gradients(losses.SupConLoss(temperature=0.1))

    context = multiprocessing.spawn(two_process_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=False)
    # A worker that has written its result but hangs while shutting down gloo
    # must not hang the suite: wait a bounded time, then stop what is left.
    deadline = time.monotonic() + WORKER_TIMEOUT_S
    while not context.join(timeout=1) and time.monotonic() < deadline:
        pass
    for process in context.processes:
        if process.is_alive():
            process.terminate()
            process.join(timeout=5)

    for rank in (0, 1):
        result_path = tmp_path / f"rank{rank}.pt"
        assert result_path.is_file(), f"rank {rank} wrote no result within {WORKER_TIMEOUT_S} s"
        result = torch.load(result_path)
        assert result["loss"] == pytest.approx(expected_loss, abs=TOLERANCE)
        assert result["gradients"].keys() == expected.keys()
        for name, gradient in result["gradients"].items():
            assert torch.allclose(gradient, expected[name], atol=TOLERANCE, rtol=1e-4), (rank, name)


def test_gather_without_process_group() -> None:
    local = torch.ones(3, 2)

    assert gather_with_gradient(local) is local
    assert gather_labels(torch.arange(3)).tolist() == [0, 1, 2]
