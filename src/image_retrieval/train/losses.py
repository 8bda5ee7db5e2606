"""Metric-learning losses, built from train parameters (pytorch-metric-learning implementations)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from pytorch_metric_learning import losses, miners

from image_retrieval.config import TrainConfig


@dataclass
class MetricLoss:
    """A loss, the miner that selects its pairs or triplets, and any parameters the loss itself trains.

    `extra_param_groups` are AdamW parameter groups for parameters that belong
    to the loss (the proxies of ProxyAnchorLoss), with their own learning rate.
    """

    loss: losses.BaseMetricLossFunction
    miner: miners.BaseMiner | None = None
    extra_param_groups: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Compute the loss of a batch, mining its pairs or triplets first when there is a miner."""
        if self.miner is None:
            return self.loss(embeddings, labels)
        return self.loss(embeddings, labels, self.miner(embeddings, labels))

    def to(self, device: torch.device | str) -> "MetricLoss":
        """Move the loss's own parameters (proxies) to `device`, keeping the same Parameter objects."""
        self.loss.to(device)
        return self


def build_loss(config: TrainConfig, *, num_classes: int, embedding_size: int) -> MetricLoss:
    """Build the loss that `train.loss` selects.

    `num_classes` and `embedding_size` size the proxies of `proxy_anchor`,
    whose labels must be 0 to num_classes - 1. The other losses only compare
    labels for equality. Every loss compares embeddings by cosine similarity,
    except `triplet`, which uses Euclidean distance between unit vectors.

    - supcon: supervised contrastive loss (Khosla et al., 2020) at
      `train.temperature`. Every other image of the same class in the batch
      is a positive and every image of another class a negative.
    - multi_similarity: MultiSimilarityLoss (Wang et al., 2019) on the pairs
      that MultiSimilarityMiner keeps.
    - proxy_anchor: ProxyAnchorLoss (Kim et al., 2020). Its proxies form an
      extra parameter group at `train.lr * train.proxy_anchor.lr_multiplier`
      with no weight decay, because cosine similarity ignores a proxy's norm
      and decay would only shrink it, which enlarges AdamW's angular steps.
    - triplet: TripletMarginLoss on the triplets that TripletMarginMiner
      keeps, both at `train.triplet.margin`.
    """
    if config.loss == "supcon":
        return MetricLoss(losses.SupConLoss(temperature=config.temperature))

    if config.loss == "multi_similarity":
        settings = config.multi_similarity
        return MetricLoss(
            losses.MultiSimilarityLoss(alpha=settings.alpha, beta=settings.beta, base=settings.base),
            miners.MultiSimilarityMiner(epsilon=settings.epsilon),
        )

    if config.loss == "proxy_anchor":
        if num_classes < 2:
            raise ValueError(
                f"train.loss='proxy_anchor' needs at least 2 training classes, got {num_classes}; "
                "use more classes or another train.loss"
            )
        settings = config.proxy_anchor
        loss = losses.ProxyAnchorLoss(
            num_classes=num_classes, embedding_size=embedding_size, margin=settings.margin, alpha=settings.alpha
        )
        proxy_group = {
            "params": list(loss.parameters()),
            "lr": config.lr * settings.lr_multiplier,
            "weight_decay": 0.0,
        }
        return MetricLoss(loss, extra_param_groups=[proxy_group])

    if config.loss == "triplet":
        settings = config.triplet
        return MetricLoss(
            losses.TripletMarginLoss(margin=settings.margin),
            miners.TripletMarginMiner(margin=settings.margin, type_of_triplets=settings.type_of_triplets),
        )

    raise ValueError(
        f"train.loss={config.loss!r} is invalid; expected one of: supcon, multi_similarity, proxy_anchor, triplet"
    )
