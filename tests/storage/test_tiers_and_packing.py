"""Host cache, tiered store, offline sampling and packing against the in-memory source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import graphsys
from conftest import CUDA
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


def _loader(graph, **kw):
    args = dict(batch_size=64, shuffle=True, seed=5)
    args.update(kw)
    return graphsys.DataLoader(graph, torch.arange(0, N, 3), graphsys.NeighborSampler([4, 3]),
                               **args)


@pytest.mark.parametrize("device", [None, "cpu", CUDA])
@pytest.mark.parametrize("use_cache", [False, True])
def test_packed_store_reproduces_every_logged_batch(setup, tmp_path, use_cache, device) -> None:
    """``device=None``: the compiled host gather; ``cpu``/``cuda``: the device variant
    (segments copied to the device, rows gathered there)."""
    graph, feats, disk = setup
    log = offline_sample(_loader(graph), epochs=[0, 1])
    assert log.num_batches == 2 * len(_loader(graph))
    cache = None
    if use_cache:
        counts = np.bincount(log.input_nodes, minlength=N)
        cache = HostCacheStore(disk, hotness_order(counts), budget=200 * DIM * 4)
    segment_bytes = 1500 * DIM * 4
    index = pack_features(log, disk, tmp_path / "pack", segment_bytes=segment_bytes,
                          host_cache=cache, chunk_bytes=300 * DIM * 4, progress=False)
    # Segments are consecutive batches whose distinct uncached rows fit the limit.
    offsets = index.segment_batch_offsets
    assert offsets[0] == 0 and offsets[-1] == log.num_batches and 1 < index.num_segments
    ids = np.fromfile(tmp_path / "pack" / "ids.bin", dtype=np.int64)
    for s in range(index.num_segments):
        want = np.unique(np.concatenate([log.batch(b) for b in range(offsets[s], offsets[s + 1])]))
        if cache is not None:
            want = want[~cache.cached_mask()[want]]
        got = ids[index.segment_id_offsets[s] : index.segment_id_offsets[s + 1]]
        assert np.array_equal(got, want) and len(got) * DIM * 4 <= segment_bytes
    assert index.overhead > 0
    store = PackedStore(tmp_path / "pack", source=disk, fingerprint=log.fingerprint,
                        device=device)
    # Training sees exactly the packed batches, with bitwise-equal features.
    feats_t = torch.from_numpy(feats)
    loader_packed = _loader(graph, features=store)
    for epoch in (0, 1):
        loader_packed.set_epoch(epoch)
        for i, (inp, _out, blocks) in enumerate(loader_packed):
            assert np.array_equal(inp.numpy(), log.batch(log.position(epoch, i)))
            assert torch.equal(blocks[0].srcdata["feat"].cpu(), feats_t[inp])
            assert blocks[0].srcdata["feat"].device.type == (device or "cpu")
    # Stats add up: rows and bytes per tier sum to what was returned.
    s = store.stats
    assert s.rows_returned == len(log.input_nodes) == sum(t.rows for t in s.tiers.values())
    assert s.bytes_returned == len(log.input_nodes) * DIM * 4
    assert ("host" in s.tiers and s.tiers["host"].rows > 0) == use_cache
    if use_cache:
        assert s.tiers["host"].rows == int(cache.contains(torch.from_numpy(log.input_nodes)).sum())
    # Each segment is read once, whole: disk bytes are rows.bin, padding included.
    assert s.disk_bytes == index.rows_file_bytes
    # A batch that differs from the packed one is refused, not silently served.
    with pytest.raises(DatasetError, match="not the batch"):
        store.prepare(0, 0, log.batch(1))


def test_budget_smaller_than_one_batch_is_refused(setup, tmp_path) -> None:
    graph, _feats, disk = setup
    log = offline_sample(_loader(graph))
    biggest = max(len(b) for b in log) * DIM * 4
    with pytest.raises(graphsys.errors.BudgetError, match="smaller than one batch"):
        pack_features(log, disk, tmp_path / "pack", segment_bytes=biggest - 1, progress=False)
    assert not (tmp_path / "pack").exists()
    pack_features(log, disk, tmp_path / "pack", segment_bytes=biggest, progress=False)


class _FailingSource:
    """Forwards to a store, raising on the ``fail_at``-th read (a killed packer)."""

    def __init__(self, store, fail_at: int | None) -> None:
        self.store, self.fail_at, self.reads = store, fail_at, 0
        self.num_rows, self.dim, self.dtype = store.num_rows, store.dim, store.dtype

    def read(self, ids, out=None):
        self.reads += 1
        if self.reads == self.fail_at:
            raise KeyboardInterrupt("killed")
        return self.store.read(ids, out)


def test_killed_pack_leaves_nothing_usable_and_resumes(setup, tmp_path) -> None:
    graph, _feats, disk = setup
    log = offline_sample(_loader(graph), epochs=[0, 1])
    kw = dict(segment_bytes=1500 * DIM * 4, chunk_bytes=200 * DIM * 4, progress=False)
    pack_features(log, disk, tmp_path / "clean", **kw)
    failing = _FailingSource(disk, fail_at=4)
    with pytest.raises(KeyboardInterrupt):
        pack_features(log, failing, tmp_path / "pack", **kw)
    assert not (tmp_path / "pack").exists() and (tmp_path / ".pack.packing").is_dir()
    with pytest.raises(DatasetError, match="never finished"):
        PackedStore(tmp_path / "pack")
    resumed = _FailingSource(disk, fail_at=None)
    pack_features(log, resumed, tmp_path / "pack", **kw)
    chunks = -(-N // 200)
    assert resumed.reads == chunks - 3  # the three chunks done before the kill are kept
    for name in ("pack.json", "ids.bin", "rows.bin", "hot.bin", "batches.bin"):
        assert (tmp_path / "pack" / name).read_bytes() == (tmp_path / "clean" / name).read_bytes()
    assert not (tmp_path / ".pack.packing").exists()
    # A killed run whose plan no longer matches is restarted, not resumed.
    with pytest.raises(KeyboardInterrupt):
        pack_features(log, _FailingSource(disk, 2), tmp_path / "p2", **kw)
    restarted = _FailingSource(disk, fail_at=None)
    pack_features(log, restarted, tmp_path / "p2", **{**kw, "segment_bytes": 3000 * DIM * 4})
    assert restarted.reads == chunks


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
    pack_features(log, disk, tmp_path / "pack", progress=False, overwrite=True,
                  source_id="sha-a")
    PackedStore(tmp_path / "pack", source_id="sha-a")
    with pytest.raises(DatasetError, match="packed from other features"):
        PackedStore(tmp_path / "pack", source_id="sha-b")
    import fcntl
    with open(tmp_path / ".p3.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(DatasetError, match="another graphsys pack"):
            pack_features(log, disk, tmp_path / "p3", progress=False)


def test_tensor_store_in_a_tier(setup) -> None:
    _graph, feats, disk = setup
    mem = TensorStore(torch.from_numpy(feats))
    cache = HostCacheStore(mem, torch.arange(10), budget=10 * DIM * 4)
    tiered = TieredStore([cache, disk])
    ids = torch.tensor([0, 1500, 9, 9, 1999])
    assert np.array_equal(tiered.read(ids).numpy(), feats[ids.numpy()])


def test_flipped_byte_in_a_packed_segment_is_caught(setup, tmp_path) -> None:
    graph, _feats, disk = setup
    log = offline_sample(_loader(graph), epochs=[0])
    index = pack_features(log, disk, tmp_path / "pack", segment_bytes=1500 * DIM * 4,
                          chunk_bytes=300 * DIM * 4, progress=False)
    assert index.num_segments > 1
    rows = tmp_path / "pack" / "rows.bin"
    data = bytearray(rows.read_bytes())
    at = index.segment_byte_offsets[1] + 7  # inside segment 1, not in segment 0
    data[at] ^= 0x40
    rows.write_bytes(bytes(data))
    store = PackedStore(tmp_path / "pack", source=disk, fingerprint=log.fingerprint)
    loader = _loader(graph, features=store)
    with pytest.raises(DatasetError, match="segment 1 of .*rows.bin fails its checksum"):
        for _batch in loader:
            pass


def _pack_files_bytes(pack: Path) -> int:
    return sum(f.stat().st_size for f in pack.iterdir() if f.suffix in (".bin", ".crc32"))


def test_pack_refuses_a_disk_that_cannot_hold_it(setup, tmp_path, monkeypatch) -> None:
    import shutil as shutil_module
    from graphsys.errors import DiskSpaceError
    from graphsys.storage import packing

    graph, _feats, disk = setup
    log = offline_sample(_loader(graph), epochs=[0])
    kw = dict(segment_bytes=1000 * DIM * 4, progress=False)
    index = pack_features(log, disk, tmp_path / "reference", **kw)
    # What the finished pack holds on disk, counted from its files.
    assert index.disk_bytes == _pack_files_bytes(tmp_path / "reference")
    real = shutil_module.disk_usage

    def free(nbytes):
        return lambda path: real(path)._replace(free=nbytes)

    monkeypatch.setattr(packing.shutil, "disk_usage",
                        free(index.disk_bytes + packing.SPACE_RESERVE - 1))
    with pytest.raises(DiskSpaceError, match=r"the pack needs .* free \(keeping .* spare\); "
                                             "free space, pack on another disk"):
        pack_features(log, disk, tmp_path / "pack", **kw)
    assert not (tmp_path / "pack").exists() and not (tmp_path / ".pack.packing").exists()
    monkeypatch.setattr(packing.shutil, "disk_usage",
                        free(index.disk_bytes + packing.SPACE_RESERVE))
    pack_features(log, disk, tmp_path / "pack", **kw)
    assert (tmp_path / "pack" / "rows.bin").read_bytes() == \
        (tmp_path / "reference" / "rows.bin").read_bytes()


def test_disk_full_while_packing_removes_the_partial_pack(setup, tmp_path, monkeypatch) -> None:
    import errno
    import os as os_module
    from graphsys.errors import DiskSpaceError
    from graphsys.storage import packing

    graph, _feats, disk = setup
    log = offline_sample(_loader(graph), epochs=[0])
    kw = dict(segment_bytes=1000 * DIM * 4, chunk_bytes=200 * DIM * 4, progress=False)
    real_pwrite, calls = os_module.pwrite, []

    def pwrite(fd, data, offset):
        calls.append(offset)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(packing.os, "pwrite", pwrite)
    with pytest.raises(DiskSpaceError, match="filled up while packing .* removed the partial"):
        pack_features(log, disk, tmp_path / "pack", **kw)
    assert len(calls) == 3
    assert not (tmp_path / "pack").exists() and not (tmp_path / ".pack.packing").exists()
    monkeypatch.setattr(packing.os, "pwrite", real_pwrite)
    pack_features(log, disk, tmp_path / "pack", **kw)
    PackedStore(tmp_path / "pack")


def test_a_pack_many_times_the_features_is_announced(setup, tmp_path) -> None:
    graph, _feats, disk = setup
    log = offline_sample(_loader(graph), epochs=[0, 1, 2])
    warnings: list[str] = []
    # Segments of ~one batch: every segment repeats the rows its batches share.
    index = pack_features(log, disk, tmp_path / "big", segment_bytes=1000 * DIM * 4,
                          progress=False, warn=warnings.append)
    packed = index.rows_file_bytes / (N * DIM * 4)
    assert packed > 2
    assert len(warnings) == 1 and f"{packed:.1f}x the features" in warnings[0]
    quiet: list[str] = []
    small = pack_features(log, disk, tmp_path / "small", segment_bytes=N * DIM * 4,
                          progress=False, warn=quiet.append)
    assert small.rows_file_bytes / (N * DIM * 4) <= 2 and quiet == []
