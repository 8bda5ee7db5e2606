"""Seeded synthetic embeddings with SOP-like classes, shared by the scale benchmarks.

Each class has a random unit centre. An embedding is its class centre plus
Gaussian noise of standard deviation `noise` per dimension, L2-normalised, so
that the inner product is cosine similarity as for the model's embeddings.

By default the centres and the noise span all `dimension` dimensions evenly,
a hard case for approximate search.
With `latent_dimension` m, centres and noise are drawn in m dimensions and
mapped into `dimension` by a random orthonormal basis, and `ambient_noise`
per dimension is added in all dimensions. This models embeddings that
concentrate near a low-dimensional subspace.
NOTE: how close either model is to DINOv2 embeddings of real images has not
been measured.
"""

from __future__ import annotations

import numpy as np

# The Stanford Online Products test split (Ebay_test.txt): 60,502 images of
# 11,316 products.
# NOTE: the class size range of 2 to 12 images is the range usually quoted for
# SOP. It was not checked against Ebay_test.txt.
SOP_TEST_IMAGES = 60_502
SOP_TEST_CLASSES = 11_316
MIN_CLASS_SIZE = 2
MAX_CLASS_SIZE = 12

# Rows generated per step, which bounds the float32 noise buffer at about
# 65,536 x dimension values.
GENERATION_CHUNK_ROWS = 65_536


def sop_like_class_sizes(num_vectors: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Draw [num_classes] class sizes from 2 to 12 that sum to num_vectors.

    Sizes are 2 plus a binomial draw on 0..10 whose mean makes the sizes
    average num_vectors / num_classes, then single images are moved until
    the sum is exact. This matches SOP's range and mean, not the exact shape
    of its size histogram.
    """
    if not MIN_CLASS_SIZE * num_classes <= num_vectors <= MAX_CLASS_SIZE * num_classes:
        raise ValueError(
            f"{num_vectors} vectors cannot form {num_classes} classes of {MIN_CLASS_SIZE} to "
            f"{MAX_CLASS_SIZE} images; pick num_classes between {-(-num_vectors // MAX_CLASS_SIZE)} "
            f"and {num_vectors // MIN_CLASS_SIZE}"
        )

    span = MAX_CLASS_SIZE - MIN_CLASS_SIZE
    success_probability = (num_vectors / num_classes - MIN_CLASS_SIZE) / span
    sizes = MIN_CLASS_SIZE + rng.binomial(span, success_probability, size=num_classes)

    while (difference := num_vectors - int(sizes.sum())) != 0:
        if difference > 0:
            adjustable, step = np.flatnonzero(sizes < MAX_CLASS_SIZE), 1
        else:
            adjustable, step = np.flatnonzero(sizes > MIN_CLASS_SIZE), -1
        chosen = rng.choice(adjustable, size=min(abs(difference), len(adjustable)), replace=False)
        sizes[chosen] += step
    return sizes


def clustered_embeddings(
    class_sizes: np.ndarray,
    dimension: int,
    noise: float,
    rng: np.random.Generator,
    *,
    latent_dimension: int | None = None,
    ambient_noise: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Return [N, dimension] float32 unit embeddings and their [N] int64 labels, in shuffled order.

    latent_dimension=None draws centres and noise in all dimensions and
    ignores ambient_noise. The module docstring describes both models.
    """
    if latent_dimension is not None and not 1 <= latent_dimension <= dimension:
        raise ValueError(f"latent_dimension must be from 1 to dimension={dimension}, got {latent_dimension}")

    num_classes = len(class_sizes)
    labels = rng.permutation(np.repeat(np.arange(num_classes, dtype=np.int64), class_sizes))

    center_dimension = dimension if latent_dimension is None else latent_dimension
    centers = rng.standard_normal((num_classes, center_dimension), dtype=np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    if latent_dimension is not None:
        # Q of a Gaussian matrix has orthonormal columns in a uniformly random subspace.
        basis = np.linalg.qr(rng.standard_normal((dimension, latent_dimension))).Q.astype(np.float32)

    embeddings = np.empty((len(labels), dimension), dtype=np.float32)
    for start in range(0, len(labels), GENERATION_CHUNK_ROWS):
        stop = min(start + GENERATION_CHUNK_ROWS, len(labels))
        block = centers[labels[start:stop]]
        block += np.float32(noise) * rng.standard_normal((stop - start, center_dimension), dtype=np.float32)
        if latent_dimension is not None:
            block = block @ basis.T
            block += np.float32(ambient_noise) * rng.standard_normal((stop - start, dimension), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        embeddings[start:stop] = block
    return embeddings, labels
