"""Every CUDA source compiles with NVRTC; needs CuPy and the NVRTC library, not a GPU."""

from __future__ import annotations

import importlib.util

import pytest

from graphsys.cuda import _runtime, cache, gather, quant, sampling


def nvrtc_or_skip() -> None:
    if importlib.util.find_spec("cupy_backends") is None:
        pytest.skip("CuPy is not installed (pip install 'graphsys[cuda12]')")
    try:
        from cupy_backends.cuda.libs import nvrtc

        nvrtc.getVersion()
    except Exception as exc:  # CuPy without the NVRTC shared library
        pytest.skip(f"NVRTC is not loadable: {type(exc).__name__}")


@pytest.mark.parametrize("module", [gather, cache, quant, sampling],
                         ids=lambda m: m.__name__.rsplit(".", 1)[1])
@pytest.mark.parametrize("arch", ["compute_70", "compute_90"])
def test_kernels_compile_with_nvrtc(module, arch) -> None:
    nvrtc_or_skip()
    ptx = _runtime.compile_only(module.SOURCE, getattr(module, "OPTIONS", ()), arch=arch)
    for name in module.KERNELS:
        assert f".entry {name}(" in ptx


def test_a_broken_kernel_is_reported_with_nvrtcs_log() -> None:
    nvrtc_or_skip()
    with pytest.raises(RuntimeError, match="NVRTC rejected"):
        _runtime.compile_only('extern "C" __global__ void k() { undefined_name; }')


def test_importing_graphsys_cuda_does_not_import_cupy() -> None:
    import subprocess
    import sys

    code = ("import sys, graphsys, graphsys.cuda, graphsys.nn; "
            "print('cupy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
