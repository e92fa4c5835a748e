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
def sample_layer(indptr, indices, seeds, fanout, replace, key):
    """Sample the in-neighbours of ``seeds``.

    Returns ``(counts, sources)``: ``counts[i]`` edges for ``seeds[i]`` whose global
    source ids fill ``sources`` consecutively (CSC order). ``fanout < 0`` takes all
    in-neighbours; without replacement a node keeps ``min(fanout, degree)`` distinct
    edges (distinct edge positions: a duplicated edge may be drawn twice, as in DGL).
    """
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
    offsets = np.empty(n + 1, np.int64)
    offsets[0] = 0
    for i in range(n):
        offsets[i + 1] = offsets[i] + counts[i]
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
        if k == deg and (fanout < 0 or not replace or deg == 0):
            for j in range(deg):
                sources[out + j] = indices[start + j]
            continue
        state = _mix(ukey ^ (np.uint64(v) * _GOLDEN))
        if replace:
            for j in range(k):
                state, r = _below(state, deg)
                sources[out + j] = indices[start + r]
        elif k * 8 <= deg:
            # Floyd's algorithm: k distinct positions in O(k^2) without touching the
            # whole neighbour list; k is a fanout (tens), so the scan is cheap.
            for j in range(k):
                state, r = _below(state, deg - k + j + 1)
                pos = deg - k + j
                for q in range(j):
                    if sources[out + q] == r:
                        r = pos
                        break
                sources[out + j] = r
            for j in range(k):
                sources[out + j] = indices[start + sources[out + j]]
        else:
            # Reservoir sampling (algorithm R): O(degree), for dense picks.
            for j in range(k):
                sources[out + j] = j
            for j in range(k, deg):
                state, r = _below(state, j + 1)
                if r < k:
                    sources[out + r] = j
            for j in range(k):
                sources[out + j] = indices[start + sources[out + j]]
    return counts, sources


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

