"""Training augmentations: random resized crop on PIL images, colour jitter on tensors.

Random numbers come from `generator`, or from torch's global generator when
it is None, which `accelerate.utils.set_seed` seeds. A disabled augmentation
draws nothing, so enabling none of them leaves the random stream unchanged.
"""

from __future__ import annotations

import math

import torch
from PIL import Image

from image_retrieval.config import AugmentConfig

# Aspect ratios (width / height) that the random crop draws from, log-uniformly.
CROP_ASPECT_RATIOS = (3 / 4, 4 / 3)
# Tries to draw a crop that fits inside the image before falling back to a centre crop.
CROP_ATTEMPTS = 10
# ITU-R BT.601 luma weights, the ones Pillow documents for Image.convert("L").
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def _draw_crop_box(
    width: int, height: int, scale: tuple[float, float], generator: torch.Generator | None
) -> tuple[int, int, int, int]:
    """Draw a (left, top, right, bottom) box with area fraction in `scale` and aspect ratio in CROP_ASPECT_RATIOS."""
    area = width * height
    log_ratio_low, log_ratio_high = (math.log(ratio) for ratio in CROP_ASPECT_RATIOS)

    for _ in range(CROP_ATTEMPTS):
        target_area = area * _uniform(scale[0], scale[1], generator)
        aspect_ratio = math.exp(_uniform(log_ratio_low, log_ratio_high, generator))
        crop_width = round(math.sqrt(target_area * aspect_ratio))
        crop_height = round(math.sqrt(target_area / aspect_ratio))
        if 0 < crop_width <= width and 0 < crop_height <= height:
            left = int(torch.randint(0, width - crop_width + 1, (), generator=generator))
            top = int(torch.randint(0, height - crop_height + 1, (), generator=generator))
            return left, top, left + crop_width, top + crop_height

    # No draw fitted (a very elongated image): take the largest centred crop
    # whose aspect ratio lies within CROP_ASPECT_RATIOS.
    aspect_ratio = min(max(width / height, CROP_ASPECT_RATIOS[0]), CROP_ASPECT_RATIOS[1])
    crop_width = min(width, round(height * aspect_ratio))
    crop_height = min(height, round(width / aspect_ratio))
    left = (width - crop_width) // 2
    top = (height - crop_height) // 2
    return left, top, left + crop_width, top + crop_height


def random_resized_crop(
    image: Image.Image,
    size: int,
    scale: tuple[float, float],
    generator: torch.Generator | None = None,
) -> Image.Image:
    """Crop a random region of `image` and resize it to `size` x `size` pixels (bicubic).

    The region covers a fraction of the image area drawn uniformly from
    `scale`, with an aspect ratio drawn log-uniformly from CROP_ASPECT_RATIOS.
    With scale (1.0, 1.0) nothing is drawn and the image is only resized.
    """
    if tuple(scale) == (1.0, 1.0):
        return image.resize((size, size), Image.Resampling.BICUBIC)
    box = _draw_crop_box(image.width, image.height, scale, generator)
    return image.resize((size, size), Image.Resampling.BICUBIC, box=box)


def _blend(image: torch.Tensor, other: torch.Tensor, factor: float) -> torch.Tensor:
    """Return factor * image + (1 - factor) * other, clamped to [0, 1]."""
    return (other + factor * (image - other)).clamp(0.0, 1.0)


def _luma(pixels: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor(LUMA_WEIGHTS, dtype=pixels.dtype, device=pixels.device).view(3, 1, 1)
    return (pixels * weights).sum(dim=0, keepdim=True)


def color_jitter(
    pixels: torch.Tensor,
    brightness: float = 0.0,
    contrast: float = 0.0,
    saturation: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Jitter brightness, contrast and saturation of RGB pixels [3, H, W] in [0, 1], in that order.

    Each factor is drawn uniformly from [max(0, 1 - value), 1 + value], and a
    value of 0 skips that adjustment without drawing. Brightness scales the
    pixels, contrast blends them with their mean luma, and saturation blends
    them with their per-pixel luma. The result is clamped to [0, 1].
    """
    if pixels.dim() != 3 or pixels.shape[0] != 3:
        raise ValueError(f"color_jitter expects RGB pixels of shape [3, H, W], got {tuple(pixels.shape)}")

    if brightness > 0:
        factor = _uniform(max(0.0, 1.0 - brightness), 1.0 + brightness, generator)
        pixels = _blend(pixels, torch.zeros_like(pixels), factor)
    if contrast > 0:
        factor = _uniform(max(0.0, 1.0 - contrast), 1.0 + contrast, generator)
        pixels = _blend(pixels, _luma(pixels).mean().expand_as(pixels), factor)
    if saturation > 0:
        factor = _uniform(max(0.0, 1.0 - saturation), 1.0 + saturation, generator)
        pixels = _blend(pixels, _luma(pixels).expand_as(pixels), factor)
    return pixels


class TrainAugmentation:
    """The random crop and colour jitter of `train.augment`, applied by ImageDataset to training images."""

    def __init__(
        self,
        crop_scale: tuple[float, float] = (1.0, 1.0),
        brightness: float = 0.0,
        contrast: float = 0.0,
        saturation: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> None:
        self.crop_scale = (float(crop_scale[0]), float(crop_scale[1]))
        self.brightness = brightness
        self.contrast = contrast
        self.saturation = saturation
        self.generator = generator

    @classmethod
    def from_config(cls, config: AugmentConfig) -> "TrainAugmentation":
        jitter = config.color_jitter
        return cls(
            crop_scale=tuple(config.random_resized_crop_scale),
            brightness=jitter.brightness,
            contrast=jitter.contrast,
            saturation=jitter.saturation,
        )

    @property
    def crops(self) -> bool:
        return self.crop_scale != (1.0, 1.0)

    @property
    def jitters(self) -> bool:
        return self.brightness > 0 or self.contrast > 0 or self.saturation > 0

    def crop(self, image: Image.Image, size: int) -> Image.Image:
        """Randomly crop `image` and resize it to `size` x `size`; return it unchanged when the crop is disabled."""
        if not self.crops:
            return image
        return random_resized_crop(image, size, self.crop_scale, self.generator)

    def jitter_normalized(
        self, pixels: torch.Tensor, mean: tuple[float, float, float], std: tuple[float, float, float]
    ) -> torch.Tensor:
        """Jitter colours of pixels normalised by `mean` and `std`; return them unchanged when jitter is disabled.

        The pixels are mapped back to [0, 1] for the jitter and normalised again.
        """
        if not self.jitters:
            return pixels
        mean_tensor = torch.tensor(mean, dtype=pixels.dtype).view(3, 1, 1)
        std_tensor = torch.tensor(std, dtype=pixels.dtype).view(3, 1, 1)
        unit_pixels = (pixels * std_tensor + mean_tensor).clamp(0.0, 1.0)
        jittered = color_jitter(unit_pixels, self.brightness, self.contrast, self.saturation, self.generator)
        return (jittered - mean_tensor) / std_tensor
