"""Run a stage's main function with logging, turning expected failures into one-line errors."""

from __future__ import annotations

import logging
import sys
from typing import Callable

from image_retrieval.logs import configure_logging

logger = logging.getLogger("image_retrieval.stage")


def run_stage(main: Callable[[], None]) -> None:
    """Call `main`; on bad input or a missing file, print the error without a traceback and exit 1.

    Every error this project raises for bad input (ParamsError, ImageError,
    FetchError, IndexMismatchError, ...) names the value and the fix, so the
    traceback adds nothing for the user; IMAGE_RETRIEVAL_LOG_LEVEL=DEBUG logs
    it. Other exceptions propagate as usual.
    """
    from image_retrieval.data.fetch import FetchError
    from image_retrieval.index import IndexMismatchError
    from image_retrieval.model.backbone import BackboneLoadError
    from image_retrieval.model.onnx_import import OnnxImportError

    configure_logging()
    try:
        main()
    except (ValueError, FileNotFoundError, FetchError, BackboneLoadError, OnnxImportError, IndexMismatchError) as error:
        logger.debug("Stage failed", exc_info=True)
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
