"""Training augmentations: random resized crop, colour jitter, and their place in ImageDataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from image_retrieval.config import ParamsError, load_params
from image_retrieval.model.embedder import ImageDataset, PreprocessingConfig, image_to_tensor
from image_retrieval.train.augment import TrainAugmentation, _luma, color_jitter, random_resized_crop

PREPROCESSING = PreprocessingConfig(resolution=28, mean=(0.5, 0.4, 0.3), std=(0.25, 0.2, 0.3))


def gradient_image(width: int = 40, height: int = 30) -> Image.Image:
    """An RGB image whose red channel grows left to right and green channel top to bottom."""
    red = np.tile(np.linspace(0, 255, width, dtype=np.uint8), (height, 1))
    green = np.tile(np.linspace(0, 255, height, dtype=np.uint8)[:, None], (1, width))
    blue = np.full((height, width), 128, dtype=np.uint8)
    return Image.fromarray(np.stack([red, green, blue], axis=-1))


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def mid_range_pixels(seed: int = 0) -> torch.Tensor:
    """Random RGB pixels in [0.3, 0.6], so that a jitter of up to 0.5 never needs clamping."""
    return 0.3 + 0.3 * torch.rand(3, 16, 16, generator=seeded(seed))


def test_crop_output_size() -> None:
    for seed in range(5):
        cropped = random_resized_crop(gradient_image(), 28, (0.2, 1.0), seeded(seed))

        assert cropped.size == (28, 28)
        assert image_to_tensor(cropped, PREPROCESSING).shape == (3, 28, 28)


def test_crop_deterministic_under_seed() -> None:
    first = np.asarray(random_resized_crop(gradient_image(), 28, (0.2, 0.6), seeded(3)))
    second = np.asarray(random_resized_crop(gradient_image(), 28, (0.2, 0.6), seeded(3)))
    other_seeds = [np.asarray(random_resized_crop(gradient_image(), 28, (0.2, 0.6), seeded(seed))) for seed in range(4, 8)]

    assert np.array_equal(first, second)
    assert any(not np.array_equal(first, other) for other in other_seeds)


def test_crop_takes_part_of_image() -> None:
    resized = np.asarray(gradient_image().resize((28, 28), Image.Resampling.BICUBIC))
    cropped = np.asarray(random_resized_crop(gradient_image(), 28, (0.25, 0.25), seeded(0)))

    assert not np.array_equal(cropped, resized)
    # A quarter of the area spans less of the red gradient than the whole image.
    red_range = int(cropped[..., 0].max()) - int(cropped[..., 0].min())
    assert red_range < int(resized[..., 0].max()) - int(resized[..., 0].min())


def test_crop_elongated_image_falls_back() -> None:
    # No crop of 90 % of a 20:1 image has an aspect ratio between 3:4 and 4:3.
    cropped = random_resized_crop(gradient_image(200, 10), 28, (0.9, 1.0), seeded(0))

    assert cropped.size == (28, 28)


def test_full_scale_crop_only_resizes() -> None:
    image = gradient_image()

    cropped = random_resized_crop(image, 28, (1.0, 1.0), seeded(0))

    assert np.array_equal(np.asarray(cropped), np.asarray(image.resize((28, 28), Image.Resampling.BICUBIC)))


def test_disabled_augmentation_unchanged() -> None:
    augmentation = TrainAugmentation()
    image = gradient_image()
    pixels = image_to_tensor(image, PREPROCESSING)
    state = torch.get_rng_state()

    assert augmentation.crop(image, 28) is image
    assert augmentation.jitter_normalized(pixels, PREPROCESSING.mean, PREPROCESSING.std) is pixels
    assert torch.equal(color_jitter(pixels.clamp(0, 1)), pixels.clamp(0, 1))
    assert torch.equal(torch.get_rng_state(), state)


def test_brightness_scales_mean_within_bounds() -> None:
    pixels = mid_range_pixels()
    ratios = []
    for seed in range(20):
        jittered = color_jitter(pixels, brightness=0.5, generator=seeded(seed))
        ratios.append((jittered.mean() / pixels.mean()).item())

        assert jittered.min() >= 0
        assert jittered.max() <= 1

    assert all(0.5 - 1e-6 <= ratio <= 1.5 + 1e-6 for ratio in ratios)
    assert max(ratios) - min(ratios) > 0.2


def test_contrast_scales_luma_spread_within_bounds() -> None:
    pixels = mid_range_pixels()
    ratios = []
    for seed in range(20):
        jittered = color_jitter(pixels, contrast=0.5, generator=seeded(seed))
        ratios.append((_luma(jittered).std() / _luma(pixels).std()).item())

        assert torch.allclose(_luma(jittered).mean(), _luma(pixels).mean(), atol=1e-6)

    assert all(0.5 - 1e-5 <= ratio <= 1.5 + 1e-5 for ratio in ratios)
    assert max(ratios) - min(ratios) > 0.2


def test_saturation_keeps_luma() -> None:
    pixels = mid_range_pixels()
    chroma = (pixels - _luma(pixels)).abs().mean()
    ratios = []
    for seed in range(20):
        jittered = color_jitter(pixels, saturation=0.5, generator=seeded(seed))
        ratios.append(((jittered - _luma(jittered)).abs().mean() / chroma).item())

        assert torch.allclose(_luma(jittered), _luma(pixels), atol=1e-6)

    assert all(0.5 - 1e-5 <= ratio <= 1.5 + 1e-5 for ratio in ratios)
    assert max(ratios) - min(ratios) > 0.2


def test_jitter_clamps_to_unit_range() -> None:
    pixels = torch.rand(3, 16, 16, generator=seeded(1))

    for seed in range(10):
        jittered = color_jitter(pixels, brightness=2.0, contrast=2.0, saturation=2.0, generator=seeded(seed))

        assert jittered.min() >= 0
        assert jittered.max() <= 1


def test_jitter_rejects_greyscale() -> None:
    with pytest.raises(ValueError, match=r"shape \[3, H, W\], got \(1, 4, 4\)"):
        color_jitter(torch.zeros(1, 4, 4), brightness=0.5)


def test_jitter_normalized_round_trip() -> None:
    pixels = mid_range_pixels()
    mean = torch.tensor(PREPROCESSING.mean).view(3, 1, 1)
    std = torch.tensor(PREPROCESSING.std).view(3, 1, 1)
    augmentation = TrainAugmentation(brightness=0.5, generator=seeded(2))

    jittered = augmentation.jitter_normalized((pixels - mean) / std, PREPROCESSING.mean, PREPROCESSING.std)

    expected = color_jitter(pixels, brightness=0.5, generator=seeded(2))
    assert torch.allclose(jittered * std + mean, expected, atol=1e-6)


@pytest.fixture
def image_paths(tmp_path: Path) -> list[str]:
    paths = []
    for index in range(4):
        path = tmp_path / f"{index}.png"
        gradient_image(40 + index, 30).save(path)
        paths.append(str(path))
    return paths


def test_dataset_without_augmentation_same_draws(image_paths: list[str]) -> None:
    # A disabled TrainAugmentation must leave the flip's draws, and so every later draw, unchanged.
    plain = ImageDataset(image_paths, PREPROCESSING, [0, 0, 1, 1], horizontal_flip=True)
    with_disabled = ImageDataset(image_paths, PREPROCESSING, [0, 0, 1, 1], horizontal_flip=True, augmentation=TrainAugmentation())

    torch.manual_seed(0)
    plain_items = [plain[index][0] for index in range(4)]
    plain_next = torch.rand(())
    torch.manual_seed(0)
    disabled_items = [with_disabled[index][0] for index in range(4)]
    disabled_next = torch.rand(())

    for plain_pixels, disabled_pixels in zip(plain_items, disabled_items):
        assert torch.equal(plain_pixels, disabled_pixels)
    assert torch.equal(plain_next, disabled_next)


def test_dataset_applies_augmentation(image_paths: list[str]) -> None:
    augmentation = TrainAugmentation(crop_scale=(0.3, 0.6), brightness=0.4, contrast=0.4, saturation=0.4)
    plain = ImageDataset(image_paths, PREPROCESSING)
    augmented = ImageDataset(image_paths, PREPROCESSING, augmentation=augmentation)

    torch.manual_seed(0)
    first = augmented[0]
    torch.manual_seed(0)
    again = augmented[0]

    assert first.shape == (3, 28, 28)
    assert torch.equal(first, again)
    assert not torch.equal(first, plain[0])


@pytest.mark.parametrize(
    ("augment", "expected_message"),
    [
        ({"random_resized_crop_scale": [0.0, 1.0]}, "train.augment.random_resized_crop_scale=[0.0, 1.0] is invalid"),
        ({"random_resized_crop_scale": [0.8, 0.5]}, "train.augment.random_resized_crop_scale=[0.8, 0.5] is invalid"),
        ({"random_resized_crop_scale": [0.5]}, "train.augment.random_resized_crop_scale=[0.5] is invalid"),
        ({"color_jitter": {"contrast": -0.2}}, "train.augment.color_jitter.contrast=-0.2 must be 0"),
        ({"color_jitter": {"hue": 0.1}}, "unknown parameter train.augment.color_jitter.hue"),
    ],
)
def test_invalid_augment_named(tmp_path: Path, augment: dict, expected_message: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"train": {"augment": augment}}))

    with pytest.raises(ParamsError) as error:
        load_params("train", path)

    assert expected_message in str(error.value)


def test_augment_options_load(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    augment = {"random_resized_crop_scale": [0.5, 1], "color_jitter": {"brightness": 0.3}}
    path.write_text(yaml.safe_dump({"train": {"augment": augment}}))

    config = load_params("train", path)

    assert config.augment.random_resized_crop_scale == [0.5, 1.0]
    assert config.augment.color_jitter.brightness == pytest.approx(0.3)
    assert config.augment.color_jitter.saturation == 0.0
    augmentation = TrainAugmentation.from_config(config.augment)
    assert augmentation.crops and augmentation.jitters
