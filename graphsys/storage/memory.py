"""Stores over data already addressable in memory: tensors, memory maps, zarr arrays."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from graphsys.cuda.gather import gather_rows
from graphsys.storage.base import StoreBase, check_row_file, torch_dtype


class TensorStore(StoreBase):
    """Rows of an in-memory tensor (on any device); no disk I/O."""

    tier = "memory"

    def __init__(self, tensor: torch.Tensor) -> None:
        if tensor.dim() != 2:
            raise ValueError(f"features must be 2-D [rows, dim], got shape {tuple(tensor.shape)}")
        super().__init__(tensor.shape[0], tensor.shape[1], tensor.dtype, tensor.device)
        self.tensor = tensor

    def _gather(self, ids: torch.Tensor, out: torch.Tensor) -> None:
        torch.index_select(self.tensor, 0, ids.to(self.device), out=out)

    def read_to(self, ids: Any, device: torch.device) -> torch.Tensor:
        """Rows ``ids`` on ``device``: read by the UVA gather straight from a pinned (or
        that GPU's) tensor, with no staging copy; otherwise read and copied."""
        device = torch.device(device)
        if device.type != "cuda" or not (self.tensor.is_pinned() or self.tensor.device == device):
            return super().read_to(ids, device)
        ids = self._ids(ids)
        start = time.perf_counter()
        rows = gather_rows(self.tensor, ids.to(device), check=False)  # _ids checked the range
        self.stats.reads += 1
        self.stats.add(self.tier, ids.numel(), ids.numel() * self.row_bytes,
                       time.perf_counter() - start)
        return rows


class MmapStore(StoreBase):
    """Rows of a raw row-major file through a memory map, as DGL/PyG users index one.

    Disk bytes are unknown to the process (the page cache and readahead decide), so
    they are not counted here; benchmarks measure them from ``/proc/self/io``.
    """

    tier = "mmap"

    def __init__(self, path: str | os.PathLike, num_rows: int, dim: int,
                 dtype: np.dtype | str) -> None:
        dtype = np.dtype(dtype)
        self.path = Path(path)
        check_row_file(self.path, num_rows, dim, dtype)
        self.array = np.memmap(self.path, dtype=dtype, mode="r", shape=(num_rows, dim))
        super().__init__(num_rows, dim, torch_dtype(dtype))

    def _gather(self, ids: torch.Tensor, out: torch.Tensor) -> None:
        out.copy_(torch.from_numpy(self.array[ids.numpy()]))


class ZarrStore(StoreBase):
    """Rows of a chunked, LZ4-compressed zarr array (only the chunks asked are read)."""

    tier = "zarr"

    def __init__(self, features: object) -> None:
        shape, dtype = features.shape, np.dtype(features.dtype)
        super().__init__(shape[0], shape[1], torch_dtype(dtype))
        self.features = features

    def _gather(self, ids: torch.Tensor, out: torch.Tensor) -> None:
        unique, inverse = torch.unique(ids, return_inverse=True)
        rows = torch.as_tensor(self.features[unique.numpy()])
        torch.index_select(rows, 0, inverse, out=out)
