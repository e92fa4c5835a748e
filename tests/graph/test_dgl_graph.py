"""DGL's graph surface on CSCGraph (frames, idtype, placement) and ``dataset[0]``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import graphsys
from graphsys import CSCGraph
from graphsys.graph.frame import Frame
from graphsys.storage import TensorStore


def _graph() -> CSCGraph:
    return CSCGraph.from_edges([0, 1, 2, 2, 3], [1, 2, 0, 1, 1], num_nodes=4)


def test_frames_hold_tensors_and_stores_and_check_rows() -> None:
    g = _graph()
    g.ndata["feat"] = torch.randn(4, 3)
    g.ndata["store"] = TensorStore(torch.randn(4, 2))  # anything with num_rows/read
    g.edata["w"] = torch.ones(5)
    assert isinstance(g.ndata, Frame) and set(g.ndata) == {"feat", "store"}
    assert g.srcdata is g.ndata and g.dstdata is g.ndata
    with pytest.raises(ValueError, match=r"ndata\['bad'\] has 3 rows, expected 4"):
        g.ndata["bad"] = torch.zeros(3)
    with pytest.raises(ValueError, match="one per edge"):
        g.edata["bad"] = torch.zeros(4)
    with pytest.raises(ValueError):
        g.ndata.update({"bad": torch.zeros(5)})


def test_sizes_degrees_and_no_op_formats() -> None:
    g = _graph()
    assert g.num_nodes() == g.number_of_nodes() == 4
    assert g.num_edges() == g.number_of_edges() == 5
    assert g.in_degrees().tolist() == [1, 3, 1, 0]
    assert g.in_degrees(torch.tensor([1, 3])).tolist() == [3, 0]
    assert int(g.in_degrees(1)) == 3
    assert g.nodes().tolist() == [0, 1, 2, 3]
    assert g.create_formats_() is None


def test_int_long_keep_structure_and_share_frames() -> None:
    g = _graph()
    g.ndata["feat"] = torch.randn(4, 3)
    assert g.idtype == torch.int32  # narrowest for 4 nodes
    wide = g.long()
    assert wide.idtype == torch.int64 and wide.indices.dtype == torch.int64
    assert torch.equal(wide.indices, g.indices.long()) and torch.equal(wide.indptr, g.indptr)
    assert wide.ndata["feat"] is g.ndata["feat"]
    wide.ndata["new"] = torch.zeros(4)
    assert "new" not in g.ndata  # frames are separate dicts sharing values, as in DGL
    narrow = wide.int()
    assert narrow.idtype == torch.int32 and torch.equal(narrow.indices, g.indices)
    assert g.int() is g and wide.long() is wide
    # The samplers read either index dtype, with the same samples.
    a = graphsys.NeighborSampler([2, 2]).sample(g, [1, 2], key=0)
    b = graphsys.NeighborSampler([2, 2]).sample(wide, [1, 2], key=0)
    assert all(torch.equal(x.indices, y.indices) for x, y in zip(a.blocks, b.blocks))


def test_to_moves_tensor_frames_and_keeps_stores() -> None:
    g = _graph()
    store = TensorStore(torch.randn(4, 2))
    g.ndata["feat"] = torch.randn(4, 3)
    g.ndata["store"] = store
    assert g.device == torch.device("cpu") and g.to("cpu") is g
    meta = g.to("meta")
    assert meta.device.type == "meta" and meta.ndata["feat"].device.type == "meta"
    assert meta.ndata["store"] is store
    assert g.ndata["feat"].device.type == "cpu"


def test_dataset_index_zero_is_the_graph_with_dgl_ndata(toy_dataset, toy_arrays) -> None:
    ds = graphsys.load_dataset(toy_dataset)
    g = ds[0]
    assert g is ds.graph and ds[0] is g and len(ds) == 1 and ds.num_classes == 3
    manifest = ds.manifest.arrays["features"]
    raw = np.memmap(toy_dataset / manifest.path, dtype=manifest.dtype, mode="r",
                    shape=tuple(manifest.shape))
    ids = np.array([0, 7, 3, 49, 7])
    assert np.array_equal(g.ndata["feat"][torch.from_numpy(ids)].numpy(), raw[ids])
    assert g.ndata["feat"] is ds.features  # the memory map, not a copy in RAM
    assert torch.equal(g.ndata["label"], torch.from_numpy(toy_arrays["labels"]))
    for split in ("train", "val", "test"):
        mask = g.ndata[f"{split}_mask"]
        assert mask.dtype == torch.bool
        assert np.array_equal(np.flatnonzero(mask.numpy()), toy_arrays[f"{split}_idx"])
    with pytest.raises(IndexError, match="dataset\\[0\\]"):
        ds[1]


def test_zarr_dataset_feat_stays_chunked(tmp_path, toy_arrays) -> None:
    from conftest import write_arrays

    write_arrays(tmp_path / "z", toy_arrays, storage="zarr", chunk_rows=8)
    g = graphsys.load_dataset(tmp_path / "z")[0]
    feat = g.ndata["feat"]
    assert type(feat).__name__ == "ZarrFeatures"
    ids = torch.tensor([4, 40, 1])
    assert np.array_equal(feat[ids].numpy(), toy_arrays["features"][ids.numpy()])


def _triples(g: CSCGraph, name: str | None = None) -> list:
    """Sorted ``(src, dst, data)`` of every edge: the reference every transform must keep."""
    src, dst = g.edges()
    data = g.edata[name].tolist() if name else [None] * g.num_edges()
    return sorted(zip(src.tolist(), dst.tolist(), data), key=repr)


def _weighted() -> CSCGraph:
    g = CSCGraph.from_edges([0, 1, 2, 2, 3, 3, 1], [1, 2, 2, 0, 1, 1, 0], num_nodes=5)
    g.ndata["x"] = torch.arange(5.0)
    g.edata["w"] = torch.arange(7.0) * 10
    return g


def test_transforms_keep_each_edge_with_its_data() -> None:
    g = _weighted()
    before = _triples(g, "w")
    loops = graphsys.add_self_loop(g)
    assert _triples(loops, "w") == sorted(before + [(v, v, 1.0) for v in range(5)], key=repr)
    assert loops.ndata["x"] is g.ndata["x"] and loops.idtype == g.idtype
    assert g.add_self_loop(fill_data=0.0).edata["w"].sum() == g.edata["w"].sum()
    no_loops = graphsys.remove_self_loop(g)
    assert _triples(no_loops, "w") == [t for t in before if t[0] != t[1]]
    rev = graphsys.add_reverse_edges(g, copy_edata=True)
    assert _triples(rev, "w") == sorted(
        before + [(d, s, w) for s, d, w in before if s != d], key=repr)
    assert "w" not in graphsys.add_reverse_edges(g).edata  # DGL drops it by default
    simple = graphsys.to_simple(g)
    pairs = [(s, d) for s, d, _ in before]
    assert sorted(zip(*[t.tolist() for t in simple.edges()])) == sorted(set(pairs))
    counts = {(s, d): c for s, d, c in _triples(simple, "count")}
    assert counts == {p: pairs.count(p) for p in set(pairs)}
    bi = graphsys.to_bidirected(g)
    want = sorted({(s, d) for s, d in pairs} | {(d, s) for s, d in pairs})
    assert sorted(zip(*[t.tolist() for t in bi.edges()])) == want
    assert "x" not in bi.ndata and "x" in graphsys.to_bidirected(g, copy_ndata=True).ndata


def test_find_edges_reads_csc_positions() -> None:
    g = _weighted()
    src, dst = g.edges()
    eids = torch.tensor([6, 0, 3, 3])
    s, d = g.find_edges(eids)
    assert torch.equal(s, src[eids]) and torch.equal(d, dst[eids])
    with pytest.raises(IndexError):
        g.find_edges([7])


def test_feature_casts_convert_floats_only_and_keep_stores_out_of_core(toy_dataset) -> None:
    g = graphsys.load_dataset(toy_dataset)[0]
    g.ndata["stored"] = TensorStore(g.ndata["feat"].clone())  # a feature store entry
    g.edata["w"] = torch.rand(g.num_edges(), dtype=torch.float64)
    g.edata["n"] = torch.arange(g.num_edges())
    half = graphsys.to_half(g)
    for name in ("feat", "stored"):
        assert half.ndata[name].dtype == torch.float16
    assert half.edata["w"].dtype == torch.float16
    assert half.edata["n"] is g.edata["n"] and half.ndata["label"] is g.ndata["label"]
    ids = torch.tensor([3, 0, 7])
    feat = g.ndata["feat"][ids]
    assert torch.equal(half.ndata["feat"][ids], feat.half())  # a tensor: cast, as DGL does
    stored = half.ndata["stored"]
    assert not isinstance(stored, torch.Tensor)  # a store: its rows cast as they are read
    assert torch.equal(stored[ids], feat.half()) and torch.equal(stored.read(ids), feat.half())
    assert g.ndata["feat"].dtype == torch.float32  # the original graph is not modified
    back = half.float()
    assert back.ndata["stored"] is g.ndata["stored"]  # float of a cast store: the store
    assert back.edata["w"].dtype == torch.float32
    assert graphsys.to_double(g).edata["w"] is g.edata["w"]  # already float64: shared
    assert g.bfloat16().ndata["stored"][ids].dtype == torch.bfloat16
    # A loader prefetching from the cast graph delivers float16 rows.
    sampler = graphsys.NeighborSampler([2], prefetch_node_feats=["stored"])
    loader = graphsys.DataLoader(half, torch.arange(4), sampler, batch_size=4)
    _, _, blocks = next(iter(loader))
    x = blocks[0].srcdata["stored"]
    assert x.dtype == torch.float16
    assert torch.equal(x, g.ndata["feat"][blocks[0].srcdata[graphsys.NID]].half())
