"""Per-epoch training checkpoints that let an interrupted train stage resume.

DVC deletes a stage's outputs before it runs the stage again, so checkpoints
live outside them, in `.checkpoints/train/<fingerprint>/` (git-ignored). The
fingerprint covers the train parameters and the bytes of every input, so a
run resumes only a checkpoint written by the same parameters on the same
data. After any change it starts fresh and removes the stale checkpoints.

A checkpoint stores only what changes during training: the trainable
parameters (the LoRA adapters, a head, loss proxies), the optimizer and
scheduler states, the random generator states, and the best epoch so far.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from image_retrieval.io import atomic_path

logger = logging.getLogger(__name__)

CHECKPOINT_ROOT = Path(".checkpoints/train")
CHECKPOINT_FILE = "last.pt"


def training_fingerprint(parameters: dict[str, Any], inputs: list[Path]) -> str:
    """SHA-256 of the parameters (as sorted JSON) and the names and bytes of every input file."""
    digest = hashlib.sha256(json.dumps(parameters, sort_keys=True, default=str).encode())
    for root in inputs:
        files = sorted(path for path in Path(root).rglob("*") if path.is_file()) if Path(root).is_dir() else [Path(root)]
        for path in files:
            digest.update(str(path).encode())
            digest.update(b"\0")
            with open(path, "rb") as stream:
                for block in iter(lambda: stream.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def random_states() -> dict[str, Any]:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_random_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class CheckpointStore:
    """The checkpoint folder of one training fingerprint."""

    def __init__(self, fingerprint: str, root: Path = CHECKPOINT_ROOT) -> None:
        self.root = Path(root)
        self.directory = self.root / fingerprint[:16]

    def load(self) -> dict[str, Any] | None:
        """Return the last checkpoint of this fingerprint, or None, after removing other fingerprints' folders."""
        if self.root.is_dir():
            for stale in self.root.iterdir():
                if stale != self.directory:
                    logger.info("Removing checkpoints of other training parameters or data: %s", stale)
                    shutil.rmtree(stale, ignore_errors=True)

        path = self.directory / CHECKPOINT_FILE
        if not path.is_file():
            return None
        try:
            # weights_only=False: the file also contains optimizer state and numpy
            # generator state, and only this project writes it.
            return torch.load(path, map_location="cpu", weights_only=False)
        except (OSError, RuntimeError, EOFError) as error:
            logger.warning("Ignoring unreadable checkpoint %s (%s); training starts fresh", path, error)
            return None

    def save(self, checkpoint: dict[str, Any]) -> None:
        """Write the checkpoint atomically, replacing the previous epoch's."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.directory / CHECKPOINT_FILE) as temporary:
            torch.save(checkpoint, temporary)

    def clear(self) -> None:
        """Remove this fingerprint's checkpoints once training has finished."""
        shutil.rmtree(self.directory, ignore_errors=True)
