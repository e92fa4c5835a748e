"""The device path (DGL's ``device=..., use_uva=True``) on CPU runs the GPU path's calls
through their CPU twins, and gives the plain CPU path's batches, rows and losses bitwise."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import graphsys
import graphsys.cuda
import graphsys.cuda.sampling
from graphsys import CSCGraph, DataLoader, NeighborSampler
from graphsys.cuda import GPUNeighborSampler
from graphsys.datasets.synthetic import SyntheticConfig, generate_synthetic
from graphsys.storage import DeviceCache, TensorStore, make_policy
from graphsys.train import TrainConfig, Trainer

N = 400


@pytest.fixture(scope="module")
def data() -> dict:
    rng = np.random.default_rng(5)
    # A hub with every node as in-neighbour, isolated nodes, and a random rest.
    src = np.concatenate([rng.integers(0, N, 4000), np.arange(N)])
    dst = np.concatenate([rng.integers(0, N - 20, 4000), np.zeros(N, dtype=np.int64)])
    graph = CSCGraph.from_edges(src, dst, N)
    return {"graph": graph, "x": torch.randn(N, 12, generator=torch.Generator().manual_seed(0)),
            "y": torch.from_numpy(rng.integers(0, 5, N)),
            "seeds": np.concatenate([[0], rng.choice(np.arange(1, N), 150, replace=False)])}


def _epochs(loader: DataLoader, epochs: int = 2) -> list:
    return [batch for _ in range(epochs) for batch in loader]


def _assert_same(a: list, b: list) -> None:
    assert len(a) == len(b) > 0
    for p, q in zip(a, b):
        assert torch.equal(p.input_nodes, q.input_nodes)
        assert torch.equal(p.output_nodes, q.output_nodes)
        for bp, bq in zip(p.blocks, q.blocks):
            assert torch.equal(bp.indptr, bq.indptr)
            assert torch.equal(bp.indices, bq.indices)
            assert torch.equal(bp.src_nodes, bq.src_nodes)
            assert bp.num_dst_nodes() == bq.num_dst_nodes()
        assert torch.equal(p.blocks[0].srcdata["feat"], q.blocks[0].srcdata["feat"])
        assert torch.equal(p.blocks[-1].dstdata["label"], q.blocks[-1].dstdata["label"])


@pytest.mark.parametrize("fanouts,replace", [([4, 3], False), ([-1, 2], False),
                                             ([6, 6], True)])
@pytest.mark.parametrize("options", [{"use_uva": True}, {"graph_memory": "device"},
                                     {"graph_memory": "pinned", "use_uva": False}])
def test_device_path_batches_equal_the_plain_path(data, fanouts, replace, options) -> None:
    def loader(**kw):
        return DataLoader(data["graph"], data["seeds"],
                          NeighborSampler(fanouts, replace=replace, seed=3), batch_size=32,
                          shuffle=True, features=data["x"], labels=data["y"], seed=11, **kw)

    plain, device = loader(), loader(**options)
    assert plain.path is None and device.path is not None
    assert isinstance(device.sampler, GPUNeighborSampler)
    batches = _epochs(device)
    _assert_same(_epochs(plain), batches)
    x = data["x"].numpy()
    for batch in batches:  # and against the graph itself, not only the other path
        np.testing.assert_array_equal(batch.blocks[0].srcdata["feat"].numpy(),
                                      x[batch.input_nodes.numpy()])
        block = batch.blocks[-1]
        dst = block.dst_nodes.numpy()
        src = block.src_nodes.numpy()[block.indices.numpy()]
        edges = set(zip(*[a.tolist() for a in data["graph"].edges()]))
        owners = np.repeat(dst, np.diff(block.indptr.numpy()))
        assert all((int(s), int(d)) in edges for s, d in zip(src, owners))


def test_device_path_runs_the_kernel_calls(data, monkeypatch) -> None:
    """The CPU run goes through graphsys.cuda's functions, as a GPU run does."""
    seen: dict[str, int] = {}

    def spy(module, name):
        real = getattr(module, name)

        def wrapped(*args, **kwargs):
            seen[name] = seen.get(name, 0) + 1
            return real(*args, **kwargs)
        monkeypatch.setattr(module, name, wrapped)

    spy(graphsys.cuda, "gather_rows")
    spy(graphsys.cuda.sampling, "relabel")
    loader = DataLoader(data["graph"], data["seeds"], NeighborSampler([3, 3]), batch_size=50,
                        features=data["x"], labels=data["y"], use_uva=True, seed=0)
    n = len(list(loader))
    assert seen["gather_rows"] == 2 * n  # features and labels of every batch
    assert seen["relabel"] == 2 * n  # one per layer: GPUNeighborSampler.sample_tensors


def test_device_path_reads_stores_and_caches(data) -> None:
    store = TensorStore(data["x"])
    cache = DeviceCache(TensorStore(data["x"]), 40 * 12 * 4, make_policy("lru"), device="cpu")
    plain = DataLoader(data["graph"], data["seeds"], NeighborSampler([4, 4]), batch_size=40,
                       features=store, labels=data["y"], seed=2)
    cached = DataLoader(data["graph"], data["seeds"], NeighborSampler([4, 4]), batch_size=40,
                        features=cache, labels=data["y"], seed=2, use_uva=True)
    _assert_same(_epochs(plain), _epochs(cached))
    assert cache.counters.hits > 0
    cache.check_consistency()


def test_device_path_arguments_are_checked(data) -> None:
    with pytest.raises(ValueError, match="graph_memory"):
        DataLoader(data["graph"], data["seeds"], NeighborSampler([2]), graph_memory="disk")
    with pytest.raises(TypeError, match="unexpected"):
        DataLoader(data["graph"], data["seeds"], NeighborSampler([2]), use_gpu=True)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> graphsys.Dataset:
    out = tmp_path_factory.mktemp("dp") / "syn"
    generate_synthetic(out, SyntheticConfig(num_nodes=900, num_edges=9000, feat_dim=16,
                                            num_classes=4, seed=2), progress=False)
    return graphsys.load_dataset(out)


def test_trainer_on_the_device_path_equals_the_cpu_path(dataset) -> None:
    def run(sampler: str) -> Trainer:
        config = TrainConfig(fanouts=(5, 4), hidden=16, batch_size=100, epochs=3,
                             eval_every=0, progress=False, seed=4, sampler=sampler)
        trainer = Trainer(dataset, config)
        trainer.fit()
        return trainer

    cpu, device = run("cpu"), run("gpu")
    assert cpu.loader.path is None and device.loader.path is not None
    assert [m.loss for m in device.history] == [m.loss for m in cpu.history]
    for (name, a), b in zip(cpu.model.state_dict().items(), device.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_cli_says_which_path_a_run_takes(dataset, capsys) -> None:
    from graphsys.cli import main

    assert main(["train", str(dataset.root), "--epochs", "1", "--eval-every", "0",
                 "--fanouts", "3,3", "--sampler", "gpu", "--no-progress"]) == 0
    assert "data path: device path: sampling by the CPU twins" in capsys.readouterr().out
    assert main(["info"]) == 0
    assert "train --device cpu" in capsys.readouterr().out


def test_graph_placement_and_dgl_style_moves(data) -> None:
    graph = data["graph"]
    assert graph.to("cpu") is graph and graph.device == torch.device("cpu")
    if not torch.cuda.is_available():  # nothing to page-lock for: a no-op
        assert graph.pin_memory_() is graph and not graph.is_pinned()


@pytest.mark.parametrize("how", ["to_device", "pinned", "use_uva", "no_uva"])
def test_gpu_device_path_equals_the_cpu_path(data, how, cuda_device) -> None:
    """On a GPU: DGL's four spellings sample and gather there, with the CPU's batches."""
    graph = CSCGraph(data["graph"].indptr.clone(), data["graph"].indices.clone())
    kwargs: dict = {}
    if how == "to_device":
        graph = graph.to("cuda")
    elif how == "pinned":
        graph.pin_memory_()
    elif how == "use_uva":
        kwargs["use_uva"] = True
    else:
        kwargs.update(graph_memory="device", use_uva=False)
    x = data["x"].clone()
    cpu = DataLoader(data["graph"], data["seeds"], NeighborSampler([4, 3], seed=3),
                     batch_size=32, shuffle=True, features=data["x"], labels=data["y"], seed=11)
    gpu = DataLoader(graph, data["seeds"], NeighborSampler([4, 3], seed=3), batch_size=32,
                     shuffle=True, features=x, labels=data["y"], seed=11, device="cuda",
                     **kwargs)
    assert gpu.path is not None and gpu.path.on_gpu
    batches = _epochs(gpu)
    assert all(b.blocks[0].srcdata["feat"].is_cuda and b.blocks[0].indices.is_cuda
               for b in batches)
    _assert_same(_epochs(cpu), [b.to("cpu") for b in batches])
