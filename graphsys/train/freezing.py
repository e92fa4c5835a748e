"""Layer freezing: freeze GNN layers front to back and train the rest from a cache.

When layers ``1..k`` freeze (on a schedule, or when their weights stop moving), one
batched full-neighbour pass writes layer ``k``'s output for every node to a
:class:`~graphsys.storage.frozen.FrozenLayerCache`, compressed by the codec the policy
gives stage ``k`` (stronger as more layers freeze: ``codecs=("int8", "int4")``). From
then on the sampler draws ``L - k`` hops, the loader reads cached rows instead of raw
features, and the model runs layers ``k+1..L`` (:meth:`BlockModel.forward_from`).
Frozen parameters stop receiving gradients and leave the optimizer. Layers never
unfreeze.

Stage ``k > 1`` is computed from stage ``k - 1``'s decoded cache: layer ``k`` was
trained on those decoded rows, so that is the frozen model it reproduces (and it costs
one layer pass, not ``k``).

Augmentation carry-over. Training perturbs what each layer sees: feature dropout
on every hidden layer's input (the models' dropout), and neighbour sampling. A cache is
computed once, from eval-mode (full-neighbour, no dropout) outputs, so without care the
remaining layers would train on a fixed, unperturbed input and overfit it. Choices
(``augment``):

- ``"dropout"``: augmentation in embedding space. The feature dropout that
  training applied to layer ``k``'s output, the next layer's input, is applied to the
  decoded cached rows, fresh every step (:meth:`BlockModel.forward_from`); only the
  perturbations *inside* the frozen stack are gone.
- ``"noise"``: also carry those: at freeze time the frozen layers run as training ran
  them (sampled neighbours, train-mode dropout, the previous stage's noise) for a
  sample of nodes, several draws each; each channel's RMS deviation ``sigma_c`` from
  the cached output is measured, and training adds ``sigma_c * N(0, 1)`` to decoded
  rows (clamped below at the smallest cached value, 0 after ReLU), then the dropout.
- ``"none"`` (default): the cached rows as they are, no augmentation after the freeze.

``bench/freezing.py`` measures their effect, choosing on validation accuracy paired by
seed. ``none`` is the default: on its synthetic graph (5 seeds) it beat ``dropout`` by
0.64 and ``noise`` by 0.82 validation points, beyond noise; on Cora (10 seeds) ``noise``
was within noise of it and ``dropout`` 0.22 points above at the best validation epoch
(about one of 500 nodes) but within noise at the last; and it is the cheapest. The
frozen layers already saw the augmentation while they trained; the last layers, trained
briefly after the freeze, fit the cached rows best as they will see them at inference.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from graphsys._sizes import format_size
from graphsys.errors import TrainingConfigError
from graphsys.loader.gather import gather_rows
from graphsys.samplers.neighbor import NeighborSampler
from graphsys.storage.codecs import CODEC_NAMES, codec_for_stage
from graphsys.storage.frozen import FrozenLayerCache, write_frozen_cache
from graphsys.train.feature_setup import budget_of, train_loader
from graphsys.train.inference import layer_batches

Augment = Literal["dropout", "noise", "none"]
AUGMENTS: tuple[str, ...] = ("dropout", "noise", "none")


@dataclass(frozen=True)
class FreezeConfig:
    """When to freeze layers and how to cache them (``graphsys train --freeze-*``).

    Args:
        at: epochs at whose start the next layer freezes (``(5, 10)``: layer 1 at
            epoch 5, layers 1-2 at epoch 10); strictly increasing.
        auto: freeze the first unfrozen layer once its relative weight change per
            epoch, ``||W_e - W_{e-1}|| / ||W_{e-1}||``, stays below ``threshold`` for
            ``window`` epochs in a row.
        max_layers: at most this many layers freeze (default all but the last).
        codecs: codec of stage ``k`` is ``codecs[k-1]`` (the last repeats).
        lz4: store the encoded rows as LZ4-compressed zarr chunks (else a raw file).
        augment: how training's feature augmentation carries over to cached rows:
            ``"dropout"``, ``"noise"`` or ``"none"`` (see the module docstring).
        cache_dir: where stage caches go (default ``<out>/frozen``, or a temporary
            directory without ``--out``).
        augment_nodes, augment_draws: sample size of the noise calibration.
    """

    at: tuple[int, ...] = ()
    auto: bool = False
    threshold: float = 0.01
    window: int = 2
    max_layers: int | None = None
    codecs: tuple[str, ...] = ("int8", "int4")
    lz4: bool = True
    augment: Augment = "none"
    cache_dir: str | None = None
    augment_nodes: int = 2048
    augment_draws: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", tuple(int(e) for e in self.at))
        object.__setattr__(self, "codecs", tuple(str(c) for c in self.codecs))
        if self.at and self.auto:
            raise TrainingConfigError("pass --freeze-at or --freeze-auto, not both")
        steps = zip(self.at, self.at[1:], strict=False)
        if any(e < 0 for e in self.at) or any(b <= a for a, b in steps):
            raise TrainingConfigError(f"freeze_at={list(self.at)} must be increasing epochs "
                                      ">= 0, one per layer to freeze, e.g. 5,10")
        if self.threshold <= 0 or self.window < 1:
            raise TrainingConfigError(f"freeze threshold={self.threshold} must be > 0 and "
                                      f"window={self.window} >= 1")
        if not self.codecs or any(c not in CODEC_NAMES for c in self.codecs):
            raise TrainingConfigError(f"freeze_codecs={list(self.codecs)} is invalid; pass "
                                      f"codecs from {', '.join(CODEC_NAMES)}, e.g. int8,int4")
        if self.augment not in AUGMENTS:
            raise TrainingConfigError(f"freeze_augment={self.augment!r} is unknown; choose "
                                      f"one of {', '.join(AUGMENTS)}")
        if self.max_layers is not None and self.max_layers < 1:
            raise TrainingConfigError(f"freeze max_layers={self.max_layers} must be >= 1")
        if self.augment_nodes < 1 or self.augment_draws < 1:
            raise TrainingConfigError("freeze augment_nodes and augment_draws must be >= 1")

    @property
    def enabled(self) -> bool:
        return bool(self.at) or self.auto


def layer_parameters(model: Any, k: int) -> list[torch.nn.Parameter]:
    """Parameters of layers ``0..k-1``."""
    return [p for layer in model.layers[:k] for p in layer.parameters()]


def relative_changes(previous: Sequence[torch.Tensor], now: Sequence[torch.Tensor]
                     ) -> list[float]:
    """``||W_now - W_before|| / ||W_before||`` per layer (:func:`layer_snapshots`)."""
    return [float((b - a).norm() / a.norm().clamp(min=1e-12))
            for a, b in zip(previous, now, strict=True)]


def layer_snapshots(model: Any) -> list[torch.Tensor]:
    return [torch.cat([p.detach().reshape(-1).cpu().clone() for p in layer.parameters()])
            for layer in model.layers]


class FreezingController:
    """Decides how many front layers should be frozen at the start of each epoch.

    Example:
        >>> ctl = FreezingController(FreezeConfig(at=(5, 10)), num_layers=3)
        >>> [ctl.target(e) for e in (0, 5, 9, 10, 20)]
        [0, 1, 1, 2, 2]
    """

    def __init__(self, config: FreezeConfig, num_layers: int) -> None:
        if num_layers < 2:
            raise TrainingConfigError("freezing needs a model of at least 2 layers (the last "
                                      "layer always trains); add a fanout")
        self.config = config
        limit = num_layers - 1
        self.max_frozen = limit if config.max_layers is None else min(config.max_layers, limit)
        self.frozen = 0
        self._auto_target = 0
        self._previous: list[torch.Tensor] | None = None
        self._calm = [0] * num_layers
        self.changes: list[list[float]] = []  # per observed epoch, per layer

    def target(self, epoch: int) -> int:
        """Layers that should be frozen when ``epoch`` starts (never fewer than now)."""
        if self.config.at:
            due = sum(1 for e in self.config.at if e <= epoch)
        else:
            due = self._auto_target
        return max(self.frozen, min(due, self.max_frozen))

    def observe(self, model: Any) -> list[float]:
        """Record the weights after an epoch; in auto mode, arm the next freeze."""
        snapshot = layer_snapshots(model)
        changes: list[float] = []
        if self._previous is not None:
            changes = relative_changes(self._previous, snapshot)
            self.changes.append(changes)
            for i, change in enumerate(changes):
                self._calm[i] = self._calm[i] + 1 if change < self.config.threshold else 0
            nxt = self.frozen
            if (self.config.auto and nxt < self.max_frozen
                    and self._calm[nxt] >= self.config.window):
                self._auto_target = nxt + 1
        self._previous = snapshot
        return changes


def freeze_front(model: Any, optimizer: torch.optim.Optimizer, k: int) -> None:
    """Stop gradients to layers ``0..k-1`` and drop their parameters from ``optimizer``."""
    frozen = layer_parameters(model, k)
    ids = {id(p) for p in frozen}
    for p in frozen:
        p.requires_grad_(False)
        p.grad = None
        optimizer.state.pop(p, None)
    for group in optimizer.param_groups:
        group["params"] = [p for p in group["params"] if id(p) not in ids]


class EmbeddingNoise:
    """Per-channel Gaussian noise on decoded cache rows, clamped below at ``floor``."""

    def __init__(self, sigma: torch.Tensor, floor: float) -> None:
        self.sigma = sigma
        self.floor = floor

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        noisy = h + self.sigma.to(h.device) * torch.randn_like(h)
        return noisy.clamp_(min=self.floor)


@torch.no_grad()
def calibrate_noise(model: Any, graph: Any, source: Any, *, first: int, layer: int,
                    fanouts: Sequence[int], cached: Any, nodes: np.ndarray, draws: int,
                    transform: Callable[[torch.Tensor], torch.Tensor] | None,
                    noise: EmbeddingNoise | None, seed: int) -> EmbeddingNoise:
    """Noise matching how layer ``layer``'s training outputs deviate from ``cached`` ones.

    Layers ``first..layer`` run as training ran them: on neighbours sampled with
    ``fanouts[first:layer + 1]``, in train mode, from ``source`` (raw features with
    ``transform`` if ``first == 0``, else the previous stage's cache with its
    ``noise``), without layer ``layer``'s own final dropout (training still applies it).
    """
    was_training = model.training
    sampler = NeighborSampler(list(fanouts[first : layer + 1]), seed=seed)
    reference = gather_rows(cached, torch.from_numpy(nodes)).float()
    squared = torch.zeros(reference.shape[1])
    # Its own random stream: a resumed run calibrates exactly as the straight one did.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _accumulate(model, graph, source, sampler, nodes, draws, first, layer, transform,
                    noise, reference, squared)
    model.train(was_training)
    sigma = (squared / (draws * len(nodes))).sqrt()
    return EmbeddingNoise(sigma, float(reference.min()) if reference.numel() else 0.0)


def _accumulate(model: Any, graph: Any, source: Any, sampler: NeighborSampler,
                nodes: np.ndarray, draws: int, first: int, layer: int,
                transform: Callable[[torch.Tensor], torch.Tensor] | None,
                noise: EmbeddingNoise | None, reference: torch.Tensor,
                squared: torch.Tensor) -> None:
    try:
        for draw in range(draws):
            batch = sampler.sample(graph, nodes, key=draw)
            h = gather_rows(source, batch.input_nodes).float()
            model.train()
            if first == 0:
                h = transform(h) if transform is not None else h
            else:
                h = model.dropout(noise(h) if noise is not None else h)
            for i, block in enumerate(batch.blocks):
                index = first + i
                model.dropout.train(index != layer)  # the last one's dropout comes later
                h = model.layer_forward(index, block, h)
            squared += ((h - reference) ** 2).sum(0)
    finally:
        model.dropout.train(True)


@dataclass
class StageReport:
    """What one freezing stage did (logged, and kept in ``LayerFreezer.stages``)."""

    frozen_layers: int
    epoch: int
    codec: str
    path: str
    encoded_bytes: int
    disk_bytes: int
    fp32_bytes: int
    max_abs_error: float
    max_bound: float
    build_s: float
    noise_rms: float
    load_disk_bytes: int = 0  # read once when the cache was opened (into the host tier)


class LayerFreezer:
    """Runs freezing inside a :class:`~graphsys.train.trainer.Trainer`.

    The trainer calls :meth:`before_epoch` (which may freeze, swapping the trainer's
    loader and feature stores for the cache's), :meth:`forward` for each batch and
    :meth:`after_epoch`.
    """

    def __init__(self, config: FreezeConfig, num_layers: int,
                 out_dir: Path | None = None) -> None:
        self.config = config
        self.controller = FreezingController(config, num_layers)
        self._tmp: tempfile.TemporaryDirectory | None = None
        if config.cache_dir is not None:
            self.root = Path(config.cache_dir)
        elif out_dir is not None:
            self.root = Path(out_dir) / "frozen"
        else:
            self._tmp = tempfile.TemporaryDirectory(prefix="graphsys-frozen-")
            self.root = Path(self._tmp.name)
        self.cache: FrozenLayerCache | None = None
        self.noise: EmbeddingNoise | None = None
        self.stages: list[StageReport] = []

    @property
    def frozen(self) -> int:
        return self.controller.frozen

    def forward(self, model: Any, blocks: Sequence[Any], x: torch.Tensor) -> torch.Tensor:
        """Logits of a training batch: the whole model, or layers ``k+1..`` from the cache."""
        k = self.frozen
        if k == 0:
            return model(blocks, x)
        if self.noise is not None:
            x = self.noise(x)
        return model.forward_from(k, blocks, x, drop_input=self.config.augment != "none")

    def after_epoch(self, model: Any) -> list[float]:
        return self.controller.observe(model)

    def before_epoch(self, trainer: Any, epoch: int) -> None:
        """Freeze up to the controller's target for ``epoch``, one stage at a time."""
        while self.frozen < self.controller.target(epoch):
            self._freeze_next(trainer, epoch)

    def restore(self, trainer: Any, frozen: int) -> None:
        """Rebuild ``frozen`` stages from the trainer's (resumed) weights."""
        while self.frozen < frozen:
            self._freeze_next(trainer, -1)

    def _freeze_next(self, trainer: Any, epoch: int) -> None:
        c, model, config = self.config, trainer.model, trainer.config
        k = self.frozen + 1
        codec = codec_for_stage(c.codecs, k)
        first = 0 if self.cache is None else k - 1
        source = trainer.eval_features if self.cache is None else self.cache
        transform = trainer.transform if self.cache is None else None
        num_nodes = trainer.graph.num_nodes()
        dim = model.layer_out_feats(k - 1)
        start = time.perf_counter()
        was_training = model.training
        model.eval()
        try:
            info = write_frozen_cache(
                self.root / f"layer-{k}",
                layer_batches(model, k - 1, trainer.graph, source,
                              np.arange(num_nodes, dtype=np.int64),
                              batch_size=config.eval_batch_size, device=trainer.device,
                              progress=config.progress, transform=transform),
                num_rows=num_nodes, dim=dim, codec=codec, lz4=c.lz4, frozen_layers=k,
                overwrite=True, extra={"epoch": epoch, "model": config.model})
        finally:
            model.train(was_training)
        cache = FrozenLayerCache.open(self.root / f"layer-{k}", host_budget=budget_of(config))
        noise = None
        if c.augment == "noise":
            rng = np.random.default_rng([config.seed, k])
            nodes = np.sort(rng.choice(num_nodes, min(c.augment_nodes, num_nodes),
                                       replace=False))
            noise = calibrate_noise(model, trainer.graph, source, first=first, layer=k - 1,
                                    fanouts=config.fanouts, cached=cache, nodes=nodes,
                                    draws=c.augment_draws, transform=transform,
                                    noise=self.noise, seed=config.seed * 1009 + k)
        freeze_front(model, trainer.optimizer, k)
        build_s = time.perf_counter() - start
        self.cache, self.noise = cache, noise
        self.controller.frozen = k
        trainer.loader = train_loader(trainer.graph, trainer.train_idx, config,
                                      labels=trainer.labels, features=cache,
                                      device=trainer.device, fanouts=config.fanouts[k:])
        trainer.train_features = trainer.eval_features = cache
        trainer.transform = None  # inputs are cached embeddings from now on
        report = StageReport(k, epoch, codec.name, str(cache.path), cache.encoded_nbytes,
                             cache.disk_nbytes, num_nodes * dim * 4, info.max_abs_error,
                             info.max_bound, build_s,
                             float(noise.sigma.pow(2).mean().sqrt()) if noise else 0.0,
                             cache.load_disk_bytes)
        self.stages.append(report)
        trainer.log(f"froze layers 1..{k}{f' at epoch {epoch}' if epoch >= 0 else ''}: "
                    f"{codec.name} cache of layer {k}, {format_size(report.disk_bytes)} on "
                    f"disk ({report.fp32_bytes / max(report.disk_bytes, 1):.1f}x smaller "
                    f"than fp32), max error {info.max_abs_error:.3g} (bound "
                    f"{info.max_bound:.3g}), noise rms {report.noise_rms:.3g}, "
                    f"{build_s:.1f}s; sampling {len(config.fanouts) - k} hop(s)")
