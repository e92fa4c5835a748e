"""DataLoader: epoch coverage, data filling, determinism, the background thread, learning."""

from __future__ import annotations

import threading
import time
import warnings

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from graphsys import CSCGraph, DataLoader, NeighborSampler, load_dataset
from graphsys.datasets.planetoid import prepare_planetoid
from graphsys.datasets.synthetic import SyntheticConfig, generate_synthetic
from graphsys.samplers import NID

NUM_NODES = 50


@pytest.fixture
def graph() -> CSCGraph:
    rng = np.random.default_rng(0)
    src = np.concatenate([rng.integers(0, NUM_NODES, 300), [3, 3, 4]])
    dst = np.concatenate([rng.integers(2, NUM_NODES, 300), [3, 5, 5]])  # 0, 1: no in-edges
    return CSCGraph.from_edges(src, dst, NUM_NODES)


@pytest.fixture
def feats() -> torch.Tensor:
    return torch.randn(NUM_NODES, 4, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def labels() -> torch.Tensor:
    return torch.arange(NUM_NODES) % 3


def edge_set(graph: CSCGraph) -> set[tuple[int, int]]:
    src, dst = graph.edges()
    return set(zip(src.tolist(), dst.tolist(), strict=True))


def check_batch(batch, graph_edges: set, features=None, labels=None) -> None:
    input_nodes, output_nodes, blocks = batch
    assert torch.equal(input_nodes, blocks[0].srcdata[NID])
    assert torch.equal(output_nodes, blocks[-1].dstdata[NID])
    for lower, upper in zip(blocks[:-1], blocks[1:], strict=True):
        assert torch.equal(lower.dstdata[NID], upper.srcdata[NID])
    for block in blocks:
        src, dst = block.edges()
        pairs = zip(block.srcdata[NID][src].tolist(), block.dstdata[NID][dst].tolist(),
                    strict=True)
        assert set(pairs) <= graph_edges
    if features is not None:
        assert torch.equal(blocks[0].srcdata["feat"], torch.as_tensor(features)[input_nodes])
    if labels is not None:
        assert torch.equal(blocks[-1].dstdata["label"], torch.as_tensor(labels)[output_nodes])


def seeds_of(loader) -> list[list[int]]:
    return [batch.output_nodes.tolist() for batch in loader]


def live_sampler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("graphsys-sampler")]


# -- coverage and data -----------------------------------------------------------------

@pytest.mark.parametrize("shuffle", [False, True])
def test_covers_every_seed_once_and_fills_data(graph, feats, labels, shuffle):
    seeds = torch.tensor([7, 0, 31, 1, 5, 3, 44, 12, 9, 20, 2])
    loader = DataLoader(graph, seeds, NeighborSampler([3, 2]), batch_size=4, shuffle=shuffle,
                        features=feats, labels=labels, seed=1)
    assert len(loader) == 3
    batches = list(loader)
    assert [len(b.output_nodes) for b in batches] == [4, 4, 3]
    got = [v for b in batches for v in b.output_nodes.tolist()]
    assert sorted(got) == sorted(seeds.tolist())
    if not shuffle:
        assert got == seeds.tolist()
    edges = edge_set(graph)
    for batch in batches:
        check_batch(batch, edges, feats, labels)


def test_drop_last(graph):
    loader = DataLoader(graph, torch.arange(23), NeighborSampler([2]), batch_size=5,
                        shuffle=True, drop_last=True, seed=0)
    assert len(loader) == 4
    for _ in range(2):
        batches = seeds_of(loader)
        assert [len(b) for b in batches] == [5] * 4
        flat = [v for b in batches for v in b]
        assert len(set(flat)) == 20 and set(flat) <= set(range(23))
    ordered = DataLoader(graph, torch.arange(23), NeighborSampler([2]), batch_size=5,
                         drop_last=True)
    assert seeds_of(ordered) == [list(range(i, i + 5)) for i in range(0, 20, 5)]
    assert len(DataLoader(graph, torch.arange(23), NeighborSampler([2]), batch_size=5)) == 5


def test_numpy_features_and_labels(graph, feats, labels):
    loader = DataLoader(graph, np.arange(0, NUM_NODES, 3), NeighborSampler([2, 2]),
                        batch_size=6, features=feats.numpy(), labels=labels.numpy(), seed=0)
    for batch in loader:
        check_batch(batch, edge_set(graph), feats, labels)


def test_numpy_labels_in_a_batch_of_one(graph, feats, labels):
    loader = DataLoader(graph, [0, 10, 20], NeighborSampler([2]), batch_size=2,
                        features=feats.numpy(), labels=labels.numpy(), seed=0)
    last = list(loader)[-1]  # seed 0 alone: one output node
    assert last.blocks[-1].dstdata["label"].shape == (1,)
    assert last.blocks[0].srcdata["feat"].shape == (last.input_nodes.numel(), 4)
    assert torch.equal(last.blocks[0].srcdata["feat"], feats[last.input_nodes])

    single = DataLoader(graph, [0], NeighborSampler([0 + 1]), batch_size=1,
                        features=feats.numpy(), labels=labels.numpy(), seed=0)
    only = next(iter(single))
    assert only.blocks[-1].dstdata["label"].shape == (1,)


def test_labels_without_features(graph, labels):
    batch = next(iter(DataLoader(graph, [4, 5], NeighborSampler([2]), batch_size=2,
                                 labels=labels)))
    assert "feat" not in batch.blocks[0].srcdata
    assert batch.blocks[-1].dstdata["label"].tolist() == labels[[4, 5]].tolist()


def test_boolean_mask_tensor(graph):
    mask = torch.zeros(NUM_NODES, dtype=torch.bool)
    mask[[3, 8, 40]] = True
    loader = DataLoader(graph, mask, NeighborSampler([2]), batch_size=2)
    assert seeds_of(loader) == [[3, 8], [40]]


def test_boolean_mask_numpy(graph):
    mask = np.zeros(NUM_NODES, dtype=bool)
    mask[[3, 8, 40]] = True
    assert seeds_of(DataLoader(graph, mask, NeighborSampler([2]), batch_size=2)) == [[3, 8],
                                                                                    [40]]


def test_accepts_dgl_only_arguments_silently(graph):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loader = DataLoader(graph, torch.arange(10), NeighborSampler([2]), batch_size=4,
                            num_workers=4, persistent_workers=True, use_uva=False)
        assert sum(len(s) for s in seeds_of(loader)) == 10


def test_accepts_a_dataset(toy_dataset):
    ds = load_dataset(toy_dataset)
    loader = DataLoader(ds, ds.train_idx, NeighborSampler([3, 3]), batch_size=8,
                        features=ds.features, labels=ds.labels, shuffle=True, seed=0)
    edges = edge_set(ds.graph)
    covered = []
    for batch in loader:
        check_batch(batch, edges, ds.features, ds.labels)
        covered += batch.output_nodes.tolist()
    assert sorted(covered) == ds.train_idx.tolist()


# -- determinism -----------------------------------------------------------------------

def same_batches(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x.output_nodes, y.output_nodes)
        and all(torch.equal(p.indices, q.indices) and torch.equal(p.src_nodes, q.src_nodes)
                for p, q in zip(x.blocks, y.blocks, strict=True))
        for x, y in zip(a, b, strict=True))


def test_epochs_differ_and_repeat_with_set_epoch(graph):
    def make():
        return DataLoader(graph, torch.arange(NUM_NODES), NeighborSampler([3, 3]),
                          batch_size=10, shuffle=True, seed=42)

    loader = make()
    epoch0, epoch1 = list(loader), list(loader)
    assert seeds_of(epoch0) != seeds_of(epoch1)
    loader.set_epoch(0)
    assert same_batches(list(loader), epoch0)
    loader.set_epoch(1)
    assert same_batches(list(loader), epoch1)
    other = make()
    assert same_batches(list(other), epoch0)
    assert same_batches(list(other), epoch1)
    assert seeds_of(DataLoader(graph, torch.arange(NUM_NODES), NeighborSampler([3]),
                               batch_size=10, shuffle=True, seed=43)) != seeds_of(epoch0)


def test_unshuffled_epochs_resample(graph):
    loader = DataLoader(graph, torch.arange(NUM_NODES), NeighborSampler([2]), batch_size=50,
                        seed=0)
    first, second = list(loader), list(loader)
    assert seeds_of(first) == seeds_of(second)
    assert not same_batches(first, second)  # new batch keys each epoch


def test_default_seed_follows_torch_manual_seed(graph):
    def loader(torch_seed):
        torch.manual_seed(torch_seed)
        return DataLoader(graph, torch.arange(NUM_NODES), NeighborSampler([2]), batch_size=7,
                          shuffle=True)

    # The loader's seed is the next draw of torch's generator (an independent reference)
    torch.manual_seed(5)
    first_draw = int(torch.randint(0, 2**31 - 1, ()).item())
    assert loader(5).seed == first_draw
    assert seeds_of(loader(5)) == seeds_of(loader(5))
    assert seeds_of(loader(5)) != seeds_of(loader(6))  # a constant seed would fail here


# -- background thread -----------------------------------------------------------------

class CountingSampler:
    def __init__(self, fail_at: int | None = None) -> None:
        self.inner = NeighborSampler([2])
        self.calls = 0
        self.fail_at = fail_at

    def sample(self, graph, seeds, *, key=None):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError(f"boom in batch {self.calls}")
        return self.inner.sample(graph, seeds, key=key)


def run_with_timeout(fn, timeout: float = 10.0):
    """Run ``fn`` in a thread; fail (instead of hanging the suite) if it does not return."""
    result: dict = {}

    def target():
        try:
            result["value"] = fn()
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "the DataLoader hung"
    if "error" in result:
        raise result["error"]
    return result.get("value")


@pytest.mark.parametrize("background", [True, False])
def test_sampler_exception_reaches_consumer(graph, background):
    sampler = CountingSampler(fail_at=3)
    loader = DataLoader(graph, torch.arange(NUM_NODES), sampler, batch_size=5,
                        background=background)
    got = []

    def consume():
        for batch in loader:
            got.append(batch)

    with pytest.raises(RuntimeError, match="boom in batch 3"):
        run_with_timeout(consume)
    assert len(got) == 2
    assert not live_sampler_threads()


def test_breaking_early_stops_the_thread(graph):
    sampler = CountingSampler()
    loader = DataLoader(graph, torch.arange(NUM_NODES), sampler, batch_size=1, prefetch=2,
                        background=True)

    def consume():
        for i, _ in enumerate(loader):
            if i == 2:
                break

    run_with_timeout(consume)
    assert not live_sampler_threads()
    assert sampler.calls < NUM_NODES
    run_with_timeout(lambda: next(iter(loader)))  # an abandoned iterator, closed on release
    assert not live_sampler_threads()


def test_prefetch_queue_is_bounded(graph):
    sampler = CountingSampler()
    loader = DataLoader(graph, torch.arange(NUM_NODES), sampler, batch_size=1, prefetch=1,
                        background=True)
    calls = []

    def consume():
        iterator = iter(loader)
        next(iterator)
        time.sleep(0.5)  # the producer runs ahead while the consumer is busy
        calls.append(sampler.calls)
        iterator.close()

    run_with_timeout(consume)
    assert 2 <= calls[0] <= 1 + 1 + 1  # the batch taken, one queued, one blocked on put
    assert not live_sampler_threads()


@pytest.mark.parametrize("kwargs, error", [
    ({"batch_size": 0}, ValueError),
    ({"batch_size": -3}, ValueError),
    ({"batch_size": 2.0}, ValueError),
    ({"prefetch": 0}, ValueError),
    ({"num_threads": 4}, TypeError),
    ({"batchsize": 4}, TypeError),
    ({"features": torch.zeros(NUM_NODES - 1, 3)}, ValueError),
    ({"labels": torch.zeros(NUM_NODES + 1)}, ValueError),
])
def test_bad_arguments(graph, kwargs, error):
    with pytest.raises(error):
        DataLoader(graph, torch.arange(5), NeighborSampler([2]), **kwargs)


def test_bad_seeds_and_sampler(graph):
    with pytest.raises(IndexError, match=str(NUM_NODES)):
        DataLoader(graph, [1, NUM_NODES], NeighborSampler([2]))
    with pytest.raises(TypeError):
        DataLoader(graph, torch.tensor([0.0, 1.0]), NeighborSampler([2]))
    with pytest.raises(TypeError, match="sample"):
        DataLoader(graph, [1, 2], object())
    with pytest.raises(TypeError, match="graph"):
        DataLoader({"indptr": graph.indptr}, [1, 2], NeighborSampler([2]))


# -- real and synthetic data -----------------------------------------------------------

def test_cora(planetoid_dir, tmp_path):
    prepare_planetoid(planetoid_dir, tmp_path / "cora")
    ds = load_dataset(tmp_path / "cora")
    assert ds.graph.num_nodes() == 2708
    loader = DataLoader(ds.graph, ds.train_idx, NeighborSampler([5, 5]), batch_size=64,
                        shuffle=True, features=ds.features, labels=ds.labels, seed=0)
    edges = edge_set(ds.graph)
    covered = []
    for batch in loader:
        check_batch(batch, edges, ds.features, ds.labels)
        assert batch.blocks[0].srcdata["feat"].shape[1] == 1433
        covered += batch.output_nodes.tolist()
    assert sorted(covered) == list(range(140))


class MeanSAGE(torch.nn.Module):
    """Two mean-aggregation layers written only against Block's documented API."""

    def __init__(self, dims: list[int]) -> None:
        super().__init__()
        self.self_lins = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in
                                             zip(dims[:-1], dims[1:], strict=True))
        self.neigh_lins = torch.nn.ModuleList(torch.nn.Linear(a, b, bias=False) for a, b in
                                              zip(dims[:-1], dims[1:], strict=True))

    def forward(self, blocks, h):
        for i, block in enumerate(blocks):
            src, dst = block.edges()
            total = torch.zeros(block.num_dst_nodes(), h.shape[1])
            total.index_add_(0, dst, h[src])
            mean = total / block.in_degrees().clamp(min=1).unsqueeze(1)
            h = self.self_lins[i](h[: block.num_dst_nodes()]) + self.neigh_lins[i](mean)
            if i < len(blocks) - 1:
                h = F.relu(h)
        return h


def test_dgl_style_training_learns(tmp_path):
    """A DGL-style loop (loader + sampler + plain torch) learns a homophilous graph."""
    config = SyntheticConfig(num_nodes=800, num_edges=8000, feat_dim=16, num_classes=4,
                             homophily=0.9, feature_noise=6.0, seed=1)
    generate_synthetic(tmp_path / "syn", config, progress=False)
    ds = load_dataset(tmp_path / "syn")
    torch.manual_seed(0)
    model = MeanSAGE([16, 32, ds.num_classes])
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    sampler = NeighborSampler([10, 10])
    train = DataLoader(ds, ds.train_idx, sampler, batch_size=128, shuffle=True,
                       features=ds.features, labels=ds.labels, seed=0)
    epoch_losses = []
    for _ in range(5):
        losses = []
        for _input_nodes, _output_nodes, blocks in train:
            logits = model(blocks, blocks[0].srcdata["feat"].float())
            loss = F.cross_entropy(logits, blocks[-1].dstdata["label"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        epoch_losses.append(float(np.mean(losses)))
    assert epoch_losses[-1] < 0.5 * epoch_losses[0], epoch_losses

    correct = total = 0
    with torch.no_grad():
        for _, output_nodes, blocks in DataLoader(ds, ds.test_idx, sampler, batch_size=256,
                                                  features=ds.features, labels=ds.labels):
            pred = model(blocks, blocks[0].srcdata["feat"].float()).argmax(1)
            correct += int((pred == blocks[-1].dstdata["label"]).sum())
            total += len(output_nodes)
    assert total == len(ds.test_idx)
    # Chance is 0.25 and a features-only MLP reaches about 0.35 at this noise level: the
    # margin needs the sampled neighbourhoods.
    assert correct / total > 0.6, (correct / total, epoch_losses)


def test_boolean_mask_of_the_wrong_length(graph):
    with pytest.raises(ValueError, match="one entry per node"):
        DataLoader(graph, np.ones(NUM_NODES - 1, dtype=bool), NeighborSampler([2]))


def test_empty_seed_list_samples_nothing(graph):
    batch = NeighborSampler([2]).sample(graph, [])
    assert batch.output_nodes.numel() == 0 and batch.blocks[0].num_edges() == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_cuda_without_a_gpu_is_refused_at_construction(graph):
    with pytest.raises(ValueError, match="torch sees no CUDA device.*device='cpu'"):
        DataLoader(graph, torch.arange(4), NeighborSampler([2]), device="cuda")
    with pytest.raises(ValueError, match="no CUDA device"):
        DataLoader(graph, torch.arange(4), NeighborSampler([2], output_device="cuda:0"))


def test_background_and_inline_give_the_same_batches(graph):
    """The thread changes only where batches are made, never which."""
    def epoch(background):
        loader = DataLoader(graph, torch.arange(NUM_NODES), NeighborSampler([3, 2], seed=4),
                            batch_size=7, shuffle=True, seed=5, background=background)
        return [(b.input_nodes.tolist(), [(x.indptr.tolist(), x.indices.tolist())
                                          for x in b.blocks]) for b in loader]

    assert epoch(True) == epoch(False)
    assert not live_sampler_threads()


def test_inline_by_default_when_no_core_is_spare(graph, monkeypatch):
    import graphsys.loader.dataloader as dl

    loader = DataLoader(graph, torch.arange(NUM_NODES), NeighborSampler([2]), batch_size=4)
    monkeypatch.setattr(dl.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(dl.torch, "get_num_threads", lambda: 2)
    assert loader._in_background() is False
    seen = []
    for _ in loader:
        seen.append(threading.current_thread().name)
        assert not live_sampler_threads()  # made here, in the consumer's thread
    monkeypatch.setattr(dl.torch, "get_num_threads", lambda: 1)
    assert loader._in_background() is True
    assert DataLoader(graph, torch.arange(NUM_NODES), NeighborSampler([2]),
                      background=False)._in_background() is False
    with pytest.raises(TypeError, match="background"):
        DataLoader(graph, torch.arange(NUM_NODES), NeighborSampler([2]), background="yes")
