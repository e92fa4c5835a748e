"""Numba kernels of the CPU neighbour sampler.

Randomness is counter based: the draws for destination node ``v`` in one layer come
from a SplitMix64 stream seeded by ``(key, v)``, so a sample depends only on the seed,
the batch key and the node, never on the number of threads or the order in which
threads run. Kernels release the GIL (``nogil``) so a loader thread samples while the
training thread computes.
"""

from __future__ import annotations

import numba
import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_TO_UNIT = 1.0 / 9007199254740992.0  # 2**-53


@numba.njit(inline="always")
def _mix(z):
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@numba.njit(inline="always")
def _below(state, n):
    """Advance ``state``; return it and a uniform integer in ``[0, n)``."""
    state = state + _GOLDEN
    u = (_mix(state) >> np.uint64(11)) * _TO_UNIT
    r = np.int64(u * n)
    return state, min(r, n - 1)


@numba.njit(nogil=True, cache=True)
def _bucket_order(ids, num_nodes):
    """A permutation visiting ``ids`` bucket by bucket of nearby ids (a counting sort
    on the high bits: O(n), and as good as a full sort for memory locality)."""
    n = ids.shape[0]
    buckets = 1
    while buckets * 4 < n and buckets < 65536:
        buckets *= 2
    shift = 0
    while (num_nodes >> shift) >= buckets:
        shift += 1
    starts = np.zeros(buckets + 1, np.int64)
    for i in range(n):
        starts[(ids[i] >> shift) + 1] += 1
    for b in range(buckets):
        starts[b + 1] += starts[b]
    order = np.empty(n, np.int64)
    for i in range(n):
        b = ids[i] >> shift
        order[starts[b]] = i
        starts[b] += 1
    return order


@numba.njit(nogil=True, parallel=True, cache=True)
def _uniform_counts(indptr, seeds, fanout, replace):
    """Edges each seed keeps under uniform sampling, and their prefix sums."""
    n = seeds.shape[0]
    counts = np.empty(n, np.int64)
    for i in numba.prange(n):
        v = seeds[i]
        deg = indptr[v + 1] - indptr[v]
        if fanout < 0 or (not replace and deg <= fanout):
            counts[i] = deg
        elif deg == 0:
            counts[i] = 0
        else:
            counts[i] = fanout
    return counts, _offsets(counts)


@numba.njit(nogil=True, cache=True)
def _offsets(counts):
    offsets = np.empty(counts.shape[0] + 1, np.int64)
    offsets[0] = 0
    for i in range(counts.shape[0]):
        offsets[i + 1] = offsets[i] + counts[i]
    return offsets


@numba.njit(inline="always")
def _pick_uniform(state, deg, k, fanout, replace, picked, out):
    """Write ``k`` positions in ``[0, deg)`` into ``picked[out:out + k]``: all of them in
    order when the node keeps every edge, else uniform draws (with or without replacement).
    """
    if k == deg and (fanout < 0 or not replace or deg == 0):
        for j in range(deg):
            picked[out + j] = j
    elif replace:
        for j in range(k):
            state, r = _below(state, deg)
            picked[out + j] = r
    elif k * 8 <= deg:
        # Floyd's algorithm: k distinct positions in O(k^2) without touching the whole
        # neighbour list; k is a fanout (tens), so the scan is cheap.
        for j in range(k):
            state, r = _below(state, deg - k + j + 1)
            pos = deg - k + j
            for q in range(j):
                if picked[out + q] == r:
                    r = pos
                    break
            picked[out + j] = r
    else:
        # Reservoir sampling (algorithm R): O(degree), for dense picks.
        for j in range(k):
            picked[out + j] = j
        for j in range(k, deg):
            state, r = _below(state, j + 1)
            if r < k:
                picked[out + r] = j


@numba.njit(nogil=True, parallel=True, cache=True)
def sample_layer(indptr, indices, seeds, fanout, replace, key):
    """Sample the in-neighbours of ``seeds``.

    Returns ``(counts, sources)``: ``counts[i]`` edges for ``seeds[i]`` whose global
    source ids fill ``sources`` consecutively (CSC order). ``fanout < 0`` takes all
    in-neighbours; without replacement a node keeps ``min(fanout, degree)`` distinct
    edges (distinct edge positions: a duplicated edge may be drawn twice, as in DGL).
    """
    n = seeds.shape[0]
    counts, offsets = _uniform_counts(indptr, seeds, fanout, replace)
    sources = np.empty(offsets[n], indices.dtype)
    ukey = np.uint64(key)
    # Visit nodes in (roughly) id order: neighbour lists are then read nearly
    # sequentially, which on a large graph is worth far more than the ordering.
    order = _bucket_order(seeds, indptr.shape[0] - 1)
    for t in numba.prange(n):
        i = order[t]
        v = seeds[i]
        start = indptr[v]
        deg = indptr[v + 1] - start
        out = offsets[i]
        k = counts[i]
        _pick_uniform(_mix(ukey ^ (np.uint64(v) * _GOLDEN)), deg, k, fanout, replace,
                      sources, out)
        for j in range(k):  # positions to source ids, in place
            sources[out + j] = indices[start + sources[out + j]]
    return counts, sources


@numba.njit(nogil=True, parallel=True, cache=True)
def sample_layer_edges(indptr, seeds, fanout, replace, key):
    """:func:`sample_layer`'s draws (the same for the same key) as global edge ids (CSC
    positions, int64) instead of source ids, for samplers that need the edges."""
    n = seeds.shape[0]
    counts, offsets = _uniform_counts(indptr, seeds, fanout, replace)
    edges = np.empty(offsets[n], np.int64)
    ukey = np.uint64(key)
    order = _bucket_order(seeds, indptr.shape[0] - 1)
    for t in numba.prange(n):
        i = order[t]
        v = seeds[i]
        start = indptr[v]
        out = offsets[i]
        _pick_uniform(_mix(ukey ^ (np.uint64(v) * _GOLDEN)), indptr[v + 1] - start,
                      counts[i], fanout, replace, edges, out)
        for j in range(counts[i]):
            edges[out + j] += start
    return counts, edges


@numba.njit(inline="always")
def _unit_open(state):
    """Advance ``state``; return it and a uniform float in the open interval (0, 1)."""
    state = state + _GOLDEN
    return state, ((_mix(state) >> np.uint64(11)) + 0.5) * _TO_UNIT


@numba.njit(nogil=True, parallel=True, cache=True)
def sample_layer_weighted(indptr, seeds, fanout, replace, key, weights):
    """Sample in-edges of ``seeds`` in proportion to ``weights`` (one per edge, >= 0;
    a boolean mask is weights of 0 and 1), as DGL's ``prob=``/``mask=``.

    Edges of weight 0 are never drawn. Without replacement a node keeps
    ``min(fanout, its edges of positive weight)`` distinct edges, drawn as successive
    weighted picks (Efraimidis-Spirakis keys ``log(u) / w``, the largest ``k`` win), all
    of them when ``fanout < 0``; with replacement it keeps ``fanout`` (its degree when
    ``fanout < 0``) independent weighted draws, none if no edge has positive weight.
    Returns ``(counts, edges)``: global edge ids (CSC positions, int64), each node's in
    ascending order without replacement.
    """
    n = seeds.shape[0]
    counts = np.empty(n, np.int64)
    for i in numba.prange(n):
        v = seeds[i]
        deg = indptr[v + 1] - indptr[v]
        positive = 0
        for e in range(indptr[v], indptr[v + 1]):
            if weights[e] > 0:
                positive += 1
        k = deg if fanout < 0 else fanout
        if replace:
            counts[i] = 0 if positive == 0 else k
        else:
            counts[i] = min(positive, k)
    offsets = _offsets(counts)
    edges = np.empty(offsets[n], np.int64)
    ukey = np.uint64(key)
    order = _bucket_order(seeds, indptr.shape[0] - 1)
    for t in numba.prange(n):
        i = order[t]
        v = seeds[i]
        start = indptr[v]
        deg = indptr[v + 1] - start
        out = offsets[i]
        k = counts[i]
        if k == 0:
            continue
        state = _mix(ukey ^ (np.uint64(v) * _GOLDEN))
        if replace:
            # Inverse CDF over the running sums; a draw lands in a positive-weight edge.
            cumulative = np.empty(deg, np.float64)
            total = 0.0
            for j in range(deg):
                w = weights[start + j]
                if w > 0:
                    total += w
                cumulative[j] = total
            for j in range(k):
                state, u = _unit_open(state)
                x = u * total
                lo, hi = 0, deg - 1
                while lo < hi:  # first position whose running sum exceeds x
                    mid = (lo + hi) // 2
                    if cumulative[mid] > x:
                        hi = mid
                    else:
                        lo = mid + 1
                edges[out + j] = start + lo
            continue
        keys = np.full(deg, -np.inf)
        for j in range(deg):
            w = weights[start + j]
            state, u = _unit_open(state)  # drawn for every edge: a sample does not
            if w > 0:                     # depend on which other weights are zero
                keys[j] = np.log(u) / w
        chosen = np.sort(np.argsort(keys)[deg - k:])
        for j in range(k):
            edges[out + j] = start + chosen[j]
    return counts, edges


@numba.njit(inline="always")
def _find_or_add(keys, vals, src_nodes, count, g, mask):
    """Local id of ``g`` in the open-addressing table, adding it as ``count`` if new."""
    h = np.int64((np.uint64(g) * _GOLDEN) >> np.uint64(20)) & mask
    while keys[h] != -1 and keys[h] != g:
        h = (h + 1) & mask
    if keys[h] == -1:
        keys[h] = g
        vals[h] = count
        src_nodes[count] = g
        count += 1
    return vals[h], count


@numba.njit(nogil=True, cache=True)
def relabel(dst_nodes, sources):
    """Map global ids to block-local ones, destination nodes first.

    Returns ``(src_nodes, local)``: ``src_nodes`` starts with ``dst_nodes`` (which must
    be distinct) followed by the other sources in order of first appearance, and
    ``local[e]`` is the position of ``sources[e]`` in ``src_nodes``. An open-addressing
    hash table sized to the batch keeps memory independent of the graph's size.
    """
    n_dst = dst_nodes.shape[0]
    total = n_dst + sources.shape[0]
    cap = 1
    while cap < 2 * total:
        cap *= 2
    mask = cap - 1
    keys = np.full(cap, -1, np.int64)
    vals = np.empty(cap, np.int64)
    src_nodes = np.empty(total, np.int64)
    count = 0
    for i in range(n_dst):
        _, count = _find_or_add(keys, vals, src_nodes, count, np.int64(dst_nodes[i]), mask)
    local = np.empty(sources.shape[0], np.int64)
    for e in range(sources.shape[0]):
        local[e], count = _find_or_add(keys, vals, src_nodes, count, np.int64(sources[e]),
                                       mask)
    return src_nodes[:count].copy(), local


@numba.njit(nogil=True, cache=True)
def all_distinct(values):
    """Whether ``values`` (int64) are pairwise distinct; used to validate seeds."""
    cap = 1
    while cap < 2 * values.shape[0] + 2:
        cap *= 2
    mask = cap - 1
    keys = np.full(cap, -1, np.int64)
    for i in range(values.shape[0]):
        g = values[i]
        h = np.int64((np.uint64(g) * _GOLDEN) >> np.uint64(20)) & mask
        while keys[h] != -1:
            if keys[h] == g:
                return False
            h = (h + 1) & mask
        keys[h] = g
    return True


@numba.njit(nogil=True, cache=True)
def relabel_dense(dst_nodes, sources, node_map):
    """:func:`relabel` with a node-indexed scratch map instead of a hash table.

    ``node_map`` (int32 or int64, one entry per graph node) must be all -1 on entry and
    is all -1 again on return. One random access per edge into ``node_map`` is about
    three times faster than hashing, at the price of 4 bytes per node held by the
    sampler; the caller must not share one map between concurrent calls.
    """
    n_dst = dst_nodes.shape[0]
    src_nodes = np.empty(n_dst + sources.shape[0], np.int64)
    count = 0
    for i in range(n_dst):
        g = dst_nodes[i]
        if node_map[g] < 0:
            node_map[g] = count
            src_nodes[count] = g
            count += 1
    local = np.empty(sources.shape[0], np.int64)
    for e in range(sources.shape[0]):
        g = sources[e]
        m = node_map[g]
        if m < 0:
            m = count
            node_map[g] = m
            src_nodes[count] = g
            count += 1
        local[e] = m
    for i in range(count):
        node_map[src_nodes[i]] = -1
    return src_nodes[:count].copy(), local

