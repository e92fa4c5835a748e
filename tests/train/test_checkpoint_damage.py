"""Checkpoints that load under ``weights_only`` but are damaged, or belong to another
dataset of the same name, are refused with one error naming the file."""

from __future__ import annotations

import copy
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import graphsys
from graphsys.datasets.synthetic import SyntheticConfig, generate_synthetic
from graphsys.errors import CheckpointError
from graphsys.train import TrainConfig, Trainer


def _dataset(path: Path, seed: int) -> graphsys.Dataset:
    generate_synthetic(path, SyntheticConfig(num_nodes=400, num_edges=3000, feat_dim=8,
                                             num_classes=3, seed=seed),
                       progress=False, name="same-name")
    return graphsys.load_dataset(path)


def _config(**overrides) -> TrainConfig:
    return TrainConfig(**{**dict(fanouts=(3, 3), hidden=16, batch_size=64, epochs=2,
                                 eval_every=0, progress=False), **overrides})


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    dataset = _dataset(root / "ds", seed=2)
    Trainer(dataset, _config(epochs=1), out_dir=root / "base").fit()
    return dataset, root / "base"


def _first(mapping):
    return next(iter(mapping))


def _opt_states(state):
    return list(state["optimizer"]["state"].values())


# name -> (damage applied to a good checkpoint, what the error must say)
DAMAGE = {
    "identity a list": (lambda s: s.__setitem__("identity", [1]), "'identity' is list"),
    "no model": (lambda s: s.pop("model"), "'model' is missing"),
    "model weight a string": (lambda s: s["model"].__setitem__(_first(s["model"]), "x"),
                              "is a str, not a tensor"),
    "model weight of another shape": (
        lambda s: s["model"].__setitem__(_first(s["model"]), torch.zeros(2, 2)),
        "size mismatch"),
    "model with an extra weight": (lambda s: s["model"].__setitem__("bogus", torch.zeros(1)),
                                   "Unexpected key"),
    "NaN weights": (lambda s: s["model"][_first(s["model"])].fill_(math.nan),
                    "holds NaN or infinite"),
    "empty optimizer": (lambda s: s.__setitem__("optimizer", {}), "param_groups"),
    "optimizer state of another shape": (
        lambda s: [st.__setitem__("exp_avg", torch.zeros(3)) for st in _opt_states(s)],
        "optimizer state 'exp_avg' has shape (3,)"),
    "NaN optimizer state": (lambda s: [st["exp_avg"].fill_(math.nan) for st in _opt_states(s)],
                            "optimizer state 'exp_avg' holds NaN"),
    "learning rate a string": (
        lambda s: s["optimizer"]["param_groups"][0].__setitem__("lr", "x"), "optimizer lr="),
    "next epoch a string": (lambda s: s.__setitem__("next_epoch", "x"), "'next_epoch' is str"),
    "next epoch past the history": (lambda s: s.__setitem__("next_epoch", 10**30),
                                    "history holds 1 epochs"),
    "history of other fields": (lambda s: s.__setitem__("history", [{"x": 1}]),
                                "unexpected keyword argument 'x'"),
}


@pytest.mark.parametrize("case", DAMAGE, ids=list(DAMAGE))
def test_damaged_checkpoint_is_refused(run, tmp_path, case) -> None:
    dataset, base = run
    damage, message = DAMAGE[case]
    state = copy.deepcopy(torch.load(base / "checkpoint.pt", weights_only=True))
    damage(state)
    out = tmp_path / "run"
    shutil.copytree(base, out)
    torch.save(state, out / "checkpoint.pt")
    trainer = Trainer(dataset, _config(), out_dir=out)
    with pytest.raises(CheckpointError, match="checkpoint.pt") as info:
        trainer.resume()
    assert message in str(info.value)
    # The intact checkpoint still resumes.
    shutil.copy(base / "checkpoint.pt", out / "checkpoint.pt")
    assert Trainer(dataset, _config(), out_dir=out).resume() == 1


def test_another_dataset_of_the_same_name_is_refused(run, tmp_path) -> None:
    dataset, base = run
    other = _dataset(tmp_path / "other", seed=9)
    assert other.name == dataset.name == "same-name"
    out = tmp_path / "run"
    shutil.copytree(base, out)
    with pytest.raises(CheckpointError, match="dataset_content="):
        Trainer(other, _config(), out_dir=out).resume()


def test_damaged_checkpoint_is_one_line_from_the_cli(run, tmp_path) -> None:
    dataset, base = run
    out = tmp_path / "run"
    shutil.copytree(base, out)
    state = torch.load(base / "checkpoint.pt", weights_only=True)
    for st in state["optimizer"]["state"].values():
        st["exp_avg"] = torch.zeros(3)
    torch.save(state, out / "checkpoint.pt")
    before = (out / "checkpoint.pt").read_bytes()
    result = subprocess.run([sys.executable, "-m", "graphsys", "train", str(dataset.root),
                             "--epochs", "2", "--eval-every", "0", "--fanouts", "3,3",
                             "--hidden", "16", "--batch-size", "64", "--no-progress",
                             "--out", str(out), "--resume"],
                            capture_output=True, text=True, timeout=300)
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(errors) == 1 and "exp_avg" in errors[0], errors
    assert (out / "checkpoint.pt").read_bytes() == before  # nothing overwritten


def _legacy(state: dict) -> dict:
    """``state`` as graphsys wrote it before DGL's key names: each SAGE layer's bias as
    ``<layer>.bias`` after its weights, and the optimizer indexed in that order."""
    names = list(state["model"])
    order, model = [], {}
    for name in names:
        if name.endswith(".fc_self.bias"):
            continue
        model[name] = state["model"][name]
        order.append(name)
        if name.endswith(".fc_neigh.weight"):
            prefix = name[: -len("fc_neigh.weight")]
            if prefix + "fc_self.bias" in state["model"]:
                model[prefix + "bias"] = state["model"][prefix + "fc_self.bias"]
                order.append(prefix + "fc_self.bias")
    assert len(order) == len(names) and order != names  # the layout really differs
    old_index = {name: i for i, name in enumerate(order)}
    opt = state["optimizer"]
    legacy = copy.deepcopy(state)
    legacy["model"] = model
    legacy["optimizer"] = {**opt, "state": {old_index[names[i]]: v
                                            for i, v in opt["state"].items()}}
    return legacy


def test_a_checkpoint_from_before_dgls_key_names_resumes_exactly(run, tmp_path) -> None:
    dataset, base = run
    state = torch.load(base / "checkpoint.pt", weights_only=True)
    for name, make in (("current", lambda s: s), ("legacy", _legacy)):
        out = tmp_path / name
        shutil.copytree(base, out)
        damaged = make(copy.deepcopy(state))
        torch.save(damaged, out / "checkpoint.pt")
        trainer = Trainer(dataset, _config(), out_dir=out)
        assert trainer.resume() == 1
        trainer.fit()
        torch.save(trainer.model.state_dict(), tmp_path / f"{name}.pt")
    current = torch.load(tmp_path / "current.pt", weights_only=True)
    legacy = torch.load(tmp_path / "legacy.pt", weights_only=True)
    assert current.keys() == legacy.keys()
    assert all(torch.equal(current[k], legacy[k]) for k in current)
