from __future__ import annotations

import numpy as np
import pytest
import torch

from graphsys import CSCGraph
from graphsys.cuda import GPUNeighborSampler
from graphsys.cuda.sampling import relabel, sample_layer_cpu
from graphsys.samplers import NeighborSampler, _kernels


def power_law_graph(num_nodes=400, num_edges=6000, seed=0, index_dtype=np.int32):
    rng = np.random.default_rng(seed)
    dst = (rng.pareto(1.2, num_edges) * 5).astype(np.int64) % num_nodes  # skewed degrees
    src = rng.integers(0, num_nodes, num_edges)
    g = CSCGraph.from_edges(src, dst, num_nodes)
    return CSCGraph(g.indptr, g.indices.to(torch.from_numpy(np.zeros(0, index_dtype)).dtype))


def as_lists(batch):
    return [(b.indptr.tolist(), b.indices.tolist(), b.src_nodes.tolist()) for b in batch.blocks]


def assert_batches_bitwise_equal(got, expected) -> None:
    """Equal blocks, tensor for tensor: values, dtypes and ``num_dst``."""
    pairs = [(got.input_nodes, expected.input_nodes), (got.output_nodes, expected.output_nodes)]
    assert len(got.blocks) == len(expected.blocks)
    for a, b in zip(got.blocks, expected.blocks, strict=True):
        assert a.num_dst_nodes() == b.num_dst_nodes()
        pairs += [(a.indptr, b.indptr), (a.indices, b.indices), (a.src_nodes, b.src_nodes)]
    for a, b in pairs:
        assert a.dtype == b.dtype and torch.equal(a.cpu(), b.cpu())


def hub_graph(num_nodes=300, seed=0, index_dtype=np.int64):
    """Hubs of in-degree ~1000 and ~200, isolated nodes (no edges at all), leaves."""
    rng = np.random.default_rng(seed)
    dst = np.concatenate([np.full(1000, 5), np.full(200, 17), rng.integers(30, 200, 900)])
    src = rng.integers(0, 200, dst.size)  # nodes 200.. have no edges either way
    g = CSCGraph.from_edges(src, dst, num_nodes)
    return CSCGraph(g.indptr, g.indices.to(torch.from_numpy(np.zeros(0, index_dtype)).dtype))


GRAPHS = {
    "power-law-i32": lambda: power_law_graph(),
    "power-law-i64": lambda: power_law_graph(seed=3, index_dtype=np.int64),
    "hubs-isolated": lambda: hub_graph(),
    "hubs-isolated-i32": lambda: hub_graph(seed=1, index_dtype=np.int32),
}
SAMPLE_FANOUTS = [[3, 2], [-1, 25], [10, 1, 4], [-1], [300, -1], [1000, 40]]


def seed_sets(graph):
    n = graph.num_nodes()
    rng = np.random.default_rng(5)
    return [np.array([5, 17, n - 1, 0]), rng.permutation(n)[:60], np.arange(n - 20, n),
            np.zeros(0, np.int64)]


@pytest.mark.parametrize("n", [0, 1, 5, 200])
def test_torch_relabel_equals_the_numba_relabel(n) -> None:
    rng = np.random.default_rng(n)
    dst = rng.permutation(1000)[:n].astype(np.int64)
    sources = rng.integers(0, 1000, 3 * n + 4)
    src_nodes, local = _kernels.relabel(dst, sources)
    t_src, t_local = relabel(torch.from_numpy(dst), torch.from_numpy(sources))
    assert t_src.tolist() == src_nodes.tolist() and t_local.tolist() == local.tolist()


@pytest.mark.parametrize("replace", [False, True])
@pytest.mark.parametrize("fanouts", [[3, 2], [-1, 25], [10, 1, 4]])
def test_gpu_sampler_pipeline_on_cpu_equals_the_cpu_sampler(replace, fanouts) -> None:
    """The GPU sampler's block assembly and relabelling, fed the CPU layer kernel, must
    give the CPU sampler's batches exactly (the CUDA layer kernel is checked on GPU)."""
    graph = power_law_graph()
    seeds = np.random.default_rng(1).permutation(400)[:50]
    cpu = NeighborSampler(fanouts, replace=replace, seed=7)
    gpu_sampler = GPUNeighborSampler(fanouts, replace=replace, seed=7)
    for key in (0, 3):
        expected = cpu.sample(graph, seeds, key=key)
        got = gpu_sampler.sample_tensors(graph.indptr.long(), graph.indices,
                                         torch.from_numpy(seeds), key, sample_layer_cpu)
        assert as_lists(got) == as_lists(expected)
        assert got.output_nodes.tolist() == expected.output_nodes.tolist()
    empty = gpu_sampler.sample_tensors(graph.indptr.long(), graph.indices,
                                       torch.zeros(0, dtype=torch.int64), 0, sample_layer_cpu)
    assert as_lists(empty) == as_lists(cpu.sample(graph, [], key=0))


@pytest.mark.parametrize("graph_name", sorted(GRAPHS))
@pytest.mark.parametrize("replace", [False, True])
@pytest.mark.parametrize("fanouts", SAMPLE_FANOUTS, ids=str)
def test_gpu_sampler_sample_equals_the_cpu_sampler(device, graph_name, replace,
                                                   fanouts) -> None:
    """``GPUNeighborSampler.sample`` -- on the CPU the numba layer kernel through
    ``sample_tensors`` and the torch relabelling, on the GPU the CUDA kernels -- gives
    the CPU sampler's batches bitwise."""
    graph = GRAPHS[graph_name]()
    cpu = NeighborSampler(fanouts, replace=replace, seed=7)
    sampler = GPUNeighborSampler(fanouts, replace=replace, seed=7, device=device)
    for seeds in seed_sets(graph):
        for key in (0, 3):
            got = sampler.sample(graph, seeds, key=key)
            assert got.blocks[0].indices.device.type == device
            assert_batches_bitwise_equal(got, cpu.sample(graph, seeds, key=key))


def test_on_cpu_the_gpu_sampler_runs_sample_tensors(monkeypatch) -> None:
    from graphsys.cuda import sampling

    used = []
    real = sampling.sample_layer_cpu

    def spy(*args):
        used.append(args[0].device)
        return real(*args)

    monkeypatch.setattr(sampling, "sample_layer_cpu", spy)
    monkeypatch.setattr(NeighborSampler, "sample", None)  # super().sample is not used
    graph = power_law_graph()
    sampler = GPUNeighborSampler([2, 2], seed=1, device="cpu")
    sampler.sample(graph, [1, 2], key=0)
    assert used == [torch.device("cpu")] * 2


def test_graph_arrays_are_cached_by_graph_device_and_memory() -> None:
    a, b = power_law_graph(), power_law_graph(seed=1)
    sampler = GPUNeighborSampler([2], device="cpu")
    cpu = torch.device("cpu")
    first = sampler._arrays(a, cpu)
    assert sampler._arrays(a, cpu) is first  # cached
    assert sampler._arrays(b, cpu) is not first  # another graph object
    assert torch.equal(sampler._arrays(b, cpu)[1], b.indices)
    assert sampler._arrays(a, cpu) is not first  # one entry: the last graph
    cached = sampler._arrays(a, cpu)
    key = sampler._graph_cache[0]
    assert key[0] is a and key[1:] == (cpu, "device")
    sampler.graph_memory = "pinned"  # another memory: prepared again
    assert sampler._arrays(a, cpu) is not cached
    assert sampler._graph_cache[0][1:] == (cpu, "pinned")
    state = sampler.__getstate__()
    assert state["_graph_cache"] is None


def test_graph_arrays_are_prepared_per_device(cuda_device) -> None:
    graph = power_law_graph()
    for memory in ("device", "pinned"):
        sampler = GPUNeighborSampler([2], graph_memory=memory)
        on_gpu = sampler._arrays(graph, torch.device("cuda", 0))
        on_cpu = sampler._arrays(graph, torch.device("cpu"))
        # 'pinned' page-locks the graph's own arrays in place (no second copy), so the
        # host arrays are then the very memory the kernels read over the bus
        assert not on_cpu[0].is_cuda and on_cpu[0].is_pinned() == (memory == "pinned")
        assert on_gpu[0].is_cuda == (memory == "device")
        assert on_gpu[0].is_pinned() == (memory == "pinned")
        if memory == "pinned":
            assert on_gpu[0].data_ptr() == on_cpu[0].data_ptr() == graph.indptr.data_ptr()
        assert sampler._arrays(graph, torch.device("cuda", 0)) is not on_gpu


def test_without_a_gpu_the_gpu_sampler_is_the_cpu_sampler() -> None:
    graph = power_law_graph()
    a = GPUNeighborSampler([5, 5], seed=3).sample(graph, [1, 2, 3], key=9)
    b = NeighborSampler([5, 5], seed=3).sample(graph, [1, 2, 3], key=9)
    assert as_lists(a) == as_lists(b)
    with pytest.raises(ValueError, match="graph_memory"):
        GPUNeighborSampler([5], graph_memory="disk")


@pytest.mark.parametrize("memory", ["device", "pinned"])
@pytest.mark.parametrize("replace", [False, True])
@pytest.mark.parametrize("graph_name", sorted(GRAPHS))
def test_gpu_sampler_equals_the_cpu_sampler_bitwise(cuda_device, memory, replace,
                                                    graph_name) -> None:
    graph = GRAPHS[graph_name]()
    seeds = np.random.default_rng(2).permutation(graph.num_nodes())[:100]
    for fanouts in SAMPLE_FANOUTS:
        cpu = NeighborSampler(fanouts, replace=replace, seed=11)
        gpu_sampler = GPUNeighborSampler(fanouts, replace=replace, seed=11,
                                         graph_memory=memory)
        for key in (0, 5):
            got = gpu_sampler.sample(graph, seeds, key=key)
            assert got.blocks[0].indices.is_cuda
            assert_batches_bitwise_equal(got, cpu.sample(graph, seeds, key=key))
    empty = GPUNeighborSampler([4], graph_memory=memory).sample(graph, [], key=0)
    assert empty.blocks[0].num_edges() == 0


def test_dataloader_with_the_gpu_sampler_yields_the_cpu_sampler_batches(cuda_device) -> None:
    from graphsys.loader import DataLoader

    graph = power_law_graph()
    feats = torch.randn(400, 5)
    seeds = np.arange(0, 400, 3)
    kwargs = {"batch_size": 32, "shuffle": True, "seed": 4, "features": feats,
              "device": "cuda"}
    plain = DataLoader(graph, seeds, NeighborSampler([4, 4], seed=2), **kwargs)
    on_gpu = DataLoader(graph, seeds, GPUNeighborSampler([4, 4], seed=2), **kwargs)
    for a, b in zip(on_gpu, plain, strict=True):
        assert as_lists(a) == as_lists(b)
        assert torch.equal(a.blocks[0].srcdata["feat"].cpu(), b.blocks[0].srcdata["feat"].cpu())


def test_draws_with_replacement_are_counter_based() -> None:
    """The warp kernel gives lane j the stream's (j+1)-th state, ``state0 + (j+1) *
    GOLDEN``; that equals advancing the sequential stream j+1 times (CPU kernel)."""
    mask = (1 << 64) - 1
    state0 = 0x1234_5678_9ABC_DEF0
    state, sequential = state0, []
    for _ in range(100):  # the numba kernel's own step, uint64 state kept in Python
        state, r = _kernels._below(np.uint64(state), 977)
        state &= mask
        sequential.append(int(r))
    golden = int(_kernels._GOLDEN)
    jumped = [int(_kernels._below(np.uint64((state0 + j * golden) & mask), 977)[1])
              for j in range(100)]
    assert jumped == sequential
