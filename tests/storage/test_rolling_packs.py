"""Epoch packs made while training runs: disk within its budget, any number of epochs,
rows and losses exactly those of training from RAM, and a killed packer recovered."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import graphsys
from graphsys.datasets.synthetic import SyntheticConfig, generate_synthetic
from graphsys.errors import DatasetError
from graphsys.loader.dataloader import DataLoader
from graphsys.samplers.neighbor import NeighborSampler
from graphsys.storage.host_cache import HostCacheStore
from graphsys.storage.open import disk_source
from graphsys.storage.rolling import PACK_SLACK, RollingPackStore, dir_disk_bytes
from graphsys.train import TrainConfig, Trainer
from graphsys.train.trainer import CHECKPOINT_NAME

NODES, DIM = 20_000, 16
FEATURE_BYTES = NODES * DIM * 4
BUDGET = FEATURE_BYTES // 4  # host RAM for feature rows: a quarter of the features


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> graphsys.Dataset:
    path = tmp_path_factory.mktemp("rolling") / "ds"
    generate_synthetic(path, SyntheticConfig(num_nodes=NODES, num_edges=120_000, feat_dim=DIM,
                                             num_classes=4, train_frac=0.1, seed=2),
                       progress=False)
    return graphsys.load_dataset(path)


def _config(**overrides: object) -> TrainConfig:
    base = dict(fanouts=(3, 3), hidden=16, batch_size=32, epochs=3, progress=False, seed=4,
                eval_every=0, host_cache=BUDGET)
    base.update(overrides)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def reference(raw) -> list[float]:
    """Losses of 3 epochs from RAM."""
    return [m.loss for m in Trainer(raw, _config(storage="memory")).fit().history]


@pytest.fixture(scope="module")
def epoch_pack_bytes(raw, tmp_path_factory) -> list[int]:
    """Disk each epoch's pack reserves, from a run with room for all of them."""
    trainer = Trainer(raw, _config(storage="packed",
                                   pack_dir=str(tmp_path_factory.mktemp("probe") / "p")))
    trainer.fit()
    store = trainer.train_features
    assert store.parts_per_epoch == {0: 1, 1: 1, 2: 1}  # the default budget holds two
    return [store.pack_bytes[(e, 0)] for e in range(3)]


class DiskWatch:
    """The most bytes ``root`` held on disk, polled every millisecond from a thread."""

    def __init__(self, root: Path) -> None:
        self.root, self.peak, self.samples = root, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.root.exists():
                self.peak = max(self.peak, dir_disk_bytes(self.root))
                self.samples += 1
            time.sleep(0.001)

    def __enter__(self) -> DiskWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _train_watched(raw, root: Path, **overrides) -> tuple[list[float], Trainer, DiskWatch]:
    trainer = Trainer(raw, _config(storage="packed", pack_dir=str(root), **overrides))
    with DiskWatch(root) as watch:
        history = trainer.fit().history
    return [m.loss for m in history], trainer, watch


def test_three_epochs_on_a_two_epoch_disk_budget(raw, reference, epoch_pack_bytes,
                                                 tmp_path) -> None:
    two = sorted(epoch_pack_bytes)[-1] + sorted(epoch_pack_bytes)[-2]
    assert two < sum(epoch_pack_bytes)  # the budget cannot hold all three
    root = tmp_path / "packs"
    losses, trainer, watch = _train_watched(raw, root, pack_disk=two)
    store = trainer.train_features
    assert losses == reference  # bit-identical to RAM
    assert store.packed_epochs == [0, 1, 2] and store.fallback_epochs == []
    assert watch.samples > 10 and 0 < watch.peak <= two
    assert store.peak_reserved <= two
    assert sum(store.parts_per_epoch.values()) >= 3
    assert not list(root.glob("*epoch-*"))  # a finished run leaves no pack behind


def test_a_budget_below_one_epoch_packs_epochs_in_parts(raw, reference, epoch_pack_bytes,
                                                        tmp_path) -> None:
    third = max(epoch_pack_bytes) // 3
    losses, trainer, watch = _train_watched(raw, tmp_path / "packs", pack_disk=third)
    store = trainer.train_features
    assert losses == reference and store.packed_epochs == [0, 1, 2]
    assert store.fallback_epochs == [] and min(store.parts_per_epoch.values()) >= 4
    assert watch.samples > 10 and watch.peak <= third


def test_a_part_too_large_for_the_budget_reads_through_the_tiers(raw, reference,
                                                                 tmp_path) -> None:
    lines: list[str] = []
    # Smaller than any pack (one segment and the fixed files): every part falls back.
    trainer = Trainer(raw, _config(storage="packed", pack_dir=str(tmp_path / "p"),
                                   pack_disk=PACK_SLACK), log=lines.append)
    assert [m.loss for m in trainer.fit().history] == reference
    assert trainer.train_features.fallback_epochs == [0, 1, 2]
    warnings = [ln for ln in lines if ln.startswith("warning: batches")]
    assert len(warnings) == 3 and "--pack-disk" in warnings[0]  # once an epoch
    assert trainer.train_features.stats.tiers["fallback"].rows > 0


def test_more_epochs_than_planned_and_a_longer_resumed_run_continue(raw, reference,
                                                                   tmp_path) -> None:
    out, root = tmp_path / "run", tmp_path / "packs"
    two = Trainer(raw, _config(storage="packed", pack_dir=str(root), epochs=2),
                  out_dir=out).fit()
    assert [m.loss for m in two.history] == reference[:2]
    trainer = Trainer(raw, _config(storage="packed", pack_dir=str(root), epochs=3),
                      out_dir=out)
    assert trainer.resume() == 2
    assert [m.loss for m in trainer.fit().history] == reference
    assert trainer.train_features.packed_epochs == [2]


def test_the_store_serves_epochs_past_its_plan(raw, tmp_path) -> None:
    g = raw.graph
    seeds = torch.as_tensor(np.asarray(raw.train_idx[:96]))
    sampler = NeighborSampler([3, 3], seed=1)
    loader = DataLoader(g, seeds, sampler, batch_size=32, shuffle=True, seed=1)
    source = disk_source(raw)
    cache = HostCacheStore(source, torch.arange(0, NODES, 7), budget=BUDGET)
    store = RollingPackStore(loader, source, tmp_path / "r", host_cache=cache,
                             segment_bytes=64 << 10, disk_budget=FEATURE_BYTES, epochs=2,
                             log=lambda line: None)
    loader.features = store
    truth = torch.from_numpy(np.asarray(raw.features[:]))
    for epoch in range(4):  # two past the plan
        for batch in loader:
            x = batch.blocks[0].srcdata["feat"]
            assert torch.equal(x, truth[batch.input_nodes])
        assert store.epoch == epoch
    assert store.packed_epochs == [0, 1, 2, 3]
    assert store.parts_per_epoch == {0: 1, 1: 1, 2: 1, 3: 1}
    store.finish()
    assert [p.name for p in (tmp_path / "r").iterdir()] == ["rolling.json"]
    # The same root with other options is refused, naming the fix.
    other = DataLoader(g, seeds, NeighborSampler([2, 2], seed=1), batch_size=32)
    with pytest.raises(DatasetError, match="other training options"):
        RollingPackStore(other, source, tmp_path / "r", host_cache=cache,
                         segment_bytes=64 << 10, disk_budget=FEATURE_BYTES, epochs=2)


_KILLED = textwrap.dedent("""
    import os, sys
    import graphsys
    from graphsys.storage import packing
    from graphsys.train import TrainConfig, Trainer

    real = packing._copy_rows
    def dying(source, plan, index, rows_path, progress_path, done, *args):
        # The packer of epoch 1 writes part of its rows, then the process is killed.
        if "epoch-000001" in str(rows_path):
            real(source, plan, index, rows_path, progress_path, done, *args)
            os._exit(9)
        return real(source, plan, index, rows_path, progress_path, done, *args)
    packing._copy_rows = dying
    config = TrainConfig(**{k: tuple(v) if k == "fanouts" else v
                            for k, v in __import__("json").loads(sys.argv[2]).items()})
    Trainer(graphsys.load_dataset(sys.argv[1]), config, out_dir=sys.argv[3]).fit()
""")


def test_a_killed_packer_leaves_no_half_pack_and_the_run_recovers(raw, reference,
                                                                  tmp_path) -> None:
    root, out = tmp_path / "packs", tmp_path / "run"
    options = dict(fanouts=[3, 3], hidden=16, batch_size=32, epochs=3, progress=False,
                   seed=4, eval_every=0, host_cache=BUDGET, storage="packed",
                   pack_dir=str(root))
    proc = subprocess.run([sys.executable, "-c", _KILLED, str(raw.root), json.dumps(options),
                           str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 9, proc.stderr[-2000:]
    assert not list(root.glob("epoch-000001.*"))  # never under a pack's name
    assert list(root.glob(".epoch-000001.*.packing"))
    resumed = (out / CHECKPOINT_NAME).is_file()  # killed after epoch 0 was saved
    trainer = Trainer(raw, _config(storage="packed", pack_dir=str(root)),
                      out_dir=out if resumed else tmp_path / "again")
    start = trainer.resume() if resumed else 0
    losses = [m.loss for m in trainer.fit().history]
    assert losses == reference, start
    assert not list(root.glob("*epoch-*"))


def test_packs_around_another_host_cache_are_not_reused(raw, tmp_path) -> None:
    g = raw.graph
    seeds = torch.as_tensor(np.asarray(raw.train_idx[:64]))
    loader = DataLoader(g, seeds, NeighborSampler([3, 3], seed=1), batch_size=32, seed=1)
    source = disk_source(raw)
    stores = []
    for step in (7, 5):  # a resumed run with another --host-cache: other hot rows
        cache = HostCacheStore(source, torch.arange(0, NODES, step), budget=BUDGET)
        store = RollingPackStore(loader, source, tmp_path / "r", host_cache=cache,
                                 segment_bytes=64 << 10, disk_budget=FEATURE_BYTES, epochs=1,
                                 log=lambda line: None)
        loader.features = store
        truth = torch.from_numpy(np.asarray(raw.features[:]))
        for batch in loader:
            assert torch.equal(batch.blocks[0].srcdata["feat"], truth[batch.input_nodes])
        loader.set_epoch(0)
        store.close()  # a killed run: its packs stay on disk
        stores.append(store)
    assert stores[0].layout != stores[1].layout


def test_segments_grow_to_the_largest_batch_and_the_host_cache_gives_way(raw, reference,
                                                                         tmp_path) -> None:
    from graphsys.train.feature_setup import split_budget

    mb = 1 << 20
    assert split_budget(1024 * mb) == (768 * mb, 128 * mb)  # 1/8 of the budget each
    cache, segment = split_budget(200 * mb, 91 * mb)  # a batch larger than 1/8
    assert 91 * mb <= segment <= 100 * mb and cache == 200 * mb - 2 * segment
    assert split_budget(200 * mb, 150 * mb)[1] == 100 * mb  # never past half the budget
    # A budget whose eighth is smaller than a batch (batches of 32 seeds, fanouts 3,3,
    # read up to 26 KB) still packs, and trains exactly as from RAM.
    trainer = Trainer(raw, _config(storage="packed", host_cache=120_000,
                                   pack_dir=str(tmp_path / "p")))
    assert trainer.train_features.segment_bytes > 120_000 // 8
    assert [m.loss for m in trainer.fit().history] == reference
