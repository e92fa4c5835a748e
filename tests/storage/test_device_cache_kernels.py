"""DeviceCache's slot logic is graphsys.cuda.cache's: one implementation, two devices.

The spies below wrap the kernel module's functions; the poisoned ``split_hits`` shows
the cache's hit decisions come from it (a cache with its own lookup would still hit).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import graphsys.cuda.cache as slot_ops
from graphsys.cuda.cache import Split
from graphsys.storage import DeviceCache, TensorStore, VictimBuffer, make_policy

ROWS, DIM = 300, 8


def _batches(seed: int = 0, n: int = 12) -> list[torch.Tensor]:
    rng = np.random.default_rng(seed)
    hot = rng.choice(ROWS, 40, replace=False)
    return [torch.from_numpy(np.concatenate([hot[rng.integers(0, 40, 30)],
                                             rng.integers(0, ROWS, 30)])) for _ in range(n)]


def _cache(source: torch.Tensor, **kw) -> DeviceCache:
    victim = VictimBuffer(20, ROWS, DIM, source.dtype)
    return DeviceCache(TensorStore(source), 60 * DIM * 4, make_policy("lru"), device="cpu",
                       victim=victim, **kw)


@pytest.fixture
def source() -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(1).standard_normal((ROWS, DIM))
                            .astype(np.float32))


def test_reads_go_through_the_kernel_module(monkeypatch, source) -> None:
    calls: dict[str, int] = {}

    def spy(name):
        real = getattr(slot_ops, name)

        def wrapped(*args, **kwargs):
            calls[name] = calls.get(name, 0) + 1
            return real(*args, **kwargs)
        monkeypatch.setattr(slot_ops, name, wrapped)

    for name in ("split_hits", "assign_slots", "scatter_rows", "lookup"):
        spy(name)
    cache = _cache(source, lookahead=2)
    batches = _batches()
    for i, ids in enumerate(batches):
        got = cache.read(ids)
        np.testing.assert_array_equal(got.numpy(), source.numpy()[ids.numpy()])
        cache.prefetch(batches[i + 1 : i + 3])
        cache.check_consistency()
    assert calls["split_hits"] == len(batches)
    assert calls["assign_slots"] >= 1 and calls["scatter_rows"] >= 1
    assert calls["lookup"] >= 1  # the prefetcher asks which rows the slots lack
    assert cache.counters.hits > 0


def test_hit_decisions_are_split_hits(monkeypatch, source) -> None:
    """With a split_hits that reports every id missing, nothing is served from slots
    (the rows are still right: they come from the fallback)."""
    def all_miss(slot_of, ids, *, check=True):
        ids = ids.reshape(-1).long()
        empty = ids[:0]
        return Split(empty, empty, torch.arange(ids.numel()), ids)

    monkeypatch.setattr(slot_ops, "split_hits", all_miss)
    cache = _cache(source)
    for ids in _batches():
        np.testing.assert_array_equal(cache.read(ids).numpy(), source.numpy()[ids.numpy()])
    assert cache.counters.hits == 0
    assert cache.counters.demand_misses == cache.counters.requests


def test_installs_are_assign_slots(monkeypatch, source) -> None:
    """Without assign_slots the table never learns a row: no hits on a repeated batch."""
    monkeypatch.setattr(slot_ops, "assign_slots", lambda *a, **k: None)
    cache = _cache(source)
    ids = _batches()[0]
    cache.read(ids)
    cache.read(ids)
    assert cache.counters.hits == 0
    assert int((cache.slot_of >= 0).sum()) == 0


def test_tensor_store_read_to(source, device) -> None:
    """A pinned table's rows go to a GPU by the UVA gather (CPU: read and copy); both
    equal numpy indexing and count in the store's stats."""
    table = source.pin_memory() if device == "cuda" else source
    store = TensorStore(table)
    ids = torch.tensor([5, 0, 299, 5])
    rows = store.read_to(ids, torch.device(device))
    assert rows.device.type == device
    np.testing.assert_array_equal(rows.cpu().numpy(), source.numpy()[ids.numpy()])
    assert store.stats.rows_returned == 4 and store.stats.reads == 1
