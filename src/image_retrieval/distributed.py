"""Checks shared by the stages that run under a multi-process launcher."""

from __future__ import annotations

import os

from accelerate import Accelerator


def check_process_count(accelerator: Accelerator, launcher_parameter: str) -> None:
    """Raise when a launcher started several processes that accelerate treats as independent.

    Each would otherwise work alone on the full data and overwrite the others'
    outputs. `launcher_parameter` is the params.yaml key that sets the launcher,
    such as "train.launcher", and the message names it.
    """
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != accelerator.num_processes:
        raise ValueError(
            f"the launcher started {launched} processes (WORLD_SIZE={launched}) but accelerate sees "
            f"{accelerator.num_processes}; on CPU set ACCELERATE_USE_CPU=1, on GPUs check {launcher_parameter}"
        )
