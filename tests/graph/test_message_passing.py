"""DGL's built-in message passing on blocks and whole graphs, against dense references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import graphsys as dgl
import graphsys.function as fn
import graphsys.nn as dglnn
from graphsys.graph.csc import CSCGraph
from graphsys.samplers.block import Block


def _block(seed: int = 0, num_src: int = 9, num_dst: int = 5, num_edges: int = 23) -> Block:
    """A random block with duplicate edges and one destination without in-edges."""
    rng = np.random.default_rng(seed)
    dst = np.sort(rng.integers(0, num_dst - 1, num_edges))  # the last dst gets no edge
    src = rng.integers(0, num_src, num_edges)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(dst, minlength=num_dst))])
    return Block(torch.from_numpy(indptr), torch.from_numpy(src),
                 torch.arange(100, 100 + num_src), num_dst)


def _edges(block: Block) -> tuple[np.ndarray, np.ndarray]:
    indptr = block.indptr.numpy()
    return block.indices.numpy(), np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))


def _dense(block: Block) -> torch.Tensor:
    """``A[dst, src]`` with duplicate edges counted."""
    src, dst = _edges(block)
    a = np.zeros((block.num_dst_nodes(), block.num_src_nodes()))
    np.add.at(a, (dst, src), 1.0)
    return torch.tensor(a, dtype=torch.float32)


@pytest.mark.parametrize("grad", [False, True])
def test_copy_u_sum_and_mean_equal_the_dense_product(grad: bool) -> None:
    block = _block()
    h = torch.randn(9, 4, requires_grad=grad)
    block.srcdata["h"] = h
    block.update_all(fn.copy_u("h", "m"), fn.sum("m", "s"))
    block.update_all(fn.copy_src("h", "m"), fn.mean("m", "a"))
    a = _dense(block)
    deg = a.sum(1, keepdim=True).clamp(min=1)
    torch.testing.assert_close(block.dstdata["s"], a @ h)
    torch.testing.assert_close(block.dstdata["a"], (a @ h) / deg)
    assert torch.equal(block.dstdata["a"][-1], torch.zeros(4))  # no in-edges: zeros
    if grad:  # the product's backward is the transposed product
        block.dstdata["s"].sum().backward()
        torch.testing.assert_close(h.grad, a.sum(0).unsqueeze(1).expand(9, 4))


def test_max_min_and_weighted_messages_equal_a_loop() -> None:
    block = _block(1)
    src, dst = _edges(block)
    h = torch.randn(9, 3)
    w = torch.rand(len(src))
    block.srcdata["h"], block.edata["w"] = h, w
    block.update_all(fn.copy_u("h", "m"), fn.max("m", "mx"))
    block.update_all(fn.copy_u("h", "m"), fn.min("m", "mn"))
    block.update_all(fn.u_mul_e("h", "w", "m"), fn.sum("m", "ws"))
    block.edata["w2"] = w.unsqueeze(1)  # DGL's [E, 1] weights broadcast too
    block.update_all(fn.u_mul_e("h", "w2", "m"), fn.mean("m", "wm"))
    for v in range(block.num_dst_nodes()):
        mine = src[dst == v]
        if len(mine):
            want_max, want_min = h[mine].max(0).values, h[mine].min(0).values
        else:
            want_max = want_min = torch.zeros(3)
        assert torch.equal(block.dstdata["mx"][v], want_max)
        assert torch.equal(block.dstdata["mn"][v], want_min)
        weighted = (w[dst == v].unsqueeze(1) * h[mine]).sum(0)
        torch.testing.assert_close(block.dstdata["ws"][v], weighted)
        torch.testing.assert_close(block.dstdata["wm"][v], weighted / max(len(mine), 1))


def test_apply_edges_binary_messages() -> None:
    block = _block(2)
    src, dst = _edges(block)
    hu, hv = torch.randn(9, 6), torch.randn(5, 6)
    e = torch.randn(len(src), 6)
    block.srcdata["h"], block.dstdata["h"], block.edata["e"] = hu, hv, e
    block.apply_edges(fn.u_dot_v("h", "h", "score"))
    torch.testing.assert_close(block.edata["score"],
                               (hu[src] * hv[dst]).sum(1, keepdim=True))
    block.apply_edges(fn.u_add_v("h", "h", "s"))
    torch.testing.assert_close(block.edata["s"], hu[src] + hv[dst])
    block.apply_edges(fn.e_sub_v("e", "h", "d"))
    torch.testing.assert_close(block.edata["d"], e - hv[dst])
    block.apply_edges(fn.v_div_u("h", "h", "q"))
    torch.testing.assert_close(block.edata["q"], hv[dst] / hu[src])


def test_local_scope_drops_what_was_set_inside() -> None:
    block = _block()
    block.srcdata["h"] = old = torch.randn(9, 2)
    with block.local_scope():
        block.srcdata["h"] = torch.zeros(9, 2)
        block.update_all(fn.copy_u("h", "m"), fn.sum("m", "out"))
        assert "out" in block.dstdata
    assert "out" not in block.dstdata and block.srcdata["h"] is old
    assert dgl.NID in block.srcdata  # the ids survive


def test_whole_graph_update_all_writes_ndata() -> None:
    g = dgl.graph((torch.tensor([0, 1, 2, 2, 3]), torch.tensor([1, 2, 0, 1, 1])), num_nodes=4)
    assert isinstance(g, CSCGraph)
    x = torch.randn(4, 3)
    g.ndata["x"] = x
    g.update_all(fn.copy_u("x", "m"), fn.sum("m", "y"))
    want = torch.zeros(4, 3)
    for s, d in [(0, 1), (1, 2), (2, 0), (2, 1), (3, 1)]:
        want[d] += x[s]
    torch.testing.assert_close(g.ndata["y"], want)
    assert dgl.function.copy_u is fn.copy_u  # resolved from `import graphsys as dgl`


def test_user_defined_functions_and_mismatched_names_are_refused() -> None:
    block = _block()
    block.srcdata["h"] = torch.randn(9, 2)
    with pytest.raises(TypeError, match="user-defined message functions are not supported"):
        block.update_all(lambda edges: {"m": edges.src["h"]}, fn.sum("m", "h"))
    with pytest.raises(TypeError, match="user-defined reduce functions"):
        block.update_all(fn.copy_u("h", "m"), lambda nodes: {})
    with pytest.raises(ValueError, match="use the same name"):
        block.update_all(fn.copy_u("h", "m"), fn.sum("msg", "h"))
    with pytest.raises(KeyError, match="no field 'missing'"):
        block.update_all(fn.copy_u("missing", "m"), fn.sum("m", "h"))


class HandWrittenSAGE(torch.nn.Module):
    """GraphSAGE-mean the way DGL tutorials write it with update_all."""

    def __init__(self, in_feats: int, out_feats: int) -> None:
        super().__init__()
        self.fc_self = torch.nn.Linear(in_feats, out_feats, bias=False)
        self.fc_neigh = torch.nn.Linear(in_feats, out_feats, bias=False)
        self.bias = torch.nn.Parameter(torch.zeros(out_feats))

    def forward(self, block, h):
        with block.local_scope():
            block.srcdata["h"] = h
            block.update_all(fn.copy_u("h", "m"), fn.mean("m", "h_neigh"))
            h_dst = h[: block.num_dst_nodes()]
            return self.fc_self(h_dst) + self.fc_neigh(block.dstdata["h_neigh"]) + self.bias


def test_a_hand_written_layer_equals_sageconv_with_the_same_weights() -> None:
    torch.manual_seed(0)
    block = _block(3, num_src=40, num_dst=12, num_edges=90)
    h = torch.randn(40, 8)
    ours = dglnn.SAGEConv(8, 5, "mean")
    mine = HandWrittenSAGE(8, 5)
    mine.load_state_dict({"fc_self.weight": ours.fc_self.weight.detach(),
                          "fc_neigh.weight": ours.fc_neigh.weight.detach(),
                          "bias": torch.randn(5)})
    with torch.no_grad():
        ours.bias.copy_(mine.bias)
    torch.testing.assert_close(mine(block, h), ours(block, h), rtol=1e-5, atol=1e-6)
    assert set(block.srcdata) == {dgl.NID}  # the scope left the frames as they were
