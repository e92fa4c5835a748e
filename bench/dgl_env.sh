#!/usr/bin/env bash
# Create bench/.dgl-venv: an isolated environment with DGL 2.1.0 on torch 2.2.1, the
# contender for bench/sampling.py. DGL 2.1.0 needs torch 2.2.x, numpy<2, torchdata 0.7.1
# and setuptools<70, which clash with graphsys's own venv. Its PyPI wheel ships
# libgraphbolt for torch <= 2.2.1 only, so torch 2.2.2 fails at `import dgl`.
#
# Idempotent: does nothing when the venv already imports dgl and torch.
# Usage: bash bench/dgl_env.sh        (PYTHON=python3.11 picks the interpreter,
#                                      DGL_VENV=... the location)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${DGL_VENV:-$HERE/.dgl-venv}"
PY="${PYTHON:-python3.11}"
TORCH_VERSION=2.2.1
CPU_INDEX=https://download.pytorch.org/whl/cpu

check() {
    "$VENV/bin/python" -c "import dgl, torch; print('dgl', dgl.__version__, 'torch', torch.__version__)" 2>/dev/null
}

if [[ -x "$VENV/bin/python" ]] && check; then
    exit 0
fi

command -v "$PY" >/dev/null || { echo "dgl_env.sh: $PY not found; set PYTHON=" >&2; exit 1; }
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check)
"${PIP[@]}" --upgrade pip "setuptools<70" wheel

# The CPU wheel index avoids several GB of nvidia-* packages. When it cannot be reached,
# take PyPI's wheel with its nvidia-* dependencies (~3 GB): PyPI's torch 2.2.x links
# libtorch_cuda.so against cudart/cublas/cudnn/..., so `import torch` fails without
# them even on a machine with no GPU.
if ! "$VENV/bin/python" -c "import torch; assert torch.__version__.split('+')[0] == '$TORCH_VERSION'" 2>/dev/null; then
    if ! "${PIP[@]}" "torch==$TORCH_VERSION" --index-url "$CPU_INDEX"; then
        echo "dgl_env.sh: $CPU_INDEX unreachable; installing PyPI torch with its CUDA libraries" >&2
        "${PIP[@]}" "torch==$TORCH_VERSION"
    fi
fi

# torchdata 0.7.1 pins torch 2.1.x; --no-deps keeps our torch, its own deps come next.
"${PIP[@]}" --no-deps "torchdata==0.7.1"
"${PIP[@]}" "urllib3>=1.25" requests
"${PIP[@]}" "numpy<2" scipy networkx pandas pydantic pyyaml psutil tqdm
"${PIP[@]}" --no-deps "dgl==2.1.0"
# What graphsys itself needs, so the DGL interop tests run here with PYTHONPATH=.:
#   PYTHONPATH=. bench/.dgl-venv/bin/python -m pytest tests/samplers/test_dgl_interop.py
"${PIP[@]}" "numpy<2" numba "zarr<3" numcodecs pytest

check || { echo "dgl_env.sh: dgl does not import in $VENV" >&2; exit 1; }
