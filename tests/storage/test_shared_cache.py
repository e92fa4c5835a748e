"""SharedDeviceCache in one process (a gloo group of one); two ranks: tests/train."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from graphsys.storage.memory import TensorStore
from graphsys.storage.shared_cache import SharedDeviceCache


@pytest.fixture
def group_of_one(tmp_path: Path):
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_reads_equal_the_source_in_the_order_asked(group_of_one) -> None:
    source = torch.randn(100, 6, generator=torch.Generator().manual_seed(0))
    hot = torch.tensor([7, 3, 99, 0, 42])
    cache = SharedDeviceCache(TensorStore(source), hot)
    assert cache.capacity == 5 and cache.nbytes == 5 * 6 * 4
    ids = torch.tensor([3, 5, 3, 99, 64, 7, 7, 1])  # cached, uncached, duplicates
    assert torch.equal(cache.read(ids), source[ids])
    out = torch.empty(len(ids), 6)
    assert cache.read(ids, out=out) is out and torch.equal(out, source[ids])
    assert torch.equal(cache.read(torch.empty(0, dtype=torch.long)), source[:0])
    tiers = cache.stats.tiers
    assert tiers["shared-local"].rows == 2 * 5  # 3, 3, 99, 7, 7 in each of two reads
    assert tiers["fallback"].rows == 2 * 3
    assert cache.stats.rows_returned == 2 * len(ids)
    c = cache.shared_counters
    assert (c.local_rows, c.remote_rows, c.fallback_rows) == (6, 0, 6)  # distinct per read
    assert torch.equal(cache.owner_of(torch.tensor([7, 5])), torch.tensor([0, -1]))


def test_refuses_bad_input(group_of_one) -> None:
    source = TensorStore(torch.zeros(10, 2))
    with pytest.raises(ValueError, match="duplicates"):
        SharedDeviceCache(source, torch.tensor([1, 1]))
    with pytest.raises(IndexError, match="outside"):
        SharedDeviceCache(source, torch.tensor([10]))
    cache = SharedDeviceCache(source, torch.tensor([1]))
    with pytest.raises(IndexError, match="row id -1"):
        cache.read(torch.tensor([-1]))


def test_needs_a_process_group() -> None:
    assert not dist.is_initialized()
    with pytest.raises(RuntimeError, match="graphsys.distributed.init"):
        SharedDeviceCache(TensorStore(torch.zeros(4, 2)), torch.tensor([0]))
