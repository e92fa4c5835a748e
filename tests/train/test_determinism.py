"""CPU training is bit-for-bit repeatable with the default threads (README's promise)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from conftest import synthetic_dir
from graphsys.nn import GAT, GCN, GraphSAGE
from graphsys.samplers.block import Block

# What metrics.jsonl holds besides wall-clock figures, which differ run to run.
TIMING_KEYS = {"epoch_s", "eval_s", "seeds_per_s", "edges_per_s", "feature_s"}


def _colliding_blocks(seed: int) -> list[Block]:
    """Two layers whose edges hit few sources many times: colliding gradient rows."""
    g = torch.Generator().manual_seed(seed)
    blocks = []
    for num_src, num_dst in ((600, 200), (200, 64)):
        per_dst = 24
        dst = torch.arange(num_dst).repeat_interleave(per_dst)
        src = torch.randint(0, num_src, (num_dst * per_dst,), generator=g)
        indptr = torch.arange(0, num_dst * per_dst + 1, per_dst)
        blocks.append(Block(indptr, src, torch.arange(num_src), num_dst=num_dst))
    return blocks


@pytest.mark.parametrize("model_cls", [GraphSAGE, GCN, GAT])
def test_gradients_are_identical_run_to_run(model_cls) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(max(2, threads))
    try:
        blocks = _colliding_blocks(0)
        x = torch.randn(600, 96, generator=torch.Generator().manual_seed(1))
        y = torch.randint(0, 5, (64,), generator=torch.Generator().manual_seed(2))
        torch.manual_seed(3)
        model = model_cls(96, 64, 5, num_layers=2, dropout=0.0)
        grads = []
        for _ in range(4):
            model.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(blocks, x), y).backward()
            grads.append([p.grad.clone() for p in model.parameters()])
        for other in grads[1:]:
            for a, b in zip(grads[0], other):
                assert torch.equal(a, b)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    return synthetic_dir(tmp_path_factory, "det", num_nodes=20000, num_edges=200000,
                         feat_dim=256, num_classes=4, seed=5)


def _metrics(dataset_dir, out, *extra) -> list[dict]:
    subprocess.run([sys.executable, "-m", "graphsys", "train", str(dataset_dir), "--epochs",
                    "1", "--fanouts", "10,10", "--batch-size", "1024", "--seed", "7",
                    "--no-progress", "--out", str(out), *extra],
                   check=True, capture_output=True, timeout=600)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS}
            for line in lines]


@pytest.mark.parametrize("extra", [(), ("--pipeline", "serial"), ("--pipeline", "pipelined")],
                         ids=["plain", "serial", "pipelined"])
def test_two_default_thread_runs_write_the_same_metrics(dataset_dir, tmp_path, extra) -> None:
    first = _metrics(dataset_dir, tmp_path / "a", *extra)
    second = _metrics(dataset_dir, tmp_path / "b", *extra)
    assert len(first) == 1 and all("loss" in m and "val_acc" in m for m in first)
    assert first == second
