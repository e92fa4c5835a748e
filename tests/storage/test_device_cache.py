"""Device cache: every read equals the source rows under every policy and stream, the
counters add up, each policy keeps the rows it promises, and Belady's MIN is optimal."""

from __future__ import annotations

import dataclasses
from conftest import fewest_fetches
from collections import OrderedDict

import numpy as np
import pytest
import torch

from graphsys.storage.belady import belady, next_uses
from graphsys.storage.device_cache import CacheCounters, DeviceCache
from graphsys.storage.memory import TensorStore
from graphsys.storage.policies import (
    POLICY_NAMES,
    HybridPolicy,
    confident_static_fraction,
    make_policy,
)
from graphsys.storage.victim import VictimBuffer

N, DIM, CAP = 1000, 5, 40
POLICIES = ("degree", "frequency", "lru", "clock", "hybrid")
EMPTY = torch.empty(0, dtype=torch.int64)


def _features(dtype: torch.dtype = torch.float32, n: int = N, dim: int = DIM) -> torch.Tensor:
    g = torch.Generator().manual_seed(11)
    return (torch.randn(n, dim, generator=g, dtype=torch.float64) * 1000).to(dtype)


def _weights(lo: int, hi: int, seed: int) -> torch.Tensor:
    """A Zipf-like access distribution over rows ``lo..hi-1`` (in a random order)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.zeros(N, dtype=torch.float64)
    w[lo + torch.randperm(hi - lo, generator=g)] = (
        1.0 / torch.arange(1, hi - lo + 1, dtype=torch.float64) ** 1.1)
    return w


def _draw(weights: torch.Tensor, size: int, g: torch.Generator) -> torch.Tensor:
    if size == 0:
        return EMPTY
    return torch.multinomial(weights, size, replacement=True, generator=g)


def _presence_counts(weights: torch.Tensor, batches: int, size: int, seed: int
                     ) -> torch.Tensor:
    """Batches each row appeared in (the presample's access counts)."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.zeros(N, dtype=torch.float64)
    for _ in range(batches):
        counts[torch.unique(_draw(weights, size, g))] += 1
    return counts


WEIGHTS = _weights(0, N, 1)
PRESAMPLE_BATCHES = 50
COUNTS = _presence_counts(WEIGHTS, PRESAMPLE_BATCHES, 60, 2)
DEGREES = torch.randperm(N, generator=torch.Generator().manual_seed(3))


def _policy(name: str, counts: torch.Tensor = COUNTS, **kw):
    return make_policy(name, counts=counts.numpy(), presample_batches=PRESAMPLE_BATCHES,
                       degrees=DEGREES.numpy(), **kw)


def _cache(feats: torch.Tensor, name: str, capacity: int = CAP, victim: int | None = None,
           device: str = "cpu", **kw) -> DeviceCache:
    store = TensorStore(feats)
    buffer = (None if victim is None
              else VictimBuffer(victim, feats.shape[0], feats.shape[1], feats.dtype, pin=False))
    cache = DeviceCache(store, capacity * store.row_bytes, _policy(name, **kw), device=device,
                        victim=buffer)
    assert cache.capacity == min(capacity, feats.shape[0])
    _check_state(cache, feats)
    return cache


def _random_stream(seed: int, batches: int = 40) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sizes = torch.randint(0, 90, (batches,), generator=g).tolist()
    return [_draw(WEIGHTS, size, g) for size in sizes]


def _adversarial_stream() -> list[torch.Tensor]:
    scan = torch.arange(100, 100 + 2 * CAP)  # 2x capacity distinct ids, scanned cyclically
    out = [scan[i : i + 10] for _ in range(3) for i in range(0, 2 * CAP, 10)]
    big = torch.arange(200, 200 + 3 * CAP)
    out += [torch.full((50,), 7), torch.full((1,), N - 1), EMPTY, torch.full((3,), 7),
            torch.arange(N - 1, N - 1 - 6 * CAP, -2),  # descending, 3x capacity
            torch.cat([big, big[:60]]), big.flip(0), EMPTY, EMPTY,
            torch.arange(N - 1, -1, -7), torch.tensor([0, N - 1, 0, N - 1])]
    out += [scan[i : i + 10] for i in range(0, 2 * CAP, 10)]
    return out


def _cached(cache: DeviceCache) -> set[int]:
    return set(cache.id_of[cache.id_of >= 0].tolist())


def _tier_rows(cache: DeviceCache, tier: str) -> int:
    entry = cache.stats.tiers.get(tier)
    return entry.rows if entry is not None else 0


def _check_state(cache: DeviceCache, feats: torch.Tensor) -> None:
    cache.check_consistency()
    used = torch.nonzero(cache.id_of >= 0).flatten()
    held = cache.id_of[used].cpu()
    assert torch.equal(cache.rows[used].cpu(), feats[held])
    c = cache.counters
    assert c.hits + c.staged_hits + c.demand_misses == c.requests
    assert c.moved_rows == c.demand_misses + c.prefetched_rows
    assert c.victim_rows + c.fallback_rows == c.moved_rows
    assert c.inserted - c.evicted == used.numel() - c.preload_rows
    assert _tier_rows(cache, "device") == c.hits
    assert _tier_rows(cache, "staged") == c.staged_hits
    assert _tier_rows(cache, "victim") == c.victim_rows
    assert _tier_rows(cache, "memory") == c.fallback_rows
    if cache.policy.static:
        assert c.inserted == 0 and c.evicted == 0
    v = cache.victim
    if v is not None:
        pos = torch.nonzero(v.id_of >= 0).flatten()
        kept = v.id_of[pos]
        assert torch.equal(v.position[kept].long(), pos)
        assert int((v.position >= 0).sum()) == pos.numel()
        assert torch.equal(v.rows[pos], feats[kept])
        # A row readmitted to the device leaves the buffer.
        assert not bool(cache.contains(kept).any())


def _check_read(cache: DeviceCache, feats: torch.Tensor, ids: torch.Tensor) -> CacheCounters:
    """Read ``ids`` through the cache, check it, and return the counters' increments."""
    before = dataclasses.replace(cache.counters)
    got = cache.read(ids)
    assert got.dtype == feats.dtype and torch.equal(got.cpu(), feats[ids])
    after = cache.counters
    d = CacheCounters(**{f.name: getattr(after, f.name) - getattr(before, f.name)
                         for f in dataclasses.fields(CacheCounters)})
    distinct = torch.unique(ids).numel()
    assert d.batches == 1 and d.requests == distinct
    assert d.hits + d.staged_hits + d.demand_misses == distinct
    assert d.prefetched_rows == 0  # a read moves demand rows only
    assert d.moved_rows == d.demand_misses
    _check_state(cache, feats)
    return d


# -- exact reads and consistent counters on every policy and stream -------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("name", POLICIES)
def test_reads_are_exact_on_random_and_adversarial_streams(name, dtype, device) -> None:
    feats = _features(dtype)
    for adversarial, stream in ((False, _random_stream(1)), (True, _adversarial_stream())):
        for victim in (None, 0, 50):
            cache = _cache(feats, name, victim=victim, device=device)
            for ids in stream:
                _check_read(cache, feats, ids)
            if victim == 50 and name in ("lru", "clock") and adversarial:
                # The scan comes back to rows evicted 2x capacity ago: the buffer has them.
                assert cache.counters.victim_rows > 0


@pytest.mark.parametrize("name", POLICIES)
def test_read_into_out_and_list_ids(name) -> None:
    feats = _features()
    cache = _cache(feats, name)
    out = torch.empty(4, DIM)
    assert cache.read([3, 1, 3, 0], out=out) is out
    assert torch.equal(out, feats[[3, 1, 3, 0]])
    assert cache.read([]).shape == (0, DIM)
    with pytest.raises(IndexError, match=f"row id {N} is outside"):
        cache.read([0, N])
    described = cache.describe()
    assert described["capacity_rows"] == CAP and described["policy"] == name
    assert described["bytes"] == cache.nbytes == CAP * DIM * 4


@pytest.mark.parametrize("name", POLICIES)
def test_zero_and_full_capacity(name) -> None:
    feats = _features()
    empty = _cache(feats, name, capacity=0, victim=10)
    assert empty.capacity == 0 and empty.nbytes == 0
    for ids in _random_stream(4, 10):
        d = _check_read(empty, feats, ids)
        assert d.hits == 0 and d.moved_rows == torch.unique(ids).numel()
    assert _cached(empty) == set()

    full = _cache(feats, name, capacity=2 * N)  # more bytes than the whole store
    assert full.capacity == N
    _check_read(full, feats, torch.arange(N - 1, -1, -1))
    assert _cached(full) == set(range(N))
    d = _check_read(full, feats, torch.arange(0, N, 3))
    assert d.hits == d.requests and d.moved_rows == 0


# -- prefetch ---------------------------------------------------------------------------


@pytest.mark.parametrize("budget", [None, 0, 7, 25])
@pytest.mark.parametrize("name", POLICIES)
def test_prefetch_of_the_batches_then_read_is_exact(name, budget) -> None:
    feats = _features(torch.float64)
    stream = _random_stream(3, 30) + _adversarial_stream()
    cache = _cache(feats, name, victim=50)
    for t, ids in enumerate(stream):
        before = dataclasses.replace(cache.counters)
        moved = cache.prefetch(stream[t : t + 3], budget_rows=budget)
        c = cache.counters
        assert moved == c.prefetched_rows - before.prefetched_rows
        assert moved == c.moved_rows - before.moved_rows
        assert c.requests == before.requests
        if budget is not None:
            assert moved <= budget
        _check_state(cache, feats)
        d = _check_read(cache, feats, ids)
        if budget is None:  # every row the batch lacked was staged or fetched ahead
            assert d.demand_misses == 0
        if budget == 0:
            assert moved == 0 and d.staged_hits == 0
    if budget != 0:
        assert cache.counters.prefetched_rows > 0
        assert cache.counters.staged_hits > 0


@pytest.mark.parametrize("name", POLICIES)
def test_prefetch_of_other_batches_than_read_is_exact(name) -> None:
    feats = _features()
    stream = _random_stream(5, 30)
    decoys = _random_stream(6, 30)
    cache = _cache(feats, name, victim=20)
    for t, ids in enumerate(stream):
        cache.prefetch(decoys[t : t + 3], budget_rows=30)
        if t % 3 == 0:  # a second call before the read adds to what is staged
            cache.prefetch([stream[t], *decoys[t + 1 : t + 3]], budget_rows=15)
        _check_state(cache, feats)
        _check_read(cache, feats, ids)
    assert cache.counters.prefetched_rows > 0
    # Staging the same batch twice moves its rows once.
    batch = torch.arange(500, 530)
    assert cache.prefetch([batch]) == int((~cache.contains(batch)).sum()) > 0
    assert cache.prefetch([batch]) == 0
    d = _check_read(cache, feats, batch)
    assert d.demand_misses == 0 and d.staged_hits > 0
    # An empty upcoming list changes nothing.
    moved = cache.counters.moved_rows
    assert cache.prefetch([]) == 0 and cache.counters.moved_rows == moved


@pytest.mark.parametrize("name", POLICIES)
def test_one_prefetch_for_several_reads(name) -> None:
    feats = _features(torch.float16)
    stream = _random_stream(14, 30) + _adversarial_stream()
    cache = _cache(feats, name, victim=20)
    for t, ids in enumerate(stream):
        if t % 3 == 0:  # the window shrinks by one batch per read in between
            assert cache.prefetch(stream[t : t + 4], budget_rows=40) <= 40
        d = _check_read(cache, feats, ids)
        if t % 3 == 0 and ids.numel():
            assert d.staged_hits > 0 or d.demand_misses == 0


@pytest.mark.parametrize("stage", [0, 5, 60])
def test_prefetch_stages_beside_the_slots_within_its_bound(stage) -> None:
    feats = _features()
    stream = _random_stream(8, 30) + _adversarial_stream()
    store = TensorStore(feats)
    victim = VictimBuffer(20, N, DIM, feats.dtype, pin=False)
    cache = DeviceCache(store, CAP * store.row_bytes, _policy("hybrid"), device="cpu",
                        victim=victim, lookahead=4, stage_rows=stage)
    ahead = 0  # calls that staged rows for a batch after the next one
    for t, ids in enumerate(stream):
        window = stream[t : t + 4]
        slots = cache.id_of.clone()
        first = torch.unique(window[0]) if window else EMPTY
        missing = int((~cache.contains(first)).sum()) if first.numel() else 0
        moved = cache.prefetch(window)
        assert torch.equal(cache.id_of, slots)  # staging never evicts a resident
        staged = cache._staged_ids
        assert staged.numel() <= stage + missing  # kept rows, then the next batch's
        assert torch.equal(cache._staged_rows, feats[staged])
        assert not bool(cache.contains(staged).any())
        wanted = set(torch.cat(window).tolist()) if window else set()
        assert set(staged.tolist()) <= wanted
        ahead += moved > missing
        d = _check_read(cache, feats, ids)
        assert d.demand_misses == 0  # no link budget: the next batch is always staged
        assert cache._staged_ids.numel() <= stage  # what waits across reads is bounded
    assert (ahead > 0) == (stage > 0)


def test_rows_staged_for_a_later_batch_wait_for_it() -> None:
    feats = _features()
    store = TensorStore(feats)
    cache = DeviceCache(store, 10 * store.row_bytes, _policy("lru"), device="cpu",
                        stage_rows=100)
    later = torch.arange(500, 520)
    assert cache.prefetch([torch.arange(20), torch.arange(20, 30), later]) == 50
    _check_read(cache, feats, torch.arange(20))
    d = _check_read(cache, feats, torch.arange(20, 30))  # no new prefetch in between
    assert d.staged_hits == 10 and d.demand_misses == 0
    d = _check_read(cache, feats, later)
    assert d.staged_hits == 20 and d.demand_misses == 0 and d.moved_rows == 0
    assert cache._staged_ids.numel() == 0  # all used, nothing left waiting


def test_prefetch_with_negative_budget_is_refused() -> None:
    feats = _features()
    cache = _cache(feats, "lru")
    with pytest.raises(ValueError, match="budget_rows"):
        cache.prefetch([torch.arange(20)], budget_rows=-1)
    assert cache.counters.moved_rows == 0


# -- policy semantics --------------------------------------------------------------------


def _small_cache(name: str, capacity: int, n: int = 20, **kw) -> DeviceCache:
    feats = _features(n=n)
    store = TensorStore(feats)
    return DeviceCache(store, capacity * store.row_bytes, make_policy(name, **kw),
                       device="cpu")


def test_lru_evicts_the_least_recently_used_row() -> None:
    cache = _small_cache("lru", 3)
    for ids in ([0], [1], [2], [0], [3]):
        cache.read(ids)
    assert _cached(cache) == {0, 2, 3}
    cache.read([2])
    cache.read([4])
    assert _cached(cache) == {2, 3, 4}
    # A batch larger than the cache keeps its own hit (2) and evicts only older rows.
    cache.read([5, 2, 6, 7])
    cached = _cached(cache)
    assert 2 in cached and len(cached) == 3 and cached - {2} <= {5, 6, 7}
    assert cache.counters.evicted == 4


def test_lru_matches_a_reference_on_single_row_batches() -> None:
    cache = _small_cache("lru", 5)
    ref: OrderedDict[int, None] = OrderedDict()
    g = torch.Generator().manual_seed(8)
    misses = 0
    for x in torch.randint(0, 12, (300,), generator=g).tolist():
        cache.read([x])
        if x in ref:
            ref.move_to_end(x)
        else:
            misses += 1
            ref[x] = None
            if len(ref) > 5:
                ref.popitem(last=False)
        assert _cached(cache) == set(ref)
    assert cache.counters.demand_misses == misses


def test_lru_and_clock_never_hit_a_cyclic_scan_of_twice_the_capacity() -> None:
    scan = [torch.arange(i, i + 4) for _ in range(4) for i in range(0, 16, 4)]
    opt = belady(scan, 8, 20)
    for name in ("lru", "clock"):
        cache = _small_cache(name, 8)
        for ids in scan:
            cache.read(ids)
        assert cache.counters.hits == 0 and cache.counters.moved_rows == 64
        assert opt.total_misses < 64


def test_clock_gives_a_visited_row_a_second_chance() -> None:
    clock = _small_cache("clock", 3)
    for ids in ([0], [1], [2]):
        clock.read(ids)
    a, b, c = clock.id_of.tolist()  # slots 0, 1, 2; the hand is at slot 0
    assert {a, b, c} == {0, 1, 2}
    clock.read([b])  # visits slot 1
    clock.read([3])  # slot 0 is unvisited: evicted, the hand moves to slot 1
    assert clock.id_of.tolist() == [3, b, c]
    clock.read([4])  # slot 1 was visited: its bit is cleared, slot 2 is evicted
    assert clock.id_of.tolist() == [3, b, 4]
    clock.read([5])  # the hand is back at slot 0
    assert clock.id_of.tolist() == [5, b, 4]
    lru = _small_cache("lru", 3)
    for ids in ([0], [1], [2], [b], [3], [4], [5]):
        lru.read(ids)
    assert _cached(lru) == {3, 4, 5}  # LRU drops b, used before 3 and 4


def test_clock_matches_a_reference_on_single_row_batches() -> None:
    cap = 4
    cache = _small_cache("clock", cap)
    for x in range(cap):
        cache.read([x])
    slots = cache.id_of.tolist()
    visited, hand = [False] * cap, 0
    g = torch.Generator().manual_seed(9)
    for x in torch.randint(0, 9, (300,), generator=g).tolist():
        cache.read([x])
        if x in slots:
            visited[slots.index(x)] = True
        else:
            while visited[hand]:
                visited[hand] = False
                hand = (hand + 1) % cap
            slots[hand], visited[hand] = x, False
            hand = (hand + 1) % cap
        assert cache.id_of.tolist() == slots


def _highest(scores, k: int) -> list[int]:
    """The ``k`` ids of highest score, ties to the lower id (the documented rule), by a
    plain Python sort rather than the library's torch expression."""
    values = [float(v) for v in scores]
    return sorted(range(len(values)), key=lambda i: (-values[i], i))[:k]


@pytest.mark.parametrize("name", ["degree", "frequency"])
def test_static_policies_hold_the_top_rows_and_never_change(name) -> None:
    feats = _features()
    scores = DEGREES if name == "degree" else COUNTS
    top = set(_highest(scores, CAP))
    assert len(top) == CAP
    cache = _cache(feats, name, victim=10)
    assert _cached(cache) == top and bool(cache.pinned.all())
    assert cache.counters.preload_rows == CAP
    for ids in _random_stream(7) + _adversarial_stream():
        d = _check_read(cache, feats, ids)
        assert d.hits == len(set(ids.tolist()) & top)
        assert _cached(cache) == top
    assert cache.counters.inserted == 0 and cache.counters.evicted == 0


def test_static_ties_go_to_the_lower_id() -> None:
    cache = _small_cache("frequency", 2, n=5, counts=[1, 3, 3, 0, 3])
    assert _cached(cache) == {1, 2}
    cache = _small_cache("degree", 3, n=5, degrees=np.array([2, 2, 2, 2, 2]))
    assert _cached(cache) == {0, 1, 2}


@pytest.mark.parametrize("length", [N - 10, N + 10])
def test_static_scores_of_the_wrong_length_are_refused(length) -> None:
    store = TensorStore(_features())
    scores = np.arange(length, dtype=np.float64)
    with pytest.raises(ValueError, match="entries"):
        DeviceCache(store, CAP * store.row_bytes, make_policy("frequency", counts=scores),
                    device="cpu")


def test_confident_static_fraction_on_hand_checked_counts() -> None:
    # top 3 = 100, 100, 50: 100 - 2 * 10 = 80 > 50 twice, 50 - 2 * 7.07 < 50.
    assert confident_static_fraction([100, 9, 50, 100, 10, 0], 3) == pytest.approx(2 / 3)
    assert confident_static_fraction([4, 4, 4, 4], 2) == 0.0
    assert confident_static_fraction([100, 1], 5) == pytest.approx(1 / 2)
    assert confident_static_fraction([100, 1], 0) == 0.0
    assert confident_static_fraction([], 3) == 0.0


def _hybrid_and_frequency(feats: torch.Tensor, counts: torch.Tensor, **kw
                          ) -> tuple[DeviceCache, DeviceCache]:
    return (_cache(feats, "hybrid", counts=counts, **kw),
            _cache(feats, "frequency", counts=counts))


def test_hybrid_pins_the_surest_rows_of_the_presample() -> None:
    for fraction, pinned in ((0.3, 12), (0.0, 0), (1.0, CAP), (0.52, 21)):
        cache = _cache(_features(), "hybrid", static_fraction=fraction)
        assert int(cache.pinned.sum()) == pinned == round(fraction * CAP)
        assert _cached(cache) == set(_highest(COUNTS, CAP))
        assert set(cache.id_of[cache.pinned].tolist()) == set(_highest(COUNTS, pinned))
    cache = _cache(_features(), "hybrid")
    expected = round(confident_static_fraction(COUNTS, CAP) * CAP)
    assert 0 < expected < CAP and int(cache.pinned.sum()) == expected


def test_hybrid_sharpens_the_presample_while_the_stream_matches_it() -> None:
    weights = _weights(0, N // 2, 21)
    counts = _presence_counts(weights, PRESAMPLE_BATCHES, 120, 22)
    feats = _features()
    hybrid, frequency = _hybrid_and_frequency(feats, counts)
    assert _cached(hybrid) == _cached(frequency)
    pinned = set(hybrid.id_of[hybrid.pinned].tolist())
    g = torch.Generator().manual_seed(23)
    hits = {"hybrid": 0, "frequency": 0}
    for t in range(240):
        ids = _draw(weights, 120, g)
        dh = _check_read(hybrid, feats, ids)
        df = _check_read(frequency, feats, ids)
        if t >= 120:
            hits["hybrid"] += dh.hits
            hits["frequency"] += df.hits
        assert not hybrid.policy.drifting
    # Online counts replace the rows the presample over-counted by better ones: the
    # cached set carries more of the true access weight, and hits follow.
    assert hybrid.counters.inserted > 0
    assert pinned <= _cached(hybrid)  # pins hold while the stream matches
    mass = {k: float(weights[list(_cached(c))].sum())
            for k, c in (("hybrid", hybrid), ("frequency", frequency))}
    assert mass["hybrid"] > mass["frequency"]
    assert hits["hybrid"] > hits["frequency"]


def test_hybrid_follows_a_drifting_stream_and_beats_frequency() -> None:
    before, after = _weights(0, N // 2, 31), _weights(N // 2, N, 32)
    counts = _presence_counts(before, PRESAMPLE_BATCHES, 60, 33)
    assert int((counts[N // 2 :] > 0).sum()) == 0  # the presample never saw the new rows
    feats = _features()
    hybrid, frequency = _hybrid_and_frequency(feats, counts, static_fraction=0.25)
    pinned = hybrid.id_of[hybrid.pinned].clone()
    g = torch.Generator().manual_seed(34)
    for _ in range(20):
        ids = _draw(before, 60, g)
        _check_read(hybrid, feats, ids)
        _check_read(frequency, feats, ids)
    assert not hybrid.policy.drifting
    assert torch.equal(hybrid.id_of[hybrid.pinned], pinned)  # pins hold before the drift
    hits = {"hybrid": 0, "frequency": 0}
    late, drifted = 0.0, False
    for t in range(100):
        ids = _draw(after, 60, g)
        dh = _check_read(hybrid, feats, ids)
        hits["hybrid"] += dh.hits
        hits["frequency"] += _check_read(frequency, feats, ids).hits
        drifted = drifted or hybrid.policy.drifting
        if t >= 50:
            late += dh.hits / dh.requests
    assert hits["frequency"] == 0 and drifted
    assert hybrid.counters.inserted > 0 and hits["hybrid"] > 0
    assert late / 50 > 0.3  # it learnt the new hot rows
    # Pins were released on drift: the old hot rows left, and no new row is pinned.
    still = set(hybrid.id_of[hybrid.pinned].tolist())
    assert still < set(pinned.tolist()) and not still & set(range(N // 2, N))
    assert frequency.counters.inserted == 0


def test_hybrid_still_learns_after_its_scores_are_rescaled() -> None:
    before, after = _weights(0, N // 2, 41), _weights(N // 2, N, 42)
    later = _weights(0, N // 2, 45)  # hot rows the presample ranked otherwise
    counts = _presence_counts(before, PRESAMPLE_BATCHES, 60, 43)
    feats = _features()
    cache = _cache(feats, "hybrid", counts=counts, static_fraction=0.25)
    g = torch.Generator().manual_seed(44)
    for t in range(1100):  # the increment passes 1e12 after about 640 batches
        ids = _draw(after if t < 700 else later, 12, g)  # then the stream drifts again
        if t % 100 == 0:
            _check_read(cache, feats, ids)
        else:
            assert torch.equal(cache.read(ids), feats[ids])
        if t == 799:
            mark = dataclasses.replace(cache.counters)
    assert cache.policy.increment < 1e12 and bool(torch.isfinite(cache.policy.score).all())
    _check_state(cache, feats)
    c = cache.counters
    assert (c.hits - mark.hits) / (c.requests - mark.requests) > 0.3


# -- Belady's MIN -----------------------------------------------------------------------


def test_next_uses_on_a_hand_written_stream() -> None:
    batches = [torch.tensor([3, 1]), torch.tensor([1, 2]), torch.tensor([3]),
               torch.tensor([2, 1]), EMPTY]
    got = next_uses(batches)
    assert [g.tolist() for g in got] == [[2, 1], [3, 3], [5], [5, 5], []]
    assert next_uses([]) == []


def test_belady_on_hand_checked_streams() -> None:
    t = torch.tensor
    cases = [
        ([t([0]), t([1]), t([0])], 1, [1, 1, 0]),  # keeps 0 (used again), bypasses 1
        ([t([0, 1]), t([2]), t([0]), t([1])], 2, [2, 1, 0, 0]),
        ([t([0, 1, 2]), t([0, 1, 2])], 2, [3, 1]),
        ([t([0, 1]), t([0, 1])], 0, [2, 2]),
        ([t([0]), t([1]), t([2]), t([0]), t([1]), t([2])], 2, [1, 1, 1, 0, 0, 1]),
        ([EMPTY, t([4]), EMPTY, t([4])], 1, [0, 1, 0, 0]),
    ]
    for batches, capacity, misses in cases:
        result = belady(batches, capacity, 5)
        assert result.misses.tolist() == misses
        assert result.requests.tolist() == [b.numel() for b in batches]
        assert result.total_misses == sum(misses)
        assert result.hit_rate == pytest.approx(1 - sum(misses) / result.total_requests)
    assert belady([], 3, 5).hit_rate == 0.0


def test_belady_equals_the_exhaustive_optimum_on_small_streams() -> None:
    g = torch.Generator().manual_seed(12)
    for _ in range(80):
        sizes = torch.randint(1, 5, (5,), generator=g).tolist()
        batches = [torch.randperm(6, generator=g)[:s] for s in sizes]
        for capacity in (1, 2, 3):
            lists = [b.tolist() for b in batches]
            assert belady(batches, capacity, 6).total_misses == fewest_fetches(lists, capacity), \
                (lists, capacity)


@pytest.mark.parametrize("name", POLICIES)
def test_belady_is_a_lower_bound_for_every_policy(name) -> None:
    feats = _features()
    stream = [torch.unique(b) for b in _random_stream(13, 60) + _adversarial_stream()]
    cache = _cache(feats, name)
    for ids in stream:
        _check_read(cache, feats, ids)
    opt = belady(stream, CAP, N)
    c = cache.counters
    assert opt.total_requests == c.requests
    assert c.prefetched_rows == 0 and c.moved_rows == c.demand_misses
    # Rows preloaded by static sets were moved too, once, before the first batch.
    assert opt.total_misses <= c.moved_rows + c.preload_rows
    if name in ("lru", "clock"):
        assert opt.total_misses < c.moved_rows


def test_belady_refuses_repeated_ids() -> None:
    with pytest.raises(ValueError, match="batch 1 repeats ids"):
        belady([torch.tensor([0, 1]), torch.tensor([2, 2])], 2, 5)


# -- victim buffer ----------------------------------------------------------------------


def test_victim_buffer_put_lookup_take_discard_and_fifo() -> None:
    feats = _features(torch.float64, n=50, dim=3)
    v = VictimBuffer(4, 50, 3, torch.float64, pin=False)
    assert v.nbytes == 4 * 3 * 8 and len(v) == 0
    v.put(torch.tensor([5, 9]), feats[[5, 9]])
    pos = v.lookup(torch.tensor([9, 1, 5]))
    assert pos[1] == -1 and bool((pos[[0, 2]] >= 0).all())
    assert torch.equal(v.take(pos[[0, 2]]), feats[[9, 5]]) and v.hits == 2
    v.put(torch.tensor([9]), feats[[9]])  # already held: not stored twice
    assert len(v) == 2
    v.put(torch.tensor([11, 12, 13]), feats[[11, 12, 13]])  # overwrites the oldest (5)
    assert v.lookup(torch.tensor([5])).item() == -1 and len(v) == 4
    held = torch.tensor([9, 11, 12, 13])
    assert torch.equal(v.take(v.lookup(held)), feats[held])
    v.discard(torch.tensor([12, 40]))  # 40 was never there
    assert v.lookup(torch.tensor([12])).item() == -1 and len(v) == 3
    v.discard(EMPTY)
    v.put(torch.tensor([14]), feats[[14]])  # the ring goes on: 9 is the oldest
    assert v.lookup(torch.tensor([9])).item() == -1
    held = torch.tensor([11, 13, 14])
    assert torch.equal(v.take(v.lookup(held)), feats[held])
    many = torch.arange(20, 26)
    v.put(many, feats[many])  # more than fit: only the last four survive
    assert (v.lookup(torch.tensor([11, 13, 14, 20, 21])) == -1).all()
    assert torch.equal(v.take(v.lookup(many[2:])), feats[many[2:]])
    assert len(v) == 4 and VictimBuffer.rows_for(100, 5, torch.float32) == 5


def test_victim_buffer_of_zero_rows() -> None:
    v = VictimBuffer(0, 10, 3, torch.float32, pin=False)
    v.put(torch.tensor([1, 2]), torch.ones(2, 3))
    v.discard(torch.tensor([1]))
    assert len(v) == 0 and v.nbytes == 0
    assert v.lookup(torch.tensor([1, 2])).tolist() == [-1, -1]
    with pytest.raises(ValueError, match=">= 0 rows"):
        VictimBuffer(-1, 10, 3, torch.float32)


# -- errors -----------------------------------------------------------------------------


def test_bad_arguments_are_refused() -> None:
    assert POLICY_NAMES == POLICIES
    with pytest.raises(ValueError, match="unknown cache policy 'mru'; pick one of "
                       "degree, frequency, lru, clock, hybrid"):
        make_policy("mru")
    for name in ("frequency", "hybrid"):
        with pytest.raises(ValueError, match=f"policy '{name}' needs counts"):
            make_policy(name)
    with pytest.raises(ValueError, match="needs degrees"):
        make_policy("degree")
    store = TensorStore(_features())
    with pytest.raises(ValueError, match=f"counts has {N + 1} entries, the store {N} rows"):
        DeviceCache(store, 10 * store.row_bytes, make_policy("hybrid", counts=np.ones(N + 1)),
                    device="cpu")
    with pytest.raises(ValueError, match=f"counts has {N - 1} entries"):
        DeviceCache(store, 10 * store.row_bytes, make_policy("hybrid", counts=np.ones(N - 1)),
                    device="cpu")
    with pytest.raises(ValueError, match="budget must be >= 0 bytes, got -1"):
        DeviceCache(store, -1, make_policy("lru"), device="cpu")
    for kw, match in (({"static_fraction": 1.5}, "static_fraction"),
                      ({"half_life": 0}, "half_life"), ({"tolerance": 1.0}, "tolerance")):
        with pytest.raises(ValueError, match=match):
            HybridPolicy(np.ones(N), 1, **kw)
    with pytest.raises(ValueError, match="presample_batches"):
        HybridPolicy(np.ones(N), 0)
