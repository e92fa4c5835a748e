from __future__ import annotations

import numpy as np
import pytest
import torch
from _gpu_marks import gpu

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


def test_without_a_gpu_the_gpu_sampler_is_the_cpu_sampler() -> None:
    graph = power_law_graph()
    a = GPUNeighborSampler([5, 5], seed=3).sample(graph, [1, 2, 3], key=9)
    b = NeighborSampler([5, 5], seed=3).sample(graph, [1, 2, 3], key=9)
    assert as_lists(a) == as_lists(b)
    with pytest.raises(ValueError, match="graph_memory"):
        GPUNeighborSampler([5], graph_memory="disk")


@gpu
@pytest.mark.parametrize("memory", ["device", "pinned"])
@pytest.mark.parametrize("replace", [False, True])
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
def test_gpu_sampler_equals_the_cpu_sampler_bitwise(memory, replace, index_dtype) -> None:
    graph = power_law_graph(index_dtype=index_dtype)
    seeds = np.random.default_rng(2).permutation(400)[:100]
    for fanouts in ([3, 2], [-1, 25], [10, 1, 4]):
        cpu = NeighborSampler(fanouts, replace=replace, seed=11)
        gpu_sampler = GPUNeighborSampler(fanouts, replace=replace, seed=11,
                                         graph_memory=memory)
        for key in (0, 5):
            got = gpu_sampler.sample(graph, seeds, key=key)
            assert got.blocks[0].indices.is_cuda
            assert as_lists(got) == as_lists(cpu.sample(graph, seeds, key=key))
    empty = GPUNeighborSampler([4], graph_memory=memory).sample(graph, [], key=0)
    assert empty.blocks[0].num_edges() == 0


@gpu
def test_dataloader_with_the_gpu_sampler_yields_the_cpu_sampler_batches() -> None:
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
