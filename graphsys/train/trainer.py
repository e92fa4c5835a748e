"""Mini-batch node-classification training with evaluation, metrics and resume."""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from graphsys._progress import progress_bar
from graphsys._sizes import format_size
from graphsys._atomic import atomic_write_bytes, remove_stale_partials
from graphsys.errors import (
    CheckpointError,
    DatasetError,
    RunExistsError,
    TrainingConfigError,
    TrainingDivergedError,
)
from graphsys.train.checkpoint import (
    check_optimizer_state,
    load_checkpoint,
    reorder_legacy_optimizer_state,
    restoring,
    save_checkpoint,
)
from graphsys.loader.device_path import GRAPH_MEMORY
from graphsys.train.feature_setup import (
    SAMPLER_KINDS,
    STORAGE_KINDS,
    apply_plan,
    budget_of,
    direct_read_buffer,
    open_training_features,
    train_loader,
)
from graphsys.train.freezing import FreezeConfig, LayerFreezer
from graphsys.train.inference import layerwise_inference

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.jsonl"
MODELS = ("sage", "gcn", "gat")
FEATURE_NORMS = ("none", "row")


def row_normalize(x: torch.Tensor) -> torch.Tensor:
    """Scale each row to sum to 1 (as the GCN paper does for bag-of-words features)."""
    return x / x.sum(1, keepdim=True).clamp(min=1e-12)


@dataclass
class TrainConfig:
    """Options of a training run; the CLI's ``graphsys train`` flags map one to one.

    The number of GNN layers is ``len(fanouts)``.
    """

    model: str = "sage"
    fanouts: tuple[int, ...] = (10, 10)
    hidden: int = 128
    batch_size: int = 1024
    epochs: int = 20
    lr: float = 0.005
    weight_decay: float = 5e-4
    dropout: float = 0.5
    num_heads: int = 4
    seed: int = 0
    eval_every: int = 1
    eval_batch_size: int = 4096
    feature_norm: str = "none"
    storage: str = "auto"
    host_cache: int | None = None  # bytes; None = half the available memory
    pack_dir: str | None = None  # default: <dataset>/packs/<fingerprint>
    pack_disk: int | None = None  # bytes the epoch packs may hold; None: 2x the features
    plan: str | None = None  # a graphsys plan JSON: device cache + victim buffer
    device: str = "cpu"
    #: ``auto``: the device path (GPU sampling, UVA gathers) on a CUDA device when the
    #: kernels can run there, else CPU sampling; ``gpu`` forces the device path (on a
    #: CPU device it runs the kernels' CPU twins); ``cpu`` the plain path.
    sampler: str = "auto"
    uva: bool | None = None  # gather host rows by UVA (default: with a pinned graph)
    graph_memory: str = "pinned"  # the device path's graph structure: pinned or device
    progress: bool = True
    freeze: FreezeConfig | None = None  # layer freezing with compressed caches (issue 8)

    def __post_init__(self) -> None:
        self.fanouts = tuple(int(f) for f in self.fanouts)
        if self.model not in MODELS:
            raise TrainingConfigError(f"model={self.model!r} is unknown; choose one of "
                                      f"{', '.join(MODELS)}")
        if not self.fanouts or any(f < 1 and f != -1 for f in self.fanouts):
            raise TrainingConfigError(f"fanouts={list(self.fanouts)} is invalid: pass one "
                                      "positive fanout (or -1 for all) per layer, e.g. 10,10")
        for name in ("hidden", "batch_size", "epochs", "num_heads", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise TrainingConfigError(f"{name}={getattr(self, name)} must be >= 1")
        if self.eval_every < 0:
            raise TrainingConfigError(f"eval_every={self.eval_every} must be >= 0 (0: never)")
        if not 0 <= self.dropout < 1:
            raise TrainingConfigError(f"dropout={self.dropout} must be in [0, 1)")
        if self.feature_norm not in FEATURE_NORMS:
            raise TrainingConfigError(f"feature_norm={self.feature_norm!r} is unknown; choose "
                                      f"one of {', '.join(FEATURE_NORMS)}")
        for name in ("lr", "weight_decay"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0 or (name == "lr" and value == 0):
                raise TrainingConfigError(f"{name}={value} must be a finite number "
                                          f"{'> 0' if name == 'lr' else '>= 0'}, e.g. "
                                          f"--{name.replace('_', '-')} "
                                          f"{0.005 if name == 'lr' else 0.0005}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) \
                or not 0 <= self.seed < 2**63:
            raise TrainingConfigError(f"seed={self.seed!r} must be an integer in [0, 2**63)")
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError, ValueError):
            raise TrainingConfigError(f"device={self.device!r} is unknown; pass cpu, cuda or "
                                      "cuda:N") from None
        if self.storage not in STORAGE_KINDS:
            raise TrainingConfigError(f"storage={self.storage!r} is unknown; choose one of "
                                      f"{', '.join(STORAGE_KINDS)}")
        if self.sampler not in SAMPLER_KINDS:
            raise TrainingConfigError(f"sampler={self.sampler!r} is unknown; choose one of "
                                      f"{', '.join(SAMPLER_KINDS)}")
        if self.graph_memory not in GRAPH_MEMORY:
            raise TrainingConfigError(f"graph_memory={self.graph_memory!r} is unknown; choose "
                                      f"one of {', '.join(GRAPH_MEMORY)}")
        if self.host_cache is not None and self.host_cache < 0:
            raise TrainingConfigError(f"host_cache={self.host_cache} must be >= 0 bytes")
        if self.pack_disk is not None and self.pack_disk <= 0:
            raise TrainingConfigError(f"pack_disk={self.pack_disk} must be > 0 bytes, e.g. "
                                      "--pack-disk 20G")

    @property
    def num_layers(self) -> int:
        return len(self.fanouts)


@dataclass
class EpochMetrics:
    """One line of ``metrics.jsonl``."""

    epoch: int
    loss: float
    train_acc: float
    val_acc: float | None
    test_acc: float | None
    epoch_s: float
    eval_s: float
    seeds_per_s: float
    edges_per_s: float
    feature_s: float = 0.0  # spent in feature reads (in the loader's thread)
    disk_bytes: int = 0  # read from disk for features this epoch
    device_hit_rate: float | None = None  # rows on device when asked (with --plan)


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns: the test accuracy at the best validation epoch."""

    best_epoch: int
    best_val_acc: float
    test_acc: float
    history: list[EpochMetrics] = field(default_factory=list)


def _labels_of(dataset: Any) -> torch.Tensor:
    labels = getattr(dataset, "labels", None)
    if labels is None or getattr(dataset, "num_classes", 0) < 2:
        raise TrainingConfigError(f"dataset {getattr(dataset, 'name', '?')!r} has no labels "
                                  "(num_classes < 2); training needs a labelled dataset")
    return torch.as_tensor(labels).long()


def _check_node_data(dataset: Any, num_nodes: int, labels: torch.Tensor,
                     splits: dict[str, np.ndarray]) -> None:
    """Labels and splits checked once, in O(N), before any kernel or loss indexes them
    (a corrupt label otherwise ends in torch's 'Target 69 is out of bounds')."""
    where = getattr(dataset, "root", getattr(dataset, "name", "the dataset"))
    fix = "the dataset is damaged; run graphsys verify and re-create it"
    num_classes = int(dataset.num_classes)
    if labels.dim() != 1 or labels.numel() != num_nodes:
        raise DatasetError(f"{where}: labels has shape {tuple(labels.shape)}, expected "
                           f"({num_nodes},); {fix}")
    if labels.numel():
        low, high = int(labels.min()), int(labels.max())
        if low < -1 or high >= num_classes:
            raise DatasetError(f"{where}: labels hold {low if low < -1 else high}, outside "
                               f"[-1, {num_classes}) for num_classes={num_classes}; {fix}")
    for name, ids in splits.items():
        if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= num_nodes):
            bad = int(ids.min()) if int(ids.min()) < 0 else int(ids.max())
            raise DatasetError(f"{where}: {name} holds node {bad}, outside [0, {num_nodes}); "
                               f"{fix}")
        # Splits are written sorted: strictly increasing ids are distinct in one pass;
        # otherwise a count per node (np.unique's sort took 12 s on 6M ids).
        if len(ids) > 1 and not bool(np.all(ids[1:] > ids[:-1])) \
                and int(np.bincount(ids, minlength=num_nodes).max()) > 1:
            raise DatasetError(f"{where}: {name} lists a node twice; {fix}")


def dataset_content_id(dataset: Any) -> str | None:
    """A digest of a dataset directory's array checksums (None for in-memory data): two
    datasets of the same name but other contents differ here, and --resume says so."""
    manifest = getattr(dataset, "manifest", None)
    if manifest is None:
        return None
    listed = "".join(f"{key}:{entry.sha256};" for key, entry in sorted(manifest.arrays.items()))
    return hashlib.sha256(listed.encode()).hexdigest()[:16]


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919 + 1) % (2**63)


class Trainer:
    """Train a GraphSAGE, GCN or GAT model on a graphsys dataset, mini-batch.

    Args:
        dataset: a :class:`graphsys.Dataset` (or anything with ``graph``, ``features``,
            ``labels``, ``train_idx``, ``val_idx``, ``test_idx``, ``num_classes``).
        config: the run's options.
        out_dir: where ``metrics.jsonl`` and ``checkpoint.pt`` go (nothing is written
            if None).
        log: called with one formatted line per epoch (``print`` in the CLI).

    Every epoch starts from a seed derived from ``(config.seed, epoch)`` for dropout
    and for the loader's shuffle and sampling, so a run resumed from the checkpoint of
    epoch ``e`` continues exactly as if it had not stopped (on CPU).

    Example:
        >>> trainer = Trainer(graphsys.load_dataset("data/cora"), TrainConfig(epochs=50))
        >>> trainer.fit().test_acc                                     # doctest: +SKIP
    """

    def __init__(self, dataset: Any, config: TrainConfig, *, out_dir: str | os.PathLike | None
                 = None, log: Callable[[str], None] | None = None) -> None:
        from graphsys.nn import build_model

        self.dataset = dataset
        self.config = config
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.log = log or (lambda line: None)
        self.device = torch.device(config.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise TrainingConfigError("device='cuda' but CUDA is not available; pass "
                                      "--device cpu")
        self.graph = dataset.graph
        self.features = dataset.features
        self.labels = _labels_of(dataset)
        self.train_idx = np.asarray(dataset.train_idx, dtype=np.int64)
        self.val_idx = np.asarray(dataset.val_idx, dtype=np.int64)
        self.test_idx = np.asarray(dataset.test_idx, dtype=np.int64)
        if len(self.train_idx) == 0:
            raise TrainingConfigError(f"dataset {getattr(dataset, 'name', '?')!r} has no "
                                      "training nodes (empty train_idx)")
        _check_node_data(dataset, self.graph.num_nodes(), self.labels,
                         {"train_idx": self.train_idx, "val_idx": self.val_idx,
                          "test_idx": self.test_idx})
        unlabelled = int((self.labels[self.train_idx] < 0).sum())
        if unlabelled:
            raise TrainingConfigError(f"{unlabelled} training nodes have no label (-1); "
                                      "fix the dataset's train split")
        self.transform = row_normalize if config.feature_norm == "row" else None
        self.in_feats = int(self.features.shape[1])
        self.loader = train_loader(self.graph, self.train_idx, config, labels=self.labels,
                                   device=self.device)
        self.train_features, self.eval_features, self.storage = open_training_features(
            dataset, config, self.loader, log=self.log)
        # The store opened for this run (a plan or the freezer may put a cache in front).
        self._opened_features = self.train_features
        if config.plan:
            self.train_features = apply_plan(config.plan, self.train_features, self.loader,
                                             device=self.device, log=self.log)
        self.loader.features = self.train_features
        self.num_classes = int(dataset.num_classes)
        torch.manual_seed(config.seed)
        self.model = build_model(config.model, self.in_feats, config.hidden, self.num_classes,
                                 num_layers=config.num_layers, dropout=config.dropout,
                                 num_heads=config.num_heads).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr,
                                          weight_decay=config.weight_decay)
        self.start_epoch = 0
        self.history: list[EpochMetrics] = []
        self.freezer = LayerFreezer(config.freeze, config.num_layers, self.out_dir) \
            if config.freeze is not None and config.freeze.enabled else None

    # -- checkpoints -------------------------------------------------------------------
    def _identity(self) -> dict[str, Any]:
        c = self.config
        return {"dataset": getattr(self.dataset, "name", None),
                "dataset_content": dataset_content_id(self.dataset), "model": c.model,
                "num_layers": c.num_layers, "hidden": c.hidden, "num_heads": c.num_heads,
                "in_feats": self.in_feats, "num_classes": self.num_classes}

    @property
    def checkpoint_path(self) -> Path | None:
        return self.out_dir / CHECKPOINT_NAME if self.out_dir is not None else None

    def save(self, next_epoch: int) -> None:
        if self.checkpoint_path is None:
            return
        save_checkpoint(self.checkpoint_path, {
            "identity": self._identity(),
            "config": {k: (list(v) if isinstance(v, tuple) else v)
                       for k, v in asdict(self.config).items()},
            "next_epoch": next_epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "history": [asdict(m) for m in self.history],
            "frozen_layers": self.frozen_layers,
        })

    #: Options a resumed run must share with the run it continues (the others, such as
    #: epochs, evaluation, storage and device, may change between the two).
    RESUME_KEEPS = ("model", "fanouts", "hidden", "batch_size", "lr", "weight_decay",
                    "dropout", "num_heads", "seed", "feature_norm")

    def _check_resumed_config(self, saved: dict[str, Any]) -> None:
        now = asdict(self.config)
        for key in self.RESUME_KEEPS:
            want, got = saved.get(key), now[key]
            if isinstance(got, tuple):
                got = list(got)
            if key in saved and want != got:
                raise CheckpointError(
                    f"{self.checkpoint_path} was trained with {key}={want}, this run asks "
                    f"for {key}={got}; resume with the same options, or start a new run in "
                    "another --out")

    def resume(self) -> int:
        """Load ``out_dir/checkpoint.pt``; return the epoch training continues from."""
        if self.checkpoint_path is None:
            raise TrainingConfigError("resume needs an output directory (--out)")
        state = load_checkpoint(self.checkpoint_path, identity=self._identity())
        self._check_resumed_config(state["config"])
        with restoring(self.checkpoint_path):
            self.model.load_state_dict(state["model"])
            if state.get("frozen_layers", 0):
                if self.freezer is None:
                    raise TrainingConfigError(f"{self.checkpoint_path} has frozen layers; "
                                              "resume with the same --freeze-* options")
                self.freezer.restore(self, int(state["frozen_layers"]))
            fresh = [dict(g) for g in self.optimizer.param_groups]
            self.optimizer.load_state_dict(reorder_legacy_optimizer_state(
                state["model"], state["optimizer"], self.model))
            check_optimizer_state(self.optimizer, fresh, self.checkpoint_path)
            self.start_epoch = int(state["next_epoch"])
            self.history = [EpochMetrics(**m) for m in state["history"]]
        return self.start_epoch

    # -- training ----------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> tuple[float, float, float, int, int]:
        """One pass over the training nodes; ``(loss, acc, seconds, seeds, edges)``."""
        torch.manual_seed(_epoch_seed(self.config.seed, epoch))
        self.model.train()
        self.loader.set_epoch(epoch)
        stats = getattr(self.train_features, "stats", None)
        if stats is not None:
            stats.reset()
        total_loss = correct = seen = edges = 0
        start = time.perf_counter()
        with progress_bar(total=len(self.loader), desc=f"epoch {epoch}", unit="batch",
                          enable=self.config.progress) as bar:
            for _input_nodes, output_nodes, blocks in self.loader:
                x = blocks[0].srcdata["feat"].float()
                if self.transform is not None:
                    x = self.transform(x)
                y = blocks[-1].dstdata["label"]
                logits = self.model(blocks, x) if self.freezer is None \
                    else self.freezer.forward(self.model, blocks, x)
                loss = F.cross_entropy(logits, y)
                value = float(loss.detach())
                if not math.isfinite(value):  # before the step: the weights stay finite
                    raise TrainingDivergedError(self._diverged(epoch, bar.n, value))
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                n = len(output_nodes)
                total_loss += value * n
                correct += int((logits.argmax(1) == y).sum())
                seen += n
                edges += sum(b.num_edges() for b in blocks)
                bar.update(1)
                bar.set_postfix(loss=f"{value:.3f}",
                                seeds_per_s=f"{seen / (time.perf_counter() - start):.0f}")
        return total_loss / seen, correct / seen, time.perf_counter() - start, seen, edges

    def _diverged(self, epoch: int, batch: int, value: float) -> str:
        kept = (f"the last good checkpoint {self.checkpoint_path} (epoch "
                f"{len(self.history) - 1}) is kept" if self.checkpoint_path is not None
                and self.checkpoint_path.is_file() else "no checkpoint was written")
        return (f"the loss is {value} at epoch {epoch}, batch {batch}: the features or labels "
                f"hold NaN/inf (run graphsys verify) or --lr {self.config.lr} is too high; "
                f"{kept}")

    def _spill_options(self) -> dict[str, Any]:
        """Out-of-core evaluation unless features are in RAM: hidden layers go to disk
        beside the dataset (or the run) and are read back by ``O_DIRECT``."""
        if self.storage == "memory":
            return {}
        root = getattr(self.dataset, "root", None) or self.out_dir
        if root is None:
            return {}
        return {"spill_dir": Path(root),
                "read_buffer": direct_read_buffer(budget_of(self.config))}

    def evaluate(self, ids_list: list[np.ndarray]) -> list[float]:
        """Accuracy on each id set, from one layer-wise full-neighbour inference."""
        nonempty = [ids for ids in ids_list if len(ids)]
        if not nonempty:
            return [float("nan")] * len(ids_list)
        nodes = np.concatenate(nonempty)
        logits = layerwise_inference(self.model, self.graph, self.eval_features, nodes=nodes,
                                     batch_size=self.config.eval_batch_size,
                                     device=self.device, progress=self.config.progress,
                                     transform=self.transform,
                                     first_layer=self.frozen_layers, **self._spill_options())
        pred = logits.argmax(1)
        accs, offset = [], 0
        for ids in ids_list:
            if not len(ids):
                accs.append(float("nan"))
                continue
            part = pred[offset : offset + len(ids)]
            accs.append(float((part == self.labels[ids]).float().mean()))
            offset += len(ids)
        return accs

    def fit(self) -> TrainResult:
        """Train for ``config.epochs`` epochs (from ``start_epoch``); return the result."""
        c = self.config
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            for name in (CHECKPOINT_NAME, METRICS_NAME):  # left by a run killed mid-write
                remove_stale_partials(self.out_dir / name)
            if self.start_epoch == 0:
                self._refuse_to_overwrite()
            # The checkpoint's history is the truth: a crash between saving it and
            # appending a metrics line must not leave the file short or doubled.
            self._write_metrics()
        for epoch in range(self.start_epoch, c.epochs):
            if self.freezer is not None:  # may swap train_features for a frozen cache
                self.freezer.before_epoch(self, epoch)
            counters = getattr(self.train_features, "counters", None)
            before = (counters.hits + counters.staged_hits, counters.requests) \
                if counters is not None else None
            loss, train_acc, epoch_s, seeds, edges = self.train_epoch(epoch)
            if self.freezer is not None:
                self.freezer.after_epoch(self.model)
            hit_rate = None
            if before is not None:
                asked = counters.requests - before[1]
                hit_rate = (counters.hits + counters.staged_hits - before[0]) / max(asked, 1)
            stats = getattr(self.train_features, "stats", None)
            feature_s = sum(t.seconds for t in stats.tiers.values()) if stats else 0.0
            disk_bytes = stats.disk_bytes if stats else 0
            val_acc = test_acc = None
            eval_s = 0.0
            if c.eval_every and ((epoch + 1) % c.eval_every == 0 or epoch == c.epochs - 1):
                t0 = time.perf_counter()
                val_acc, test_acc = self.evaluate([self.val_idx, self.test_idx])
                eval_s = time.perf_counter() - t0
            metrics = EpochMetrics(epoch, loss, train_acc, val_acc, test_acc, epoch_s, eval_s,
                                   seeds / epoch_s, edges / epoch_s, feature_s, disk_bytes,
                                   hit_rate)
            self.history.append(metrics)
            self.log(format_epoch(metrics))
            self.save(epoch + 1)  # first the checkpoint, then the line that reports it
            if self.out_dir is not None:
                with open(self.out_dir / METRICS_NAME, "a") as handle:
                    handle.write(json.dumps(asdict(metrics)) + "\n")
        finish = getattr(self._opened_features, "finish", None)
        if callable(finish):  # packs made as training went: none is needed once done
            finish()
        return self.result()

    def _refuse_to_overwrite(self) -> None:
        """A fresh run never replaces the run another one left in ``out_dir``."""
        held = [n for n in (CHECKPOINT_NAME, METRICS_NAME) if (self.out_dir / n).is_file()]
        if held:
            raise RunExistsError(f"{self.out_dir} already holds a run ({', '.join(held)}); "
                                 "pass --resume to continue it, or another --out")

    def _write_metrics(self) -> None:
        lines = "".join(json.dumps(asdict(m)) + "\n" for m in self.history)
        atomic_write_bytes(self.out_dir / METRICS_NAME, lines.encode())

    @property
    def frozen_layers(self) -> int:
        """Front layers frozen so far (their outputs come from a frozen-layer cache)."""
        return self.freezer.frozen if self.freezer is not None else 0

    def result(self) -> TrainResult:
        scored = [m for m in self.history if m.val_acc is not None]
        if not scored:
            return TrainResult(-1, float("nan"), float("nan"), list(self.history))
        # The first epoch with the best validation accuracy (model selection on val).
        best = max(scored, key=lambda m: (m.val_acc, -m.epoch))
        return TrainResult(best.epoch, best.val_acc, best.test_acc, list(self.history))


def format_epoch(m: EpochMetrics) -> str:
    """One human-readable line per epoch."""
    evals = ""
    if m.val_acc is not None:
        evals = f" | val {m.val_acc:.4f} | test {m.test_acc:.4f} | eval {m.eval_s:.1f}s"
    disk = f", disk {format_size(m.disk_bytes)}" if m.disk_bytes else ""
    if m.device_hit_rate is not None:
        disk += f", on device {m.device_hit_rate:.1%}"
    return (f"epoch {m.epoch:3d} | loss {m.loss:.4f} | train {m.train_acc:.4f}{evals} | "
            f"{m.epoch_s:.2f}s ({m.seeds_per_s:,.0f} seeds/s, {m.edges_per_s:,.0f} edges/s; "
            f"features {m.feature_s:.2f}s{disk})")
