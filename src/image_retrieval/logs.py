"""Console logging for stages and the command line, through rich."""

from __future__ import annotations

import logging
import os

from rich.logging import RichHandler


def configure_logging(level: str | None = None) -> None:
    """Send log records to the terminal; the level comes from IMAGE_RETRIEVAL_LOG_LEVEL (default INFO)."""
    level = level or os.environ.get("IMAGE_RETRIEVAL_LOG_LEVEL", "INFO")
    logging.basicConfig(
        level=level.upper(),
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(show_path=False, rich_tracebacks=False)],
        force=True,
    )
    # Libraries that log at INFO about every request or file would drown the stage's own messages.
    for noisy in ("httpx", "urllib3", "filelock", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
