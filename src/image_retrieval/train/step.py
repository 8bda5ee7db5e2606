"""One optimisation step of a batch-wide metric-learning loss, split into micro-batches or processes.

Pair- and proxy-based losses compare every embedding of a batch with every
other one, so the batch cannot simply be cut in pieces whose gradients are
added: each piece would lose the negatives of the others. Two mechanisms
keep the batch whole:

- Across processes, `gather_with_gradient` concatenates the embeddings of all
  processes, and gradients flow back to the process that computed each row.
  Every process then computes the loss of the global batch.
- Within a process, `backward_in_micro_batches` first embeds the batch in
  micro-batches without storing activations. It computes the loss and its
  gradient with respect to the embeddings of the whole batch. Then it embeds
  each micro-batch again, this time with activations, and back-propagates
  that micro-batch's slice of the gradient. This is the gradient-cache
  technique of Gao et al., "Scaling Deep Contrastive Learning Batch Size
  under Memory Limited Setup", 2021. The parameter gradients equal those of
  one full-batch pass as long as the forward pass is deterministic (dropout off).
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
import torch.distributed as dist


class _GatherWithGradient(torch.autograd.Function):
    """Concatenate equal-sized [B, D] tensors of all processes; backward returns this process's rows."""

    @staticmethod
    def forward(ctx, local: torch.Tensor) -> torch.Tensor:
        world_size, rank = dist.get_world_size(), dist.get_rank()
        parts = [torch.empty_like(local) for _ in range(world_size)]
        dist.all_gather(parts, local.contiguous())
        ctx.rank, ctx.rows = rank, local.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, gradient: torch.Tensor) -> torch.Tensor:
        # Every process computed the same global loss, so the gradient of this
        # process's rows is the sum of the gradients that all processes found.
        gradient = gradient.contiguous().clone()
        dist.all_reduce(gradient, op=dist.ReduceOp.SUM)
        return gradient[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def gather_with_gradient(local: torch.Tensor) -> torch.Tensor:
    """Return the [world_size * B, ...] concatenation of every process's `local` [B, ...] tensor.

    Without an initialised process group, returns `local` unchanged. All
    processes must pass the same batch size. Gradients reach each process's
    own rows only, summed over processes, so that with DDP's averaging the
    parameter gradients equal those of one process given the global batch.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local
    sizes = [torch.zeros((), dtype=torch.long) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor(local.shape[0]))
    if len({int(size) for size in sizes}) != 1:
        raise ValueError(
            f"processes have different batch sizes {[int(size) for size in sizes]}; "
            "use drop_last=True so that every process gets full batches"
        )
    return _GatherWithGradient.apply(local)


def gather_labels(local: torch.Tensor) -> torch.Tensor:
    """Concatenate the label tensors of all processes, in process order (no gradient)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local
    parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, local.contiguous())
    return torch.cat(parts)


def backward_in_micro_batches(
    embed: Callable[[torch.Tensor], torch.Tensor],
    compute_loss: Callable[[torch.Tensor], torch.Tensor],
    pixels: torch.Tensor,
    num_micro_batches: int,
    no_sync: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> torch.Tensor:
    """Back-propagate `compute_loss(embed(pixels))` for the whole batch, holding one micro-batch of activations.

    `embed` maps pixels [b, 3, H, W] to embeddings [b, D]. `compute_loss` maps
    the embeddings of this process's whole batch [B, D] to a scalar. It may
    gather other processes' embeddings, and it may own parameters such as
    proxies, which receive their gradient directly. With `num_micro_batches` == 1 this
    is a plain forward and backward pass. `no_sync` suppresses DDP's gradient
    all-reduce for all but the last micro-batch. Returns the detached loss.
    """
    if num_micro_batches == 1:
        loss = compute_loss(embed(pixels))
        loss.backward()
        return loss.detach()

    chunks = pixels.chunk(num_micro_batches)
    with torch.no_grad():
        cached = torch.cat([embed(chunk) for chunk in chunks])
    cached = cached.detach().requires_grad_()
    loss = compute_loss(cached)
    loss.backward()

    gradients = cached.grad.split([len(chunk) for chunk in chunks])
    for index, (chunk, gradient) in enumerate(zip(chunks, gradients)):
        last = index == len(chunks) - 1
        with contextlib.nullcontext() if last else no_sync():
            embed(chunk).backward(gradient)
    return loss.detach()
