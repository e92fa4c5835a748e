"""The out-of-core CSC builder against CSCGraph.from_edges."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from graphsys import CSCGraph, DatasetWriter, InputFormatError, load_dataset
from graphsys.graph.build import _stable_sort, build_csc_into


def chunked(src: np.ndarray, dst: np.ndarray, sizes: list[int]):
    """A factory of chunk iterators cutting the edges at the given sizes, cycling."""

    def chunks():
        start, i = 0, 0
        while start < len(src):
            step = sizes[i % len(sizes)]
            yield src[start : start + step], dst[start : start + step]
            start, i = start + step, i + 1

    return chunks


def build(path: Path, chunks, num_nodes: int, **kwargs) -> tuple[CSCGraph, int]:
    """Build into a full dataset (dummy features and splits) and load its graph back."""
    with DatasetWriter(path, name="built") as writer:
        num_edges = build_csc_into(writer, chunks, num_nodes, progress=False, **kwargs)
        writer.write_array("features", np.zeros((num_nodes, 1), np.float32))
        writer.write_array("labels", np.zeros(num_nodes, np.int64))
        for key in ("train_idx", "val_idx", "test_idx"):
            writer.write_array(key, np.zeros(0, np.int64))
        writer.finish(num_classes=1)
    return load_dataset(path).graph, num_edges


def assert_same(graph: CSCGraph, reference: CSCGraph) -> None:
    assert graph.indices.dtype == reference.indices.dtype
    np.testing.assert_array_equal(graph.indptr.numpy(), reference.indptr.numpy())
    np.testing.assert_array_equal(graph.indices.numpy(), reference.indices.numpy())


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize(("seed", "sizes"), [(0, [1]), (1, [3, 7, 1, 50]), (2, [10_000])])
def test_matches_from_edges(tmp_path: Path, symmetric: bool, seed: int, sizes: list[int]):
    rng = np.random.default_rng(seed)
    num_nodes, num_edges = 40, 600
    # Few nodes, many edges: every chunk boundary falls inside some destination's run.
    src = rng.integers(0, num_nodes, num_edges)
    dst = rng.integers(0, num_nodes, num_edges)
    graph, count = build(tmp_path / "g", chunked(src, dst, sizes), num_nodes,
                         symmetric=symmetric)
    reference = CSCGraph.from_edges(src, dst, num_nodes, symmetric=symmetric)
    assert count == reference.num_edges() == num_edges * (2 if symmetric else 1)
    assert_same(graph, reference)


def test_int32_inputs_and_isolated_nodes(tmp_path: Path):
    rng = np.random.default_rng(3)
    src = rng.integers(0, 10, 100).astype(np.int32)
    dst = rng.integers(0, 10, 100).astype(np.int32)  # nodes 10..24 have no edges
    graph, _ = build(tmp_path / "g", chunked(src, dst, [9]), 25, symmetric=True)
    assert_same(graph, CSCGraph.from_edges(src, dst, 25, symmetric=True))


def test_empty_graph(tmp_path: Path):
    empty = np.zeros(0, np.int64)

    def chunks():
        yield empty, empty  # an empty chunk is allowed, as is no chunk at all

    graph, count = build(tmp_path / "g", chunks, 5)
    assert count == 0 and graph.num_nodes() == 5
    np.testing.assert_array_equal(graph.indptr.numpy(), np.zeros(6))
    graph, count = build(tmp_path / "h", lambda: iter(()), 5, symmetric=True)
    assert count == 0 and graph.num_nodes() == 5


def test_zero_nodes(tmp_path: Path):
    # A whole 0-node dataset cannot be finished (its (0, dim) features), so look at the
    # graph files inside the writer and then abandon it.
    with pytest.raises(KeyboardInterrupt), DatasetWriter(tmp_path / "g", name="g") as writer:
        assert build_csc_into(writer, lambda: iter(()), 0, progress=False) == 0
        assert (writer.root / "indptr.bin").read_bytes() == bytes(8)
        assert (writer.root / "indices.bin").stat().st_size == 0
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("bad", "side"), [(10, "destination"), (-1, "source")])
def test_out_of_range_names_position(tmp_path: Path, bad: int, side: str):
    src = np.arange(20) % 10
    dst = np.arange(20)[::-1] % 10
    if side == "source":
        src[13] = bad
    else:
        dst[13] = bad
    with pytest.raises(InputFormatError) as info:
        build(tmp_path / "g", chunked(src, dst, [4]), 10, source_name="my-edges.csv")
    message = str(info.value)
    assert "my-edges.csv" in message and "edge 13" in message
    assert f"{side} node id {bad}" in message and "[0, 10)" in message
    assert not (tmp_path / "g").exists()
    assert list(tmp_path.iterdir()) == []  # no partial directory left behind
    with pytest.raises(InputFormatError, match="line 15"):
        build(tmp_path / "g", chunked(src, dst, [4]), 10, line_offset=2)


@pytest.mark.parametrize("second", [
    (np.arange(10)[::-1], np.arange(10)),  # same degrees, different edges
    (np.arange(10), np.full(10, 9)),  # every edge into the last node: past the end
    (np.arange(11), np.arange(11) % 10),  # one edge more
])
def test_input_changing_between_passes(tmp_path: Path, second):
    src, dst = np.arange(10), np.arange(10)[::-1].copy()
    calls = []

    def chunks():
        calls.append(1)
        yield second if len(calls) == 2 else (src, dst)

    with pytest.raises(InputFormatError, match="second pass"):
        build(tmp_path / "g", chunks, 10)
    assert not (tmp_path / "g").exists()


def test_malformed_chunk(tmp_path: Path):
    with pytest.raises(InputFormatError, match="equal length"):
        build(tmp_path / "g", lambda: [(np.arange(3), np.arange(4))], 5)
    with pytest.raises(InputFormatError, match="integers"):
        build(tmp_path / "g", lambda: [(np.zeros(3), np.zeros(3))], 5)


@pytest.mark.parametrize("bound", [10, 2**62])  # fast combined-key sort, argsort fallback
def test_stable_sort(bound: int):
    keys = np.random.default_rng(4).integers(0, 10, 1000)
    sorted_keys, order = _stable_sort(keys, bound)
    expected = np.argsort(keys, kind="stable")
    np.testing.assert_array_equal(order, expected)
    np.testing.assert_array_equal(sorted_keys, keys[expected])
