"""Each layer against DGL 2.1: its state_dict keys, its signature, and a dense reference.

A "DGL checkpoint" here is a dict of random tensors under DGL's parameter names and shapes,
saved and loaded as plain tensors (no DGL needed); it must load into our layer with
``strict=True`` and give the output of DGL's documented formula, computed independently in
float64 with a dense adjacency matrix.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from graphsys.graph.csc import CSCGraph
from graphsys.nn import (
    APPNPConv,
    GATConv,
    GATv2Conv,
    GINConv,
    GraphConv,
    SAGEConv,
    SGConv,
    ZeroInDegreeError,
    edge_softmax,
)
from graphsys.samplers.block import Block

DTYPE = torch.float64
TOL = dict(rtol=1e-6, atol=1e-6)


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


def full_block(block: Block) -> Block:
    """``block`` without zero in-degree destinations (dst 2 gets one edge)."""
    rows = [block.indices[block.indptr[i] : block.indptr[i + 1]]
            for i in range(block.num_dst_nodes())]
    rows[2] = torch.tensor([4])
    counts = torch.tensor([len(r) for r in rows])
    indptr = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)])
    return Block(indptr, torch.cat(rows), block.src_nodes, block.num_dst_nodes())


def random_graph(num_nodes: int = 9, seed: int = 11) -> CSCGraph:
    """A whole graph (CSC) where node 3 has no in-edges, node 0 a duplicate edge."""
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(0, num_nodes, (30,), generator=gen)
    dst = torch.randint(0, num_nodes, (30,), generator=gen)
    dst[dst == 3] = 5
    src, dst = torch.cat([src, src[:1]]), torch.cat([dst, dst[:1]])
    return CSCGraph.from_edges(src.numpy(), dst.numpy(), num_nodes=num_nodes)


def dense_adjacency(graph) -> torch.Tensor:
    """``A[i, j]`` = number of edges j -> i, built by walking the CSC arrays."""
    num_dst = graph.indptr.numel() - 1
    num_src = graph.num_src_nodes() if isinstance(graph, Block) else num_dst
    adjacency = torch.zeros(num_dst, num_src, dtype=DTYPE)
    indptr, indices = graph.indptr.tolist(), graph.indices.tolist()
    for i in range(num_dst):
        for j in indices[indptr[i] : indptr[i + 1]]:
            adjacency[i, j] += 1
    return adjacency


def neighbour_lists(block: Block) -> list[list[int]]:
    indptr, indices = block.indptr.tolist(), block.indices.tolist()
    return [indices[indptr[i] : indptr[i + 1]] for i in range(block.num_dst_nodes())]


def features(rows: int, dim: int, seed: int = 2) -> torch.Tensor:
    return torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed), dtype=DTYPE)


def dgl_checkpoint(shapes: dict[str, tuple[int, ...]], tmp_path, seed: int = 1
                   ) -> dict[str, torch.Tensor]:
    """Random tensors under DGL's keys, through a file as a user's checkpoint would be."""
    gen = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(s, generator=gen, dtype=DTYPE) * 0.5 for k, s in shapes.items()}
    torch.save(state, tmp_path / "dgl.pt")
    return torch.load(tmp_path / "dgl.pt", weights_only=True)


def load(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    module = module.to(DTYPE).eval()
    module.load_state_dict(state, strict=True)
    assert {k: tuple(v.shape) for k, v in module.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in state.items()}
    return module


def run(module: torch.nn.Module, graph, h, device: str) -> torch.Tensor:
    h = tuple(t.to(device) for t in h) if isinstance(h, tuple) else h.to(device)
    graph = graph.to(device)
    return module.to(device)(graph, h).cpu()


def masked_max(adjacency: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``max_{j: A[i, j] > 0} values[j]``, zero for rows with no edge."""
    masked = torch.where(adjacency.unsqueeze(-1) > 0, values.unsqueeze(0), float("-inf"))
    return torch.where(adjacency.sum(1, keepdim=True) > 0, masked.amax(1), 0.0)


def masked_softmax(adjacency: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Softmax over ``j`` of ``logits[i, j, h]`` where a duplicate edge is its own term."""
    peak = torch.where(adjacency.unsqueeze(-1) > 0, logits, float("-inf")).amax(1, keepdim=True)
    weights = adjacency.unsqueeze(-1) * torch.exp(logits - torch.nan_to_num(peak, neginf=0.0))
    return weights / weights.sum(1, keepdim=True).clamp(min=1e-300)


# -- SAGEConv ------------------------------------------------------------------------------
def lstm_last_state(seq: list[torch.Tensor], s: dict[str, torch.Tensor]) -> torch.Tensor:
    """PyTorch's LSTM equations (gates i, f, g, o), zero initial state, by hand."""
    size = s["lstm.weight_hh_l0"].shape[1]
    h = c = torch.zeros(size, dtype=DTYPE)
    for x in seq:
        gates = (s["lstm.weight_ih_l0"] @ x + s["lstm.bias_ih_l0"]
                 + s["lstm.weight_hh_l0"] @ h + s["lstm.bias_hh_l0"])
        i, f, g, o = gates.split(size)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
    return h


def sage_shapes(kind: str, in_src: int, in_dst: int, out: int, bias: bool = True):
    shapes: dict[str, tuple[int, ...]] = {}
    if kind == "pool":
        shapes |= {"fc_pool.weight": (in_src, in_src), "fc_pool.bias": (in_src,)}
    if kind == "lstm":
        shapes |= {"lstm.weight_ih_l0": (4 * in_src, in_src),
                   "lstm.weight_hh_l0": (4 * in_src, in_src),
                   "lstm.bias_ih_l0": (4 * in_src,), "lstm.bias_hh_l0": (4 * in_src,)}
    shapes["fc_neigh.weight"] = (out, in_src)
    if kind != "gcn":
        shapes["fc_self.weight"] = (out, in_dst)
        if bias:
            shapes["fc_self.bias"] = (out,)
    elif bias:
        shapes["bias"] = (out,)
    return shapes


def sage_reference(kind: str, s, block: Block, h_src, h_dst):
    adjacency = dense_adjacency(block)
    deg = adjacency.sum(1, keepdim=True)
    if kind == "gcn":
        return ((adjacency @ h_src + h_dst) / (deg + 1)) @ s["fc_neigh.weight"].T + s["bias"]
    if kind == "mean":
        neigh = (adjacency @ h_src) / deg.clamp(min=1)
    elif kind == "pool":
        neigh = masked_max(adjacency, torch.relu(h_src @ s["fc_pool.weight"].T
                                                 + s["fc_pool.bias"]))
    else:
        neigh = torch.stack([
            lstm_last_state([h_src[j] for j in row], s) if row
            else torch.zeros(h_src.shape[1], dtype=DTYPE)
            for row in neighbour_lists(block)])
    return h_dst @ s["fc_self.weight"].T + s["fc_self.bias"] + neigh @ s["fc_neigh.weight"].T


@pytest.mark.parametrize("kind", ["mean", "gcn", "pool", "lstm"])
@pytest.mark.parametrize("in_feats,out_feats", [(7, 3), (3, 5)])
def test_sage_loads_dgl_state_and_matches_dense(device, tmp_path, kind, in_feats, out_feats):
    block = random_block()
    state = dgl_checkpoint(sage_shapes(kind, in_feats, in_feats, out_feats), tmp_path)
    conv = load(SAGEConv(in_feats, out_feats, kind), state)
    h = features(block.num_src_nodes(), in_feats)
    expected = sage_reference(kind, state, block, h, h[: block.num_dst_nodes()])
    torch.testing.assert_close(run(conv, block, h, device), expected, **TOL)


@pytest.mark.parametrize("kind", ["mean", "pool", "lstm"])
def test_sage_bipartite_in_feats(tmp_path, kind):
    block = random_block(seed=3)
    state = dgl_checkpoint(sage_shapes(kind, 4, 6, 5), tmp_path)
    conv = load(SAGEConv((4, 6), 5, kind), state)
    h_src, h_dst = features(block.num_src_nodes(), 4), features(block.num_dst_nodes(), 6, 9)
    expected = sage_reference(kind, state, block, h_src, h_dst)
    torch.testing.assert_close(conv(block, (h_src, h_dst)), expected, **TOL)


def test_sage_without_bias_and_with_norm_and_activation(tmp_path):
    block = random_block()
    state = dgl_checkpoint(sage_shapes("mean", 4, 4, 3, bias=False), tmp_path)
    norm = torch.nn.LayerNorm(3, elementwise_affine=False)
    conv = load(SAGEConv(4, 3, "mean", bias=False, norm=norm, activation=torch.tanh), state)
    assert conv.bias is None
    h = features(block.num_src_nodes(), 4)
    state = dict(state, **{"fc_self.bias": torch.zeros(3, dtype=DTYPE)})
    expected = norm(torch.tanh(sage_reference("mean", state, block, h, h[:6])))
    torch.testing.assert_close(conv(block, h), expected, **TOL)


def test_sage_bias_reads_fc_self_bias_as_dgl_stores_it():
    conv = SAGEConv(4, 3, "mean")
    assert "bias" not in conv.state_dict() and conv.bias is conv.fc_self.bias
    gcn = SAGEConv(4, 3, "gcn")
    assert "bias" in gcn.state_dict() and not hasattr(gcn, "fc_self")
    assert SAGEConv(4, 3, "gcn", bias=False).bias is None


def test_sage_edge_weight(tmp_path):
    block = random_block(seed=4)
    state = dgl_checkpoint(sage_shapes("mean", 4, 4, 3), tmp_path)
    conv = load(SAGEConv(4, 3, "mean"), state)
    weight = torch.rand(block.num_edges(), dtype=DTYPE)
    weighted = torch.zeros(6, block.num_src_nodes(), dtype=DTYPE)
    src, dst = block.edges()
    weighted.index_put_((dst, src), weight, accumulate=True)
    h = features(block.num_src_nodes(), 4)
    deg = dense_adjacency(block).sum(1, keepdim=True).clamp(min=1)
    expected = (h[:6] @ state["fc_self.weight"].T + state["fc_self.bias"]
                + (weighted @ h / deg) @ state["fc_neigh.weight"].T)
    torch.testing.assert_close(conv(block, h, edge_weight=weight), expected, **TOL)


def test_sage_positional_arguments_are_dgls():
    conv = SAGEConv(8, 4, "mean", 0.5)  # DGL: (in, out, aggregator_type, feat_drop, bias, ...)
    assert conv.feat_drop.p == 0.5 and conv.bias is not None
    assert SAGEConv(8, 4, "mean", 0.0, False).bias is None
    block = random_block()
    h = features(block.num_src_nodes(), 8) + 10  # no zero entries of its own
    seen: list[torch.Tensor] = []
    conv.feat_drop.register_forward_hook(lambda _m, _i, out: seen.append(out))
    conv.double().train()
    torch.manual_seed(0)
    conv(block, h)
    assert (seen[-1] == 0).any()
    conv.eval()
    conv(block, h)
    assert not (seen[-1] == 0).any()


def test_sage_unknown_aggregator_lists_choices():
    with pytest.raises(ValueError, match="'mean', 'gcn', 'pool', 'lstm'"):
        SAGEConv(4, 3, "max")
    with pytest.raises(ValueError, match="sizes must match"):
        SAGEConv((4, 5), 3, "gcn")


# -- GraphConv -----------------------------------------------------------------------------
def gcn_reference(norm: str, s, adjacency, h_src, edge_weight_matrix=None):
    out_deg = adjacency.sum(0).clamp(min=1)
    in_deg = adjacency.sum(1).clamp(min=1)
    left = {"both": out_deg.rsqrt(), "left": 1 / out_deg}.get(norm, torch.ones_like(out_deg))
    right = {"both": in_deg.rsqrt(), "right": 1 / in_deg}.get(norm, torch.ones_like(in_deg))
    matrix = adjacency if edge_weight_matrix is None else edge_weight_matrix
    weight = s.get("weight", torch.eye(h_src.shape[1], dtype=DTYPE))
    out = torch.diag(right) @ matrix @ torch.diag(left) @ h_src @ weight
    return out + s["bias"] if "bias" in s else out


@pytest.mark.parametrize("norm", ["both", "right", "left", "none"])
@pytest.mark.parametrize("in_feats,out_feats", [(7, 3), (3, 5)])
def test_graphconv_loads_dgl_state_and_matches_dense(device, tmp_path, norm, in_feats,
                                                     out_feats):
    block = random_block(seed=4)
    state = dgl_checkpoint({"weight": (in_feats, out_feats), "bias": (out_feats,)}, tmp_path)
    conv = load(GraphConv(in_feats, out_feats, norm=norm, allow_zero_in_degree=True), state)
    h = features(block.num_src_nodes(), in_feats)
    expected = gcn_reference(norm, state, dense_adjacency(block), h)
    torch.testing.assert_close(run(conv, block, h, device), expected, **TOL)


def test_graphconv_positional_arguments_weight_bias_and_external_weight(tmp_path):
    block = full_block(random_block(seed=5))
    conv = load(GraphConv(4, 4, "right", False, False), {})  # (in, out, norm, weight, bias)
    h_src = features(block.num_src_nodes(), 4)
    out = conv(block, (h_src, features(block.num_dst_nodes(), 4, 7)))
    torch.testing.assert_close(out, gcn_reference("right", {}, dense_adjacency(block), h_src),
                               **TOL)
    external = features(4, 3, 8)
    torch.testing.assert_close(
        conv(block, h_src, weight=external),
        gcn_reference("right", {"weight": external}, dense_adjacency(block), h_src), **TOL)
    with pytest.raises(ValueError, match="weight=False"):
        GraphConv(4, 3, allow_zero_in_degree=True)(block, h_src.float(), weight=external.float())


def test_graphconv_edge_weight_and_whole_graph(tmp_path):
    graph = random_graph()
    state = dgl_checkpoint({"weight": (4, 3), "bias": (3,)}, tmp_path)
    conv = load(GraphConv(4, 3, allow_zero_in_degree=True), state)
    h = features(graph.num_nodes(), 4)
    adjacency = dense_adjacency(graph)
    torch.testing.assert_close(conv(graph, h), gcn_reference("both", state, adjacency, h), **TOL)
    weight = torch.rand(graph.num_edges(), dtype=DTYPE)
    src, dst = graph.edges()
    weighted = torch.zeros_like(adjacency).index_put_((dst.long(), src.long()), weight,
                                                      accumulate=True)
    torch.testing.assert_close(conv(graph, h, edge_weight=weight),
                               gcn_reference("both", state, adjacency, h, weighted), **TOL)


def test_graphconv_unknown_norm_lists_choices():
    with pytest.raises(ValueError, match="'both', 'right', 'left', 'none'"):
        GraphConv(4, 3, norm="sym")


# -- GATConv -------------------------------------------------------------------------------
def gat_shapes(in_src: int, in_dst: int, out: int, heads: int, residual: bool, pair: bool,
               bias: bool = True):
    width = heads * out
    shapes: dict[str, tuple[int, ...]] = (
        {"fc_src.weight": (width, in_src), "fc_dst.weight": (width, in_dst)} if pair
        else {"fc.weight": (width, in_src)})
    shapes |= {"attn_l": (1, heads, out), "attn_r": (1, heads, out)}
    linear_res = residual and in_dst != width
    if linear_res:
        shapes["res_fc.weight"] = (width, in_dst)
        if bias:
            shapes["res_fc.bias"] = (width,)
    elif bias:
        shapes["bias"] = (width,)
    return shapes


def gat_reference(s, adjacency, h_src, h_dst, heads: int, out: int, residual: bool,
                  slope: float = 0.2):
    w_src = s.get("fc.weight", s.get("fc_src.weight"))
    w_dst = s.get("fc.weight", s.get("fc_dst.weight"))
    z_src = (h_src @ w_src.T).view(-1, heads, out)
    z_dst = (h_dst @ w_dst.T).view(-1, heads, out)
    el = (z_src * s["attn_l"]).sum(-1)  # [S, H]
    er = (z_dst * s["attn_r"]).sum(-1)  # [D, H]
    logits = F.leaky_relu(er.unsqueeze(1) + el.unsqueeze(0), slope)  # [D, S, H]
    result = torch.einsum("dsh,shf->dhf", masked_softmax(adjacency, logits), z_src)
    if residual:
        res = h_dst @ s["res_fc.weight"].T if "res_fc.weight" in s else h_dst
        if "res_fc.bias" in s:
            res = res + s["res_fc.bias"]
        result = result + res.view(-1, heads, out)
    if "bias" in s:
        result = result + s["bias"].view(1, heads, out)
    return result


@pytest.mark.parametrize("residual,in_feats", [(False, 5), (True, 5), (True, 6)])
def test_gat_loads_dgl_state_and_matches_dense(device, tmp_path, residual, in_feats):
    block = random_block(seed=6)
    state = dgl_checkpoint(gat_shapes(in_feats, in_feats, 3, 2, residual, False), tmp_path)
    conv = load(GATConv(in_feats, 3, num_heads=2, residual=residual,
                        allow_zero_in_degree=True), state)
    h = features(block.num_src_nodes(), in_feats)
    expected = gat_reference(state, dense_adjacency(block), h, h[:6], 2, 3, residual)
    out = run(conv, block, h, device)
    assert out.shape == (block.num_dst_nodes(), 2, 3)
    torch.testing.assert_close(out, expected, **TOL)


@pytest.mark.parametrize("residual", [False, True])
def test_gat_pair_in_feats_has_fc_src_and_fc_dst(tmp_path, residual):
    block = random_block(seed=7)
    state = dgl_checkpoint(gat_shapes(4, 7, 3, 3, residual, True), tmp_path)
    conv = load(GATConv((4, 7), 3, 3, residual=residual, allow_zero_in_degree=True), state)
    h_src, h_dst = features(block.num_src_nodes(), 4), features(block.num_dst_nodes(), 7, 8)
    expected = gat_reference(state, dense_adjacency(block), h_src, h_dst, 3, 3, residual)
    torch.testing.assert_close(conv(block, (h_src, h_dst)), expected, **TOL)


def test_gat_positional_arguments_and_attention(tmp_path):
    # DGL: (in, out, num_heads, feat_drop, attn_drop, negative_slope, residual, activation,
    #       allow_zero_in_degree, bias)
    conv = GATConv(5, 3, 2, 0.25, 0.5, 0.1, True, torch.relu, True, False)
    assert (conv.feat_drop.p, conv.attn_drop.p, conv.negative_slope) == (0.25, 0.5, 0.1)
    assert conv.allow_zero_in_degree and conv.activation is torch.relu
    assert set(conv.state_dict()) == {"fc.weight", "attn_l", "attn_r", "res_fc.weight"}
    block = random_block(seed=9)
    state = dgl_checkpoint(gat_shapes(5, 5, 3, 2, True, False, bias=False), tmp_path)
    conv = load(conv, state)
    h = features(block.num_src_nodes(), 5)
    out, attention = conv(block, h, get_attention=True)
    expected = torch.relu(gat_reference(state, dense_adjacency(block), h, h[:6], 2, 3, True,
                                        slope=0.1))
    torch.testing.assert_close(out, expected, **TOL)
    assert attention.shape == (block.num_edges(), 2, 1)


# -- GATv2Conv -----------------------------------------------------------------------------
def gatv2_shapes(in_src: int, in_dst: int, out: int, heads: int, residual: bool):
    width = heads * out
    shapes = {"fc_src.weight": (width, in_src), "fc_src.bias": (width,),
              "fc_dst.weight": (width, in_dst), "fc_dst.bias": (width,),
              "attn": (1, heads, out)}
    if residual and in_dst != width:
        shapes |= {"res_fc.weight": (width, in_dst), "res_fc.bias": (width,)}
    return shapes


def gatv2_reference(s, adjacency, h_src, h_dst, heads: int, out: int, residual: bool):
    z_src = (h_src @ s["fc_src.weight"].T + s["fc_src.bias"]).view(-1, heads, out)
    z_dst = (h_dst @ s["fc_dst.weight"].T + s["fc_dst.bias"]).view(-1, heads, out)
    hidden = F.leaky_relu(z_src.unsqueeze(0) + z_dst.unsqueeze(1), 0.2)  # [D, S, H, F]
    logits = (hidden * s["attn"]).sum(-1)
    result = torch.einsum("dsh,shf->dhf", masked_softmax(adjacency, logits), z_src)
    if residual:
        res = (h_dst @ s["res_fc.weight"].T + s["res_fc.bias"] if "res_fc.weight" in s
               else h_dst)
        result = result + res.view(-1, heads, out)
    return result


@pytest.mark.parametrize("residual,in_feats", [(False, 5), (True, 5), (True, 6)])
def test_gatv2_loads_dgl_state_and_matches_dense(device, tmp_path, residual, in_feats):
    block = random_block(seed=12)
    state = dgl_checkpoint(gatv2_shapes(in_feats, in_feats, 3, 2, residual), tmp_path)
    conv = load(GATv2Conv(in_feats, 3, 2, residual=residual, allow_zero_in_degree=True), state)
    h = features(block.num_src_nodes(), in_feats)
    expected = gatv2_reference(state, dense_adjacency(block), h, h[:6], 2, 3, residual)
    torch.testing.assert_close(run(conv, block, h, device), expected, **TOL)


def test_gatv2_pair_and_shared_weights(tmp_path):
    block = random_block(seed=13)
    state = dgl_checkpoint(gatv2_shapes(4, 6, 2, 2, True), tmp_path)
    conv = load(GATv2Conv((4, 6), 2, 2, residual=True, allow_zero_in_degree=True), state)
    h_src, h_dst = features(block.num_src_nodes(), 4), features(6, 6, 3)
    torch.testing.assert_close(
        conv(block, (h_src, h_dst)),
        gatv2_reference(state, dense_adjacency(block), h_src, h_dst, 2, 2, True), **TOL)
    # share_weights: DGL's state dict lists the one projection under both names.
    shared = GATv2Conv(4, 2, 2, 0.0, 0.0, 0.2, False, None, True, True, True)
    assert shared.fc_dst is shared.fc_src
    state = dgl_checkpoint(gatv2_shapes(4, 4, 2, 2, False), tmp_path)
    for name in ("weight", "bias"):
        state[f"fc_dst.{name}"] = state[f"fc_src.{name}"]
    conv = load(shared, state)
    h = features(block.num_src_nodes(), 4)
    torch.testing.assert_close(
        conv(block, h), gatv2_reference(state, dense_adjacency(block), h, h[:6], 2, 2, False),
        **TOL)


# -- GINConv -------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["sum", "max", "mean"])
@pytest.mark.parametrize("learn_eps", [False, True])
def test_gin_loads_dgl_state_and_matches_dense(device, tmp_path, kind, learn_eps):
    block = random_block(seed=14)
    state = dgl_checkpoint({"eps": (1,), "apply_func.weight": (3, 4), "apply_func.bias": (3,)},
                           tmp_path)
    conv = load(GINConv(torch.nn.Linear(4, 3), kind, learn_eps=learn_eps), state)
    assert isinstance(conv.eps, torch.nn.Parameter) == learn_eps
    h = features(block.num_src_nodes(), 4)
    adjacency = dense_adjacency(block)
    deg = adjacency.sum(1, keepdim=True)
    neigh = {"sum": adjacency @ h, "mean": adjacency @ h / deg.clamp(min=1),
             "max": masked_max(adjacency, h)}[kind]
    combined = (1 + state["eps"]) * h[:6] + neigh
    expected = combined @ state["apply_func.weight"].T + state["apply_func.bias"]
    torch.testing.assert_close(run(conv, block, h, device), expected, **TOL)


def test_gin_positional_arguments_and_choices():
    conv = GINConv(None, "max", 0.5, True, torch.relu)  # (apply_func, type, init_eps, learn_eps)
    assert conv.aggregator_type == "max" and conv.activation is torch.relu
    assert isinstance(conv.eps, torch.nn.Parameter) and conv.eps.tolist() == [0.5]
    assert GINConv().state_dict()["eps"].tolist() == [0.0]
    with pytest.raises(ValueError, match="'sum', 'max', 'mean'"):
        GINConv(None, "lstm")


# -- SGConv and APPNPConv (whole graphs) ---------------------------------------------------
def sym_norm(adjacency: torch.Tensor) -> torch.Tensor:
    d = adjacency.sum(1).clamp(min=1).rsqrt()
    return torch.diag(d) @ adjacency @ torch.diag(d)


@pytest.mark.parametrize("k", [1, 3])
def test_sgconv_loads_dgl_state_and_matches_dense(device, tmp_path, k):
    graph = random_graph()
    state = dgl_checkpoint({"fc.weight": (3, 4), "fc.bias": (3,)}, tmp_path)
    conv = load(SGConv(4, 3, k, allow_zero_in_degree=True), state)
    h = features(graph.num_nodes(), 4)
    expected = torch.linalg.matrix_power(sym_norm(dense_adjacency(graph)), k) @ h
    expected = expected @ state["fc.weight"].T + state["fc.bias"]
    torch.testing.assert_close(run(conv, graph, h, device), expected, **TOL)


def test_sgconv_positional_cached_and_block_rejection():
    graph = random_graph()
    conv = SGConv(4, 3, 2, True, False, None, True).double()  # (in, out, k, cached, bias)
    assert conv.fc.bias is None and conv.k == 2 and conv.cached
    first = conv(graph, features(graph.num_nodes(), 4))
    torch.testing.assert_close(conv(graph, features(graph.num_nodes(), 4, seed=5)), first)
    with pytest.raises(ValueError, match="whole graph"):
        SGConv(4, 3, allow_zero_in_degree=True)(random_block(), features(11, 4))


def appnp_reference(adjacency, h, k: int, alpha: float):
    norm = (torch.diag(adjacency.sum(1).clamp(min=1).rsqrt()) @ adjacency
            @ torch.diag(adjacency.sum(0).clamp(min=1).rsqrt()))
    out = h
    for _ in range(k):
        out = (1 - alpha) * norm @ out + alpha * h
    return out


def test_appnp_matches_dense_and_edge_drop_acts_in_training_only(device):
    graph = random_graph()
    conv = APPNPConv(3, 0.1, 0.5)  # (k, alpha, edge_drop)
    assert conv.state_dict() == {} and conv.edge_drop.p == 0.5
    conv.load_state_dict({}, strict=True)
    h = features(graph.num_nodes(), 4)
    expected = appnp_reference(dense_adjacency(graph), h, 3, 0.1)
    torch.testing.assert_close(run(conv.eval(), graph, h, device), expected, **TOL)
    torch.manual_seed(0)
    dropped = conv.train()(graph, h)
    assert not torch.allclose(dropped, expected)


def test_appnp_edge_weight_replaces_degree_norm():
    graph = random_graph()
    weight = torch.rand(graph.num_edges(), dtype=DTYPE)
    src, dst = graph.edges()
    matrix = torch.zeros(9, 9, dtype=DTYPE).index_put_((dst.long(), src.long()), weight,
                                                       accumulate=True)
    h = features(9, 3)
    expected = h
    for _ in range(2):
        expected = 0.8 * matrix @ expected + 0.2 * h
    torch.testing.assert_close(APPNPConv(2, 0.2)(graph, h, edge_weight=weight), expected, **TOL)


# -- zero in-degree, as DGL ----------------------------------------------------------------
ZERO_IN_DEGREE_CHECKED = [
    lambda allow: GraphConv(3, 2, allow_zero_in_degree=allow),
    lambda allow: GATConv(3, 2, 2, allow_zero_in_degree=allow),
    lambda allow: GATv2Conv(3, 2, 2, allow_zero_in_degree=allow),
]


@pytest.mark.parametrize("make", ZERO_IN_DEGREE_CHECKED)
def test_zero_in_degree_raises_unless_allowed(make):
    block = random_block()
    h = features(block.num_src_nodes(), 3).float()
    conv = make(False)
    with pytest.raises(ZeroInDegreeError, match="0-in-degree.*allow_zero_in_degree"):
        conv(block, h)
    assert isinstance(ZeroInDegreeError("x"), ValueError)
    conv(full_block(block), h)  # every destination has an in-edge: no error
    conv.set_allow_zero_in_degree(True)
    conv(block, h)
    out = make(True)(block, h)
    assert torch.isfinite(out).all()


def test_zero_in_degree_outputs_are_bias_only():
    block = random_block()
    h = features(block.num_src_nodes(), 3)
    gcn = load(GraphConv(3, 2, allow_zero_in_degree=True), {"weight": features(3, 2, 1),
                                                           "bias": features(1, 2, 3)[0]})
    torch.testing.assert_close(gcn(block, h)[2], gcn.bias)
    with pytest.raises(ZeroInDegreeError):
        SGConv(3, 2)(random_graph(), features(9, 3).float())


# -- shared behaviour ----------------------------------------------------------------------
LAYERS = [
    lambda: SAGEConv(3, 2, "mean"),
    lambda: SAGEConv(3, 2, "gcn"),
    lambda: SAGEConv(3, 2, "pool"),
    lambda: SAGEConv(3, 2, "lstm"),
    lambda: GraphConv(3, 2, norm="both", allow_zero_in_degree=True),
    lambda: GATConv(3, 2, num_heads=2, residual=True, allow_zero_in_degree=True),
    lambda: GATv2Conv(3, 2, num_heads=2, residual=True, allow_zero_in_degree=True),
    lambda: GINConv(torch.nn.Linear(3, 2), "max", learn_eps=True),
]


def randomise(module: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    module.to(DTYPE).eval()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=DTYPE) * 0.5)
    return module


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


def test_edge_softmax_is_stable_and_normalised():
    block = random_block(seed=8)
    logits = torch.randn(block.num_edges(), 2, dtype=DTYPE) * 1e4
    alpha = edge_softmax(block, logits)
    assert torch.isfinite(alpha).all()
    sums = torch.zeros(block.num_dst_nodes(), 2, dtype=DTYPE).index_add_(
        0, block.dst_of_edges(), alpha)
    has_edges = block.in_degrees() > 0
    torch.testing.assert_close(sums[has_edges], torch.ones_like(sums[has_edges]))


def test_layers_reject_a_non_graph():
    with pytest.raises(TypeError, match="Block or a CSC graph"):
        GraphConv(3, 2)(object(), torch.randn(4, 3))


def test_checkpoints_from_graphsys_before_dgl_keys_still_load(tmp_path):
    """Our old keys: SAGE's bias as ``bias``, GAT's beside a bias-free ``res_fc``."""
    block = random_block()
    state = dgl_checkpoint(sage_shapes("pool", 4, 4, 3), tmp_path)
    old = {("bias" if k == "fc_self.bias" else k): v for k, v in state.items()}
    conv = load(SAGEConv(4, 3, "pool"), state)
    conv.load_state_dict(old, strict=True)
    h = features(block.num_src_nodes(), 4)
    torch.testing.assert_close(conv(block, h), sage_reference("pool", state, block, h, h[:6]))
    state = dgl_checkpoint(gat_shapes(5, 5, 3, 2, True, False), tmp_path)
    old = {("bias" if k == "res_fc.bias" else k): v for k, v in state.items()}
    gat = GATConv(5, 3, 2, residual=True, allow_zero_in_degree=True).double()
    gat.load_state_dict(old, strict=True)
    torch.testing.assert_close(gat.res_fc.bias, state["res_fc.bias"])


def test_edge_weight_norm_and_sgconv_edge_weight(tmp_path):
    from graphsys.nn import EdgeWeightNorm

    graph = random_graph()
    weight = torch.rand(graph.num_edges(), dtype=DTYPE) + 0.1
    src, dst = graph.edges()
    src, dst = src.long(), dst.long()
    out_w = torch.zeros(9, dtype=DTYPE).index_add_(0, src, weight)
    in_w = torch.zeros(9, dtype=DTYPE).index_add_(0, dst, weight)
    both = EdgeWeightNorm("both")(graph, weight)
    torch.testing.assert_close(both, weight / (out_w[src] * in_w[dst]).sqrt(), **TOL)
    torch.testing.assert_close(EdgeWeightNorm("right")(graph, weight), weight / in_w[dst], **TOL)
    with pytest.raises(ValueError, match="non-positive"):
        EdgeWeightNorm("both")(graph, -weight)
    state = dgl_checkpoint({"fc.weight": (3, 4), "fc.bias": (3,)}, tmp_path)
    conv = load(SGConv(4, 3, 2, allow_zero_in_degree=True), state)
    matrix = torch.zeros(9, 9, dtype=DTYPE).index_put_((dst, src), both, accumulate=True)
    h = features(9, 4)
    expected = matrix @ matrix @ h @ state["fc.weight"].T + state["fc.bias"]
    torch.testing.assert_close(conv(graph, h, edge_weight=weight), expected, **TOL)


@pytest.mark.parametrize("make", LAYERS)
def test_block_without_edges(make):
    """DGL gives zero neighbour terms on a graph with no edges; so do we, for every layer."""
    block = Block(torch.zeros(4, dtype=torch.int64), torch.zeros(0, dtype=torch.int64),
                  torch.arange(5), 3)
    out = randomise(make())(block, features(5, 3))
    assert out.shape[0] == 3 and torch.isfinite(out).all()
