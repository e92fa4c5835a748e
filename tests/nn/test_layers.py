"""Each layer against an independent dense-adjacency reference, on every available device."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from graphsys.nn import GATConv, GraphConv, SAGEConv, edge_softmax
from graphsys.samplers.block import Block

DTYPE = torch.float64


def random_block(num_dst: int = 6, num_src: int = 11, seed: int = 0) -> Block:
    """A random block where dst 2 has no in-edges and dst 0 has a duplicate edge."""
    gen = torch.Generator().manual_seed(seed)
    degrees = torch.randint(1, 5, (num_dst,), generator=gen)
    degrees[2] = 0
    rows = [torch.randint(0, num_src, (int(d),), generator=gen) for d in degrees]
    rows[0] = torch.cat([rows[0], rows[0][:1]])  # a duplicate edge
    degrees[0] += 1
    indptr = torch.cat([torch.zeros(1, dtype=torch.int64), degrees.cumsum(0)])
    return Block(indptr, torch.cat(rows), torch.arange(num_src) + 100, num_dst)


def dense_adjacency(block: Block) -> torch.Tensor:
    """``A[i, j]`` = number of edges j -> i, built by walking the CSC arrays."""
    adjacency = torch.zeros(block.num_dst_nodes(), block.num_src_nodes(), dtype=DTYPE)
    indptr, indices = block.indptr.tolist(), block.indices.tolist()
    for i in range(block.num_dst_nodes()):
        for j in indices[indptr[i] : indptr[i + 1]]:
            adjacency[i, j] += 1
    return adjacency


def randomise(module: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Float64, eval mode, and non-zero random values everywhere (biases start at zero)."""
    gen = torch.Generator().manual_seed(seed)
    module.to(DTYPE).eval()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=DTYPE) * 0.5)
    return module


def features(rows: int, dim: int, seed: int = 2) -> torch.Tensor:
    return torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed), dtype=DTYPE)


def run(module: torch.nn.Module, block: Block, h, device: str) -> torch.Tensor:
    h = tuple(t.to(device) for t in h) if isinstance(h, tuple) else h.to(device)
    return module.to(device)(block.to(device), h).cpu()


# -- SAGEConv ------------------------------------------------------------------------------
def sage_reference(conv: SAGEConv, adjacency, h_src, h_dst):
    deg = adjacency.sum(1, keepdim=True)
    w_neigh = conv.fc_neigh.weight
    if conv.aggregator == "mean":
        neigh = (adjacency @ h_src) / deg.clamp(min=1)
        out = h_dst @ conv.fc_self.weight.T + neigh @ w_neigh.T
    elif conv.aggregator == "gcn":
        out = ((adjacency @ h_src + h_dst) / (deg + 1)) @ w_neigh.T
    else:
        pooled = torch.relu(h_src @ conv.fc_pool.weight.T + conv.fc_pool.bias)
        masked = torch.where(adjacency.unsqueeze(-1) > 0, pooled.unsqueeze(0), float("-inf"))
        neigh = torch.where(deg > 0, masked.amax(1), 0.0)
        out = h_dst @ conv.fc_self.weight.T + neigh @ w_neigh.T
    return out + conv.bias


@pytest.mark.parametrize("aggregator", ["mean", "gcn", "pool"])
@pytest.mark.parametrize("in_feats,out_feats", [(7, 3), (3, 5)])
def test_sage_matches_dense(device, aggregator, in_feats, out_feats):
    block = random_block()
    conv = randomise(SAGEConv(in_feats, out_feats, aggregator))
    h = features(block.num_src_nodes(), in_feats)
    expected = sage_reference(conv, dense_adjacency(block), h, h[: block.num_dst_nodes()])
    torch.testing.assert_close(run(conv, block, h, device), expected)


@pytest.mark.parametrize("aggregator", ["mean", "gcn", "pool"])
def test_sage_tuple_input(aggregator):
    block = random_block(seed=3)
    conv = randomise(SAGEConv(4, 6, aggregator))
    h_src, h_dst = features(block.num_src_nodes(), 4), features(block.num_dst_nodes(), 4, 9)
    expected = sage_reference(conv, dense_adjacency(block), h_src, h_dst)
    torch.testing.assert_close(conv(block, (h_src, h_dst)), expected)


def test_sage_zero_in_degree_gets_self_term_only():
    block = random_block()
    conv = randomise(SAGEConv(4, 3, "mean"))
    h = features(block.num_src_nodes(), 4)
    expected = h[2] @ conv.fc_self.weight.T + conv.bias
    torch.testing.assert_close(conv(block, h)[2], expected)


def test_sage_unknown_aggregator_lists_choices():
    with pytest.raises(ValueError, match="'mean', 'gcn', 'pool'"):
        SAGEConv(4, 3, "lstm")


def test_sage_feat_drop_and_activation():
    block = random_block()
    conv = randomise(SAGEConv(4, 3, feat_drop=1.0, activation=torch.tanh)).train()
    out = conv(block, features(block.num_src_nodes(), 4))
    torch.testing.assert_close(out, torch.tanh(conv.bias).expand_as(out))


# -- GraphConv -----------------------------------------------------------------------------
def gcn_reference(conv: GraphConv, adjacency, h_src):
    out_deg = adjacency.sum(0).clamp(min=1)
    in_deg = adjacency.sum(1).clamp(min=1)
    left = {"both": out_deg.rsqrt(), "left": 1 / out_deg}.get(conv.norm, torch.ones_like(out_deg))
    right = {"both": in_deg.rsqrt(), "right": 1 / in_deg}.get(conv.norm, torch.ones_like(in_deg))
    weight = conv.weight if conv.weight is not None else torch.eye(h_src.shape[1], dtype=DTYPE)
    return torch.diag(right) @ adjacency @ torch.diag(left) @ h_src @ weight + conv.bias


@pytest.mark.parametrize("norm", ["both", "right", "left", "none"])
@pytest.mark.parametrize("in_feats,out_feats", [(7, 3), (3, 5)])
def test_graphconv_matches_dense(device, norm, in_feats, out_feats):
    block = random_block(seed=4)
    conv = randomise(GraphConv(in_feats, out_feats, norm=norm))
    h = features(block.num_src_nodes(), in_feats)
    expected = gcn_reference(conv, dense_adjacency(block), h)
    torch.testing.assert_close(run(conv, block, h, device), expected)


def test_graphconv_without_weight_and_tuple_input():
    block = random_block(seed=5)
    conv = randomise(GraphConv(4, 4, norm="both", weight=False))
    h_src = features(block.num_src_nodes(), 4)
    out = conv(block, (h_src, features(block.num_dst_nodes(), 4, 7)))
    torch.testing.assert_close(out, gcn_reference(conv, dense_adjacency(block), h_src))


def test_graphconv_errors():
    with pytest.raises(ValueError, match="'both', 'right', 'left', 'none'"):
        GraphConv(4, 3, norm="sym")
    block = random_block()
    conv = GraphConv(4, 3, allow_zero_in_degree=False)
    with pytest.raises(ValueError, match="no in-edges"):
        conv(block, torch.randn(block.num_src_nodes(), 4))


# -- GATConv -------------------------------------------------------------------------------
def gat_reference(conv: GATConv, adjacency, h_src, h_dst):
    heads, dim = conv.num_heads, conv.out_feats
    z_src = (h_src @ conv.fc.weight.T).view(-1, heads, dim)
    z_dst = (h_dst @ conv.fc.weight.T).view(-1, heads, dim)
    el = (z_src * conv.attn_l).sum(-1)  # [S, H]
    er = (z_dst * conv.attn_r).sum(-1)  # [D, H]
    logits = F.leaky_relu(er.unsqueeze(1) + el.unsqueeze(0), conv.negative_slope)  # [D, S, H]
    # A duplicate edge is its own softmax term, so weight exp() by the edge count.
    weights = adjacency.unsqueeze(-1) * torch.exp(logits)
    alpha = weights / weights.sum(1, keepdim=True).clamp(min=1e-300)
    out = torch.einsum("dsh,shf->dhf", alpha, z_src)
    if conv.res_fc is not None:
        out = out + conv.res_fc(h_dst).view(-1, heads, dim)
    return out + conv.bias.view(1, heads, dim)


@pytest.mark.parametrize("residual,in_feats", [(False, 5), (True, 5), (True, 6)])
def test_gat_matches_dense(device, residual, in_feats):
    block = random_block(seed=6)
    conv = randomise(GATConv(in_feats, 3, num_heads=2, residual=residual))
    if residual:
        expected_type = torch.nn.Identity if in_feats == 6 else torch.nn.Linear
        assert isinstance(conv.res_fc, expected_type)
    h = features(block.num_src_nodes(), in_feats)
    expected = gat_reference(conv, dense_adjacency(block), h, h[: block.num_dst_nodes()])
    out = run(conv, block, h, device)
    assert out.shape == (block.num_dst_nodes(), 2, 3)
    torch.testing.assert_close(out, expected)
    # dst 2 has no in-edges: zeros, plus bias (and residual).
    if not residual:
        torch.testing.assert_close(out[2], conv.bias.view(2, 3).cpu())


def test_gat_tuple_input():
    block = random_block(seed=7)
    conv = randomise(GATConv(4, 3, num_heads=3, residual=True))
    h_src, h_dst = features(block.num_src_nodes(), 4), features(block.num_dst_nodes(), 4, 8)
    expected = gat_reference(conv, dense_adjacency(block), h_src, h_dst)
    torch.testing.assert_close(conv(block, (h_src, h_dst)), expected)


def test_edge_softmax_is_stable_and_normalised():
    block = random_block(seed=8)
    logits = torch.randn(block.num_edges(), 2, dtype=DTYPE) * 1e4
    alpha = edge_softmax(block, logits)
    assert torch.isfinite(alpha).all()
    sums = torch.zeros(block.num_dst_nodes(), 2, dtype=DTYPE).index_add_(
        0, block.dst_of_edges(), alpha)
    has_edges = block.in_degrees() > 0
    torch.testing.assert_close(sums[has_edges], torch.ones_like(sums[has_edges]))


# -- shared behaviour ----------------------------------------------------------------------
LAYERS = [
    lambda: SAGEConv(3, 2, "mean"),
    lambda: SAGEConv(3, 2, "gcn"),
    lambda: SAGEConv(3, 2, "pool"),
    lambda: GraphConv(3, 2, norm="both"),
    lambda: GATConv(3, 2, num_heads=2, residual=True),
]


@pytest.mark.parametrize("make", LAYERS)
def test_gradcheck(make):
    block = random_block(num_dst=3, num_src=5, seed=9)
    conv = randomise(make())
    h = features(block.num_src_nodes(), 3).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: conv(block, x), (h,))
    conv(block, h).sum().backward()
    assert all(p.grad is not None for p in conv.parameters())


@pytest.mark.parametrize("make", LAYERS)
def test_wrong_row_count_is_rejected(make):
    block = random_block()
    with pytest.raises(ValueError, match="source nodes"):
        make()(block, torch.randn(block.num_src_nodes() - 1, 3))
    with pytest.raises(ValueError, match="destination nodes"):
        make()(block, (torch.randn(block.num_src_nodes(), 3), torch.randn(1, 3)))


@pytest.mark.parametrize("make", LAYERS)
def test_int32_indices(make):
    block = random_block(seed=10)
    narrow = Block(block.indptr, block.indices.int(), block.src_nodes, block.num_dst_nodes())
    conv = randomise(make())
    h = features(block.num_src_nodes(), 3)
    torch.testing.assert_close(conv(narrow, h), conv(block, h))
