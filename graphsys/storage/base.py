"""The ``FeatureStore`` protocol, its I/O accounting, and the checks every store shares.

A store maps node ids to feature rows. ``read(ids)`` returns the rows in the order
asked (duplicates included) on the store's device and adds what it did to
``store.stats``: rows, bytes and seconds per tier, and the bytes it really read from
disk, so read amplification is ``stats.disk_bytes / stats.bytes_returned``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch


@dataclass
class TierStats:
    """What one tier delivered: rows, bytes of features and time spent."""

    rows: int = 0
    bytes: int = 0
    seconds: float = 0.0


@dataclass
class StoreStats:
    """I/O accounting of a store; tiers are named by the stores that served rows."""

    tiers: dict[str, TierStats] = field(default_factory=dict)
    disk_bytes: int = 0
    disk_seconds: float = 0.0  # reads done ahead of the rows they serve (packed segments)
    reads: int = 0

    def add(self, tier: str, rows: int, nbytes: int, seconds: float, disk_bytes: int = 0
            ) -> None:
        entry = self.tiers.setdefault(tier, TierStats())
        entry.rows += rows
        entry.bytes += nbytes
        entry.seconds += seconds
        self.disk_bytes += disk_bytes

    def add_disk(self, nbytes: int, seconds: float) -> None:
        """Disk reads not attributable to the rows of one request (e.g. read-ahead)."""
        self.disk_bytes += nbytes
        self.disk_seconds += seconds

    @property
    def rows_returned(self) -> int:
        return sum(t.rows for t in self.tiers.values())

    @property
    def bytes_returned(self) -> int:
        return sum(t.bytes for t in self.tiers.values())

    @property
    def read_amplification(self) -> float:
        """Bytes read from disk per byte of features delivered (0 if none delivered)."""
        returned = self.bytes_returned
        return self.disk_bytes / returned if returned else 0.0

    def reset(self) -> None:
        self.tiers.clear()
        self.disk_bytes = 0
        self.disk_seconds = 0.0
        self.reads = 0

    def as_dict(self) -> dict[str, Any]:
        return {"tiers": {k: vars(v).copy() for k, v in self.tiers.items()},
                "disk_bytes": self.disk_bytes, "disk_seconds": self.disk_seconds,
                "reads": self.reads,
                "rows_returned": self.rows_returned, "bytes_returned": self.bytes_returned,
                "read_amplification": self.read_amplification}


def torch_dtype(dtype: np.dtype | str) -> torch.dtype:
    """The torch dtype of a numpy dtype (``float32`` -> ``torch.float32``)."""
    return torch.from_numpy(np.empty(0, np.dtype(dtype))).dtype


def check_row_file(path: Path, num_rows: int, dim: int, dtype: np.dtype) -> int:
    """Size of the raw row-major file ``path``, checked against its stated shape."""
    expected = num_rows * dim * dtype.itemsize
    size = path.stat().st_size
    if size != expected:
        raise ValueError(f"{path} is {size} bytes, expected {expected} for "
                         f"{num_rows} x {dim} {dtype.name}; pass the right shape")
    return size


def close_quietly(store: Any) -> None:
    """``store.close()`` from ``__del__``, where errors can only be ignored."""
    try:
        store.close()
    except Exception:
        pass


@runtime_checkable
class FeatureStore(Protocol):
    """Anything that returns feature rows by node id (see the module docstring)."""

    num_rows: int
    dim: int
    dtype: torch.dtype
    device: torch.device
    stats: StoreStats

    def read(self, ids: Any, out: torch.Tensor | None = None) -> torch.Tensor: ...


class StoreBase:
    """Shared argument checks and accounting; subclasses implement ``_gather``."""

    tier = "store"

    def __init__(self, num_rows: int, dim: int, dtype: torch.dtype,
                 device: torch.device | str = "cpu") -> None:
        self.num_rows = int(num_rows)
        self.dim = int(dim)
        self.dtype = dtype
        self.device = torch.device(device)
        self.stats = StoreStats()

    def __len__(self) -> int:
        return self.num_rows

    @property
    def row_bytes(self) -> int:
        return self.dim * torch.empty((), dtype=self.dtype).element_size()

    # -- tensor-like reads, so a store behind ``g.ndata['feat']`` serves DGL scripts ----
    @property
    def shape(self) -> tuple[int, int]:
        """``(num_rows, dim)``, as a feature tensor's (``g.ndata['feat'].shape[1]``)."""
        return (self.num_rows, self.dim)

    def __getitem__(self, ids: Any) -> torch.Tensor:
        """``store[ids]``: :meth:`read` for ids (tensor, array, list), one id (one row, 1-D)
        or a slice, so ``feat[input_nodes]`` works whether ``feat`` is a tensor or a store."""
        if isinstance(ids, slice):
            return self.read(torch.arange(self.num_rows)[ids])
        if isinstance(ids, (int, np.integer)) and not isinstance(ids, bool):
            index = int(ids) + self.num_rows if ids < 0 else int(ids)
            return self.read(torch.tensor([index]))[0]
        return self.read(ids)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Any:
        """This store's rows delivered on ``device``, without loading the store: itself
        if its rows already land there, else a :class:`RowsOn` view whose reads go through
        :meth:`read_to`. So DGL's ``feat = g.ndata['feat'].to(device); feat[input_nodes]``
        stays out-of-core."""
        device = torch.device(device)
        if device == self.device or (device.type == self.device.type and device.index is None):
            return self
        return RowsOn(self, device)

    # A store is not a sequence: iterating would read every row, one call each.
    __iter__ = None

    def _ids(self, ids: Any) -> torch.Tensor:
        if not isinstance(ids, torch.Tensor):
            ids = torch.as_tensor(np.asarray(ids, dtype=np.int64) if not
                                  isinstance(ids, np.ndarray) else ids)
        if ids.is_floating_point() or ids.dtype == torch.bool:
            raise TypeError(f"ids must be integer node ids, got dtype {ids.dtype}")
        ids = ids.reshape(-1).to("cpu", torch.int64)
        if ids.numel():
            low, high = int(ids.min()), int(ids.max())
            if low < 0 or high >= self.num_rows:
                bad = low if low < 0 else high
                raise IndexError(f"row id {bad} is outside [0, {self.num_rows}) of this "
                                 f"{type(self).__name__}")
        return ids

    def _out(self, n: int, out: torch.Tensor | None) -> torch.Tensor:
        if out is None:
            return torch.empty((n, self.dim), dtype=self.dtype, device=self.device)
        if tuple(out.shape) != (n, self.dim) or out.dtype != self.dtype:
            raise ValueError(f"out must have shape ({n}, {self.dim}) and dtype {self.dtype}, "
                             f"got {tuple(out.shape)} {out.dtype}")
        return out

    def read(self, ids: Any, out: torch.Tensor | None = None) -> torch.Tensor:
        """Rows ``ids`` in the order asked, into ``out`` if given."""
        ids = self._ids(ids)
        out = self._out(ids.numel(), out)
        start = time.perf_counter()
        disk = self._gather(ids, out) if ids.numel() else 0
        self.stats.reads += 1
        self.stats.add(self.tier, ids.numel(), ids.numel() * self.row_bytes,
                       time.perf_counter() - start, disk or 0)
        return out

    def read_to(self, ids: Any, device: torch.device) -> torch.Tensor:
        """Rows ``ids`` on ``device``; stores that can put them there directly override it
        (a pinned tensor: the UVA gather), the rest read and copy."""
        return self.read(ids).to(device)

    def _gather(self, ids: torch.Tensor, out: torch.Tensor) -> int | None:
        """Fill ``out`` with rows ``ids``; return the bytes read from disk if known."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_rows={self.num_rows}, dim={self.dim}, "
                f"dtype={self.dtype}, device={self.device})")


class RowsOn:
    """``store[ids]`` / ``store.read(ids)`` on another device (see :meth:`StoreBase.to`).

    Reads are the store's (its tiers and statistics); only where the rows land changes.
    """

    def __init__(self, store: StoreBase, device: torch.device) -> None:
        self.store = store
        self.device = device
        self.num_rows, self.dim, self.dtype = store.num_rows, store.dim, store.dtype

    @property
    def shape(self) -> tuple[int, int]:
        return (self.num_rows, self.dim)

    def __len__(self) -> int:
        return self.num_rows

    def read(self, ids: Any, out: torch.Tensor | None = None) -> torch.Tensor:
        rows = self.store.read_to(ids, self.device)
        return rows if out is None else out.copy_(rows)

    def __getitem__(self, ids: Any) -> torch.Tensor:
        if isinstance(ids, torch.Tensor) or isinstance(ids, (np.ndarray, list)):
            return self.read(ids)
        return self.store[ids].to(self.device)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Any:
        return self.store.to(device)

    __iter__ = None

    def __repr__(self) -> str:
        return f"RowsOn({self.store!r}, device={self.device})"
