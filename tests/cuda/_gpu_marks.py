"""Markers for the kernel tests: ``gpu`` ones need CUDA and CuPy and skip cleanly otherwise."""

from __future__ import annotations

import pytest

from graphsys.cuda import gpu_ready

needs_gpu = pytest.mark.skipif(not gpu_ready(), reason="needs CUDA and CuPy")


def gpu(test):
    """Mark ``test`` as a GPU test and skip it without CUDA and CuPy."""
    return pytest.mark.gpu(needs_gpu(test))
