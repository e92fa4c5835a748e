"""Kernels of the device cache: batched lookup, hit/miss split, scatter into slots.

They work on the tables :class:`~graphsys.storage.device_cache.DeviceCache` keeps:
``slot_of[node]`` (int32, ``-1`` where the node has no slot), ``id_of[slot]`` (int64,
``-1`` for a free slot) and ``rows[slot]``. Each function has a torch path (CPU, or a
GPU without CuPy) and a CUDA path with the same results, bitwise:

* :func:`lookup` -> the slot of every id, ``-1`` on a miss;
* :func:`split_hits` -> positions and slots of the hits and positions and ids of the
  misses, each in batch order (a stable partition);
* :func:`scatter_rows` -> ``rows[slots[i]] = fetched[i]`` (vectorised row copies; of
  repeated slots the last occurrence wins);
* :func:`assign_slots` -> evict whatever held ``slots`` and give them ``ids``.

Both paths validate the tables alike before any work: ``slot_of`` must be a contiguous
1-D int32 tensor and ``id_of`` a contiguous 1-D int64 tensor on the same device
(``TypeError`` for a wrong dtype, ``ValueError`` for a wrong shape, layout or device),
since the kernels read them through raw addresses.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from graphsys.cuda import _runtime
from graphsys.cuda.gather import copy_rows

SOURCE = r"""
extern "C" __global__ void lookup_slots(unsigned long long slot_of_addr,
                                        unsigned long long ids_addr, long long n,
                                        unsigned long long slots_addr,
                                        unsigned long long hit_addr) {
    const int* __restrict__ slot_of = (const int*)slot_of_addr;
    const long long* __restrict__ ids = (const long long*)ids_addr;
    long long* __restrict__ slots = (long long*)slots_addr;
    long long* __restrict__ hit = (long long*)hit_addr;   // may be null
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        const long long s = slot_of[ids[i]];
        slots[i] = s;
        if (hit) hit[i] = s >= 0 ? 1 : 0;
    }
}

// Stable partition: hits_before[i] is the inclusive count of hits in [0, i].
extern "C" __global__ void split_by_hits(unsigned long long ids_addr,
                                         unsigned long long slots_addr,
                                         unsigned long long hits_before_addr, long long n,
                                         unsigned long long hit_pos_addr,
                                         unsigned long long hit_slots_addr,
                                         unsigned long long miss_pos_addr,
                                         unsigned long long miss_ids_addr) {
    const long long* __restrict__ ids = (const long long*)ids_addr;
    const long long* __restrict__ slots = (const long long*)slots_addr;
    const long long* __restrict__ hits_before = (const long long*)hits_before_addr;
    long long* hit_pos = (long long*)hit_pos_addr;
    long long* hit_slots = (long long*)hit_slots_addr;
    long long* miss_pos = (long long*)miss_pos_addr;
    long long* miss_ids = (long long*)miss_ids_addr;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        const long long h = hits_before[i];
        if (slots[i] >= 0) {
            hit_pos[h - 1] = i;
            hit_slots[h - 1] = slots[i];
        } else {
            miss_pos[i - h] = i;
            miss_ids[i - h] = ids[i];
        }
    }
}

// Phase 1 of assign: forget the nodes that held the slots being reassigned.
extern "C" __global__ void evict_slots(unsigned long long slot_of_addr,
                                       unsigned long long id_of_addr,
                                       unsigned long long slots_addr, long long n) {
    int* slot_of = (int*)slot_of_addr;
    const long long* __restrict__ id_of = (const long long*)id_of_addr;
    const long long* __restrict__ slots = (const long long*)slots_addr;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        const long long old = id_of[slots[i]];
        if (old >= 0) slot_of[old] = -1;
    }
}

// Phase 2: point slots and nodes at each other.
extern "C" __global__ void install_slots(unsigned long long slot_of_addr,
                                         unsigned long long id_of_addr,
                                         unsigned long long ids_addr,
                                         unsigned long long slots_addr, long long n) {
    int* slot_of = (int*)slot_of_addr;
    long long* id_of = (long long*)id_of_addr;
    const long long* __restrict__ ids = (const long long*)ids_addr;
    const long long* __restrict__ slots = (const long long*)slots_addr;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        id_of[slots[i]] = ids[i];
        slot_of[ids[i]] = (int)slots[i];
    }
}
"""

KERNELS = ("lookup_slots", "split_by_hits", "evict_slots", "install_slots")
_THREADS = 256


def _grid(n: int) -> int:
    return min(-(-n // _THREADS), 65535)


def _kernel(name: str, device: torch.device):
    return _runtime.function(SOURCE, name, device=device)


def _check_table(table: torch.Tensor, name: str, dtype: torch.dtype) -> None:
    if not isinstance(table, torch.Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(table).__name__}")
    if table.dtype != dtype:
        raise TypeError(f"{name} must be {dtype}, got {table.dtype}")
    if table.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(table.shape)}")
    if not table.is_contiguous():
        raise ValueError(f"{name} must be contiguous (the kernels index it by address)")


def _check_tables(slot_of: torch.Tensor, id_of: torch.Tensor | None = None) -> None:
    """``slot_of`` int32 and ``id_of`` int64, 1-D, contiguous, on one device."""
    _check_table(slot_of, "slot_of", torch.int32)
    if id_of is not None:
        _check_table(id_of, "id_of", torch.int64)
        if id_of.device != slot_of.device:
            raise ValueError(f"slot_of is on {slot_of.device} but id_of on {id_of.device}")


def _ids(ids: torch.Tensor, device: torch.device) -> torch.Tensor:
    if ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise TypeError(f"ids must be integers, got {ids.dtype}")
    return ids.reshape(-1).to(device=device, dtype=torch.int64).contiguous()


def _check_range(ids: torch.Tensor, size: int, what: str) -> None:
    if ids.numel():
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= size:
            raise IndexError(f"{what} contains {low if low < 0 else high}, outside [0, {size})")


def lookup(slot_of: torch.Tensor, ids: torch.Tensor, *, check: bool = True) -> torch.Tensor:
    """The slot of every id (int64, ``-1`` on a miss), on ``slot_of``'s device.

    Example:
        >>> slot_of = torch.tensor([-1, 2, -1, 0], dtype=torch.int32)
        >>> lookup(slot_of, torch.tensor([3, 0, 1, 1])).tolist()
        [0, -1, 2, 2]
    """
    _check_tables(slot_of)
    ids = _ids(ids, slot_of.device)
    if check:
        _check_range(ids, slot_of.numel(), "ids")
    if _runtime.use_gpu(slot_of):
        slots = torch.empty_like(ids)
        device = slot_of.device
        _runtime.launch(_kernel("lookup_slots", device), _grid(ids.numel()), _THREADS,
                        device=device, args=(
            _runtime.address(slot_of), _runtime.address(ids), np.int64(ids.numel()),
            _runtime.address(slots), np.uint64(0)))
        return slots
    return slot_of[ids].long()


class Split(NamedTuple):
    """A batch partitioned into hits and misses, each in batch order."""

    hit_pos: torch.Tensor  # positions in the batch of the ids found
    hit_slots: torch.Tensor  # their slots
    miss_pos: torch.Tensor  # positions of the ids not found
    miss_ids: torch.Tensor  # those ids


def split_hits(slot_of: torch.Tensor, ids: torch.Tensor, *, check: bool = True) -> Split:
    """Look ``ids`` up and split the batch into hits and misses (stable).

    Example:
        >>> slot_of = torch.tensor([-1, 2, -1, 0], dtype=torch.int32)
        >>> [t.tolist() for t in split_hits(slot_of, torch.tensor([3, 0, 1, 2]))]
        [[0, 2], [0, 2], [1, 3], [0, 2]]
    """
    _check_tables(slot_of)
    ids = _ids(ids, slot_of.device)
    if check:
        _check_range(ids, slot_of.numel(), "ids")
    n = ids.numel()
    if _runtime.use_gpu(slot_of) and n:
        device = slot_of.device
        slots = torch.empty_like(ids)
        hit = torch.empty_like(ids)
        _runtime.launch(_kernel("lookup_slots", device), _grid(n), _THREADS, device=device,
                        args=(
            _runtime.address(slot_of), _runtime.address(ids), np.int64(n),
            _runtime.address(slots), _runtime.address(hit)))
        before = torch.cumsum(hit, 0)
        hits = int(before[-1])  # one sync: the output sizes
        out = [torch.empty(k, dtype=torch.int64, device=ids.device)
               for k in (hits, hits, n - hits, n - hits)]
        _runtime.launch(_kernel("split_by_hits", device), _grid(n), _THREADS, device=device,
                        args=(
            _runtime.address(ids), _runtime.address(slots), _runtime.address(before),
            np.int64(n), *(_runtime.address(t) for t in out)))
        return Split(*out)
    slots = slot_of[ids].long()
    found = slots >= 0
    hit_pos = torch.nonzero(found).flatten()
    miss_pos = torch.nonzero(~found).flatten()
    return Split(hit_pos, slots[hit_pos], miss_pos, ids[miss_pos])


def last_occurrences(slots: torch.Tensor) -> torch.Tensor | None:
    """Positions of the last occurrence of each distinct value of ``slots`` (int64,
    ascending by value), or ``None`` when the values are already distinct. Torch only,
    so the CPU and the GPU paths of :func:`scatter_rows` dedupe identically."""
    n = slots.numel()
    if n < 2:
        return None
    unique, inverse = torch.unique(slots, return_inverse=True)
    if unique.numel() == n:  # one sync; the range check synced already
        return None
    position = torch.arange(n, device=slots.device)
    return torch.full((unique.numel(),), -1, dtype=torch.int64, device=slots.device
                      ).scatter_reduce_(0, inverse, position, "amax")


def scatter_rows(rows: torch.Tensor, slots: torch.Tensor, fetched: torch.Tensor, *,
                 check: bool = True, distinct: bool = False) -> None:
    """``rows[slots[i]] = fetched[i]`` in place.

    ``check=False`` skips the range check and ``distinct=True`` the deduplication (each
    costs a device sync on the GPU): for callers whose slots are valid and distinct by
    construction, such as the device cache's admissions.

    A slot given more than once receives the row of its **last** occurrence, on every
    path: the slots are deduplicated with torch operations before the copy, so no two
    GPU threads ever write one slot (which could tear a row) and the CPU path does not
    rely on ``index_copy_``'s unspecified order for repeated indices.

    ``fetched`` may be a host tensor or a CUDA tensor on ``rows``'s device; a CUDA
    tensor on any other device raises ``ValueError``. The CUDA kernel reads ``fetched``
    where it lies when it is on the GPU or pinned (zero-copy) and both are contiguous;
    a pageable (non-pinned) host ``fetched``, or a non-contiguous one, is first copied
    to ``rows``'s device by torch and scattered with ``index_copy_`` (same result).

    Example:
        >>> rows = torch.zeros(3, 2)
        >>> scatter_rows(rows, torch.tensor([2, 0]), torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        >>> rows.tolist()
        [[3.0, 4.0], [0.0, 0.0], [1.0, 2.0]]
        >>> scatter_rows(rows, torch.tensor([1, 1]), torch.tensor([[5.0, 5.0], [6.0, 6.0]]))
        >>> rows[1].tolist()
        [6.0, 6.0]
    """
    if fetched.is_cuda and fetched.device != rows.device:
        raise ValueError(f"fetched rows are on {fetched.device} but the table on "
                         f"{rows.device}; move them to {rows.device} first")
    slots = _ids(slots, rows.device)
    if fetched.dim() < 1 or fetched.shape[0] != slots.numel() \
            or fetched.shape[1:] != rows.shape[1:]:
        raise ValueError(f"fetched rows {tuple(fetched.shape)} do not match "
                         f"{slots.numel()} slots of {tuple(rows.shape[1:])}")
    if fetched.dtype != rows.dtype:
        raise TypeError(f"fetched rows are {fetched.dtype}, the table {rows.dtype}")
    if check:
        _check_range(slots, rows.shape[0], "slots")
    keep = None if distinct else last_occurrences(slots)  # on rows's device, like slots
    if (_runtime.use_gpu(rows) and rows.is_contiguous() and fetched.is_contiguous()
            and (fetched.is_cuda or fetched.is_pinned())):
        if keep is None:
            copy_rows(fetched, None, rows, slots, slots.numel())
        else:
            copy_rows(fetched, keep, rows, slots[keep].contiguous(), keep.numel())
        return
    source = fetched.to(rows.device)
    if keep is not None:
        source, slots = source[keep], slots[keep]
    rows.index_copy_(0, slots, source)


def assign_slots(slot_of: torch.Tensor, id_of: torch.Tensor, ids: torch.Tensor,
                 slots: torch.Tensor, *, check: bool = True) -> None:
    """Give ``slots[i]`` to ``ids[i]``, evicting the nodes that held them (in place).

    ``ids`` must be distinct, not already resident, and ``slots`` distinct.
    ``check=False`` skips the range checks (two device syncs on the GPU).

    Example:
        >>> slot_of = torch.tensor([0, -1, -1], dtype=torch.int32)
        >>> id_of = torch.tensor([0, -1])
        >>> assign_slots(slot_of, id_of, torch.tensor([2]), torch.tensor([0]))
        >>> slot_of.tolist(), id_of.tolist()
        ([-1, -1, 0], [2, -1])
    """
    _check_tables(slot_of, id_of)
    ids = _ids(ids, slot_of.device)
    slots = _ids(slots, slot_of.device)
    if ids.numel() != slots.numel():
        raise ValueError(f"{ids.numel()} ids but {slots.numel()} slots")
    if check:
        _check_range(ids, slot_of.numel(), "ids")
        _check_range(slots, id_of.numel(), "slots")
    if _runtime.use_gpu(slot_of) and ids.numel():
        n = np.int64(ids.numel())
        device = slot_of.device
        _runtime.launch(_kernel("evict_slots", device), _grid(ids.numel()), _THREADS,
                        device=device, args=(
            _runtime.address(slot_of), _runtime.address(id_of), _runtime.address(slots), n))
        _runtime.launch(_kernel("install_slots", device), _grid(ids.numel()), _THREADS,
                        device=device, args=(
            _runtime.address(slot_of), _runtime.address(id_of), _runtime.address(ids),
            _runtime.address(slots), n))
        return
    old = id_of[slots]
    slot_of[old[old >= 0]] = -1
    id_of[slots] = ids
    slot_of[ids] = slots.to(slot_of.dtype)
