"""Data-parallel training on CPU over gloo: seeds, shared cache, weights, failures, restarts.

Every multi-process run goes through :func:`launch` (torchrun) or :func:`launch_ranks`
(the same variables set by hand, without torchrun's agent, so that a survivor's own
failure handling is what the test sees). One uninterrupted 2-rank run is shared by
the tests of one module.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import graphsys
import graphsys.distributed
from graphsys.datasets.synthetic import SyntheticConfig, generate_synthetic
from graphsys.errors import TrainingConfigError
from graphsys.loader.distributed import DistributedDataLoader
from graphsys.samplers.neighbor import NeighborSampler
from graphsys.train import TrainConfig, Trainer
from graphsys.train.distributed import DistContext
from graphsys.train.parallel import _distributed_config

WORKER = Path(__file__).with_name("_dist_worker.py")
TORCHRUN = Path(sys.executable).with_name("torchrun")
TIMEOUT_S = 20  # the collective timeout the failure test runs with
BATCH, EPOCHS = 64, 2  # per rank; the global batch is 128


def _env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(graphsys.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = "1"
    return env


def launch(args: list[str], *, nproc: int = 2, max_restarts: int = 0,
           timeout: float = 240) -> subprocess.CompletedProcess:
    """``torchrun --standalone`` of the worker script with ``args``."""
    if not TORCHRUN.is_file():
        pytest.skip(f"torchrun not found beside {sys.executable}")
    cmd = [str(TORCHRUN), "--standalone", f"--nproc_per_node={nproc}",
           f"--max-restarts={max_restarts}", str(WORKER), *args]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_ranks(args: list[str], nproc: int = 2) -> list[subprocess.Popen]:
    """The worker's ranks as plain processes with torchrun's variables (no agent)."""
    port = str(_free_port())
    procs = []
    for rank in range(nproc):
        env = _env()
        env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(nproc),
                   LOCAL_WORLD_SIZE=str(nproc), MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        procs.append(subprocess.Popen([sys.executable, str(WORKER), *args], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    return procs


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist") / "syn"
    generate_synthetic(out, SyntheticConfig(num_nodes=1200, num_edges=12_000, feat_dim=16,
                                            num_classes=4, feature_noise=3.0, seed=3),
                       progress=False)
    return out


@pytest.fixture(scope="module")
def straight_run(dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted 2-rank run with a shared cache of 125 rows per rank."""
    out = tmp_path_factory.mktemp("straight")
    done = launch([str(dataset_dir), str(out), "--shared-cache", str(125 * 16 * 4),
                   "--batch-size", str(BATCH), "--epochs", str(EPOCHS)])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def _final_model(run: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert (state["next_epoch"], state["next_batch"]) == (EPOCHS, 0)
    return state["model"]


# -- in-process: the seed split ----------------------------------------------------------
@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("n", [720, 385, 389])  # even; one short last batch; merged tail
def test_ranks_split_every_global_batch(world: int, n: int) -> None:
    graph = graphsys.CSCGraph.from_edges(np.arange(999), np.arange(1, 1000), 1000)
    seeds = np.random.default_rng(0).choice(1000, n, replace=False)
    sampler = NeighborSampler([2])
    loaders = [DistributedDataLoader(graph, seeds, sampler, rank=r, world_size=world,
                                     batch_size=64, shuffle=True, seed=5) for r in range(world)]
    single = graphsys.DataLoader(graph, seeds, sampler, batch_size=64 * world, shuffle=True,
                                 seed=5)
    for epoch in (0, 1):
        per_rank = [loader.batch_seeds(epoch) for loader in loaders]
        assert len({len(b) for b in per_rank}) == 1  # every rank runs the same steps
        assert all(len(b) > 0 for batches in per_rank for b in batches)
        everything = np.concatenate([np.concatenate(b) for b in per_rank])
        assert len(everything) == n and set(everything.tolist()) == set(seeds.tolist())
        # Batch i of the ranks together is global batch i of one process's loader.
        reference = single.batch_seeds(epoch)
        glob = loaders[0].global_batches(epoch)
        joined = np.concatenate(reference)
        assert np.array_equal(np.concatenate(glob), joined)
        for i, g in enumerate(glob):
            assert np.array_equal(np.concatenate([b[i] for b in per_rank]), g)
        if len(glob) == len(reference):
            assert all(np.array_equal(g, r) for g, r in zip(glob, reference, strict=True))
    assert loaders[0].global_sizes(0) == [len(g) for g in loaders[0].global_batches(0)]


def test_split_refuses_bad_ranks() -> None:
    graph = graphsys.CSCGraph.from_edges(np.arange(9), np.arange(1, 10), 10)
    with pytest.raises(ValueError, match="rank=2 is outside"):
        DistributedDataLoader(graph, np.arange(10), NeighborSampler([2]), rank=2,
                              world_size=2)
    with pytest.raises(ValueError, match="cannot be split over 4 ranks"):
        DistributedDataLoader(graph, np.arange(3), NeighborSampler([2]), rank=0,
                              world_size=4)


def test_init_outside_torchrun_is_a_world_of_one(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    ctx = graphsys.distributed.init(device="cpu")
    assert (ctx.rank, ctx.world_size, ctx.backend, ctx.distributed) == (0, 1, None, False)
    assert not torch.distributed.is_initialized()
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(TrainingConfigError, match="MASTER_ADDR, MASTER_PORT are not set"):
        graphsys.distributed.init(device="cpu")


def test_packed_storage_is_refused_under_torchrun(dataset_dir: Path) -> None:
    ctx = DistContext(rank=0, world_size=2)
    with pytest.raises(TrainingConfigError, match="pass --storage direct"):
        _distributed_config(graphsys.load_dataset(dataset_dir),
                            TrainConfig(storage="packed"), ctx)
    config = _distributed_config(graphsys.load_dataset(dataset_dir), TrainConfig(), ctx)
    assert config.storage == "memory"  # auto: the features fit the host-cache budget


# -- two gloo processes ------------------------------------------------------------------
def test_ranks_see_disjoint_seeds_covering_the_training_set(dataset_dir: Path,
                                                            straight_run: Path) -> None:
    train = set(np.asarray(graphsys.load_dataset(dataset_dir).train_idx).tolist())
    for epoch in range(EPOCHS):
        parts = [np.load(straight_run / f"seeds.rank{r}.npz")[str(epoch)] for r in (0, 1)]
        a, b = (set(p.tolist()) for p in parts)
        assert not a & b
        assert a | b == train
        assert len(parts[0]) + len(parts[1]) == len(train)


def test_shared_cache_returns_the_source_rows(straight_run: Path) -> None:
    for rank in (0, 1):
        report = json.loads((straight_run / f"report.rank{rank}.json").read_text())
        # Every row id was asked: rows held here, by the other rank and by neither.
        assert report["equal"], f"rank {rank} got rows that differ from the source"
        assert report["owned"] == [125, 125] and report["capacity"] == 125
        assert report["uncached"] == 1200 - 250
        counters = report["counters"]
        assert counters["local_rows"] > 0 and counters["remote_rows"] > 0
        assert counters["fallback_rows"] > 0 and counters["served_rows"] > 0


def test_weights_equal_a_single_process_run(dataset_dir: Path, straight_run: Path) -> None:
    config = TrainConfig(fanouts=(5, 5), hidden=16, batch_size=BATCH * 2, epochs=EPOCHS,
                         dropout=0.0, eval_every=0, progress=False, seed=1)
    single = Trainer(graphsys.load_dataset(dataset_dir), config)
    history = single.fit().history
    ddp = _final_model(straight_run)
    for key, value in single.model.state_dict().items():
        torch.testing.assert_close(ddp[key], value, rtol=1e-5, atol=1e-6, msg=key)
    metrics = [json.loads(line) for line in
               (straight_run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == list(range(EPOCHS))
    np.testing.assert_allclose([m["loss"] for m in metrics], [m.loss for m in history],
                               rtol=1e-5)


def test_a_dead_rank_fails_the_other_fast(dataset_dir: Path, tmp_path: Path) -> None:
    procs = launch_ranks([str(dataset_dir), str(tmp_path), "--shared-cache", "8000",
                          "--timeout", str(TIMEOUT_S), "--die", "1,0,2"])
    # A hang shows up as TimeoutExpired here (a liveness bound, not a speed check).
    out, err = procs[0].communicate(timeout=TIMEOUT_S + 90)
    procs[1].wait(timeout=30)
    assert procs[1].returncode == -9
    assert procs[0].returncode == 2, out + err
    assert "rank 0 of 2: a collective failed or waited more than 20s" in err
    assert "another rank probably died" in err
    # Rerunning without --resume would be refused (the run directory holds a run).
    assert "rerun the same command with --resume" in err or "no checkpoint was written" in err


def test_restart_resumes_with_the_same_weights(dataset_dir: Path, straight_run: Path,
                                               tmp_path: Path) -> None:
    # Rank 1 dies after batch 3 of epoch 1; the checkpoint after batch 2 is the last.
    done = launch([str(dataset_dir), str(tmp_path), "--shared-cache", str(125 * 16 * 4),
                   "--batch-size", str(BATCH), "--epochs", str(EPOCHS),
                   "--checkpoint-every", "2", "--die", "1,1,3"], max_restarts=1)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "restart 1: resuming at epoch 1, batch 2" in done.stdout
    report = json.loads((tmp_path / "report.rank0.json").read_text())
    assert report["resumed"] and report["equal"]
    straight, resumed = _final_model(straight_run), _final_model(tmp_path)
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    losses = [json.loads(line)["loss"] for line in
              (tmp_path / "metrics.jsonl").read_text().splitlines()]
    reference = [json.loads(line)["loss"] for line in
                 (straight_run / "metrics.jsonl").read_text().splitlines()]
    assert losses == reference


def test_a_hung_rank_fails_the_other_at_the_timeout(dataset_dir: Path, tmp_path: Path) -> None:
    # Rank 1 stays alive with its connections open: only the collective timeout helps.
    timeout = 5
    procs = launch_ranks([str(dataset_dir), str(tmp_path), "--timeout", str(timeout),
                          "--hang", "1,0,1"])
    try:
        out, err = procs[0].communicate(timeout=timeout + 90)
    finally:
        procs[1].kill()
        procs[1].communicate()
    assert procs[0].returncode == 2, out + err
    assert f"rank 0 of 2: a collective failed or waited more than {timeout}s" in err
