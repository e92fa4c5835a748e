"""Pipelined and data-parallel training: the :class:`Trainer` under ``torchrun``.

:class:`ParallelTrainer` is a :class:`Trainer` whose epochs run through the stage
pipeline (:mod:`graphsys.loader.pipeline`) and, in a ``torchrun`` job, through
``DistributedDataParallel``:

- each rank trains on its slice of every global batch
  (:class:`~graphsys.loader.distributed.DistributedDataLoader`); its loss is the sum
  over its seeds divided by the global batch's size, times the world size, so DDP's
  gradient average equals the gradient of one process on the global batch;
- ``shared_cache`` bytes per rank hold a disjoint part of the hot rows
  (:class:`~graphsys.storage.shared_cache.SharedDeviceCache`), the rows a rank lacks
  come from the rank that holds them;
- rank 0 writes the checkpoint (model, optimizer, every rank's RNG state and partial
  sums, sampler seeds, epoch and batch position) at each epoch's end and every
  ``checkpoint_every`` batches; a restarted job resumes from it;
- a failed or timed-out collective ends the rank with :class:`RankFailure`.

Outside ``torchrun`` it is a world of one: the pipeline and ``--profile`` work the same.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from graphsys._progress import progress_bar
from graphsys._sizes import format_size
from graphsys.errors import CheckpointError, TrainingConfigError
from graphsys.loader.distributed import DistributedDataLoader
from graphsys.loader.pipeline import PipelinedLoader
from graphsys.loader.trace import StageTrace
from graphsys.storage.host_cache import hotness_order
from graphsys.storage.memory import TensorStore
from graphsys.storage.shared_cache import SharedDeviceCache
from graphsys.train.checkpoint import (
    check_optimizer_state,
    load_checkpoint,
    restoring,
    save_checkpoint,
)
from graphsys.train.distributed import (
    DistContext,
    is_collective_failure,
    rank_failure,
)
from graphsys.train.trainer import EpochMetrics, TrainConfig, Trainer, _epoch_seed

PipelineMode = Literal["pipelined", "serial"]


@dataclass(frozen=True)
class ParallelOptions:
    """Options of the pipeline and of a distributed run (``graphsys train`` flags).

    Args:
        pipeline: ``pipelined`` (stages in threads) or ``serial`` (one after another).
        depth: batches queued between two stages.
        profile: where to write the Chrome trace of the stages (rank ``r > 0`` writes
            ``<stem>.rank<r><suffix>``); None: no trace.
        shared_cache: bytes of hot feature rows each rank caches (0: no shared cache).
        checkpoint_every: also checkpoint every N batches (0: at epoch ends only).
    """

    pipeline: PipelineMode = "pipelined"
    depth: int = 2
    profile: str | None = None
    shared_cache: int = 0
    checkpoint_every: int = 0

    def __post_init__(self) -> None:
        if self.pipeline not in ("pipelined", "serial"):
            raise TrainingConfigError(f"pipeline={self.pipeline!r} is unknown; choose "
                                      "pipelined or serial")
        if self.depth < 1:
            raise TrainingConfigError(f"depth={self.depth} must be >= 1")
        if self.shared_cache < 0:
            raise TrainingConfigError(f"shared_cache={self.shared_cache} must be >= 0 bytes")
        if self.checkpoint_every < 0:
            raise TrainingConfigError(f"checkpoint_every={self.checkpoint_every} must be >= 0 "
                                      "(0: at epoch ends only)")


def _distributed_config(dataset: Any, config: TrainConfig, ctx: DistContext) -> TrainConfig:
    """``config`` for one rank: its own device, and a storage every rank can share."""
    config = replace(config, device=str(ctx.device))
    if not ctx.distributed:
        return config
    if config.storage == "packed" or config.pack_dir:
        raise TrainingConfigError("--storage packed packs one process's batches; a torchrun "
                                  "job splits them over ranks: pass --storage direct (or "
                                  "memory) instead")
    if config.storage == "auto" and hasattr(dataset, "manifest"):
        from graphsys.storage.open import feature_bytes
        from graphsys.train.feature_setup import budget_of

        fits = feature_bytes(dataset) <= budget_of(config)
        config = replace(config, storage="memory" if fits else "direct")
    return config


def profile_path(path: str | os.PathLike, rank: int) -> Path:
    """Rank 0 writes ``path``; rank ``r`` writes ``<stem>.rank<r><suffix>`` beside it."""
    path = Path(path)
    return path if rank == 0 else path.with_name(f"{path.stem}.rank{rank}{path.suffix}")


class ParallelTrainer(Trainer):
    """A :class:`Trainer` that pipelines its stages and runs data-parallel under torchrun.

    Args:
        dataset, config, out_dir, log: as for :class:`Trainer`; only rank 0 writes to
            ``out_dir`` and logs.
        ctx: this rank's place in the job (:func:`graphsys.distributed.init`); a
            world of one on ``config.device`` if None.
        options: pipeline, profile, shared cache and checkpoint options.
        on_batch: called with ``(epoch, batch)`` after each optimizer step.

    Example:
        >>> ctx = graphsys.distributed.init()                          # doctest: +SKIP
        >>> ParallelTrainer(dataset, TrainConfig(), ctx=ctx, out_dir="run").fit()
    """

    def __init__(self, dataset: Any, config: TrainConfig, *, ctx: DistContext | None = None,
                 options: ParallelOptions | None = None,
                 out_dir: str | os.PathLike | None = None,
                 log: Callable[[str], None] | None = None,
                 on_batch: Callable[[int, int], None] | None = None) -> None:
        if config.freeze is not None and config.freeze.enabled:
            # The freezer swaps the loader and features between epochs, which this
            # trainer's rank-sliced loader and shared cache do not follow yet.
            raise TrainingConfigError("layer freezing (--freeze-at / --freeze-auto) does not "
                                      "run with --pipeline, --profile or torchrun yet; drop "
                                      "one of them")
        ctx = ctx or DistContext(device=torch.device(config.device))
        self.ctx = ctx
        self.options = options or ParallelOptions()
        self.on_batch = on_batch
        self.run_dir = Path(out_dir) if out_dir is not None else None
        config = _distributed_config(dataset, config, ctx)
        super().__init__(dataset, config, out_dir=out_dir if ctx.is_main else None,
                         log=log if ctx.is_main else None)
        if ctx.distributed:
            self.loader = DistributedDataLoader.from_loader(
                self.loader, rank=ctx.rank, world_size=ctx.world_size)
            if self.options.shared_cache:
                self.train_features = self._shared_cache(self.train_features)
                self.loader.features = self.train_features
            self.ddp: torch.nn.Module = torch.nn.parallel.DistributedDataParallel(self.model)
        else:
            self.ddp = self.model
        self.trace = StageTrace(process=ctx.rank) if self.options.profile else None
        self._resume_batch = 0
        self._resume_rng: torch.Tensor | None = None
        self._resume_partial: list[float] | None = None

    def _shared_cache(self, store: Any) -> SharedDeviceCache:
        if not hasattr(store, "read"):
            store = TensorStore(torch.as_tensor(np.asarray(store)))
        rows = self.options.shared_cache // max(store.row_bytes, 1)
        # Rows sampled often are those with many out-edges; every rank computes the
        # same order from the same graph, so the owners agree without a message.
        hot = hotness_order(self.graph.out_degrees())[: rows * self.ctx.world_size]
        # A group of its own: the loader thread's exchanges never interleave with DDP's.
        group = dist.new_group(timeout=timedelta(seconds=self.ctx.timeout_s))
        cache = SharedDeviceCache(store, hot, group=group, device=self.ctx.device)
        self.log(f"shared cache: {format_size(cache.nbytes)} of hot rows on each of "
                 f"{self.ctx.world_size} ranks ({len(hot):,} rows in all)")
        return cache

    # -- checkpoints -------------------------------------------------------------------
    def _gather(self, value: Any) -> list[Any]:
        if not self.ctx.distributed:
            return [value]
        every: list[Any] = [None] * self.ctx.world_size
        dist.all_gather_object(every, value)
        return every

    def save(self, next_epoch: int, next_batch: int = 0,
             partial: list[float] | None = None) -> None:
        """Checkpoint on rank 0 (a collective: every rank calls it)."""
        if self.run_dir is None:
            return
        rng = self._gather(torch.get_rng_state())
        sums = self._gather(list(partial) if partial is not None else [0.0, 0.0, 0.0, 0.0])
        if not self.ctx.is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_checkpoint(self.run_dir / "checkpoint.pt", {
            "identity": self._identity(),
            "config": {k: (list(v) if isinstance(v, tuple) else v)
                       for k, v in asdict(self.config).items()},
            "next_epoch": next_epoch, "next_batch": next_batch,
            "world_size": self.ctx.world_size,
            "sampler": {"loader_seed": self.loader.seed, "sampler_seed": self.loader.sampler.seed},
            "rng": rng, "partial": sums,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "history": [asdict(m) for m in self.history],
        })

    @property
    def checkpoint_path(self) -> Path | None:
        return self.run_dir / "checkpoint.pt" if self.run_dir is not None else None

    def resume(self) -> int:
        """Load the run directory's checkpoint (every rank); return the epoch it continues."""
        if self.run_dir is None:
            raise TrainingConfigError("resume needs an output directory (--out)")
        state = load_checkpoint(self.run_dir / "checkpoint.pt", identity=self._identity())
        with restoring(self.checkpoint_path):
            next_batch = int(state.get("next_batch", 0))
            saved_world = int(state.get("world_size", 1))
            if next_batch and saved_world != self.ctx.world_size:
                raise CheckpointError(f"{self.checkpoint_path} stopped mid-epoch with "
                                      f"{saved_world} ranks; resume it with {saved_world} "
                                      "ranks")
            self.model.load_state_dict(state["model"])
            fresh = [dict(g) for g in self.optimizer.param_groups]
            self.optimizer.load_state_dict(state["optimizer"])
            check_optimizer_state(self.optimizer, fresh, self.checkpoint_path)
            self.start_epoch = int(state["next_epoch"])
            self.history = [EpochMetrics(**m) for m in state["history"]]
            sampler = state.get("sampler", {})
            self.loader.seed = int(sampler.get("loader_seed", self.loader.seed))
            self.loader.sampler.seed = int(sampler.get("sampler_seed",
                                                       self.loader.sampler.seed))
            self._resume_batch = next_batch
            if next_batch:
                self._resume_rng = state["rng"][self.ctx.rank]
                self._resume_partial = [float(v) for v in state["partial"][self.ctx.rank]]
        return self.start_epoch

    def resume_if_restarted(self) -> bool:
        """Resume when torchrun restarted this job and a checkpoint exists."""
        path = self.checkpoint_path
        if self.ctx.restart_count and path is not None and path.is_file():
            epoch = self.resume()
            self.log(f"restart {self.ctx.restart_count}: resuming at epoch {epoch}, batch "
                     f"{self._resume_batch}")
            return True
        return False

    # -- training ----------------------------------------------------------------------
    def _global_sizes(self, epoch: int) -> list[int]:
        if isinstance(self.loader, DistributedDataLoader):
            return self.loader.global_sizes(epoch)
        return [len(b) for b in self.loader.batch_seeds(epoch)]

    def train_epoch(self, epoch: int) -> tuple[float, float, float, int, int]:
        try:
            return self._train_epoch(epoch)
        except Exception as exc:
            if self.ctx.distributed and is_collective_failure(exc):
                raise rank_failure(self.ctx, exc, str(self.checkpoint_path)
                                   if self.checkpoint_path and self.checkpoint_path.is_file()
                                   else None) from exc
            raise

    def _train_epoch(self, epoch: int) -> tuple[float, float, float, int, int]:
        first = self._resume_batch if epoch == self.start_epoch else 0
        self._resume_batch = 0
        torch.manual_seed(_epoch_seed(self.config.seed, epoch))
        sums = [0.0, 0.0, 0.0, 0.0]  # loss sum, correct, seeds, edges (this rank's)
        if first:
            if self._resume_rng is not None:
                torch.set_rng_state(self._resume_rng)
            sums = list(self._resume_partial or sums)
        self.model.train()
        self.loader.set_epoch(epoch)
        stats = getattr(self.train_features, "stats", None)
        if stats is not None:
            stats.reset()
        sizes = self._global_sizes(epoch)
        batches = PipelinedLoader(self.loader, mode=self.options.pipeline,
                                  depth=self.options.depth, trace=self.trace,
                                  start_batch=first)
        scale = float(self.ctx.world_size)
        every = self.options.checkpoint_every
        start = time.perf_counter()
        with progress_bar(total=len(batches), desc=f"epoch {epoch}", unit="batch",
                          enable=self.config.progress and self.ctx.is_main) as bar:
            for index, (_input_nodes, output_nodes, blocks) in enumerate(batches, start=first):
                x = blocks[0].srcdata["feat"].float()
                if self.transform is not None:
                    x = self.transform(x)
                y = blocks[-1].dstdata["label"]
                logits = self.ddp(blocks, x)
                loss_sum = F.cross_entropy(logits, y, reduction="sum")
                self.optimizer.zero_grad(set_to_none=True)
                (loss_sum * (scale / sizes[index])).backward()
                self.optimizer.step()
                sums[0] += float(loss_sum.detach())
                sums[1] += int((logits.argmax(1) == y).sum())
                sums[2] += len(output_nodes)
                sums[3] += sum(b.num_edges() for b in blocks)
                bar.update(1)
                if self.on_batch is not None:
                    self.on_batch(epoch, index)
                if every and (index + 1) % every == 0 and index + 1 < len(sizes):
                    self.save(epoch, next_batch=index + 1, partial=sums)
        seconds = time.perf_counter() - start
        if self.ctx.distributed:
            total = torch.tensor(sums, dtype=torch.float64)
            dist.all_reduce(total)
            sums = total.tolist()
        seen = max(int(sums[2]), 1)
        return sums[0] / seen, sums[1] / seen, seconds, int(sums[2]), int(sums[3])

    def evaluate(self, ids_list: list[np.ndarray]) -> list[float]:
        """Rank 0 evaluates; the others receive its accuracies (they wait meanwhile)."""
        if not self.ctx.distributed:
            return super().evaluate(ids_list)
        accs = [super().evaluate(ids_list) if self.ctx.is_main else None]
        dist.broadcast_object_list(accs, src=0)
        return accs[0]

    def fit(self) -> Any:
        try:
            result = super().fit()
        except Exception as exc:
            if self.ctx.distributed and is_collective_failure(exc):
                raise rank_failure(self.ctx, exc, None) from exc
            raise
        if self.trace is not None and self.options.profile:
            path = profile_path(self.options.profile, self.ctx.rank)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.trace.save(path)
            self.log(f"stage profile (rank {self.ctx.rank}), all epochs; trace in {path} "
                     "(open in ui.perfetto.dev or chrome://tracing):\n" + self.trace.summary())
        return result

    def close(self) -> None:
        """Leave the process group (every rank, once training is over)."""
        if self.ctx.distributed:
            from graphsys.train.distributed import shutdown

            shutdown()


def wants_parallel(args: Any) -> bool:
    """Whether ``graphsys train``'s arguments ask for this trainer (not the plain one)."""
    from graphsys.train.distributed import launched

    return launched() or args.pipeline is not None or args.profile is not None


def parallel_trainer(dataset: Any, config: TrainConfig, args: Any) -> ParallelTrainer:
    """The trainer of ``graphsys train`` under torchrun or with ``--pipeline/--profile``.

    Joins the torchrun job if there is one; after a ``torchrun --max-restarts``
    restart it resumes from the run's checkpoint (``--resume`` does the same by hand).
    """
    from graphsys.train.distributed import init

    ctx = init(device=config.device, timeout_s=args.dist_timeout)
    options = ParallelOptions(pipeline=args.pipeline or "pipelined",
                              profile=None if args.profile is None else str(args.profile),
                              shared_cache=args.shared_cache,
                              checkpoint_every=args.checkpoint_every)
    trainer = ParallelTrainer(dataset, config, ctx=ctx, options=options, out_dir=args.out,
                              log=lambda line: print(line, flush=True))
    if not args.resume:
        trainer.resume_if_restarted()
    return trainer
