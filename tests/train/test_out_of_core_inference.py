"""Layer-wise inference with hidden layers on disk equals it in RAM, for every node;
``graphsys infer`` writes every node's logits atomically and never replaces outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import graphsys
from graphsys.cli import main
from graphsys.datasets.synthetic import SyntheticConfig, generate_synthetic
from graphsys.nn.models import build_model
from graphsys.storage.open import disk_source
from graphsys.train.inference import layerwise_inference, write_outputs


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> graphsys.Dataset:
    path = tmp_path_factory.mktemp("ooc-inference") / "ds"
    generate_synthetic(path, SyntheticConfig(num_nodes=3000, num_edges=24_000, feat_dim=24,
                                             num_classes=5, train_frac=0.2, seed=3),
                       progress=False)
    return graphsys.load_dataset(path)


def _dense_reference(model, dataset) -> torch.Tensor:
    """Every layer over all nodes from the full in-RAM feature matrix, one batch."""
    x = torch.from_numpy(np.asarray(dataset.features[:]))
    return layerwise_inference(model, dataset.graph, x, batch_size=dataset.graph.num_nodes())


@pytest.mark.parametrize("kind", ["sage", "gat", "gcn"])
def test_spilled_hidden_layers_give_the_in_memory_outputs(dataset, kind, tmp_path) -> None:
    torch.manual_seed(1)
    model = build_model(kind, 24, 12, 5, num_layers=3, dropout=0.5, num_heads=2)
    expected = _dense_reference(model, dataset)
    source = disk_source(dataset, read_buffer=64 << 10)  # O_DIRECT, small reads
    nodes = np.random.default_rng(0).permutation(3000)[:700]
    got = layerwise_inference(model, dataset.graph, source, nodes=nodes, batch_size=256,
                              spill_dir=tmp_path, read_buffer=64 << 10)
    assert model.training  # the caller's mode is restored
    # The same batches in RAM give the same bits; one dense batch the same to rounding.
    in_ram = layerwise_inference(model, dataset.graph, torch.from_numpy(
        np.asarray(dataset.features[:])), nodes=nodes, batch_size=256)
    assert torch.equal(got, in_ram)
    if kind != "gcn":  # GraphConv normalises by the block's out-degrees, as DGL does, so
        # its layer-wise outputs depend on the batch size; the others do not.
        torch.testing.assert_close(got, expected[nodes], rtol=1e-4, atol=2e-5)
    assert list(tmp_path.iterdir()) == []  # the spilled layers are gone
    assert source.stats.disk_bytes > 0
    source.close()


def test_write_outputs_is_atomic_and_never_replaces(dataset, tmp_path, monkeypatch) -> None:
    torch.manual_seed(2)
    model = build_model("sage", 24, 12, 5, num_layers=2, dropout=0.0)
    expected = _dense_reference(model, dataset)
    out = write_outputs(model, dataset.graph, disk_source(dataset), tmp_path / "emb",
                        batch_size=500, meta={"note": "test"})
    info = json.loads((out / "outputs.json").read_text())
    assert info["shape"] == [3000, 5] and info["note"] == "test"
    rows = np.fromfile(out / "outputs.bin", dtype=np.float32).reshape(3000, 5)
    torch.testing.assert_close(torch.from_numpy(rows), expected, rtol=1e-4, atol=2e-5)
    assert sorted(p.name for p in out.iterdir()) == ["outputs.bin", "outputs.json"]
    with pytest.raises(graphsys.DatasetExistsError, match="never overwrites"):
        write_outputs(model, dataset.graph, disk_source(dataset), out)
    # A failure in the last layer leaves neither the directory nor a partial one.
    real = model.layer_forward

    def failing(i, block, h):
        if i == 1:
            raise RuntimeError("boom")
        return real(i, block, h)

    monkeypatch.setattr(model, "layer_forward", failing)
    with pytest.raises(RuntimeError, match="boom"):
        write_outputs(model, dataset.graph, disk_source(dataset), tmp_path / "emb2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb"]


def test_infer_cli_writes_what_the_trained_model_predicts(dataset, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    assert main(["train", str(dataset.root), "--epochs", "2", "--hidden", "8", "--fanouts",
                 "4,4", "--batch-size", "128", "--eval-every", "0", "--storage", "direct",
                 "--out", str(run), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["infer", str(dataset.root), "--checkpoint", str(run), "--out",
                 str(tmp_path / "emb"), "--batch-size", "700", "--no-progress"]) == 0
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    model = build_model("sage", 24, 8, 5, num_layers=2, dropout=0.5)
    model.load_state_dict(state["model"])
    rows = np.fromfile(tmp_path / "emb" / "outputs.bin", np.float32).reshape(3000, 5)
    torch.testing.assert_close(torch.from_numpy(rows), _dense_reference(model, dataset),
                               rtol=1e-4, atol=2e-5)
    # Again to the same directory: refused with the fix, exit code 2.
    assert main(["infer", str(dataset.root), "--checkpoint", str(run), "--out",
                 str(tmp_path / "emb"), "--no-progress"]) == 2
    assert "choose another --out" in capsys.readouterr().err
    # A checkpoint of another dataset is refused.
    other = tmp_path / "other"
    generate_synthetic(other, SyntheticConfig(num_nodes=3000, num_edges=24_000, feat_dim=24,
                                              num_classes=5, train_frac=0.2, seed=4),
                       progress=False)
    assert main(["infer", str(other), "--checkpoint", str(run), "--out",
                 str(tmp_path / "emb3"), "--no-progress"]) == 2
    assert "dataset_content" in capsys.readouterr().err
    assert not (tmp_path / "emb3").exists()


def test_out_of_core_evaluation_equals_in_memory(dataset) -> None:
    from graphsys.train import TrainConfig, Trainer

    accs = {}
    for storage in ("memory", "direct"):
        config = TrainConfig(fanouts=(4, 4), hidden=8, batch_size=128, epochs=1,
                             eval_every=1, progress=False, storage=storage)
        trainer = Trainer(dataset, config)
        result = trainer.fit()
        accs[storage] = (result.history[-1].val_acc, result.history[-1].test_acc)
        assert bool(trainer._spill_options()) == (storage != "memory")
        assert not list(Path(dataset.root).glob(".graphsys-inference-*"))
    assert accs["memory"] == accs["direct"]
