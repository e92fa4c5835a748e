"""Probes for optional dependencies, in one place.

Nothing here runs at import time: each probe is a function, and CuPy/CUDA are only
touched when asked (a CuPy import succeeds on machines without a GPU and fails only at
the first allocation, so the probe asks for a device count inside ``try``).
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Probe:
    """Whether an optional package is usable, with its version or the reason it is not."""

    name: str
    available: bool
    detail: str


def _version_of(module_name: str) -> Probe:
    if importlib.util.find_spec(module_name) is None:
        return Probe(module_name, False, "not installed")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an installed but broken package must not break graphsys
        return Probe(module_name, False, f"import failed: {type(exc).__name__}: {exc}")
    return Probe(module_name, True, str(getattr(module, "__version__", "unknown version")))


def probe_cupy() -> Probe:
    """CuPy is usable only if it imports *and* sees at least one CUDA device."""
    probe = _version_of("cupy")
    if not probe.available:
        return probe
    try:
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return Probe("cupy", False, f"{probe.detail}, no CUDA device ({type(exc).__name__})")
    if count == 0:
        return Probe("cupy", False, f"{probe.detail}, no CUDA device")
    return Probe("cupy", True, f"{probe.detail}, {count} CUDA device(s)")


def probe_all() -> list[Probe]:
    """Probe every optional dependency graphsys can use (for ``graphsys info``)."""
    import torch

    cuda = Probe(
        "torch.cuda",
        torch.cuda.is_available(),
        f"{torch.cuda.device_count()} device(s)" if torch.cuda.is_available() else "no CUDA",
    )
    return [
        _version_of("torch"),
        cuda,
        probe_cupy(),
        _version_of("numba"),
        _version_of("zarr"),
        _version_of("scipy"),
        _version_of("dgl"),
        _version_of("torch_geometric"),
    ]


def require(module_name: str, purpose: str, extra: str) -> Any:
    """Import an optional module or raise an ImportError that says how to install it."""
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(
            f"{purpose} needs the optional package {module_name!r}; "
            f"install it with: pip install 'graphsys[{extra}]'"
        ) from exc
