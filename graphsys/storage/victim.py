"""Rows evicted from the device cache, kept in pinned host memory for a while.

An evicted row is often asked for again soon (LSM-GNN); the victim buffer keeps the
most recently evicted ``capacity`` rows (a FIFO ring) in page-locked memory, where a
copy to the GPU runs at full link speed and needs no disk read or host gather.
"""

from __future__ import annotations

import torch

from graphsys.cuda.gather import gather_rows


def _pinned(shape: tuple[int, ...], dtype: torch.dtype, pin: bool) -> torch.Tensor:
    if pin and torch.cuda.is_available():
        return torch.empty(shape, dtype=dtype, pin_memory=True)
    return torch.empty(shape, dtype=dtype)


class VictimBuffer:
    """A FIFO ring of ``capacity`` rows with an id -> position map.

    Args:
        capacity: rows held (``VictimBuffer.rows_for(bytes, dim, dtype)`` converts a
            byte budget).
        num_rows, dim, dtype: shape of the store whose rows it holds.
        pin: page-lock the ring when CUDA is available (plain host memory otherwise).
    """

    def __init__(self, capacity: int, num_rows: int, dim: int, dtype: torch.dtype, *,
                 pin: bool = True) -> None:
        if capacity < 0:
            raise ValueError(f"victim buffer capacity must be >= 0 rows, got {capacity}")
        self.capacity = int(capacity)
        self.rows = _pinned((self.capacity, dim), dtype, pin)
        self.id_of = torch.full((self.capacity,), -1, dtype=torch.int64)
        self.position = torch.full((num_rows,), -1, dtype=torch.int32)
        self.head = 0
        self.hits = 0

    @staticmethod
    def rows_for(nbytes: int, dim: int, dtype: torch.dtype) -> int:
        return int(nbytes) // (dim * torch.empty((), dtype=dtype).element_size())

    @property
    def nbytes(self) -> int:
        return self.rows.numel() * self.rows.element_size()

    def __len__(self) -> int:
        return int((self.id_of >= 0).sum())

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """Position of each id in the ring, or -1 (``ids`` on the CPU)."""
        if self.capacity == 0:
            return torch.full(ids.shape, -1, dtype=torch.int32)
        return self.position[ids]

    def take(self, positions: torch.Tensor, device: torch.device | str = "cpu"
             ) -> torch.Tensor:
        """Rows at ``positions`` (found by :meth:`lookup`) on ``device``: from the pinned
        ring to a GPU by the UVA gather, without a staging copy."""
        self.hits += positions.numel()
        return gather_rows(self.rows, positions.long().to(device), check=False)

    def discard(self, ids: torch.Tensor) -> None:
        """Forget ``ids`` (they went back to the device, which now holds the row)."""
        if self.capacity == 0 or ids.numel() == 0:
            return
        pos = self.position[ids]
        pos = pos[pos >= 0].long()
        self.id_of[pos] = -1
        self.position[ids] = -1

    def put(self, ids: torch.Tensor, rows: torch.Tensor) -> None:
        """Keep ``rows`` of ``ids`` (CPU ids), overwriting the oldest entries."""
        if self.capacity == 0 or ids.numel() == 0:
            return
        fresh = self.position[ids] < 0
        ids, rows = ids[fresh], rows[fresh.to(rows.device)]
        if ids.numel() > self.capacity:  # only the last ``capacity`` survive a ring pass
            ids, rows = ids[-self.capacity :], rows[-self.capacity :]
        n = ids.numel()
        pos = (self.head + torch.arange(n)) % self.capacity
        old = self.id_of[pos]
        self.position[old[old >= 0]] = -1
        self.id_of[pos] = ids
        self.position[ids] = pos.to(torch.int32)
        self.rows[pos] = rows.cpu()
        self.head = (self.head + n) % self.capacity
