from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from graphsys.cuda import QuantizedRows, aggregation_error_bound, dequantize, quantize
from graphsys.datasets.synthetic import SyntheticConfig, generate_synthetic
from graphsys.graph.dataset import load_dataset
from graphsys.loader import DataLoader
from graphsys.nn import GraphSAGE, SAGEConv
from graphsys.nn._aggregate import mean_neighbours, sum_neighbours
from graphsys.nn.quantized import aggregate_neighbours, protected_destinations
from graphsys.samplers import NeighborSampler
from graphsys.samplers.block import Block


def random_block(num_dst=20, num_src=45, seed=0) -> Block:
    g = torch.Generator().manual_seed(seed)
    deg = torch.randint(0, 9, (num_dst,), generator=g)
    deg[3] = 0
    indptr = torch.zeros(num_dst + 1, dtype=torch.int64)
    indptr[1:] = torch.cumsum(deg, 0)
    indices = torch.randint(0, num_src, (int(indptr[-1]),), generator=g)
    return Block(indptr, indices, torch.arange(100, 100 + num_src), num_dst=num_dst)


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("mean", [True, False])
def test_quantized_aggregation_bound_and_straight_through_gradient(bits, mean) -> None:
    block = random_block()
    x = torch.randn(45, 16, generator=torch.Generator().manual_seed(1), requires_grad=True)
    out = aggregate_neighbours(block, x, bits=bits, mean=mean)
    x_ref = x.detach().clone().requires_grad_(True)
    ref = (mean_neighbours if mean else sum_neighbours)(block, x_ref)
    q = quantize(x.detach(), bits)
    bound = aggregation_error_bound(block.indptr, block.indices, q, x.detach(),
                                    "mean" if mean else "sum")
    assert bool(((out - ref).abs() <= bound).all())
    assert not torch.equal(out, ref)  # it really is quantized
    weight = torch.randn(20, 16, generator=torch.Generator().manual_seed(2))
    (out * weight).sum().backward()
    (ref * weight).sum().backward()
    # The float transpose; the two sum in different orders (each within 2.4e-7 of a
    # float64 dense product here).
    assert torch.allclose(x.grad, x_ref.grad, rtol=1e-6, atol=1e-6)


def test_protection_aggregates_high_in_degree_destinations_in_float32() -> None:
    block = random_block()
    deg = block.in_degrees()
    mask = protected_destinations(block, 0.25)
    assert int(mask.sum()) == 5
    assert int(deg[mask].min()) >= int(deg[~mask].max())
    x = torch.randn(45, 8, generator=torch.Generator().manual_seed(3))
    ref = mean_neighbours(block, x)
    part = aggregate_neighbours(block, x, bits=8, protect=0.25)
    assert torch.allclose(part[mask], ref[mask], rtol=1e-6, atol=1e-7)
    assert not torch.allclose(part[~mask], ref[~mask], rtol=1e-6, atol=1e-7)
    full = aggregate_neighbours(block, x, bits=4, protect=1.0)
    assert torch.allclose(full, ref, rtol=1e-6, atol=1e-7)
    assert not protected_destinations(block, 0.0).any()


@pytest.mark.parametrize("aggregator", ["mean", "gcn"])
def test_sage_on_quantized_features_equals_sage_on_their_dequantized_values(aggregator) -> None:
    block = random_block()
    x = torch.randn(45, 6, generator=torch.Generator().manual_seed(4))
    torch.manual_seed(0)
    conv_q = SAGEConv(6, 10, aggregator, quantize="int8")
    plain = SAGEConv(6, 10, aggregator)
    plain.load_state_dict(conv_q.state_dict())
    q = quantize(x, 8)
    got = conv_q(block, q)
    assert got.shape == (20, 10)
    assert torch.allclose(got, plain(block, dequantize(q)), rtol=1e-5, atol=1e-5)
    # float input (in <= out: aggregate, then project): the layer quantizes the rows
    # itself; requantizing dequantized rows gives the same codes, so the same output
    assert torch.allclose(conv_q(block, dequantize(q)), got, rtol=1e-5, atol=1e-5)


def test_quantize_options_are_checked() -> None:
    with pytest.raises(ValueError, match="quantize"):
        SAGEConv(4, 4, "mean", quantize="int2")
    with pytest.raises(ValueError, match="'mean' and 'gcn'"):
        SAGEConv(4, 4, "pool", quantize="int8")
    with pytest.raises(ValueError, match="protect"):
        SAGEConv(4, 4, "mean", quantize="int8", protect=1.5)
    assert "quantize='int4'" in repr(GraphSAGE(4, 8, 2, quantize="int4"))


def _train(data, quant, seed=0, epochs=8) -> float:
    feats, labels, graph = data
    table = quantize(feats, 8) if quant else feats
    torch.manual_seed(seed)
    model = GraphSAGE(feats.shape[1], 16, 4, num_layers=2, dropout=0.0, quantize=quant,
                      protect=0.1 if quant else 0.0)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    nodes = np.arange(graph.num_nodes())
    train_idx, test_idx = nodes[: nodes.size // 2], nodes[nodes.size // 2:]
    loader = DataLoader(graph, train_idx, NeighborSampler([5, 5]), batch_size=128,
                        shuffle=True, seed=seed)

    def rows(ids):
        return table.index_select(ids) if isinstance(table, QuantizedRows) else table[ids]

    for _ in range(epochs):
        for input_nodes, output_nodes, blocks in loader:
            loss = F.cross_entropy(model(blocks, rows(input_nodes)), labels[output_nodes])
            opt.zero_grad()
            loss.backward()
            opt.step()
    batch = NeighborSampler([-1, -1]).sample(graph, test_idx, key=0)
    with torch.no_grad():
        logits = model(batch.blocks, rows(batch.input_nodes))
    return float((logits.argmax(1) == labels[batch.output_nodes]).float().mean())


def test_int8_training_reaches_float32_accuracy(tmp_path) -> None:
    cfg = SyntheticConfig(num_nodes=1200, num_edges=12000, feat_dim=16, num_classes=4,
                          feature_noise=4.0)
    generate_synthetic(tmp_path / "syn", cfg, progress=False)
    ds = load_dataset(tmp_path / "syn")
    data = (torch.as_tensor(np.asarray(ds.features[:])), torch.as_tensor(ds.labels).long(),
            ds.graph)
    fp32 = _train(data, None)
    int8 = _train(data, "int8")
    assert fp32 > 0.6  # chance is 0.25: the task is learned
    assert abs(int8 - fp32) <= 0.03


def test_quantized_sage_on_gpu_matches_cpu(cuda_device) -> None:
    block = random_block()
    x = torch.randn(45, 24, generator=torch.Generator().manual_seed(5), requires_grad=True)
    torch.manual_seed(0)
    conv = SAGEConv(24, 8, "mean", quantize="int8", protect=0.2)
    out = conv(block, x)
    out.sum().backward()
    x_gpu = x.detach().cuda().requires_grad_(True)
    conv_gpu = SAGEConv(24, 8, "mean", quantize="int8", protect=0.2).cuda()
    conv_gpu.load_state_dict(conv.state_dict())
    out_gpu = conv_gpu(block.to("cuda"), x_gpu)
    out_gpu.sum().backward()
    assert torch.allclose(out_gpu.cpu(), out, rtol=1e-4, atol=1e-4)
    assert torch.allclose(x_gpu.grad.cpu(), x.grad, rtol=1e-4, atol=1e-5)
