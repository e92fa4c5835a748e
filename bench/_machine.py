"""What every benchmark records about the machine it ran on."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np
import psutil


def machine() -> dict:
    """CPU model, core counts, RAM, platform and the versions of numpy and torch."""
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return {
        "cpu_model": model,
        "cpu_count_logical": os.cpu_count(),
        "cpu_count_physical": psutil.cpu_count(logical=False),
        "total_ram_bytes": psutil.virtual_memory().total,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
    }


def gpu_slug(name: str) -> str:
    """A file-name-safe form of a GPU name: ``"NVIDIA H200"`` -> ``"nvidia-h200"``."""
    import re

    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "gpu"
