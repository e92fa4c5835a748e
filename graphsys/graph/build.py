"""Building CSC arrays out of core from edges that arrive in chunks.

The edge list is read twice through a factory of chunk iterators: once to count the
in-degree of every node (which fixes ``indptr``), once to scatter every source into
its slot of an ``indices`` file mapped from disk. Memory holds a few node-sized
arrays and one chunk, never the edge list, so graphs whose edges do not fit in memory
can be built as long as their ``indptr`` does.

Example:
    >>> edges = np.load("edges.npy", mmap_mode="r")  # [E, 2]; may exceed memory  # doctest: +SKIP
    >>> def chunks():                                                  # doctest: +SKIP
    ...     for start in range(0, len(edges), 1 << 22):
    ...         block = np.asarray(edges[start : start + (1 << 22)])
    ...         yield block[:, 0], block[:, 1]
    >>> with DatasetWriter("out/big", name="big") as writer:           # doctest: +SKIP
    ...     build_csc_into(writer, chunks, num_nodes=10**8)
    ...     ...  # features, labels, splits, then writer.finish(num_classes=...)
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable

import numpy as np

from graphsys._progress import progress_bar
from graphsys.errors import InputFormatError
from graphsys.graph.csc import index_dtype_for
from graphsys.graph.writer import DatasetWriter

EdgeChunks = Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]


def _as_ids(src: np.ndarray, dst: np.ndarray, source_name: str) -> tuple[np.ndarray, np.ndarray]:
    src, dst = np.asarray(src), np.asarray(dst)
    if src.ndim != 1 or src.shape != dst.shape:
        raise InputFormatError(
            f"{source_name}: a chunk of edges has src of shape {src.shape} and dst of shape "
            f"{dst.shape}; each chunk must be two 1-D arrays of equal length"
        )
    if src.size and not (np.issubdtype(src.dtype, np.integer)
                         and np.issubdtype(dst.dtype, np.integer)):
        raise InputFormatError(
            f"{source_name}: node ids must be integers, got {src.dtype} and {dst.dtype}"
        )
    return (np.ascontiguousarray(src, dtype=np.int64),
            np.ascontiguousarray(dst, dtype=np.int64))


def check_edge_ids(
    src: np.ndarray,
    dst: np.ndarray,
    num_nodes: int,
    *,
    first_edge: int = 0,
    source_name: str = "edges",
    line_offset: int | None = None,
) -> None:
    """Raise :class:`InputFormatError` for the first edge with an id outside ``[0, num_nodes)``.

    Args:
        first_edge: global position of ``src[0]`` in the whole edge list.
        line_offset: if given, edge ``i`` sits on line ``i + line_offset`` of the input
            file, and the message names that line.
    """
    for what, ids in (("source", src), ("destination", dst)):
        # min/max first: two cheap reductions on the common, valid path.
        if ids.size == 0 or (ids.min() >= 0 and ids.max() < num_nodes):
            continue
        pos = int(np.argmax((ids < 0) | (ids >= num_nodes)))
        edge = first_edge + pos
        where = f"line {edge + line_offset}" if line_offset is not None else f"edge {edge}"
        raise InputFormatError(
            f"{source_name}: {where} has {what} node id {int(ids[pos])}, outside [0, "
            f"{num_nodes}) (edge {edge}, counting from 0); fix the edge list or give the "
            "right number of nodes"
        )


def _stable_sort(keys: np.ndarray, bound: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``keys`` in ``[0, bound)`` and the stable permutation that sorts them."""
    size = keys.size
    if size and bound <= np.iinfo(np.int64).max // size - 1:
        # Sorting the unique numbers key * size + position is ~2x faster than a stable
        # argsort, and as stable: equal keys stay in input order.
        combined = keys * size + np.arange(size)
        combined.sort()
        return np.divmod(combined, size)
    order = np.argsort(keys, kind="stable")
    return keys[order], order


def _scatter(indices: np.ndarray, cursor: np.ndarray, keys: np.ndarray,
             values: np.ndarray) -> None:
    """Write ``values[i]`` at ``cursor[keys[i]]``, advancing cursors, in input order per key."""
    if keys.size == 0:
        return
    keys, order = _stable_sort(keys, len(cursor))
    starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
    counts = np.diff(np.append(starts, keys.size))
    groups = keys[starts]
    # Edge i of the sorted chunk goes to cursor[its key] + its rank within its key.
    pos = np.repeat(cursor[groups] - starts, counts) + np.arange(keys.size)
    # Keys are sorted, so positions increase: one forward sweep through the mapped file.
    indices[pos] = values[order]
    cursor[groups] += counts


def build_csc_into(
    writer: DatasetWriter,
    edge_chunks: EdgeChunks,
    num_nodes: int,
    *,
    symmetric: bool = False,
    progress: bool = True,
    source_name: str = "edges",
    line_offset: int | None = None,
) -> int:
    """Write ``indptr`` and ``indices`` of the graph of streamed edges ``src -> dst``.

    The result equals ``CSCGraph.from_edges(src, dst, num_nodes, symmetric=symmetric)``
    on the concatenated chunks: within a destination, forward edges keep their input
    order, followed (if ``symmetric``) by the reversed edges in input order.

    Args:
        writer: an open :class:`DatasetWriter`; ``indptr`` and ``indices`` are written.
        edge_chunks: a factory; each call must return a fresh iterable over the same
            ``(src, dst)`` integer array pairs. It is called twice.
        num_nodes: node count; ids must lie in ``[0, num_nodes)``.
        symmetric: also add ``dst -> src`` for every edge.
        source_name: names the input in error messages (a file path, say).
        line_offset: edge ``i`` is on line ``i + line_offset`` of the input (for errors).

    Returns:
        The number of edges written.

    Raises:
        InputFormatError: an id is out of range (the message names the edge or line),
            a chunk is malformed, or the second pass saw different edges than the first.
    """
    num_nodes = int(num_nodes)
    if num_nodes < 0:
        raise ValueError(f"num_nodes must be >= 0, got {num_nodes}")
    fwd = np.zeros(num_nodes, np.int64)  # in-degree from forward edges
    rev = np.zeros(num_nodes, np.int64) if symmetric else None  # from reversed edges
    seen, crc_src, crc_dst = 0, 0, 0
    with progress_bar(total=None, desc="counting in-degrees", unit="edge",
                      enable=progress) as bar:
        for chunk in edge_chunks():
            src, dst = _as_ids(*chunk, source_name)
            check_edge_ids(src, dst, num_nodes, first_edge=seen, source_name=source_name,
                           line_offset=line_offset)
            # np.add.at costs O(chunk), where bincount(minlength=n) would cost O(n).
            np.add.at(fwd, dst, 1)
            if rev is not None:
                np.add.at(rev, src, 1)
            crc_src, crc_dst = zlib.crc32(src, crc_src), zlib.crc32(dst, crc_dst)
            seen += src.size
            bar.update(src.size)

    indptr = np.zeros(num_nodes + 1, np.int64)
    if rev is not None:
        rev += fwd
        np.cumsum(rev, out=indptr[1:])
        del rev
        # Reversed edges of node v follow its forward ones: they start at indptr[v] + fwd[v].
        rev_cursor = np.add(indptr[:-1], fwd, out=fwd)
        fwd_cursor = indptr[:-1].copy()
    else:
        np.cumsum(fwd, out=indptr[1:])
        rev_cursor = None
        fwd_cursor = fwd
        fwd_cursor[:] = indptr[:-1]
    num_edges = int(indptr[-1])
    writer.write_array("indptr", indptr)
    indices = writer.create_memmap("indices", index_dtype_for(num_nodes), (num_edges,))

    again, crc_src2, crc_dst2 = 0, 0, 0
    changed = InputFormatError(
        f"{source_name}: the edges read on the second pass differ from the first; "
        "the input changed while the graph was being built, build it again"
    )
    with progress_bar(total=seen, desc="placing edges", unit="edge",
                      enable=progress) as bar:
        for chunk in edge_chunks():
            src, dst = _as_ids(*chunk, source_name)
            if again + src.size > seen or (src.size and (
                    min(src.min(), dst.min()) < 0 or max(src.max(), dst.max()) >= num_nodes)):
                raise changed
            # Forward and reversed edges have separate cursors, so one pass over the
            # input places both in from_edges' order (all forward, then all reversed).
            try:
                _scatter(indices, fwd_cursor, dst, src)
                if rev_cursor is not None:
                    _scatter(indices, rev_cursor, src, dst)
            except IndexError:  # more edges into some node than counted: past the end
                raise changed from None
            crc_src2, crc_dst2 = zlib.crc32(src, crc_src2), zlib.crc32(dst, crc_dst2)
            again += src.size
            bar.update(src.size)
    # Equal counts and checksums mean every slot was filled exactly once.
    if (again, crc_src2, crc_dst2) != (seen, crc_src, crc_dst):
        raise changed
    return num_edges
