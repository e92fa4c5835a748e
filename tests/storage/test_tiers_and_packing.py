"""Host cache, tiered store, offline sampling and packing against the in-memory source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import graphsys
from graphsys.errors import DatasetError
from graphsys.graph.csc import CSCGraph
from graphsys.samplers.offline import offline_sample
from graphsys.storage import (
    DirectFileStore,
    HostCacheStore,
    PackedStore,
    TensorStore,
    TieredStore,
    hotness_order,
    pack_features,
)

N, DIM = 2000, 32


@pytest.fixture
def setup(tmp_path: Path):
    rng = np.random.default_rng(3)
    graph = CSCGraph.from_edges(rng.integers(0, N, 20_000), rng.integers(0, N, 20_000),
                                num_nodes=N)
    feats = rng.standard_normal((N, DIM)).astype(np.float32)
    path = tmp_path / "features.bin"
    feats.tofile(path)
    return graph, feats, DirectFileStore(path, N, DIM, "float32", threads=2)


def test_host_cache_holds_the_hottest_rows_within_budget(setup) -> None:
    _graph, feats, disk = setup
    counts = np.random.default_rng(0).integers(0, 100, N)
    cache = HostCacheStore(disk, hotness_order(counts), budget=100 * DIM * 4 + 5)
    assert len(cache.cached_ids) == 100 and cache.nbytes <= cache.budget
    hottest = np.argsort(-counts, kind="stable")[:100]
    assert set(cache.cached_ids.tolist()) == set(hottest.tolist())
    got = cache.read(torch.from_numpy(hottest[::-1].copy()))
    assert np.array_equal(got.numpy(), feats[hottest[::-1]])
    with pytest.raises(KeyError, match="not in the host cache"):
        cache.read([int(np.argsort(-counts, kind="stable")[-1])])


def test_tiered_store_is_exact_and_stats_add_up(setup) -> None:
    _graph, feats, disk = setup
    cache = HostCacheStore(disk, torch.arange(0, N, 2), budget=500 * DIM * 4)
    tiered = TieredStore([cache, disk])
    ids = torch.from_numpy(np.random.default_rng(1).integers(0, N, 3000))
    got = tiered.read(ids)
    assert np.array_equal(got.numpy(), feats[ids.numpy()])
    s = tiered.stats
    assert s.rows_returned == 3000 and s.bytes_returned == 3000 * DIM * 4
    assert set(s.tiers) == {"host", "direct"}
    in_cache = int(cache.contains(ids).sum())
    assert s.tiers["host"].rows == in_cache and s.tiers["direct"].rows == 3000 - in_cache
    assert s.disk_bytes > 0 and tiered.read([]).shape == (0, DIM)


@pytest.mark.parametrize("use_cache", [False, True])
def test_packed_store_reproduces_every_logged_batch(setup, tmp_path, use_cache) -> None:
    graph, feats, disk = setup
    loader = graphsys.DataLoader(graph, torch.arange(0, N, 3), graphsys.NeighborSampler([4, 3]),
                                 batch_size=64, shuffle=True, seed=5)
    log = offline_sample(loader, epochs=[0, 1])
    assert log.num_batches == 2 * len(loader)
    cache = None
    if use_cache:
        counts = np.bincount(log.input_nodes, minlength=N)
        cache = HostCacheStore(disk, hotness_order(counts), budget=200 * DIM * 4)
    index = pack_features(log, disk, tmp_path / "pack", segment_batches=3, host_cache=cache,
                          progress=False)
    assert index.num_segments == -(-log.num_batches // 3)
    assert index.overhead > 0
    store = PackedStore(tmp_path / "pack", fingerprint=log.fingerprint, host_cache=cache)
    # Training sees exactly the packed batches, with bitwise-equal features.
    feats_t = torch.from_numpy(feats)
    loader_packed = graphsys.DataLoader(graph, torch.arange(0, N, 3),
                                        graphsys.NeighborSampler([4, 3]), batch_size=64,
                                        shuffle=True, seed=5, features=store)
    for epoch in (0, 1):
        loader_packed.set_epoch(epoch)
        for i, (inp, _out, blocks) in enumerate(loader_packed):
            assert np.array_equal(inp.numpy(), log.batch(log.position(epoch, i)))
            assert torch.equal(blocks[0].srcdata["feat"], feats_t[inp])
    # Segments are read whole: disk bytes are the packed bytes plus alignment padding.
    packed_bytes = index.packed_rows * DIM * 4
    assert packed_bytes <= store.stats.disk_bytes <= packed_bytes + index.num_segments * 4096


def test_pack_refuses_other_loaders_and_truncation(setup, tmp_path) -> None:
    graph, _feats, disk = setup
    loader = graphsys.DataLoader(graph, torch.arange(100), graphsys.NeighborSampler([2]),
                                 batch_size=32, seed=1)
    log = offline_sample(loader)
    pack_features(log, disk, tmp_path / "pack", progress=False)
    other = graphsys.DataLoader(graph, torch.arange(100), graphsys.NeighborSampler([3]),
                                batch_size=32, seed=1)
    other_log = offline_sample(other)
    with pytest.raises(DatasetError, match="packed for other batches"):
        PackedStore(tmp_path / "pack", fingerprint=other_log.fingerprint)
    with pytest.raises(KeyError, match="epoch 3 was not packed"):
        PackedStore(tmp_path / "pack").prepare(3, 0)
    rows = tmp_path / "pack" / "rows.bin"
    rows.write_bytes(rows.read_bytes()[:-100])
    with pytest.raises(DatasetError, match="truncated or damaged"):
        PackedStore(tmp_path / "pack")
    with pytest.raises(graphsys.DatasetExistsError):
        pack_features(log, disk, tmp_path / "pack", progress=False)


def test_tensor_store_in_a_tier(setup) -> None:
    _graph, feats, disk = setup
    mem = TensorStore(torch.from_numpy(feats))
    cache = HostCacheStore(mem, torch.arange(10), budget=10 * DIM * 4)
    tiered = TieredStore([cache, disk])
    ids = torch.tensor([0, 1500, 9, 9, 1999])
    assert np.array_equal(tiered.read(ids).numpy(), feats[ids.numpy()])
