"""The cache-policy bench's accounting, on streams small enough to check by hand.

``bench/cache_policy.py`` counts the rows each contender moves host -> device for the
measured epoch and compares them with Belady's optimum given the same memory and the
same starting contents. Here every row that crosses is logged where it crosses (the
fallback store and the victim ring, with the replay step it happened at) and counted
again independently: a crossing counts for the measured epoch if it happens during it,
or if the next thing that happens to its row is a request by a measured batch.
"""

from __future__ import annotations

from conftest import fewest_fetches
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from graphsys.storage import DeviceCache, TensorStore, VictimBuffer
from graphsys.storage.policies import make_policy

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import cache_policy as bench  # noqa: E402  (a script, not a package)

N = 64


class Clock:
    """Replay time: -1 at construction (preload), ``t`` during read ``t``, ``t - 0.5``
    for a prefetch issued before read ``t``."""

    def __init__(self) -> None:
        self.now = -1.0
        self.log: list[tuple[float, torch.Tensor]] = []


class LoggedStore(TensorStore):
    def __init__(self, tensor: torch.Tensor, clock: Clock) -> None:
        super().__init__(tensor)
        self.clock = clock

    def read(self, ids, out=None):
        self.clock.log.append((self.clock.now, torch.as_tensor(ids).clone()))
        return super().read(ids, out)


class LoggedVictim(VictimBuffer):
    def __init__(self, *args, clock: Clock, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.clock = clock

    def take(self, positions, device="cpu"):
        self.clock.log.append((self.clock.now, self.id_of[positions.long()].clone()))
        return super().take(positions, device)


def logged_cache(policy: str, capacity: int, *, counts=None, lookahead: int = 0,
                 stage_rows: int = 0) -> tuple[DeviceCache, Clock]:
    clock = Clock()
    store = LoggedStore(torch.arange(N, dtype=torch.float32).reshape(N, 1), clock)
    pol = make_policy(policy, counts=np.ones(N) if counts is None else counts,
                      presample_batches=1, degrees=np.arange(N))
    victim = LoggedVictim(capacity, N, 1, torch.float32, clock=clock) if lookahead else None
    cache = DeviceCache(store, capacity * store.row_bytes, pol, device="cpu", victim=victim,
                        lookahead=lookahead, stage_rows=stage_rows)
    read, prefetch = cache.read, cache.prefetch

    def timed_read(ids, out=None):
        clock.now = float(cache.step)
        return read(ids, out)

    def timed_prefetch(upcoming, budget_rows=None):
        clock.now = cache.step - 0.5
        return prefetch(upcoming, budget_rows)

    cache.read, cache.prefetch = timed_read, timed_prefetch
    return cache, clock


def reference_moved(clock: Clock, warm: list[torch.Tensor],
                    measured: list[torch.Tensor]) -> int:
    """Crossings for the measured epoch, counted from the log and the stream alone."""
    last_warm = len(warm) - 1  # a prefetch after that read is at len(warm) - 0.5
    events: dict[int, list[tuple[float, int, str]]] = {}
    for when, ids in clock.log:
        for i in ids.tolist():
            events.setdefault(i, []).append((when, 0, "cross"))
    for t, ids in enumerate(warm + measured):
        for i in ids.tolist():
            # A demand crossing during read t comes before that read's request.
            events.setdefault(i, []).append((float(t), 1, "ask"))
    moved = 0
    for seq in events.values():
        seq.sort()
        for k, (when, _, kind) in enumerate(seq):
            if kind != "cross":
                continue
            if when > last_warm:  # during the measured epoch
                moved += 1
            elif k + 1 < len(seq) and seq[k + 1][2] == "ask" and seq[k + 1][0] >= len(warm):
                moved += 1
    return moved


def test_warmup_prefetches_for_measured_batches_are_counted() -> None:
    # Disjoint batches: every measured row crosses exactly once, and with a 4-batch
    # window most of the measured batches' rows are staged during the warm-up.
    batches = [torch.arange(6 * i, 6 * i + 6) for i in range(6)]
    warm, measured = batches[:3], batches[3:]
    cache, clock = logged_cache("hybrid", 8, lookahead=4, stage_rows=32)
    raw, start = bench.replay(cache, warm, measured, lookahead=4, budget=None)
    assert raw["staged_at_start"] > 0  # the case where the old accounting undercounted
    assert raw["link_rows_during_epoch"] < 18  # what the old accounting reported
    assert raw["moved_rows"] == 18 == reference_moved(clock, warm, measured)
    assert raw["moved_prefetch"] + raw["moved_demand"] == 18
    assert raw["moved_rows"] >= bench.belady_from(measured, raw["memory_rows"], N, start)


def test_a_preload_the_warmup_never_asked_for_is_counted() -> None:
    # The presample ranks rows 40..43 hottest; only measured batches ask for them.
    counts = np.zeros(N)
    counts[40:44] = 10
    warm = [torch.tensor([0, 1, 2]), torch.tensor([1, 2, 3])]
    measured = [torch.tensor([40, 41, 0]), torch.tensor([42, 43, 1]), torch.tensor([40, 2])]
    for policy in ("frequency", "hybrid"):
        cache, clock = logged_cache(policy, 4, counts=counts)
        raw, start = bench.replay(cache, warm, measured)
        assert raw["moved_preload"] == 4
        assert raw["moved_rows"] == reference_moved(clock, warm, measured)
        opt = bench.belady_from(measured, raw["memory_rows"], N, start)
        assert raw["moved_rows"] >= opt


def test_belady_from_a_start_is_the_optimum() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        lists = [set(rng.choice(6, size=rng.integers(1, 4), replace=False).tolist())
                 for _ in range(5)]
        capacity = int(rng.integers(1, 4))
        start = frozenset(rng.choice(6, size=rng.integers(0, capacity + 1),
                                     replace=False).tolist())
        batches = [torch.tensor(sorted(b)) for b in lists]
        got = bench.belady_from(batches, capacity, 6, torch.tensor(sorted(start),
                                                                   dtype=torch.int64))
        assert got == fewest_fetches(lists, capacity, start)


@pytest.mark.parametrize("lookahead", [1, 4, 16])
def test_every_contender_moves_at_least_belady(lookahead: int) -> None:
    rng = np.random.default_rng(lookahead)
    hot = rng.permutation(N)

    def batch(shift: int) -> torch.Tensor:  # a skewed draw; drift moves the hot set
        ids = hot[(rng.zipf(1.3, size=24) + shift) % N]
        return torch.from_numpy(np.unique(ids))

    pre = [batch(0) for _ in range(6)]
    warm = [batch(0) for _ in range(6)]
    measured = [batch(0) for _ in range(3)] + [batch(20) for _ in range(3)]
    counts = np.bincount(torch.cat(pre).numpy(), minlength=N)
    capacity = 10
    log = SimpleNamespace(num_batches=len(pre), input_nodes=torch.cat(pre).numpy(),
                          offsets=np.cumsum([0] + [b.numel() for b in pre]))
    link, miss = bench.predicted_link(log, N, capacity, 1.25)
    assert link > 0 and 0 < miss < 1
    rows = bench.contenders(warm, measured, num_rows=N, capacity=capacity, counts=counts,
                            presample_batches=len(pre), degrees=np.arange(N),
                            lookahead=lookahead, link=link, stage_rows=4)
    requests = sum(b.numel() for b in measured)
    for policy, raw in rows.items():
        assert raw["moved_rows"] >= raw["belady_rows"], policy
        assert raw["moved_rows"] == (raw["moved_preload"] + raw["moved_demand"]
                                     + raw["moved_prefetch"]), policy
        assert bench.summarise(raw, requests)["moved_vs_belady"] >= 1.0, policy
    assert rows["none"]["moved_rows"] == requests
    # The same stream through a logged prefetching cache: the bench counts every crossing
    # the reference counts, and beyond them only rows held unasked at the start.
    cache, clock = logged_cache("hybrid", capacity, counts=counts, lookahead=lookahead,
                                stage_rows=4)
    raw, _ = bench.replay(cache, warm, measured, lookahead=lookahead, budget=link)
    reference = reference_moved(clock, warm, measured)
    assert reference <= raw["moved_rows"]
    assert raw["moved_rows"] <= reference + raw["staged_at_start"] + raw["moved_preload"]
