"""Shared fixtures: tiny generated datasets, the path to the shared Cora files, and the
one device-parametrising helper.

Device tests: ``@pytest.mark.parametrize("device", DEVICES)`` (or the ``device``
fixture) runs a test on ``"cpu"`` and on ``"cuda"``; the CUDA case carries the ``gpu``
marker (so ``pytest -m gpu`` selects every GPU case) and skips cleanly unless the CUDA
kernels can run (:func:`graphsys.cuda.gpu_ready`: torch sees a GPU and CuPy sees one).
``CUDA`` is the CUDA case alone, for tests that compare a GPU result with the CPU twin.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from graphsys import CSCGraph, DatasetWriter
from graphsys import load_dataset as graphsys_load
from graphsys.cuda import gpu_ready

_GPU_MARKS = [pytest.mark.gpu,
              pytest.mark.skipif(not gpu_ready(), reason="needs CUDA and CuPy")]
#: The CUDA case of a device parametrisation: marked ``gpu``, skipped without a GPU.
CUDA = pytest.param("cuda", marks=_GPU_MARKS, id="cuda")
#: Every device a test should run on.
DEVICES = ["cpu", CUDA]


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    """``"cpu"``, then ``"cuda"`` (marked ``gpu``; skipped unless the kernels can run)."""
    return request.param


@pytest.fixture(params=[CUDA])
def cuda_device(request) -> str:
    """``"cuda"`` alone (marked ``gpu``; skipped unless the kernels can run)."""
    return request.param

#: The Cora files: ``$GRAPHSYS_PLANETOID`` if set (as the README and scripts/run.sh say),
#: else ``../shared/data/planetoid`` beside the checkout.
PLANETOID_DIR = Path(os.environ.get("GRAPHSYS_PLANETOID") or
                     Path(__file__).resolve().parents[1].parent / "shared" / "data" / "planetoid")


@pytest.fixture
def planetoid_dir() -> Path:
    if not (PLANETOID_DIR / "ind.cora.x").is_file():
        pytest.skip(f"Cora files not found at {PLANETOID_DIR}")
    return PLANETOID_DIR


def random_arrays(num_nodes: int = 50, num_edges: int = 300, dim: int = 7, seed: int = 0):
    """A random graph with features, labels and a split, as plain numpy arrays."""
    rng = np.random.default_rng(seed)
    src = rng.integers(0, num_nodes, num_edges)
    dst = rng.integers(0, num_nodes, num_edges)
    graph = CSCGraph.from_edges(src, dst, num_nodes)
    perm = rng.permutation(num_nodes)
    return {
        "graph": graph,
        "features": rng.standard_normal((num_nodes, dim)).astype(np.float32),
        "labels": rng.integers(0, 3, num_nodes).astype(np.int64),
        "train_idx": np.sort(perm[:20]),
        "val_idx": np.sort(perm[20:30]),
        "test_idx": np.sort(perm[30:]),
    }


def write_arrays(path: Path, arrays: dict, *, storage: str = "raw", chunk_rows=None) -> None:
    with DatasetWriter(path, name="toy") as writer:
        writer.write_graph(arrays["graph"])
        writer.write_array("features", arrays["features"], storage=storage,
                           chunk_rows=chunk_rows)
        for key in ("labels", "train_idx", "val_idx", "test_idx"):
            writer.write_array(key, arrays[key])
        writer.finish(num_classes=3)


@pytest.fixture
def toy_arrays() -> dict:
    return random_arrays()


@pytest.fixture
def toy_dataset(tmp_path: Path, toy_arrays: dict) -> Path:
    path = tmp_path / "toy"
    write_arrays(path, toy_arrays)
    return path


def damaged_copy(dataset_dir: Path, out: Path, key: str, position, value, *,
                 resign: bool = False) -> Path:
    """A copy of a dataset at ``out`` with ``array[key][position] = value`` written into
    its file (the manifest and its checksums left as they were). ``resign``: record the
    damaged bytes' checksum in the manifest, as a writer with a bug would have, so the
    checksum at first read passes and the checks behind it are reached."""
    import dataclasses
    import shutil

    from graphsys.graph.checksum import checksum_path
    from graphsys.graph.manifest import MANIFEST_NAME

    shutil.copytree(dataset_dir, out)
    manifest = graphsys_load(out).manifest
    entry = manifest.arrays[key]
    array = np.memmap(out / entry.path, dtype=entry.dtype, mode="r+",
                      shape=tuple(entry.shape))
    array[position] = value
    array.flush()
    del array
    if resign:
        arrays = {**manifest.arrays,
                  key: dataclasses.replace(entry, sha256=checksum_path(out / entry.path))}
        manifest = dataclasses.replace(manifest, arrays=arrays)
        (out / MANIFEST_NAME).write_text(manifest.dumps())
    return out


def synthetic_dir(tmp_path_factory, label: str, **config) -> Path:
    """A synthetic dataset directory generated once for a module (``config``: the
    :class:`SyntheticConfig` fields)."""
    from graphsys.datasets.synthetic import SyntheticConfig, generate_synthetic

    out = tmp_path_factory.mktemp(label) / "syn"
    generate_synthetic(out, SyntheticConfig(**config), progress=False)
    return out


def fewest_fetches(batches, capacity: int, start=frozenset()) -> int:
    """Belady's optimum by exhaustive search: the fewest rows any demand cache of
    ``capacity`` rows (bypass allowed) holding ``start`` fetches for ``batches`` (lists
    or sets of ids). Exponential: for streams of a handful of ids."""
    import itertools

    states = {frozenset(start): 0}
    for batch in batches:
        asked = frozenset(batch)
        nxt: dict[frozenset, int] = {}
        for held, cost in states.items():
            cost += len(asked - held)
            pool = sorted(held | asked)
            for k in range(min(capacity, len(pool)) + 1):
                for keep in itertools.combinations(pool, k):
                    key = frozenset(keep)
                    if cost < nxt.get(key, 1 << 30):
                        nxt[key] = cost
        states = nxt
    return min(states.values())
