"""Class-balanced batches: P classes by K images each, from pytorch-metric-learning."""

from __future__ import annotations

from collections import Counter
from typing import Sequence

from pytorch_metric_learning.samplers import MPerClassSampler


class BatchCompositionError(ValueError):
    """The requested P x K batch cannot be drawn from the training classes."""


def build_class_balanced_sampler(
    labels: Sequence[int],
    batch_size: int,
    images_per_class: int,
    num_batches: int,
) -> MPerClassSampler:
    """Sample `num_batches` batches of `batch_size // images_per_class` classes by `images_per_class` images.

    Classes are drawn without replacement within a batch. Every class must
    have at least K images, because MPerClassSampler would otherwise repeat an
    image and make a positive pair of an image with itself. Draws come from
    numpy's global generator, which `accelerate.utils.set_seed` seeds.
    """
    if batch_size % images_per_class != 0:
        raise BatchCompositionError(
            f"train.batch_size={batch_size} is not a multiple of train.images_per_class={images_per_class}"
        )
    if images_per_class < 2:
        raise BatchCompositionError(
            f"train.images_per_class={images_per_class}: each class needs at least 2 images per batch to form a positive pair"
        )

    counts = Counter(int(label) for label in labels)
    classes_per_batch = batch_size // images_per_class
    if classes_per_batch > len(counts):
        raise BatchCompositionError(
            f"a batch of {batch_size} images with train.images_per_class={images_per_class} needs "
            f"{classes_per_batch} classes, but the training split has {len(counts)}; "
            f"lower train.batch_size to at most {len(counts) * images_per_class} or raise train.images_per_class"
        )

    smallest_label, smallest_count = min(counts.items(), key=lambda item: (item[1], item[0]))
    if smallest_count < images_per_class:
        raise BatchCompositionError(
            f"train.images_per_class={images_per_class} exceeds the {smallest_count} training images "
            f"of class {smallest_label}; lower train.images_per_class to {smallest_count} or less"
        )

    return MPerClassSampler(
        list(labels),
        m=images_per_class,
        batch_size=batch_size,
        length_before_new_iter=num_batches * batch_size,
    )
