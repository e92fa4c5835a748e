"""Every CUDA kernel compiles with NVRTC; needs CuPy and the NVRTC library, not a GPU.

These tests FAIL (they do not skip) when CuPy or NVRTC is missing: CI installs both
through the ``test`` extra, so a kernel that does not compile cannot pass unnoticed.
Set ``GRAPHSYS_ALLOW_NO_NVRTC=1`` to skip them on a machine without the libraries.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import re

import pytest

import graphsys.cuda
from graphsys.cuda import _runtime


def kernel_modules() -> list:
    """Every ``graphsys.cuda`` module that defines CUDA ``SOURCE`` (found, not listed)."""
    found = []
    for info in pkgutil.iter_modules(graphsys.cuda.__path__):
        mod = importlib.import_module(f"graphsys.cuda.{info.name}")
        if isinstance(getattr(mod, "SOURCE", None), str):
            found.append(mod)
    return found


MODULES = kernel_modules()


def require_nvrtc() -> None:
    allow = os.environ.get("GRAPHSYS_ALLOW_NO_NVRTC") == "1"
    problem = None
    if importlib.util.find_spec("cupy_backends") is None:
        problem = "CuPy is not installed (pip install 'graphsys[test]')"
    else:
        try:
            from cupy_backends.cuda.libs import nvrtc

            nvrtc.getVersion()
        except Exception as exc:  # CuPy without the NVRTC shared library
            problem = (f"NVRTC is not loadable ({type(exc).__name__}: {exc}); "
                       "pip install nvidia-cuda-nvrtc-cu12")
    if problem is None:
        return
    if allow:
        pytest.skip(f"{problem}; GRAPHSYS_ALLOW_NO_NVRTC=1")
    pytest.fail(f"{problem}. The kernel compile tests need NVRTC; set "
                "GRAPHSYS_ALLOW_NO_NVRTC=1 to skip them.", pytrace=False)


def test_the_kernel_modules_are_all_found() -> None:
    names = {m.__name__.rsplit(".", 1)[1] for m in MODULES}
    assert {"cache", "gather", "quant", "sampling"} <= names
    for mod in MODULES:
        assert isinstance(mod.KERNELS, tuple) and mod.KERNELS, mod.__name__


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__.rsplit(".", 1)[1])
@pytest.mark.parametrize("arch", ["compute_70", "compute_80", "compute_90"])
def test_every_listed_kernel_compiles_with_nvrtc(module, arch) -> None:
    require_nvrtc()
    ptx = _runtime.compile_only(module.SOURCE, getattr(module, "OPTIONS", ()), arch=arch)
    entries = set(re.findall(r"\.entry\s+([A-Za-z_]\w*)\s*\(", ptx))
    missing = [name for name in module.KERNELS if name not in entries]
    assert not missing, f"{module.__name__}: kernels not in the PTX: {missing}"
    # and nothing compiles that KERNELS does not list (so the tuple stays complete)
    assert entries == set(module.KERNELS), sorted(entries - set(module.KERNELS))


def test_a_broken_kernel_is_reported_with_nvrtcs_log() -> None:
    require_nvrtc()
    with pytest.raises(RuntimeError, match="NVRTC rejected"):
        _runtime.compile_only('extern "C" __global__ void k() { undefined_name; }')


def test_missing_nvrtc_fails_unless_allowed(monkeypatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.delenv("GRAPHSYS_ALLOW_NO_NVRTC", raising=False)
    with pytest.raises(pytest.fail.Exception, match="GRAPHSYS_ALLOW_NO_NVRTC"):
        require_nvrtc()
    monkeypatch.setenv("GRAPHSYS_ALLOW_NO_NVRTC", "1")
    with pytest.raises(pytest.skip.Exception):
        require_nvrtc()


def test_importing_graphsys_cuda_does_not_import_cupy() -> None:
    import subprocess
    import sys

    code = ("import sys, graphsys, graphsys.cuda, graphsys.nn; "
            "print('cupy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
