"""Layer freezing: schedule and auto mode, exact run up to the freeze, the cache against a
dense forward of the frozen layers, fewer hops after, augmentation carry-over, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import graphsys
from graphsys.datasets.synthetic import SyntheticConfig, generate_synthetic
from graphsys.errors import TrainingConfigError
from graphsys.storage.codecs import Codec
from graphsys.storage.frozen import FrozenLayerCache
from graphsys.train import TrainConfig, Trainer
from graphsys.train.freezing import FreezeConfig, FreezingController


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> graphsys.Dataset:
    out = tmp_path_factory.mktemp("syn") / "syn"
    generate_synthetic(out, SyntheticConfig(num_nodes=1200, num_edges=12_000, feat_dim=16,
                                            num_classes=4, seed=3), progress=False)
    return graphsys.load_dataset(out)


@pytest.fixture(autouse=True)
def one_thread():
    # Two compute threads may split reductions differently from run to run while the
    # loader thread competes for the cores; bitwise comparisons need one.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _config(freeze: FreezeConfig | None = None, **overrides: object) -> TrainConfig:
    base = dict(fanouts=(4, 4, 4), hidden=16, batch_size=128, epochs=4, progress=False,
                seed=1, lr=0.01, freeze=freeze)
    base.update(overrides)
    return TrainConfig(**base)


def _dense_sage(layer: torch.nn.Module, graph, h: torch.Tensor) -> torch.Tensor:
    """ReLU(SAGE-mean) over the whole graph with a dense adjacency: the reference."""
    n = graph.num_nodes()
    indptr, src = graph.indptr.numpy(), graph.indices.numpy()
    dst = np.repeat(np.arange(n), np.diff(indptr))
    adj = torch.zeros(n, n, dtype=torch.float64)
    adj.index_put_((torch.from_numpy(dst), torch.from_numpy(src)),
                   torch.ones(len(src), dtype=torch.float64), accumulate=True)
    mean = adj @ h.double() / adj.sum(1, keepdim=True).clamp(min=1)
    w_self, w_neigh = layer.fc_self.weight.double(), layer.fc_neigh.weight.double()
    out = h.double() @ w_self.T + mean @ w_neigh.T + layer.bias.double()
    return torch.relu(out).float()


def test_schedule_reproduces_the_unfrozen_run_up_to_the_freeze(dataset) -> None:
    plain = Trainer(dataset, _config()).fit()
    frozen = Trainer(dataset, _config(FreezeConfig(at=(2, 3))))
    result = frozen.fit()
    losses = [m.loss for m in result.history]
    reference = [m.loss for m in plain.history]
    assert losses[:2] == reference[:2]  # bitwise, up to the freeze epoch
    assert losses[2] != reference[2]  # from there on the run is a different one
    # Frozen layers left the optimizer and get no gradients; the sampler dropped 2 hops.
    assert frozen.frozen_layers == 2
    optimized = {id(p) for g in frozen.optimizer.param_groups for p in g["params"]}
    for i, layer in enumerate(frozen.model.layers):
        for p in layer.parameters():
            assert (id(p) in optimized) == (i == 2) and p.requires_grad == (i == 2)
    assert frozen.loader.sampler.fanouts == [4]
    input_nodes, output_nodes, blocks = next(iter(frozen.loader))
    assert len(blocks) == 1 and blocks[0].srcdata["feat"].shape[1] == 16


def test_frozen_layers_keep_the_weights_they_had_at_the_freeze(dataset) -> None:
    two = Trainer(dataset, _config(epochs=2))
    two.fit()
    frozen = Trainer(dataset, _config(FreezeConfig(at=(2,)), epochs=4))
    frozen.fit()
    for a, b in zip(two.model.layers[0].parameters(), frozen.model.layers[0].parameters(),
                    strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(two.model.layers[1].fc_self.weight,
                           frozen.model.layers[1].fc_self.weight)


@pytest.mark.parametrize("lz4", [True, False])
def test_cache_holds_the_decoded_output_of_the_frozen_layers(dataset, tmp_path, lz4) -> None:
    config = _config(FreezeConfig(at=(1, 2), codecs=("int8", "int4"), lz4=lz4), epochs=3)
    trainer = Trainer(dataset, config, out_dir=tmp_path)
    trainer.fit()
    stages = trainer.freezer.stages
    assert [s.codec for s in stages] == ["int8", "int4"]
    assert [Path(s.path) for s in stages] == [tmp_path / "frozen" / "layer-1",
                                              tmp_path / "frozen" / "layer-2"]
    every = torch.arange(dataset.graph.num_nodes())
    x = torch.as_tensor(np.asarray(dataset.features)).float()
    layers = trainer.model.layers
    # Stage 1: layer 1 on the raw features; stage 2: layer 2 on stage 1's decoded rows.
    first = FrozenLayerCache.open(stages[0].path, host_budget=0).read(every)
    second = FrozenLayerCache.open(stages[1].path, host_budget=0).read(every)
    with torch.no_grad():
        for cache, reference, codec in ((first, _dense_sage(layers[0], dataset.graph, x),
                                         Codec("int8")),
                                        (second, _dense_sage(layers[1], dataset.graph, first),
                                         Codec("int4"))):
            error = (cache - reference).abs()
            assert bool((error <= codec.error_bound(reference) + 1e-4).all())
            assert float(error.max()) > 0  # lossy, and not trivially so
    assert stages[1].fp32_bytes / stages[1].encoded_bytes == pytest.approx(64 / 16)


def test_evaluation_reads_the_cache_and_matches_a_cached_forward(dataset) -> None:
    trainer = Trainer(dataset, _config(FreezeConfig(at=(1,), codecs=("fp32",)), epochs=2))
    trainer.fit()
    test_idx = trainer.test_idx
    acc = trainer.evaluate([test_idx])[0]
    # The remaining layers on full-neighbour blocks over the cached layer-1 output.
    batch = graphsys.NeighborSampler([-1, -1]).sample(dataset.graph, test_idx)
    trainer.model.eval()
    with torch.no_grad():
        h = trainer.freezer.cache.read(batch.input_nodes)
        logits = trainer.model.forward_from(1, batch.blocks, h)
    expected = float((logits.argmax(1) == trainer.labels[test_idx]).float().mean())
    assert acc == pytest.approx(expected)


def test_auto_mode_freezes_front_to_back_when_weights_settle() -> None:
    model = torch.nn.Module()
    model.layers = torch.nn.ModuleList(torch.nn.Linear(4, 4) for _ in range(3))
    ctl = FreezingController(FreezeConfig(auto=True, threshold=0.01, window=2), 3)

    def step(*scales: float) -> None:
        with torch.no_grad():
            for layer, scale in zip(model.layers, scales, strict=True):
                for p in layer.parameters():
                    p.mul_(1 + scale)
        ctl.observe(model)

    ctl.observe(model)
    step(0.001, 0.001, 0.5)  # layers 0 and 1 calm once
    assert ctl.target(1) == 0
    step(0.5, 0.001, 0.5)  # layer 0 moves again: its window restarts
    assert ctl.target(2) == 0
    step(0.001, 0.001, 0.001)
    step(0.001, 0.001, 0.001)  # layer 0 calm for 2 epochs
    assert ctl.target(4) == 1
    ctl.frozen = 1
    step(0.0, 0.0, 0.0)  # layer 1 has been calm all along: it is next
    assert ctl.target(5) == 2
    ctl.frozen = 2
    step(0.0, 0.0, 0.0)  # the last layer never freezes
    assert ctl.target(6) == 2
    assert ctl.changes[0] == pytest.approx([0.001, 0.001, 0.5], rel=1e-3)


def test_auto_mode_in_training(dataset) -> None:
    never = Trainer(dataset, _config(FreezeConfig(auto=True, threshold=1e-9)))
    never.fit()
    assert never.frozen_layers == 0
    eager = Trainer(dataset, _config(FreezeConfig(auto=True, threshold=10.0, window=1)))
    eager.fit()
    assert [s.epoch for s in eager.freezer.stages] == [2, 3]


def test_noise_calibration_measures_the_perturbation_inside_the_frozen_layers(dataset
                                                                              ) -> None:
    # No dropout and every neighbour: training ran the frozen layers exactly as the cache
    # did, so there is nothing to carry over.
    exact = Trainer(dataset, _config(FreezeConfig(at=(1, 2), codecs=("fp32",), augment="noise"),
                                     dropout=0.0,
                                     fanouts=(-1, -1, 4), epochs=3))
    exact.fit()
    assert exact.freezer.stages[1].noise_rms < 1e-5
    # Dropout between layers 1 and 2 and sampled neighbours perturb layer 2's output.
    noisy = Trainer(dataset, _config(FreezeConfig(at=(1, 2), codecs=("fp32",), augment="noise"),
                                     epochs=3))
    noisy.fit()
    noise = noisy.freezer.noise
    assert noisy.freezer.stages[1].noise_rms > 0.05
    # Applied noise has the calibrated per-channel spread (rows far from the floor).
    h = torch.full((20_000, len(noise.sigma)), 100.0)
    torch.testing.assert_close((noise(h) - h).std(0), noise.sigma, rtol=0.05, atol=1e-3)
    assert noise.floor == 0.0  # post-ReLU cache: never pushed below zero
    assert float(noise(torch.zeros(100, len(noise.sigma))).min()) == 0.0


@pytest.mark.parametrize("augment", ["none", "dropout", "noise"])
def test_what_the_first_trained_layer_sees_under_each_augmentation(dataset, augment) -> None:
    trainer = Trainer(dataset, _config(FreezeConfig(at=(0,), augment=augment,
                                                    codecs=("fp32",)), epochs=1, dropout=0.5))
    trainer.freezer.before_epoch(trainer, 0)
    _, _, blocks = next(iter(trainer.loader))
    x = blocks[0].srcdata["feat"]
    seen: list[torch.Tensor] = []
    hook = trainer.model.layers[1].register_forward_pre_hook(
        lambda _module, args: seen.append(args[1]))
    trainer.model.train()
    trainer.freezer.forward(trainer.model, blocks, x)
    hook.remove()
    h, live = seen[0], x > 0
    if augment == "none":  # augmentation dropped: the cached rows as they are
        assert torch.equal(h, x)
        return
    dropped = float(((h == 0) & live).sum() / live.sum())
    assert 0.45 < dropped < 0.55  # the model's feature dropout, p = 0.5, in embedding space
    kept = h != 0
    if augment == "dropout":
        torch.testing.assert_close(h[kept], 2 * x[kept])
    else:  # calibrated noise before the dropout: kept rows are 2 * (x + noise), noise > 0
        sigma = trainer.freezer.noise.sigma
        assert float(sigma.min()) >= 0 and float(sigma.max()) > 0
        deviation = (h / 2 - x)[kept & live]
        assert 0.3 < float(deviation.std() / sigma.pow(2).mean().sqrt()) < 3


def test_resume_after_freezing_continues_exactly(dataset, tmp_path) -> None:
    freeze = FreezeConfig(at=(1, 2))
    straight = Trainer(dataset, _config(freeze), out_dir=tmp_path / "a").fit()
    Trainer(dataset, _config(freeze, epochs=3), out_dir=tmp_path / "b").fit()
    resumed = Trainer(dataset, _config(freeze), out_dir=tmp_path / "b")
    assert resumed.resume() == 3 and resumed.frozen_layers == 2
    result = resumed.fit()
    assert [m.loss for m in result.history] == [m.loss for m in straight.history]
    plain = Trainer(dataset, _config(), out_dir=tmp_path / "b")
    with pytest.raises(TrainingConfigError, match="same --freeze"):
        plain.resume()


def test_bad_freeze_options() -> None:
    with pytest.raises(TrainingConfigError, match="increasing"):
        FreezeConfig(at=(5, 5))
    with pytest.raises(TrainingConfigError, match="not both"):
        FreezeConfig(at=(1,), auto=True)
    with pytest.raises(TrainingConfigError, match="freeze_codecs"):
        FreezeConfig(at=(1,), codecs=("int3",))
    with pytest.raises(TrainingConfigError, match="at least 2 layers"):
        FreezingController(FreezeConfig(at=(1,)), 1)


def test_cli_train_with_freeze_at_and_auto(dataset, tmp_path, capsys) -> None:
    from graphsys.cli import main

    common = ["train", str(dataset.root), "--fanouts", "4,4,4", "--hidden", "16",
              "--epochs", "3", "--batch-size", "256", "--no-progress"]
    assert main(common + ["--freeze-at", "1,2", "--freeze-codecs", "fp16,int4",
                          "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "froze layers 1..1 at epoch 1: fp16" in out
    assert "froze layers 1..2 at epoch 2: int4" in out and "sampling 1 hop(s)" in out
    assert "final test accuracy" in out
    assert (tmp_path / "run" / "frozen" / "layer-2" / "frozen.json").is_file()
    assert main(common + ["--freeze-auto", "--freeze-threshold", "10",
                          "--freeze-window", "1"]) == 0
    assert "froze layers 1..1 at epoch 2" in capsys.readouterr().out
    assert main(common + ["--freeze-at", "2,1"]) == 2
    assert "must be increasing" in capsys.readouterr().err


def test_cross_entropy_is_what_training_minimises_after_freezing(dataset) -> None:
    """The trainer's own reported loss of a frozen epoch equals cross-entropy computed by
    hand from the frozen cache's rows through the unfrozen layers (one batch an epoch)."""
    config = _config(FreezeConfig(at=(0,), augment="none"), epochs=1, dropout=0.0,
                     batch_size=len(dataset.train_idx))
    trainer = Trainer(dataset, config)
    trainer.freezer.before_epoch(trainer, 0)
    trainer.loader.set_epoch(0)
    _, out_nodes, blocks = next(iter(trainer.loader))
    with torch.no_grad():  # before the step: the weights the trainer's loss is taken at
        h = trainer.freezer.cache.read(blocks[0].src_nodes)
        expected = F.cross_entropy(trainer.model.forward_from(1, blocks, h),
                                   trainer.labels[out_nodes])
    loss, *_ = trainer.train_epoch(0)
    assert loss == pytest.approx(float(expected), rel=1e-6)


def test_freezing_with_the_parallel_trainer_is_refused(dataset) -> None:
    from graphsys.train.parallel import ParallelTrainer

    with pytest.raises(TrainingConfigError, match="freez"):
        ParallelTrainer(dataset, _config(FreezeConfig(at=(1,))))
