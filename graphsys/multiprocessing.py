"""DGL's ``dgl.multiprocessing`` names for scripts that ``import graphsys as dgl``.

``shared_tensor(shape)`` is the one DGL's multi-GPU examples use: a host tensor that
every rank of a job on one machine maps, so layer-wise inference can write each
rank's rows of a ``[num_nodes, hidden]`` output into one buffer instead of gathering
them (``from graphsys.multiprocessing import shared_tensor``).
"""

from __future__ import annotations

import secrets
import socket
import weakref
from collections.abc import Sequence
from multiprocessing import resource_tracker, shared_memory

import torch

from graphsys.errors import GraphsysError


class SharedTensorError(GraphsysError, RuntimeError):
    """The ranks of the job cannot share host memory (they are on different machines)."""


def _dist_ready() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def shared_tensor(shape: int | Sequence[int], dtype: torch.dtype = torch.float32
                  ) -> torch.Tensor:
    """A zero-filled host tensor of ``shape`` that all ranks of the job share.

    As DGL's ``dgl.multiprocessing.shared_tensor``: a collective call, made by every
    rank of the initialised ``torch.distributed`` group, all on one machine. Rank 0
    creates a POSIX shared-memory segment, broadcasts its name, every other rank maps
    it, and after a barrier rank 0 unlinks the name, so the memory is freed when the
    last rank lets go of its tensor, even if a rank dies. Without a process group it is
    a tensor in shared memory (``share_memory_()``), for ``torch.multiprocessing``.
    Writes from one rank are seen by the others once they synchronise (a
    ``dist.barrier()``, as DGL's examples do).
    """
    shape = (int(shape),) if isinstance(shape, int) else tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise ValueError(f"shape must be non-negative, got {shape}")
    if not _dist_ready():
        return torch.zeros(shape, dtype=dtype).share_memory_()
    import torch.distributed as dist

    numel = 1
    for s in shape:
        numel *= s
    nbytes = max(1, numel * torch.empty((), dtype=dtype).element_size())
    rank = dist.get_rank()
    segment = None
    if rank == 0:
        segment = shared_memory.SharedMemory(name=f"graphsys_{secrets.token_hex(8)}",
                                             create=True, size=nbytes)
        message = [segment.name, socket.gethostname()]
    else:
        message = [None, None]
    dist.broadcast_object_list(message, src=0)
    name, host = message
    if rank != 0:
        if host != socket.gethostname():
            raise SharedTensorError(
                f"shared_tensor: rank {rank} runs on {socket.gethostname()!r}, rank 0 on "
                f"{host!r}; host memory is shared only within one machine (use one "
                "shared_tensor per node, or torch.distributed collectives across nodes)")
        segment = shared_memory.SharedMemory(name=name)
        # Only the creator owns the name: without this, Python's resource tracker
        # would unlink it (and warn) when this rank exits.
        resource_tracker.unregister(segment._name, "shared_memory")
    dist.barrier()  # every rank has mapped it: the name is no longer needed
    if rank == 0:
        segment.unlink()
    tensor = torch.frombuffer(segment.buf, dtype=dtype, count=numel).view(shape)
    # The mapping must outlive the tensor: keep the segment with it and close it after.
    tensor._graphsys_segment = segment
    weakref.finalize(tensor, _close, segment)
    return tensor


def _close(segment: shared_memory.SharedMemory) -> None:
    try:
        segment.close()
    except BufferError:  # a view of the buffer is still alive: the OS unmaps at exit
        pass


__all__ = ["SharedTensorError", "shared_tensor"]
