"""A run is never overwritten, never resumed with other options, and stops on NaN."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import graphsys
from conftest import damaged_copy, synthetic_dir


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    return synthetic_dir(tmp_path_factory, "safe", num_nodes=400, num_edges=3000, feat_dim=8,
                         num_classes=3, seed=2)


def _train(root, *extra):
    result = subprocess.run([sys.executable, "-m", "graphsys", "train", str(root), "--epochs",
                             "1", "--eval-every", "0", "--fanouts", "3,3", "--no-progress",
                             *map(str, extra)], capture_output=True, text=True, timeout=300)
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    return result.returncode, errors


def test_an_existing_run_is_never_overwritten(dataset_dir, tmp_path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    # What a run killed while writing its checkpoint leaves (pid 2**22 + 1 is not alive).
    stale = out / f".checkpoint.pt.partial-{2**22 + 1}-deadbeef"
    stale.write_bytes(b"half a checkpoint")
    assert _train(dataset_dir, "--out", out)[0] == 0
    assert not stale.exists()
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    rc, errors = _train(dataset_dir, "--out", out)
    assert rc == 2 and len(errors) == 1 and "already holds a run" in errors[0]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    rc, errors = _train(dataset_dir, "--out", out, "--lr", "0.01", "--resume", "--epochs", 2)
    assert rc == 2 and "lr=0.005" in errors[0] and "lr=0.01" in errors[0]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    rc, _ = _train(dataset_dir, "--out", out, "--resume", "--epochs", 2)
    assert rc == 0
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1]


def test_nan_features_stop_the_run_with_one_line(dataset_dir, tmp_path) -> None:
    root = tmp_path / "nan"
    shutil.copytree(dataset_dir, root)
    dataset = graphsys.load_dataset(root)
    entry = dataset.manifest.arrays["features"]
    features = np.memmap(root / entry.path, dtype=entry.dtype, mode="r+", shape=entry.shape)
    features[dataset.train_idx[:5]] = np.nan  # the first batch is sure to hold one
    features.flush()
    del features
    out = tmp_path / "run"
    rc, errors = _train(root, "--out", out)
    assert rc == 2 and len(errors) == 1, errors
    assert "loss is nan" in errors[0] and "graphsys verify" in errors[0]
    assert not (out / "checkpoint.pt").exists()  # no all-NaN checkpoint


@pytest.mark.parametrize("flag,value,named", [
    ("--lr", "nan", "lr=nan"), ("--lr", "inf", "lr=inf"), ("--lr", "0", "lr=0"),
    ("--weight-decay", "-1", "weight_decay=-1"), ("--seed", "-1", "seed=-1"),
    ("--device", "bogus", "device='bogus'"), ("--checkpoint-every", "5", "--checkpoint-every"),
])
def test_bad_options_give_one_line_and_exit_2(dataset_dir, flag, value, named) -> None:
    rc, errors = _train(dataset_dir, flag, value)
    assert rc == 2 and len(errors) == 1 and named in errors[0], errors


@pytest.mark.parametrize("key,position,value,named", [
    ("labels", 7, 69, "labels hold 69"), ("labels", 3, -4, "labels hold -4"),
    ("train_idx", 0, 10**6, "train_idx holds node 1000000"),
    ("val_idx", 1, -2, "val_idx holds node -2"),
])
def test_corrupt_labels_and_splits_are_named(dataset_dir, tmp_path, key, position, value,
                                             named) -> None:
    """Values out of range that their checksums vouch for (a writer's bug; plain damage
    is caught by the checksum at first read): training must not end in a torch
    traceback."""
    root = damaged_copy(dataset_dir, tmp_path / "bad", key, position, value, resign=True)
    rc, errors = _train(root)
    assert rc == 2 and len(errors) == 1 and named in errors[0], errors


_SMALL_DISK = ("import shutil, sys; real = shutil.disk_usage; "
               "shutil.disk_usage = lambda p: real(p)._replace(free=1 << 20); "
               "from graphsys.cli import main; sys.exit(main(sys.argv[1:]))")


@pytest.mark.parametrize("command", ["pack", "train"])
def test_a_disk_too_small_for_the_pack_is_one_line(dataset_dir, tmp_path, command) -> None:
    pack = tmp_path / "pack"
    args = [command, str(dataset_dir), "--epochs", "1", "--fanouts", "3,3", "--no-progress",
            "--pack", str(pack), "--host-cache", "1MB"]
    if command == "train":
        args += ["--storage", "packed", "--eval-every", "0", "--out", str(tmp_path / "run")]
    result = subprocess.run([sys.executable, "-c", _SMALL_DISK, *args], capture_output=True,
                            text=True, timeout=300)
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    if command == "train":
        # Packing as training goes: the default --pack-disk is what the disk has free, too
        # little for any pack, so the epoch is read through the tiers, with one warning.
        assert result.returncode == 0, result.stderr
        warnings = [ln for ln in result.stdout.splitlines() if ln.startswith("warning")]
        assert len(warnings) == 1 and "--pack-disk" in warnings[0], result.stdout
        assert "free" in result.stdout
        assert [p.name for p in pack.iterdir()] == ["rolling.json"]
        return
    assert result.returncode == 2, result.stderr
    assert len(errors) == 1 and "spare); free space, pack on another disk with --pack DIR" \
        in errors[0], errors
    assert not pack.exists() and not (tmp_path / ".pack.packing").exists()


@pytest.mark.parametrize("ids,twice", [
    ([0, 3, 3, 7], True), ([7, 2, 9, 2], True), ([7, 2, 9, 0], False), ([1, 2, 5], False),
])
def test_a_split_listing_a_node_twice_is_refused(ids, twice) -> None:
    from graphsys.errors import DatasetError
    from graphsys.train.trainer import _check_node_data

    class Data:
        num_classes, root = 3, "data/x"

    labels = torch.zeros(10, dtype=torch.int64)
    split = {"train_idx": np.array(ids, dtype=np.int64)}
    assert len(set(ids)) != len(ids) if twice else len(set(ids)) == len(ids)  # the reference
    if twice:
        with pytest.raises(DatasetError, match="train_idx lists a node twice"):
            _check_node_data(Data(), 10, labels, split)
    else:
        _check_node_data(Data(), 10, labels, split)
