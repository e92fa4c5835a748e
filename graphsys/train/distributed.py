"""Joining a ``torchrun`` job: process group, device, and fail-fast collectives.

``torchrun`` (or any launcher that sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``) does the rendezvous, on one node or many;
:func:`init` only joins the group it describes, with NCCL when the rank has a GPU and
gloo otherwise. Every collective of the group times out after ``timeout_s``, so a rank
whose peer died or hung fails with :class:`RankFailure` (one line naming the rank, the
cause and how to resume) instead of waiting forever.

Example (a user script, launched with ``torchrun --nproc_per_node=4 train.py``)::

    ctx = graphsys.distributed.init()
    trainer = ParallelTrainer(dataset, config, ctx=ctx, out_dir="runs/a")
    trainer.fit()
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from graphsys.errors import GraphsysError, TrainingConfigError

#: Default seconds a collective may wait for the other ranks before the job fails.
DEFAULT_TIMEOUT_S = 600.0
_LAUNCH_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class RankFailure(GraphsysError):
    """A collective failed or timed out: another rank died, hung or lost its link."""


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the job (a world of one outside ``torchrun``)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None  # None: no process group (a single process)
    device: torch.device = torch.device("cpu")
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def restart_count(self) -> int:
        """How many times ``torchrun --max-restarts`` has restarted this job's workers."""
        return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


def launched() -> bool:
    """Whether this process was started by torchrun (or a launcher with its variables)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def _device_for(device: str | torch.device | None, local_rank: int) -> torch.device:
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise TrainingConfigError("device='cuda' but CUDA is not available; pass "
                                      "--device cpu (ranks then talk over gloo)")
        if device.index is None:  # one GPU per rank: the LOCAL_RANK-th of this node
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
    return device


def init(*, device: str | torch.device | None = None, backend: str | None = None,
         timeout_s: float = DEFAULT_TIMEOUT_S) -> DistContext:
    """Join the job torchrun started (or return a world of one if there is none).

    Args:
        device: ``cpu``, ``cuda`` (this rank's GPU: ``cuda:LOCAL_RANK``) or None (the
            GPU if there is one).
        backend: ``nccl`` or ``gloo``; default NCCL on GPU, gloo on CPU.
        timeout_s: seconds any collective may wait before the job fails.

    Calling it again returns the context of the group already joined.
    """
    if timeout_s <= 0:
        raise TrainingConfigError(f"timeout_s={timeout_s} must be > 0 seconds")
    if not launched():
        return DistContext(device=_device_for(device, 0), timeout_s=timeout_s)
    missing = [name for name in _LAUNCH_VARS if name not in os.environ]
    if missing:
        raise TrainingConfigError(f"environment variable(s) {', '.join(missing)} are not set; "
                                  "start the job with torchrun --nproc_per_node=N ...")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = _device_for(device, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = backend or ("nccl" if device.type == "cuda" else "gloo")
    if backend not in ("nccl", "gloo"):
        raise TrainingConfigError(f"backend={backend!r} is unknown; pass nccl or gloo")
    if not dist.is_initialized():
        timeout = timedelta(seconds=timeout_s)
        try:
            # torchrun's own store (env://), namespaced per restart: a restarted job may
            # be handed the store of the attempt that failed, where the dead ranks' gloo
            # addresses would still be found (seen with torch 2.13, --standalone).
            store, rank, world = next(dist.rendezvous("env://", timeout=timeout))
            attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
            store = dist.PrefixStore(f"graphsys/attempt_{attempt}", store)
            dist.init_process_group(backend, store=store, rank=rank, world_size=world,
                                    timeout=timeout,
                                    device_id=device if backend == "nccl" else None)
        except (RuntimeError, ValueError) as exc:
            raise RankFailure(
                f"rank {os.environ['RANK']} could not join the process group at "
                f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']} within "
                f"{timeout_s:.0f}s ({_first_line(exc)}); check that every rank was started "
                "and can reach the master") from exc
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(),
                       local_rank=local_rank, backend=dist.get_backend(), device=device,
                       timeout_s=timeout_s)


def shutdown() -> None:
    """Leave the process group (at the end of a job that finished normally)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def is_collective_failure(exc: BaseException) -> bool:
    """Whether ``exc`` came from a collective whose peers failed (not a bug in a step)."""
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(mark in text for mark in (
        "gloo", "Gloo", "NCCL", "nccl", "Connection closed", "Connection reset", "timed out",
        "Timed out", "Broken pipe", "peer"))


def rank_failure(ctx: DistContext, exc: BaseException, checkpoint: str | None) -> RankFailure:
    """The one-line error a surviving rank reports when a collective failed."""
    resume = (f"the last checkpoint is {checkpoint}; rerun the same command with --resume "
              "(or let torchrun --max-restarts restart it) to continue from there"
              if checkpoint else "no checkpoint was written (pass --out to keep one)")
    return RankFailure(
        f"rank {ctx.rank} of {ctx.world_size}: a collective failed or waited more than "
        f"{ctx.timeout_s:.0f}s ({_first_line(exc)}); another rank probably died or hung, see "
        f"its log; {resume}")
