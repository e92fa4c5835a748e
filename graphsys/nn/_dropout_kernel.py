"""The numba kernel of :mod:`graphsys.nn._dropout` (imported on first use: importing
``graphsys.nn`` does not load numba)."""

from __future__ import annotations

import numba
import numpy as np

_CHUNK = 1 << 14  # elements per parallel task


@numba.njit(inline="always")
def _span(x, out, start, end, seed, threshold, scale):
    for i in range(start, end):
        # splitmix64 of (seed, i): independent, uniform 64-bit words per element
        z = seed + np.uint64(i) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
        out[i] = x[i] * scale if z >= threshold else 0.0


@numba.njit(nogil=True, parallel=True, cache=True)
def _mask_scale_parallel(x, out, seed, threshold, scale):
    n = x.size
    for t in numba.prange((n + _CHUNK - 1) // _CHUNK):
        _span(x, out, t * _CHUNK, min((t + 1) * _CHUNK, n), seed, threshold, scale)


@numba.njit(nogil=True, cache=True)
def _mask_scale_serial(x, out, seed, threshold, scale):
    _span(x, out, 0, x.size, seed, threshold, scale)


def _thread_safe_layer() -> bool:
    """Whether numba's threading layer may be entered from two threads at once.

    The loader's sampling thread runs numba's parallel kernels while training runs
    this one; the ``workqueue`` layer (numba's fallback without OpenMP or TBB) aborts
    on concurrent entry, so it gets the serial kernel. The layer is known once a
    parallel kernel has run (the sampler's, before any forward pass).
    """
    try:
        return numba.threading_layer() in ("omp", "tbb")
    except ValueError:  # no parallel kernel has run yet
        return False


def mask_scale(x: np.ndarray, out: np.ndarray, seed: int, threshold: int,
               scale: float) -> None:
    """``out[i] = x[i] * scale`` if ``hash(seed, i) >= threshold`` else 0 (1-D arrays);
    the same result on either kernel."""
    kernel = _mask_scale_parallel if _thread_safe_layer() else _mask_scale_serial
    kernel(x, out, np.uint64(seed), np.uint64(threshold), x.dtype.type(scale))
