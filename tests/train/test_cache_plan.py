"""graphsys plan and train --plan: the plan's predictions hold, training is unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import graphsys
from graphsys.cli import main
from graphsys.datasets.synthetic import SyntheticConfig, generate_synthetic
from graphsys.errors import TrainingConfigError
from graphsys.loader.presample import plan_cache
from graphsys.storage import DeviceCache
from graphsys.storage.planner import CachePlan
from graphsys.train import TrainConfig, Trainer
from graphsys.train.feature_setup import train_loader

NODES, DIM = 20_000, 16
ROW = DIM * 4


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> graphsys.Dataset:
    path = tmp_path_factory.mktemp("plan") / "ds"
    generate_synthetic(path, SyntheticConfig(num_nodes=NODES, num_edges=160_000, feat_dim=DIM,
                                             num_classes=4, train_frac=0.2, seed=3,
                                             homophily=0.95, source_skew=3.0), progress=False)
    return graphsys.load_dataset(path)


def _config(**overrides: object) -> TrainConfig:
    base = dict(fanouts=(4, 4), hidden=16, batch_size=128, epochs=2, progress=False, seed=1,
                eval_every=0, storage="memory")
    base.update(overrides)
    return TrainConfig(**base)


def _plan(dataset, tmp_path: Path, **budgets: int) -> Path:
    loader = train_loader(dataset.graph, np.asarray(dataset.train_idx), _config())
    plan = plan_cache(loader, ROW, presample_batches=16, **budgets)
    return plan.save(tmp_path / "plan.json")


def test_plan_training_matches_memory_and_the_prediction(dataset, tmp_path) -> None:
    path = _plan(dataset, tmp_path, device_cache=NODES // 10 * ROW, victim=NODES // 10 * ROW,
                 host_cache=NODES * ROW)
    plan = CachePlan.load(path)
    share = plan.expected_share
    assert 0 < share["device"] < 1 and abs(share["device"] + share["victim"] + share["host"]
                                           + share["disk"] - 1) < 0.05
    reference = Trainer(dataset, _config()).fit()
    planned = Trainer(dataset, _config(plan=str(path)))
    result = planned.fit()
    assert isinstance(planned.train_features, DeviceCache)
    # The cache returns the source's rows: the very same training run.
    assert [m.loss for m in result.history] == [m.loss for m in reference.history]
    planned.train_features.check_consistency()
    measured = result.history[-1].device_hit_rate
    # The plan's estimate from 8 held-out presampled batches predicts a whole epoch.
    assert measured == pytest.approx(share["prefetched"], abs=0.05)
    counters = planned.train_features.counters
    assert counters.moved_rows < counters.requests * 0.9  # the cache saves transfers


def test_plan_refuses_other_loaders_and_bad_files(dataset, tmp_path) -> None:
    path = _plan(dataset, tmp_path, device_cache=NODES // 20 * ROW, victim=0,
                 host_cache=NODES * ROW)
    with pytest.raises(TrainingConfigError, match="fanouts"):
        Trainer(dataset, _config(plan=str(path), fanouts=(5, 5)))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"version": 1, "whatever": 3}))
    with pytest.raises(TrainingConfigError, match="not a graphsys cache plan"):
        CachePlan.load(bad)
    with pytest.raises(TrainingConfigError, match="cannot read"):
        CachePlan.load(tmp_path / "missing.json")


def test_plan_cli_prints_tiers_and_links(dataset, tmp_path, capsys) -> None:
    out = tmp_path / "p.json"
    code = main(["plan", str(dataset.root), "--fanouts", "4,4", "--batch-size", "128",
                 "--seed", "1", "--device-cache", "64KB", "--victim", "64KB",
                 "--host-cache", "2MB", "--presample-batches", "8", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0 and out.is_file()
    for word in ("device cache", "victim buffer", "host cache", "disk", "host -> device",
                 "disk -> host", "--plan"):
        assert word in text
    plan = CachePlan.load(out)
    assert plan.device_cache_bytes == 64_000 and plan.fanouts == (4, 4)
