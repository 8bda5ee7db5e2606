"""Fine-tune an embedder with LoRA and keep the epoch that is best on validation Recall@1."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, set_seed

from image_retrieval.config import TrainConfig
from image_retrieval.data.prepare import image_source_paths
from image_retrieval.distributed import check_process_count
from image_retrieval.metrics import evaluate_retrieval
from image_retrieval.model.embedder import Embedder, ImageDataset, embed_tensors
from image_retrieval.train.finetune import parameter_groups, prepare_backbone
from image_retrieval.train.augment import TrainAugmentation
from image_retrieval.train.checkpoint import CheckpointStore, random_states, restore_random_states
from image_retrieval.train.losses import MetricLoss, build_loss
from image_retrieval.train.sampler import build_class_balanced_sampler
from image_retrieval.train.step import backward_in_micro_batches, gather_labels, gather_with_gradient

logger = logging.getLogger(__name__)


@dataclass
class TrainSummary:
    best_epoch: int
    best_val_recall_at_1: float
    base_val_recall_at_1: float
    final_train_loss: float
    lora_modules: int
    epochs_run: int
    train_images_per_second: float
    seconds: float
    processes: int = 1

    def to_dict(self) -> dict:
        return {
            "best_epoch": self.best_epoch,
            "best_val_recall@1": self.best_val_recall_at_1,
            "base_val_recall@1": self.base_val_recall_at_1,
            "final_train_loss": self.final_train_loss,
            "lora_modules": self.lora_modules,
            "epochs_run": self.epochs_run,
            "train_images_per_second": self.train_images_per_second,
            "seconds": self.seconds,
            "processes": self.processes,
        }


def _mixed_precision(precision: str) -> str:
    if precision == "auto":
        return "bf16" if torch.cuda.is_available() else "no"
    return "bf16" if precision == "bf16" else "no"


def contiguous_labels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map class labels to 0 .. num_classes - 1 in ascending label order.

    Returns the mapped labels and the original label of each class index.
    Proxy-based losses index their proxies by label, so they need this form.
    Losses that only compare labels for equality give the same result either way.
    """
    classes, mapped = np.unique(labels, return_inverse=True)
    return mapped.astype(np.int64), classes


def cosine_schedule_with_warmup(warmup_steps: int, total_steps: int):
    """Return the learning-rate factor per optimizer step: linear warmup, then cosine decay to 0.

    During warmup, step s (from 0) uses (s + 1) / warmup_steps, so the last
    warmup step reaches the full rate. The cosine then decays from 1 to 0 over
    the remaining steps. With warmup_steps = 0 it is the plain cosine decay
    0.5 * (1 + cos(pi * step / total_steps)).
    """
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(
            f"warmup_steps={warmup_steps} must be at least 0 and below total_steps={total_steps}; "
            "lower train.warmup_epochs"
        )
    decay_steps = total_steps - warmup_steps

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup_steps, decay_steps) / decay_steps))

    return factor


def build_optimizer(
    model_parameters: list[torch.nn.Parameter] | list[dict], metric_loss: MetricLoss, config: TrainConfig
) -> torch.optim.AdamW:
    """Build AdamW over the model's parameters, plus the loss's own parameter groups.

    `model_parameters` is a list of parameters, trained at `train.lr`, or a
    list of parameter groups with their own `lr` (see `finetune.parameter_groups`).
    """
    model_groups = model_parameters if model_parameters and isinstance(model_parameters[0], dict) else [
        {"params": model_parameters}
    ]
    groups = [*model_groups, *metric_loss.extra_param_groups]
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


def _add_projection_head(embedder: Embedder, embedding_dim: int) -> None:
    """Give the embedder a new linear head from the backbone's hidden size to `embedding_dim`."""
    if embedder.head is not None:
        raise ValueError(
            f"train.embedding_dim={embedding_dim} adds a projection head, but the base model already has one "
            f"({embedder.head.in_features} to {embedder.head.out_features}); "
            "set train.embedding_dim to 0 to fine-tune the existing head"
        )
    hidden_size = embedder.backbone.config.hidden_size
    embedder.head = torch.nn.Linear(hidden_size, embedding_dim)
    logger.info("Projection head: linear %d to %d", hidden_size, embedding_dim)


def _val_recall_at_1(accelerator: Accelerator, embedder: Embedder, loader, labels: np.ndarray) -> float:
    """Compute val Recall@1 on the main process and return it on every process.

    `embedder` is the unwrapped model, so its forward pass needs no other
    process. The others wait for the result, which keeps model selection and
    early stopping identical everywhere.
    """
    result = [0.0]
    if accelerator.is_main_process:
        embeddings = embed_tensors(embedder, loader, accelerator.device)
        result[0] = evaluate_retrieval(embeddings, labels, recall_at=(1,)).recall_at_k[1]
    if accelerator.num_processes > 1:
        broadcast_object_list(result, from_process=0)
    return result[0]


def train_embedder(
    base_model_dir: Path,
    train_table: pl.DataFrame,
    val_table: pl.DataFrame,
    config: TrainConfig,
    output_dir: Path,
    live=None,
    checkpoints: CheckpointStore | None = None,
) -> TrainSummary:
    """Fine-tune the embedder in `base_model_dir` and save the best epoch, LoRA merged, to `output_dir`.

    `live` is an optional dvclive `Live` that receives the per-epoch training
    loss and validation Recall@1. With `checkpoints`, the state after every
    epoch is saved there, and a run that finds a checkpoint continues from it.
    On CPU the result equals that of an uninterrupted run bit for bit. Under
    `accelerate launch` every process embeds its own batch and the loss is
    computed on the batches of all processes. The test split is never read here.
    """
    started = time.perf_counter()
    set_seed(config.seed)
    accelerator = Accelerator(mixed_precision=_mixed_precision(config.precision))
    check_process_count(accelerator, "train.launcher")
    device = accelerator.device

    embedder = Embedder.from_pretrained(base_model_dir)
    lora_modules = prepare_backbone(embedder, config)
    # The head is created after LoRA, so that LoRA's random initialisation
    # does not depend on train.embedding_dim.
    if config.embedding_dim > 0:
        _add_projection_head(embedder, config.embedding_dim)

    train_labels = train_table["label"].to_numpy()
    # Batches carry class indices 0 .. num_classes - 1 instead of the table's
    # labels, which proxy_anchor requires. The sampler still reads the table's
    # labels, so the batches drawn do not depend on this mapping.
    train_class_indices, train_classes = contiguous_labels(train_labels)
    num_batches = len(train_table) // config.batch_size
    if num_batches == 0:
        raise ValueError(
            f"train.batch_size={config.batch_size} exceeds the {len(train_table)} training images; lower it"
        )
    sampler = build_class_balanced_sampler(train_labels, config.batch_size, config.images_per_class, num_batches)
    train_dataset = ImageDataset(
        image_source_paths(train_table),
        embedder.preprocessing,
        train_class_indices,
        horizontal_flip=config.horizontal_flip,
        augmentation=TrainAugmentation.from_config(config.augment),
    )
    train_loader = torch.utils.data.DataLoader(
        train_dataset, batch_size=config.batch_size, sampler=sampler, drop_last=True, num_workers=config.num_workers
    )

    val_labels = val_table["label"].to_numpy()
    val_loader = torch.utils.data.DataLoader(
        ImageDataset(image_source_paths(val_table), embedder.preprocessing),
        batch_size=config.batch_size,
        num_workers=config.num_workers,
    )

    metric_loss = build_loss(config, num_classes=len(train_classes), embedding_size=embedder.embedding_dim)
    metric_loss.to(device)
    if config.layer_lr_decay < 1.0:
        trainable = parameter_groups(embedder, config, embedder.backbone.config.num_hidden_layers)
    else:
        trainable = [parameter for parameter in embedder.parameters() if parameter.requires_grad]
    optimizer = build_optimizer(trainable, metric_loss, config)
    # One factor for every parameter group, so the proxies follow the same schedule.
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        cosine_schedule_with_warmup(num_batches * config.warmup_epochs, num_batches * config.epochs),
    )
    embedder, optimizer, train_loader, scheduler = accelerator.prepare(embedder, optimizer, train_loader, scheduler)
    model = accelerator.unwrap_model(embedder)

    trainable_names = [name for name, parameter in model.named_parameters() if parameter.requires_grad]
    checkpoint = checkpoints.load() if checkpoints is not None else None
    if checkpoint is None:
        base_val_recall = _val_recall_at_1(accelerator, model, val_loader, val_labels)
        best_epoch, best_recall, best_state = 0, -1.0, None
        images_seen, train_seconds, history, first_epoch = 0, 0.0, [], 1
    else:
        model.load_state_dict(checkpoint["trainable"], strict=False)
        metric_loss.loss.load_state_dict(checkpoint["loss"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        base_val_recall = checkpoint["base_val_recall"]
        best_epoch, best_recall, best_state = checkpoint["best_epoch"], checkpoint["best_recall"], checkpoint["best_state"]
        images_seen, train_seconds, history = checkpoint["images_seen"], checkpoint["train_seconds"], checkpoint["history"]
        first_epoch = checkpoint["epoch"] + 1
        restore_random_states(checkpoint["random"])
        # MPerClassSampler shuffles its class list in place, so the order is state too.
        sampler.labels = list(checkpoint["sampler_classes"])
        logger.info("Resuming after epoch %d from %s", checkpoint["epoch"], checkpoints.directory)
        if live is not None:
            for logged_loss, logged_recall in history:
                live.log_metric("train/loss", logged_loss)
                live.log_metric("val/recall@1", logged_recall)
                live.next_step()
    logger.info("Epoch 0 (base model): val Recall@1 %.4f", base_val_recall)

    def compute_loss(embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # Across processes the loss is computed on the global batch. In a single
        # process both gathers return their input unchanged.
        return metric_loss(gather_with_gradient(embeddings.float()), gather_labels(labels))

    epochs_run = first_epoch - 1
    mean_loss = history[-1][0] if history else float("nan")
    for epoch in range(first_epoch, config.epochs + 1):
        # A resumed run may have stopped early already.
        patience = config.early_stopping_patience
        if best_state is not None and patience > 0 and epoch - 1 - best_epoch >= patience:
            break
        epochs_run = epoch
        embedder.train()
        epoch_started = time.perf_counter()
        losses = []
        for pixels, labels in train_loader:
            loss = backward_in_micro_batches(
                embedder,
                lambda embeddings, labels=labels: compute_loss(embeddings, labels),
                pixels,
                config.accumulation_steps,
                no_sync=lambda: accelerator.no_sync(embedder),
            )
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            losses.append(loss.item())
            images_seen += len(pixels)
        train_seconds += time.perf_counter() - epoch_started

        val_recall = _val_recall_at_1(accelerator, model, val_loader, val_labels)
        mean_loss = float(np.mean(losses))
        logger.info("Epoch %d: train loss %.4f, val Recall@1 %.4f", epoch, mean_loss, val_recall)
        if live is not None:
            live.log_metric("train/loss", mean_loss)
            live.log_metric("val/recall@1", val_recall)
            live.next_step()

        if val_recall > best_recall:
            best_epoch, best_recall = epoch, val_recall
            best_state = {
                name: value.detach().clone() for name, value in model.state_dict().items() if name in trainable_names
            }
        history.append((mean_loss, val_recall))

        if checkpoints is not None and accelerator.is_main_process:
            checkpoints.save({
                "epoch": epoch,
                "trainable": {name: value for name, value in model.state_dict().items() if name in trainable_names},
                "loss": metric_loss.loss.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "base_val_recall": base_val_recall,
                "best_epoch": best_epoch,
                "best_recall": best_recall,
                "best_state": best_state,
                "images_seen": images_seen,
                "train_seconds": train_seconds,
                "history": history,
                "random": random_states(),
                "sampler_classes": list(sampler.labels),
            })

        patience = config.early_stopping_patience
        if patience > 0 and epoch - best_epoch >= patience and epoch < config.epochs:
            logger.info(
                "Early stopping after epoch %d: val Recall@1 has not improved for %d epochs (best %.4f at epoch %d)",
                epoch, patience, best_recall, best_epoch,
            )
            break

    model.load_state_dict(best_state, strict=False)
    if config.mode == "lora":
        model.backbone = model.backbone.merge_and_unload()
    if accelerator.is_main_process:
        model.to("cpu").save_pretrained(output_dir)
        if checkpoints is not None:
            checkpoints.clear()
    logger.info("Kept epoch %d (val Recall@1 %.4f); saved %s", best_epoch, best_recall, output_dir)

    return TrainSummary(
        best_epoch=best_epoch,
        best_val_recall_at_1=best_recall,
        base_val_recall_at_1=base_val_recall,
        final_train_loss=mean_loss,
        lora_modules=lora_modules,
        epochs_run=epochs_run,
        # Every process counts its own share of each global batch.
        train_images_per_second=images_seen * accelerator.num_processes / train_seconds,
        seconds=time.perf_counter() - started,
        processes=accelerator.num_processes,
    )
