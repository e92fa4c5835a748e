"""Models: shapes, block chaining vs layer-wise inference, errors, and that they can learn."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from graphsys.nn import GAT, GCN, MODEL_NAMES, BlockModel, GraphSAGE, build_model
from graphsys.samplers.block import Block

NAMES = list(MODEL_NAMES)


def planted_graph(num_nodes: int = 40, num_classes: int = 3, dim: int = 8, seed: int = 0):
    """A planted-partition graph (CSC) whose noisy features and edges both carry the label."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (num_nodes,), generator=gen)
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    prob = torch.where(same, 0.3, 0.03)
    adjacency = torch.rand(num_nodes, num_nodes, generator=gen) < prob  # [dst, src]
    adjacency.fill_diagonal_(False)
    degrees = adjacency.sum(1)
    indptr = torch.cat([torch.zeros(1, dtype=torch.int64), degrees.cumsum(0)])
    indices = adjacency.nonzero()[:, 1]  # row-major: grouped by dst, as CSC needs
    x = F.one_hot(labels, dim).float() + torch.randn(num_nodes, dim, generator=gen)
    return indptr, indices, x, labels


def full_block(indptr: torch.Tensor, indices: torch.Tensor, dst: torch.Tensor) -> Block:
    """A one-layer block from ``dst`` to all their in-neighbours (dst first among sources)."""
    position = {v: i for i, v in enumerate(dst.tolist())}
    rows = [indices[indptr[v] : indptr[v + 1]].tolist() for v in dst.tolist()]
    for u in (u for row in rows for u in row):
        position.setdefault(u, len(position))
    local = torch.tensor([position[u] for row in rows for u in row], dtype=torch.int64)
    counts = torch.tensor([len(row) for row in rows], dtype=torch.int64)
    block_indptr = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)])
    return Block(block_indptr, local, torch.tensor(list(position), dtype=torch.int64), len(dst))


def full_blocks(indptr, indices, seeds: torch.Tensor, num_layers: int) -> list[Block]:
    blocks: list[Block] = []
    dst = seeds
    for _ in range(num_layers):
        blocks.insert(0, full_block(indptr, indices, dst))
        dst = blocks[0].src_nodes
    return blocks


def make(name: str, num_layers: int = 2, dropout: float = 0.5) -> BlockModel:
    torch.manual_seed(0)
    return build_model(name, 8, 5, 3, num_layers=num_layers, dropout=dropout, num_heads=2)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_forward_shape_and_layer_widths(name, num_layers):
    indptr, indices, x, _ = planted_graph()
    seeds = torch.tensor([0, 5, 17, 39])
    model = make(name, num_layers).eval()
    assert model.num_layers == num_layers == len(model.layers)
    blocks = full_blocks(indptr, indices, seeds, num_layers)
    assert model(blocks, x[blocks[0].src_nodes]).shape == (4, 3)
    h = x[blocks[0].src_nodes]
    for i, block in enumerate(blocks):
        h = model.layer_forward(i, block, h)
        assert h.shape == (block.num_dst_nodes(), model.layer_out_feats(i))


@pytest.mark.parametrize("name", NAMES)
def test_forward_equals_chained_layer_forward(name):
    indptr, indices, x, _ = planted_graph()
    blocks = full_blocks(indptr, indices, torch.tensor([3, 1, 30]), 2)
    model = make(name).eval()
    h0 = x[blocks[0].src_nodes]
    chained = model.layer_forward(1, blocks[1], model.layer_forward(0, blocks[0], h0))
    torch.testing.assert_close(model(blocks, h0), chained)


@pytest.mark.parametrize("name", ["sage", "gat"])
def test_minibatch_equals_layerwise_full_graph_inference(name):
    # GCN is left out on purpose: its 'both' norm uses out-degrees measured in the block,
    # which depend on the batch (as in DGL).
    indptr, indices, x, _ = planted_graph()
    num_nodes = x.shape[0]
    model = make(name).eval()
    h = x
    for i in range(model.num_layers):
        out = torch.empty(num_nodes, model.layer_out_feats(i))
        for batch in torch.arange(num_nodes).split(7):
            block = full_block(indptr, indices, batch)
            out[batch] = model.layer_forward(i, block, h[block.src_nodes])
        h = out
    seeds = torch.tensor([2, 11, 23, 38])
    blocks = full_blocks(indptr, indices, seeds, 2)
    torch.testing.assert_close(model(blocks, x[blocks[0].src_nodes]), h[seeds])


def test_depth_mismatch_names_both_counts():
    indptr, indices, x, _ = planted_graph()
    blocks = full_blocks(indptr, indices, torch.tensor([0]), 3)
    with pytest.raises(ValueError, match="sampler has 3 fanouts but the model has 2 layers; "
                                         "pass 2 fanouts"):
        make("sage")(blocks, x[blocks[0].src_nodes])


def test_build_model_names_and_errors():
    assert isinstance(make("sage"), GraphSAGE)
    assert isinstance(make("gcn"), GCN)
    gat = make("gat")
    assert isinstance(gat, GAT)
    assert gat.layers[1].in_feats == 5 * 2  # hidden layers concatenate heads
    with pytest.raises(ValueError, match="'sage', 'gcn', 'gat'"):
        build_model("gin", 8, 5, 3, 2, 0.5)
    with pytest.raises(ValueError, match="num_layers"):
        build_model("sage", 8, 5, 3, 0, 0.5)
    with pytest.raises(IndexError):
        gat.layer_forward(2, Block(torch.zeros(1, dtype=torch.int64), torch.zeros(0),
                                   torch.zeros(0), 0), torch.zeros(0, 10))


def test_dropout_only_in_training():
    indptr, indices, x, _ = planted_graph()
    blocks = full_blocks(indptr, indices, torch.arange(10), 2)
    model = make("sage", dropout=0.5)
    h0 = x[blocks[0].src_nodes]
    assert not torch.equal(model(blocks, h0), model(blocks, h0))
    model.eval()
    assert torch.equal(model(blocks, h0), model(blocks, h0))


@pytest.mark.parametrize("name", NAMES)
def test_overfits_tiny_problem(name):
    indptr, indices, x, labels = planted_graph()
    num_nodes = x.shape[0]
    block = Block(indptr, indices, torch.arange(num_nodes), num_nodes)
    model = make(name, dropout=0.0)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(100):
        loss = F.cross_entropy(model([block, block], x), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])


@pytest.mark.parametrize("name", NAMES)
def test_models_run_on_blocks_with_zero_in_degree_nodes(name):
    # Sampled blocks can hold destinations with no in-edges; the models' layers allow them
    # (DGL's GraphConv/GATConv would raise by default).
    block = Block(torch.tensor([0, 2, 2, 3]), torch.tensor([3, 4, 0]), torch.arange(5), 3)
    model = make(name, num_layers=1).eval()
    out = model([block], torch.randn(5, 8))
    assert out.shape == (3, 3) and torch.isfinite(out).all()


def test_model_state_dict_keys_are_dgls():
    sage = {k.split(".", 2)[2] for k in make("sage").state_dict()}
    assert sage == {"fc_self.weight", "fc_self.bias", "fc_neigh.weight"}
    gcn = {k.split(".", 2)[2] for k in make("gcn").state_dict()}
    assert gcn == {"weight", "bias"}
    gat = {k.split(".", 2)[2] for k in make("gat").state_dict()}
    assert gat == {"fc.weight", "attn_l", "attn_r", "bias"}
