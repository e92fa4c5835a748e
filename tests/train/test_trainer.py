"""Trainer: learning, resume equivalence, checkpoints and bad input."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import graphsys
from graphsys.datasets.synthetic import SyntheticConfig, generate_synthetic
from graphsys.errors import CheckpointError, TrainingConfigError
from graphsys.nn import build_model
from graphsys.train import TrainConfig, Trainer, layerwise_inference, save_checkpoint
from graphsys.train.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> graphsys.Dataset:
    out = tmp_path_factory.mktemp("syn") / "syn"
    generate_synthetic(out, SyntheticConfig(num_nodes=1200, num_edges=12_000, feat_dim=16,
                                            num_classes=4, feature_noise=3.0, seed=3),
                       progress=False)
    return graphsys.load_dataset(out)


def _config(**overrides: object) -> TrainConfig:
    base = dict(fanouts=(5, 5), hidden=16, batch_size=128, epochs=4, progress=False, seed=1)
    base.update(overrides)
    return TrainConfig(**base)


@pytest.mark.parametrize("model", ["sage", "gcn", "gat"])
def test_training_learns_beyond_chance(small_dataset: graphsys.Dataset, model: str) -> None:
    result = Trainer(small_dataset, _config(model=model, epochs=6, lr=0.01)).fit()
    first, last = result.history[0], result.history[-1]
    assert last.loss < first.loss
    assert result.test_acc > 0.5  # 4 balanced classes: chance is 0.25


def test_resume_gives_the_same_run(small_dataset: graphsys.Dataset, tmp_path: Path) -> None:
    straight = Trainer(small_dataset, _config(), out_dir=tmp_path / "a").fit()
    Trainer(small_dataset, _config(epochs=2), out_dir=tmp_path / "b").fit()
    resumed = Trainer(small_dataset, _config(), out_dir=tmp_path / "b")
    assert resumed.resume() == 2
    result = resumed.fit()
    assert [m.loss for m in result.history] == [m.loss for m in straight.history]
    assert [m.val_acc for m in result.history] == [m.val_acc for m in straight.history]
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1, 2, 3]


def test_checkpoint_for_another_model_is_refused(small_dataset: graphsys.Dataset,
                                                 tmp_path: Path) -> None:
    Trainer(small_dataset, _config(epochs=1), out_dir=tmp_path).fit()
    other = Trainer(small_dataset, _config(hidden=32), out_dir=tmp_path)
    with pytest.raises(CheckpointError, match="hidden=16, this run has hidden=32"):
        other.resume()


class _Payload:
    def __reduce__(self) -> tuple:
        return (print, ("pwned",))


def test_checkpoint_with_pickled_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    buffer = io.BytesIO()
    torch.save({"format": "graphsys.checkpoint", "version": 1, "x": _Payload()}, buffer)
    path.write_bytes(buffer.getvalue())
    with pytest.raises(CheckpointError, match="not a readable graphsys checkpoint"):
        load_checkpoint(path, identity={})


def test_truncated_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"identity": {}, "model": {"w": torch.ones(100)}})
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(path, identity={})
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt", identity={})


def test_checkpoint_write_leaves_no_partial_on_failure(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "c.pt"
    minimal = {"identity": {}, "config": {}, "model": {}, "optimizer": {}, "next_epoch": 0,
               "history": []}
    save_checkpoint(path, {**minimal, "step": 1})

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(graphsys.DatasetError, match="no space left"):
        save_checkpoint(path, {**minimal, "step": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]
    assert load_checkpoint(path, identity={})["step"] == 1


def test_layerwise_inference_equals_full_neighbour_minibatch(small_dataset) -> None:
    torch.manual_seed(0)
    model = build_model("sage", 16, 8, 4, num_layers=2, dropout=0.5).eval()
    nodes = np.array([5, 0, 999, 17], dtype=np.int64)
    full = layerwise_inference(model, small_dataset.graph, small_dataset.features,
                               nodes=nodes, batch_size=100)
    batch = graphsys.NeighborSampler([-1, -1]).sample(small_dataset.graph, nodes)
    with torch.no_grad():
        expected = model(batch.blocks, small_dataset.features[batch.input_nodes].float())
    torch.testing.assert_close(full, expected, rtol=1e-4, atol=1e-5)
    assert model.training is False


def test_bad_config_and_dataset(small_dataset: graphsys.Dataset) -> None:
    with pytest.raises(TrainingConfigError, match="model='mlp' is unknown"):
        TrainConfig(model="mlp")
    with pytest.raises(TrainingConfigError, match="fanouts"):
        TrainConfig(fanouts=(10, 0))
    with pytest.raises(TrainingConfigError, match="feature_norm"):
        TrainConfig(feature_norm="l2")

    class Unlabelled:
        name, graph, features = "u", small_dataset.graph, small_dataset.features
        labels, num_classes = None, 0
        train_idx = val_idx = test_idx = np.arange(3)

    with pytest.raises(TrainingConfigError, match="has no labels"):
        Trainer(Unlabelled(), _config())

    class HalfLabelled(Unlabelled):
        labels, num_classes = -torch.ones(1200, dtype=torch.long), 4

    with pytest.raises(TrainingConfigError, match="3 training nodes have no label"):
        Trainer(HalfLabelled(), _config())


def test_cli_train_prints_epochs_and_final_accuracy(small_dataset, tmp_path, capsys) -> None:
    from graphsys.cli import main

    code = main(["train", str(small_dataset.root), "--fanouts", "5,5", "--hidden", "16",
                 "--epochs", "2", "--batch-size", "256", "--no-progress",
                 "--out", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert code == 0
    assert out.count("epoch ") >= 2 and "final test accuracy" in out
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
    assert main(["train", str(small_dataset.root), "--fanouts", "5,5", "--layers", "3",
                 "--no-progress"]) == 2
    assert "one fanout per layer" in capsys.readouterr().err
    assert main(["train", str(small_dataset.root), "--resume", "--no-progress"]) == 2
    assert "--resume needs --out" in capsys.readouterr().err


def test_cora_sage_reaches_paper_range(planetoid_dir: Path, tmp_path: Path) -> None:
    from graphsys.datasets.planetoid import prepare_planetoid

    prepare_planetoid(planetoid_dir, tmp_path / "cora", name="cora")
    cora = graphsys.load_dataset(tmp_path / "cora")
    config = TrainConfig(fanouts=(25, 10), batch_size=16, hidden=64, lr=0.01, epochs=30,
                         feature_norm="row", progress=False, seed=0, eval_every=3)
    # One seed and fewer epochs than the README run: guards against regressions.
    assert Trainer(cora, config).fit().test_acc >= 0.76
