"""Describe the CPU and memory of this Linux machine for the benchmark headers."""

from __future__ import annotations

import os
import platform


def cpu_model() -> str:
    """Return the CPU model name from /proc/cpuinfo, or the architecture where it is missing."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def total_memory_gib() -> float:
    """Return MemTotal from /proc/meminfo in GiB."""
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    raise RuntimeError("MemTotal not found in /proc/meminfo")


def available_memory_bytes() -> int:
    """Return MemAvailable from /proc/meminfo in bytes."""
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("MemAvailable not found in /proc/meminfo")


def machine_line() -> str:
    """Return the CPU model, core count, memory and Python version on one line."""
    return (
        f"{cpu_model()}, {os.cpu_count()} cores, {total_memory_gib():.1f} GiB, "
        f"Python {platform.python_version()}"
    )
