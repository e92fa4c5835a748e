"""Every store returns rows bitwise equal to numpy indexing of the source, and its
stats add up."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

# zarr is a graphsys dependency, but the GPU machine's image lacks it; skip there rather
# than break collection of the whole run
zarr = pytest.importorskip("zarr")

from graphsys.storage import (  # noqa: E402
    DirectFileStore,
    FeatureStore,
    MmapStore,
    TensorStore,
    ZarrStore,
)
from graphsys.storage.direct import ALIGN, _runs  # noqa: E402

ROWS = 3001  # not a multiple of anything: the last row ends mid-block


def _source(dtype: str, dim: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.standard_normal((ROWS, dim)).astype(dtype)


def _stores(tmp_path: Path, src: np.ndarray) -> list:
    path = tmp_path / "features.bin"
    src.tofile(path)
    z = zarr.open(str(tmp_path / "f.zarr"), mode="w", shape=src.shape,
                  chunks=(97, src.shape[1]), dtype=src.dtype)
    z[:] = src
    return [TensorStore(torch.from_numpy(src.copy())),
            MmapStore(path, ROWS, src.shape[1], src.dtype),
            DirectFileStore(path, ROWS, src.shape[1], src.dtype, threads=4, max_run=3 * ALIGN),
            DirectFileStore(path, ROWS, src.shape[1], src.dtype, threads=2, max_gap=2 * ALIGN,
                            max_buffer=3 * ALIGN),
            ZarrStore(z)]


@pytest.mark.parametrize(("dtype", "dim"), [("float32", 128), ("float16", 7), ("float32", 1100)])
def test_rows_equal_numpy_indexing(tmp_path: Path, dtype: str, dim: int) -> None:
    src = _source(dtype, dim)
    rng = np.random.default_rng(1)
    cases = [rng.integers(0, ROWS, 500), np.array([5, 5, 5, 0, ROWS - 1, 0]),
             np.arange(ROWS), np.array([], dtype=np.int64), rng.permutation(ROWS)[:64]]
    for store in _stores(tmp_path, src):
        assert isinstance(store, FeatureStore)
        for ids in cases:
            got = store.read(torch.as_tensor(ids, dtype=torch.int64))
            expected = src[ids]
            assert got.shape == expected.shape, type(store).__name__
            assert np.array_equal(got.numpy().view(np.uint8), expected.view(np.uint8)), \
                type(store).__name__
        total = sum(len(c) for c in cases)
        assert store.stats.rows_returned == total
        assert store.stats.bytes_returned == total * dim * np.dtype(dtype).itemsize
        assert store.stats.reads == len(cases)


def test_out_argument_and_bad_input(tmp_path: Path) -> None:
    src = _source("float32", 16)
    for store in _stores(tmp_path, src):
        out = torch.empty(3, 16)
        assert store.read([2, 0, 2], out=out) is out
        assert np.array_equal(out.numpy(), src[[2, 0, 2]])
        with pytest.raises(ValueError, match="out must have shape"):
            store.read([1], out=torch.empty(2, 16))
        with pytest.raises(IndexError, match=f"row id {ROWS} is outside"):
            store.read([0, ROWS])
        with pytest.raises(IndexError, match="row id -1"):
            store.read([-1])
        with pytest.raises(TypeError, match="integer node ids"):
            store.read(torch.tensor([0.5]))


def test_direct_reads_count_whole_blocks(tmp_path: Path) -> None:
    src = _source("float32", 128)  # 512-byte rows: 8 to a block
    store = _stores(tmp_path, src)[2]
    store.read([0])
    assert store.stats.disk_bytes == ALIGN
    store.stats.reset()
    store.read(torch.arange(0, 64))  # 8 whole blocks, read in runs of at most 3
    assert store.stats.disk_bytes == 8 * ALIGN
    assert store.stats.read_amplification == 1.0
    store.stats.reset()
    store.read(torch.arange(0, ROWS, 8))  # one row per block: 8x amplification
    assert store.stats.read_amplification == pytest.approx(8.0, rel=0.01)


def test_wrong_file_size_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    np.zeros((10, 4), np.float32).tofile(path)
    for cls in (MmapStore, DirectFileStore):
        with pytest.raises(ValueError, match="is 160 bytes, expected 176"):
            cls(path, 11, 4, "float32")


def test_runs_merge_adjacent_blocks_up_to_the_limit() -> None:
    starts, ends = _runs(np.array([0, 1, 1, 5, 6, 20]), np.array([0, 1, 2, 5, 7, 20]), 4, 0)
    assert starts.tolist() == [0, 5, 20] and ends.tolist() == [2, 7, 20]
    starts, ends = _runs(np.arange(10), np.arange(10), 4, 0)
    assert starts.tolist() == [0, 4, 8] and ends.tolist() == [3, 7, 9]
    # Gaps of up to max_gap blocks are bridged (blocks 3-4 are read, 8-19 are not).
    starts, ends = _runs(np.array([0, 5, 20]), np.array([2, 7, 20]), 16, 2)
    assert starts.tolist() == [0, 20] and ends.tolist() == [7, 20]
