"""DGL's loader surface: prefetching from ``g.ndata``/``g.edata``, DGL's keyword names,
``use_ddp`` seed splits. References are independent: the ``features=``/``labels=`` path,
plain tensor indexing, the CSC arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import graphsys
import graphsys as dgl
from conftest import CUDA
from graphsys.graph.csc import CSCGraph
from graphsys.loader import dataloader as dataloader_module
from graphsys.samplers.offline import offline_sample
from graphsys.storage import MmapStore, PackedStore, TensorStore, pack_features

N, DIM = 600, 8


@pytest.fixture
def data(tmp_path: Path):
    rng = np.random.default_rng(11)
    graph = CSCGraph.from_edges(rng.integers(0, N, 5000), rng.integers(0, N, 5000),
                                num_nodes=N)
    feats = rng.standard_normal((N, DIM)).astype(np.float32)
    labels = rng.integers(0, 5, N)
    path = tmp_path / "feats.bin"
    feats.tofile(path)
    return graph, feats, labels, path


def _stores(feats: np.ndarray, path: Path) -> dict:
    return {"tensor": torch.from_numpy(feats), "TensorStore": TensorStore(torch.from_numpy(feats)),
            "MmapStore": MmapStore(path, N, DIM, "float32")}


def _batches(loader) -> list:
    return [(i.clone(), o.clone(), b) for i, o, b in loader]


@pytest.mark.parametrize("kind", ["tensor", "TensorStore", "MmapStore"])
def test_ndata_prefetch_equals_features_argument_bitwise(data, kind) -> None:
    graph, feats, labels, path = data
    store = _stores(feats, path)[kind]
    graph.ndata["feat"] = store
    graph.ndata["label"] = torch.from_numpy(labels)
    seeds = torch.arange(0, N, 2)
    dgl_style = dgl.dataloading.DataLoader(
        graph, seeds, dgl.dataloading.NeighborSampler(
            [5, 4], prefetch_node_feats=["feat"], prefetch_labels=["label"]),
        batch_size=64, shuffle=True, seed=3)
    ours = graphsys.DataLoader(graph, seeds, graphsys.NeighborSampler([5, 4]), batch_size=64,
                               shuffle=True, seed=3, features=_stores(feats, path)[kind],
                               labels=torch.from_numpy(labels))
    got, want = _batches(dgl_style), _batches(ours)
    assert len(got) == len(want) == len(dgl_style)
    for (gi, go, gb), (wi, wo, wb) in zip(got, want):
        assert torch.equal(gi, wi) and torch.equal(go, wo)
        a, b = gb[0].srcdata["feat"], wb[0].srcdata["feat"]
        assert a.dtype == b.dtype and torch.equal(a, b)
        # and both equal the raw rows, read independently
        assert np.array_equal(a.numpy(), feats[gi.numpy()])
        assert torch.equal(gb[-1].dstdata["label"], torch.from_numpy(labels[go.numpy()]))
        assert torch.equal(gb[-1].dstdata["label"], wb[-1].dstdata["label"])


def test_prefetch_through_a_packed_store_reads_its_segments(data, tmp_path) -> None:
    graph, feats, _labels, path = data
    disk = MmapStore(path, N, DIM, "float32")
    seeds = torch.arange(0, N, 3)

    def loader(**kw):
        return graphsys.DataLoader(graph, seeds, graphsys.NeighborSampler(
            [4, 3], prefetch_node_feats=["feat"]), batch_size=32, shuffle=True, seed=5, **kw)

    graph.ndata["feat"] = disk
    log = offline_sample(loader(), epochs=[0])
    pack_features(log, disk, tmp_path / "pack", segment_bytes=400 * DIM * 4, progress=False)
    packed = PackedStore(tmp_path / "pack", source=disk, fingerprint=log.fingerprint)
    graph.ndata["feat"] = packed
    for inp, _out, blocks in loader():
        assert np.array_equal(blocks[0].srcdata["feat"].numpy(), feats[inp.numpy()])
    assert packed.stats.tiers.get("packed", None) is not None and \
        packed.stats.tiers["packed"].rows > 0


def test_other_prefetched_names_and_edge_feats(data) -> None:
    graph, feats, labels, _ = data
    graph.ndata["x2"] = torch.from_numpy(feats) * 2
    graph.ndata["y"] = torch.from_numpy(labels)
    weights = torch.randn(graph.num_edges(), 3)
    graph.edata["w"] = weights
    sampler = dgl.dataloading.MultiLayerFullNeighborSampler(
        2, prefetch_node_feats=["x2"], prefetch_labels=["y"], prefetch_edge_feats=["w"])
    loader = dgl.dataloading.DataLoader(graph, torch.arange(40), sampler, batch_size=16)
    src, dst = graph.edges()
    for inp, out, blocks in loader:
        assert torch.equal(blocks[0].srcdata["x2"], torch.from_numpy(feats)[inp] * 2)
        assert torch.equal(blocks[-1].dstdata["y"], torch.from_numpy(labels)[out])
        for block in blocks:
            eids = block.edata["_ID"]
            assert torch.equal(block.edata["w"], weights[eids])
            bsrc, bdst = block.edges()
            assert torch.equal(block.src_nodes[bsrc], src[eids])  # ids name these edges
            assert torch.equal(block.dst_nodes[bdst], dst[eids])


def test_a_missing_prefetched_name_says_which(data) -> None:
    graph = data[0]
    with pytest.raises(KeyError, match=r"ndata\['feat'\]"):
        graphsys.DataLoader(graph, [0, 1], graphsys.NeighborSampler(
            [2], prefetch_node_feats=["feat"]))


def test_dgl_keyword_names_and_ignored_arguments(data) -> None:
    graph, feats, _, _ = data
    graph.ndata["feat"] = torch.from_numpy(feats)
    sampler = dgl.dataloading.NeighborSampler([3, 3], prefetch_node_feats=["feat"], fused=True)
    a = dgl.dataloading.DataLoader(graph, indices=torch.arange(50), graph_sampler=sampler,
                                   batch_size=8, shuffle=False, drop_last=False, num_workers=0,
                                   use_ddp=False, ddp_seed=0, device="cpu", use_uva=False)
    b = graphsys.DataLoader(graph, seeds=torch.arange(50), sampler=sampler, batch_size=8)
    for (ia, oa, ba), (ib, ob, bb) in zip(a, b):
        assert torch.equal(ia, ib) and torch.equal(ba[0].srcdata["feat"], bb[0].srcdata["feat"])
    with pytest.raises(TypeError, match="indices"):
        graphsys.DataLoader(graph, torch.arange(5), sampler, indices=torch.arange(5))
    with pytest.raises(TypeError, match="graph_sampler"):
        graphsys.DataLoader(graph, torch.arange(5))


def test_sampler_output_device_is_the_default_device(data) -> None:
    graph = data[0]
    loader = graphsys.DataLoader(graph, [1, 2], graphsys.NeighborSampler(
        [2], output_device="cpu"))
    assert loader.device == torch.device("cpu")


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("shuffle", [False, True])
def test_use_ddp_slices_are_disjoint_and_cover_the_seeds(data, monkeypatch, world, drop_last,
                                                         shuffle) -> None:
    graph = data[0]
    seeds = np.arange(5, 5 + 203)
    per_rank = []
    for rank in range(world):
        monkeypatch.setattr(dataloader_module, "ddp_rank_and_world", lambda r=rank: (r, world))
        loader = graphsys.DataLoader(graph, torch.from_numpy(seeds), graphsys.NeighborSampler(
            [2]), batch_size=16, shuffle=shuffle, drop_last=drop_last, use_ddp=True,
            ddp_seed=7)
        assert loader.ddp == (rank, world) and loader.seed == 7
        for epoch in (0, 1):
            loader.set_epoch(epoch)
            outs = [o.numpy() for _, o, _ in loader]
            assert len(outs) == len(loader)
            per_rank.append((epoch, outs))
    for epoch in (0, 1):
        ranks = [outs for e, outs in per_rank if e == epoch]
        assert len({len(r) for r in ranks}) == 1  # the same number of steps on every rank
        taken = np.concatenate([np.concatenate(r) for r in ranks])
        assert len(np.unique(taken)) == len(taken)  # disjoint, no seed twice
        if drop_last:
            assert len(taken) == len(ranks[0]) * 16 * world
        else:
            assert np.array_equal(np.sort(taken), seeds)  # cover
        assert set(taken) <= set(seeds)
    if world > 1 and shuffle:  # the epochs permute differently
        assert not all(np.array_equal(a, b) for a, b in zip(per_rank[0][1], per_rank[1][1]))


def test_use_ddp_without_a_process_group_is_rank_zero_of_one(data) -> None:
    loader = graphsys.DataLoader(data[0], torch.arange(30), graphsys.NeighborSampler([2]),
                                 batch_size=7, use_ddp=True)
    assert loader.ddp == (0, 1)
    assert np.array_equal(np.concatenate([o for _, o, _ in loader]), np.arange(30))


@pytest.mark.parametrize("feat_kind", ["memmap", "MmapStore"])
def test_a_dgl_shaped_script_trains_and_runs_layerwise_inference(toy_dataset, feat_kind
                                                                 ) -> None:
    """The shape of DGL's graphsage/node_classification.py, on a generated dataset, with
    ndata['feat'] the dataset's memory map or a graphsys store over the same file."""
    import torch.nn.functional as F

    dataset = dgl.load_dataset(toy_dataset)
    g = dataset[0]
    if feat_kind == "MmapStore":
        entry = dataset.manifest.arrays["features"]
        g.ndata["feat"] = MmapStore(toy_dataset / entry.path, *entry.shape, entry.dtype)
    g.create_formats_()
    g = g.to("cpu")
    train_idx = torch.nonzero(g.ndata["train_mask"]).squeeze(1)
    in_size = g.ndata["feat"].shape[1]
    layers = torch.nn.ModuleList([dgl.nn.SAGEConv(in_size, 16, "mean"),
                                  dgl.nn.SAGEConv(16, dataset.num_classes, "mean")])
    opt = torch.optim.Adam(layers.parameters(), lr=1e-2)
    sampler = dgl.dataloading.NeighborSampler([5, 5], prefetch_node_feats=["feat"],
                                              prefetch_labels=["label"])
    loader = dgl.dataloading.DataLoader(g, train_idx, sampler, device="cpu", batch_size=8,
                                        shuffle=True, drop_last=False, num_workers=0,
                                        use_uva=False)
    for _ in range(2):
        for _inp, _out, blocks in loader:
            blocks = [b.int() for b in blocks]
            h = blocks[0].srcdata["feat"]
            for i, (layer, block) in enumerate(zip(layers, blocks)):
                h = layer(block, h)
                h = F.relu(h) if i == 0 else h
            loss = F.cross_entropy(h, blocks[-1].dstdata["label"])
            opt.zero_grad()
            loss.backward()
            opt.step()
    # Layer-wise inference over every node with one full-neighbour layer at a time.
    full = dgl.dataloading.MultiLayerFullNeighborSampler(1, prefetch_node_feats=["feat"])
    infer = dgl.dataloading.DataLoader(g, torch.arange(g.num_nodes()), full, batch_size=16)
    feat = g.ndata["feat"]
    with torch.no_grad():
        for i, layer in enumerate(layers):
            y = torch.empty(g.num_nodes(), [16, dataset.num_classes][i])
            feat = feat.to("cpu")
            for inp, out, blocks in infer:
                x = feat[inp] if i else blocks[0].srcdata["feat"]
                assert i or torch.equal(x, torch.as_tensor(feat[inp]))
                h = layer(blocks[0], x)
                y[out[0] : out[-1] + 1] = F.relu(h) if i == 0 else h
            feat = y
    assert feat.shape == (g.num_nodes(), dataset.num_classes) and torch.isfinite(feat).all()


def test_a_graphsys_dataset_as_the_graph_prefetches_its_ndata(toy_dataset, toy_arrays) -> None:
    ds = graphsys.load_dataset(toy_dataset)
    loader = graphsys.DataLoader(ds, ds.train_idx, graphsys.NeighborSampler(
        [3], prefetch_node_feats=["feat"], prefetch_labels=["label"]), batch_size=6)
    for inp, out, blocks in loader:
        assert np.array_equal(blocks[0].srcdata["feat"].numpy(),
                              toy_arrays["features"][inp.numpy()])
        assert np.array_equal(blocks[-1].dstdata["label"].numpy(),
                              toy_arrays["labels"][out.numpy()])


def test_a_store_in_ndata_indexes_like_a_tensor(data) -> None:
    """DGL's layer-wise inference does ``feat.shape[1]`` and ``feat[input_nodes]``."""
    _graph, feats, _, path = data
    store = MmapStore(path, N, DIM, "float32")
    assert store.shape == (N, DIM) and store.dtype == torch.float32
    ids = torch.tensor([5, 0, 599, 5])
    assert np.array_equal(store[ids].numpy(), feats[ids.numpy()])
    assert np.array_equal(store[3].numpy(), feats[3]) and store[-1].shape == (DIM,)
    assert np.array_equal(store[2:9:3].numpy(), feats[2:9:3])
    with pytest.raises(TypeError):
        iter(store)


def test_moving_a_store_keeps_it_out_of_core(data) -> None:
    _graph, feats, _, path = data
    store = MmapStore(path, N, DIM, "float32")
    assert store.to("cpu") is store
    meta = store.to("meta")  # any other device: reads land there, nothing is loaded
    assert meta.shape == (N, DIM) and meta.store is store
    ids = torch.tensor([1, 2])
    before = store.stats.rows_returned
    assert meta[ids].device.type == "meta" and store.stats.rows_returned == before + 2
    assert meta.to("cpu") is store


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_device_path_fills_prefetched_names_like_the_plain_path(data, device) -> None:
    graph, feats, labels, path = data
    graph.ndata["feat"] = MmapStore(path, N, DIM, "float32")
    graph.ndata["x2"] = torch.from_numpy(feats) * 2
    graph.ndata["label"] = torch.from_numpy(labels)
    graph.ndata["y"] = torch.from_numpy(labels) + 1
    graph.edata["w"] = torch.randn(graph.num_edges())

    def run(**kw):
        sampler = graphsys.MultiLayerFullNeighborSampler(
            2, prefetch_node_feats=["feat", "x2"], prefetch_labels=["label", "y"],
            prefetch_edge_feats=["w"])
        loader = graphsys.DataLoader(graph, torch.arange(0, N, 7), sampler, batch_size=20,
                                     **kw)
        return [{k: (b[0].srcdata[k] if k in b[0].srcdata else b[-1].dstdata[k]).cpu()
                 for k in ("feat", "x2", "label", "y")} | {"w": b[0].edata["w"].cpu()}
                for _, _, b in loader]

    plain = run()
    on_path = run(use_uva=True, device=device)
    assert len(plain) == len(on_path)
    for a, b in zip(plain, on_path):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_use_ddp_reads_rank_and_world_from_torch_distributed(data, tmp_path) -> None:
    import torch.distributed as dist

    if not dist.is_available() or dist.is_initialized():
        pytest.skip("torch.distributed unavailable or already initialised")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0,
                            world_size=1)
    try:
        assert dataloader_module.ddp_rank_and_world() == (0, 1)
        loader = graphsys.DataLoader(data[0], torch.arange(10), graphsys.NeighborSampler([2]),
                                     batch_size=4, use_ddp=True)
        assert loader.ddp == (0, 1) and len(loader) == 3
    finally:
        dist.destroy_process_group()
