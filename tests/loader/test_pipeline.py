"""The stage pipeline: same batches as the DataLoader, same losses, a valid trace, clean stops."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from graphsys import CSCGraph, DataLoader, NeighborSampler, load_dataset
from graphsys.cli import main as cli_main
from graphsys.datasets.synthetic import SyntheticConfig, generate_synthetic
from graphsys.loader.pipeline import PipelinedLoader
from graphsys.loader.trace import STAGES, StageTrace
from graphsys.storage.memory import TensorStore
from graphsys.train import TrainConfig, Trainer
from graphsys.train.parallel import ParallelOptions, ParallelTrainer

NUM_NODES = 60


@pytest.fixture
def graph() -> CSCGraph:
    rng = np.random.default_rng(1)
    return CSCGraph.from_edges(rng.integers(0, NUM_NODES, 400),
                               rng.integers(0, NUM_NODES, 400), NUM_NODES)


@pytest.fixture
def feats() -> torch.Tensor:
    return torch.randn(NUM_NODES, 5, generator=torch.Generator().manual_seed(0))


def make_loader(graph, feats, sampler=None, **kwargs) -> DataLoader:
    return DataLoader(graph, torch.arange(NUM_NODES), sampler or NeighborSampler([3, 2]),
                      batch_size=7, shuffle=True, seed=3, features=TensorStore(feats),
                      labels=torch.arange(NUM_NODES) % 3, **kwargs)


def as_lists(batches) -> list:
    return [(b.input_nodes.tolist(), b.blocks[0].srcdata["feat"].tolist(),
             b.blocks[-1].dstdata["label"].tolist()) for b in batches]


def live_stage_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(
        ("graphsys-sample", "graphsys-read", "graphsys-copy"))]


def check_against_sources(batches, graph, feats) -> None:
    """Each batch against the graph and the feature table, not against graphsys code:
    rows are ``feats[input_nodes]``, labels ``id % 3``, every block edge a graph edge, and
    the seeds of an epoch every node once."""
    indptr, indices = graph.indptr.numpy(), graph.indices.numpy()
    edges = {(int(indices[e]), v) for v in range(NUM_NODES)
             for e in range(indptr[v], indptr[v + 1])}
    seeds = []
    for b in batches:
        ids = b.input_nodes.numpy()
        np.testing.assert_array_equal(b.blocks[0].srcdata["feat"].numpy(), feats.numpy()[ids])
        out = b.output_nodes.numpy()
        np.testing.assert_array_equal(b.blocks[-1].dstdata["label"].numpy(), out % 3)
        for block in b.blocks:
            src, dst = (t.numpy() for t in block.edges())
            nodes = block.srcdata["_ID"].numpy()
            assert all((int(nodes[s]), int(nodes[d])) in edges for s, d in zip(src, dst))
        seeds.extend(out.tolist())
    assert sorted(seeds) == list(range(NUM_NODES))


@pytest.mark.parametrize("mode", ["pipelined", "serial"])
def test_yields_the_dataloaders_batches(graph, feats, mode) -> None:
    plain = make_loader(graph, feats)
    piped = PipelinedLoader(make_loader(graph, feats), mode=mode, depth=1)
    for _epoch in range(2):  # both advance their epoch counter per iteration
        expected = as_lists(plain)
        batches = list(piped)
        check_against_sources(batches, graph, feats)
        assert as_lists(batches) == expected
    assert len(piped) == len(plain) == -(-NUM_NODES // 7)
    assert not live_stage_threads()


def test_start_batch_skips_the_first_batches(graph, feats) -> None:
    full = as_lists(make_loader(graph, feats))
    piped = PipelinedLoader(make_loader(graph, feats), start_batch=3)
    assert len(piped) == len(full) - 3
    assert as_lists(piped) == full[3:]
    assert len(piped) == len(full)  # only the first epoch starts late


class LookaheadStore(TensorStore):
    """A store that wants the next batches' ids, like a DeviceCache with lookahead 2."""

    lookahead = 2

    def __init__(self, tensor: torch.Tensor) -> None:
        super().__init__(tensor)
        self.calls: list[list[list[int]]] = []

    def prefetch(self, upcoming: list[torch.Tensor]) -> None:
        self.calls.append([ids.tolist() for ids in upcoming])


@pytest.mark.parametrize("mode", ["pipelined", "serial"])
def test_read_stage_prefetches_the_next_batches(graph, feats, mode) -> None:
    reference = make_loader(graph, feats)
    reference.features = LookaheadStore(feats)
    expected = as_lists(reference)
    loader = make_loader(graph, feats)
    loader.features = LookaheadStore(feats)
    assert as_lists(PipelinedLoader(loader, mode=mode)) == expected
    assert loader.features.calls == reference.features.calls
    inputs = [b[0] for b in expected]
    # Lookahead 2, by definition: before batch k is read, batches k+1 and k+2 are announced.
    assert loader.features.calls[0] == inputs[1:3]
    announced = [call for call in loader.features.calls if call]
    assert announced == [inputs[k + 1 : k + 3] for k in range(len(announced))]


class FailingSampler:
    def __init__(self, fail_at: int) -> None:
        self.inner = NeighborSampler([2])
        self.calls = 0
        self.fail_at = fail_at

    def sample(self, graph, seeds, *, key=None):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError(f"boom in batch {self.calls}")
        return self.inner.sample(graph, seeds, key=key)


def test_a_stage_error_reaches_the_consumer(graph, feats) -> None:
    piped = PipelinedLoader(make_loader(graph, feats, FailingSampler(fail_at=4)))
    got = []
    with pytest.raises(RuntimeError, match="boom in batch 4"):
        for batch in piped:
            got.append(batch)
    assert len(got) == 3
    assert not live_stage_threads()


def test_breaking_early_stops_every_stage(graph, feats) -> None:
    sampler = FailingSampler(fail_at=-1)
    loader = make_loader(graph, feats, sampler)
    loader.batch_size = 1
    for i, _ in enumerate(PipelinedLoader(loader, depth=1)):
        if i == 1:
            break
    assert not live_stage_threads()
    # Bounded queues: at most one batch in each of three queues plus one per stage.
    assert sampler.calls <= 2 + 3 + 3


def test_trace_is_valid_chrome_json_with_every_stage(graph, feats, tmp_path: Path) -> None:
    trace = StageTrace(process=0)
    piped = PipelinedLoader(make_loader(graph, feats), trace=trace)
    batches = len(piped)
    for _ in piped:
        pass
    trace.save(tmp_path / "trace.json")
    data = json.loads((tmp_path / "trace.json").read_text())
    spans = [e for e in data["traceEvents"] if e["ph"] == "X"]
    by_stage: dict[str, dict[int, dict]] = {}
    for e in spans:
        assert e["dur"] >= 0 and e["ts"] >= 0
        by_stage.setdefault(e["name"], {})[e["args"]["batch"]] = e
    assert set(STAGES) <= set(by_stage)
    for stage in STAGES:
        assert sorted(by_stage[stage]) == list(range(batches)), stage
    # Per batch, each stage starts after the one before it ended.
    for b in range(batches):
        for before, after in zip(STAGES, STAGES[1:], strict=False):
            end = by_stage[before][b]["ts"] + by_stage[before][b]["dur"]
            assert by_stage[after][b]["ts"] >= end - 1e-3, (b, before, after)
    names = {e["args"]["name"] for e in data["traceEvents"] if e["name"] == "thread_name"}
    assert set(STAGES) <= names
    assert "slowest stage" in trace.summary()


def test_rejects_bad_arguments(graph, feats) -> None:
    with pytest.raises(ValueError, match="mode='fast' is unknown"):
        PipelinedLoader(make_loader(graph, feats), mode="fast")
    with pytest.raises(ValueError, match="depth must be an integer >= 1"):
        PipelinedLoader(make_loader(graph, feats), depth=0)


# -- training through the pipeline -------------------------------------------------------
@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pipe") / "syn"
    generate_synthetic(out, SyntheticConfig(num_nodes=800, num_edges=8000, feat_dim=8,
                                            num_classes=4, seed=2), progress=False)
    return out


def _config(**overrides) -> TrainConfig:
    base = dict(fanouts=(4, 4), hidden=8, batch_size=64, epochs=2, eval_every=0,
                progress=False, seed=4)
    base.update(overrides)
    return TrainConfig(**base)


def test_pipelined_training_gives_the_serial_losses(dataset_dir: Path) -> None:
    ds = load_dataset(dataset_dir)
    runs = {}
    for mode in ("serial", "pipelined"):
        trainer = ParallelTrainer(ds, _config(), options=ParallelOptions(pipeline=mode))
        runs[mode] = ([m.loss for m in trainer.fit().history], trainer.model.state_dict())
    assert runs["pipelined"][0] == runs["serial"][0]
    for key, value in runs["serial"][1].items():
        assert torch.equal(runs["pipelined"][1][key], value), key
    plain = Trainer(ds, _config()).fit()  # the loss is a sum / batch there: same up to rounding
    np.testing.assert_allclose(runs["serial"][0], [m.loss for m in plain.history], rtol=1e-6)


def test_mid_epoch_checkpoint_resumes_exactly(dataset_dir: Path, tmp_path: Path) -> None:
    ds = load_dataset(dataset_dir)
    options = ParallelOptions(checkpoint_every=3)
    straight = ParallelTrainer(ds, _config(), options=options, out_dir=tmp_path / "a")
    straight.fit()

    class Crash(Exception):
        pass

    def crash(epoch: int, index: int) -> None:
        if (epoch, index) == (1, 4):
            raise Crash

    with pytest.raises(Crash):  # dropout is on: the RNG state must come back too
        ParallelTrainer(ds, _config(), options=options, out_dir=tmp_path / "b",
                        on_batch=crash).fit()
    state = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert (state["next_epoch"], state["next_batch"]) == (1, 3)
    resumed = ParallelTrainer(ds, _config(), options=options, out_dir=tmp_path / "b")
    assert resumed.resume() == 1
    result = resumed.fit()
    assert [m.loss for m in result.history] == [m.loss for m in straight.history]
    for key, value in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key


def test_cli_profile_writes_a_trace_and_says_where_time_went(dataset_dir: Path,
                                                             tmp_path: Path, capsys) -> None:
    trace = tmp_path / "profile.json"
    code = cli_main(["train", str(dataset_dir), "--epochs", "1", "--fanouts", "4,4",
                     "--hidden", "8", "--batch-size", "64", "--eval-every", "0",
                     "--no-progress", "--profile", str(trace)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "slowest stage" in printed and "sample" in printed and "compute" in printed
    events = json.loads(trace.read_text())["traceEvents"]
    assert set(STAGES) <= {e["name"] for e in events if e["ph"] == "X"}


@pytest.mark.parametrize("mode", ["pipelined", "serial"])
def test_copy_on_a_side_stream_gives_the_same_batches(graph, feats, mode, cuda_device) -> None:
    plain = make_loader(graph, feats, device="cuda")
    piped = PipelinedLoader(make_loader(graph, feats, device="cuda"), mode=mode)
    for _epoch in range(2):
        batches = list(piped)
        assert all(b.blocks[0].srcdata["feat"].is_cuda for b in batches)
        assert as_lists(batches) == as_lists(plain)
