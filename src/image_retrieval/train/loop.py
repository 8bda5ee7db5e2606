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
from accelerate.utils import set_seed

from image_retrieval.config import TrainConfig
from image_retrieval.data.prepare import image_source_paths
from image_retrieval.metrics import evaluate_retrieval
from image_retrieval.model.embedder import Embedder, ImageDataset, embed_tensors
from image_retrieval.model.lora import apply_lora
from image_retrieval.train.losses import build_loss
from image_retrieval.train.sampler import build_class_balanced_sampler

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
        }


def _mixed_precision(precision: str) -> str:
    if precision == "auto":
        return "bf16" if torch.cuda.is_available() else "no"
    return "bf16" if precision == "bf16" else "no"


def _val_recall_at_1(embedder: Embedder, loader, labels: np.ndarray, device: torch.device) -> float:
    embeddings = embed_tensors(embedder, loader, device)
    return evaluate_retrieval(embeddings, labels, recall_at=(1,)).recall_at_k[1]


def train_embedder(
    base_model_dir: Path,
    train_table: pl.DataFrame,
    val_table: pl.DataFrame,
    config: TrainConfig,
    output_dir: Path,
    live=None,
) -> TrainSummary:
    """Fine-tune the embedder in `base_model_dir` and save the best epoch, LoRA merged, to `output_dir`.

    `live` is an optional dvclive `Live` that receives the per-epoch training
    loss and validation Recall@1. The test split is never read here.
    """
    started = time.perf_counter()
    set_seed(config.seed)
    accelerator = Accelerator(mixed_precision=_mixed_precision(config.precision))
    device = accelerator.device

    embedder = Embedder.from_pretrained(base_model_dir)
    embedder.backbone, lora_modules = apply_lora(embedder.backbone, config.lora)

    train_labels = train_table["label"].to_numpy()
    num_batches = len(train_table) // config.batch_size
    if num_batches == 0:
        raise ValueError(
            f"train.batch_size={config.batch_size} exceeds the {len(train_table)} training images; lower it"
        )
    sampler = build_class_balanced_sampler(train_labels, config.batch_size, config.images_per_class, num_batches)
    train_dataset = ImageDataset(
        image_source_paths(train_table), embedder.preprocessing, train_labels, horizontal_flip=config.horizontal_flip
    )
    train_loader = torch.utils.data.DataLoader(train_dataset, batch_size=config.batch_size, sampler=sampler, drop_last=True)

    val_labels = val_table["label"].to_numpy()
    val_loader = torch.utils.data.DataLoader(
        ImageDataset(image_source_paths(val_table), embedder.preprocessing), batch_size=config.batch_size
    )

    loss_function = build_loss(config)
    trainable = [parameter for parameter in embedder.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    total_steps = num_batches * config.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
    )
    embedder, optimizer, train_loader, scheduler = accelerator.prepare(embedder, optimizer, train_loader, scheduler)
    model = accelerator.unwrap_model(embedder)

    base_val_recall = _val_recall_at_1(model, val_loader, val_labels, device)
    logger.info("Epoch 0 (base model): val Recall@1 %.4f", base_val_recall)

    best_epoch, best_recall, best_state = 0, -1.0, None
    images_seen, train_seconds = 0, 0.0
    for epoch in range(1, config.epochs + 1):
        embedder.train()
        epoch_started = time.perf_counter()
        losses = []
        for pixels, labels in train_loader:
            embeddings = embedder(pixels)
            loss = loss_function(embeddings.float(), labels)
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            losses.append(loss.item())
            images_seen += len(pixels)
        train_seconds += time.perf_counter() - epoch_started

        val_recall = _val_recall_at_1(model, val_loader, val_labels, device)
        mean_loss = float(np.mean(losses))
        logger.info("Epoch %d: train loss %.4f, val Recall@1 %.4f", epoch, mean_loss, val_recall)
        if live is not None:
            live.log_metric("train/loss", mean_loss)
            live.log_metric("val/recall@1", val_recall)
            live.next_step()

        if val_recall > best_recall:
            best_epoch, best_recall = epoch, val_recall
            best_state = {
                name: value.detach().clone()
                for name, value in model.state_dict().items()
                if "lora_" in name or name.startswith("head.")
            }

    model.load_state_dict(best_state, strict=False)
    model.backbone = model.backbone.merge_and_unload()
    model.to("cpu").save_pretrained(output_dir)
    logger.info("Kept epoch %d (val Recall@1 %.4f); saved %s", best_epoch, best_recall, output_dir)

    return TrainSummary(
        best_epoch=best_epoch,
        best_val_recall_at_1=best_recall,
        base_val_recall_at_1=base_val_recall,
        final_train_loss=mean_loss,
        lora_modules=lora_modules,
        epochs_run=config.epochs,
        train_images_per_second=images_seen / train_seconds,
        seconds=time.perf_counter() - started,
    )
