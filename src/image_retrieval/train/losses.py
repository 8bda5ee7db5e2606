"""Metric-learning losses, built from train parameters (pytorch-metric-learning implementations)."""

from __future__ import annotations

from pytorch_metric_learning import losses

from image_retrieval.config import TrainConfig


def build_loss(config: TrainConfig) -> losses.BaseMetricLossFunction:
    """Return the supervised contrastive loss (Khosla et al., 2020) at `train.temperature`.

    Every other image of the same class in the batch is a positive and every
    image of another class a negative; embeddings are compared by cosine similarity.
    """
    return losses.SupConLoss(temperature=config.temperature)
