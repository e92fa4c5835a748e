"""A RAM tier holding the hottest rows of a slower store, sized by a byte budget."""

from __future__ import annotations

from typing import Any

import numpy as np
import psutil
import torch

from graphsys.storage.base import StoreBase

#: Share of the currently available memory a default host cache may take; the rest is
#: headroom for the sampler, the model and the page cache.
DEFAULT_SHARE = 0.5


def default_host_budget(share: float = DEFAULT_SHARE) -> int:
    """Bytes a host cache may use by default: ``share`` of psutil's available memory."""
    return int(psutil.virtual_memory().available * share)


class HostCacheStore(StoreBase):
    """The rows of ``hot_ids`` (hottest first) that fit in ``budget`` bytes, in RAM.

    Args:
        source: the store the rows are loaded from (once, in batches, at construction).
        hot_ids: node ids ordered from hottest down (e.g. by pre-sampled access counts).
        budget: bytes of feature rows to hold; default :func:`default_host_budget`.
        load_bytes: bytes of rows read from ``source`` per request while filling.

    ``contains(ids)`` says which ids are cached; ``read`` serves only cached ids.
    """

    tier = "host"

    def __init__(self, source: Any, hot_ids: Any, budget: int | None = None, *,
                 load_bytes: int = 32 << 20) -> None:
        super().__init__(source.num_rows, source.dim, source.dtype)
        budget = default_host_budget() if budget is None else int(budget)
        if budget < 0:
            raise ValueError(f"budget must be >= 0 bytes, got {budget}")
        self.budget = budget
        hot = self._ids(hot_ids)
        capacity = min(len(hot), budget // self.row_bytes)
        self.cached_ids = hot[:capacity]
        # slot[v] = row of v in self.rows, or -1: one int32 per node keeps lookups O(1).
        self.slot = torch.full((self.num_rows,), -1, dtype=torch.int32)
        self.slot[self.cached_ids] = torch.arange(capacity, dtype=torch.int32)
        if int((self.slot >= 0).sum()) != capacity:
            raise ValueError("hot_ids contains duplicates; pass each node once")
        self.rows = torch.empty((capacity, self.dim), dtype=self.dtype)
        # Filled in id order, so a disk source reads long runs rather than random rows.
        order = torch.argsort(self.cached_ids)
        load_batch = max(1, load_bytes // self.row_bytes)
        for start in range(0, capacity, load_batch):
            chunk = order[start : start + load_batch]
            self.rows[chunk] = source.read(self.cached_ids[chunk])

    @property
    def nbytes(self) -> int:
        return self.rows.numel() * self.rows.element_size()

    def contains(self, ids: torch.Tensor) -> torch.Tensor:
        return self.slot[ids] >= 0

    def cached_mask(self) -> np.ndarray:
        """One bool per node: is its row held here."""
        return (self.slot >= 0).numpy()

    def _gather(self, ids: torch.Tensor, out: torch.Tensor) -> None:
        slots = self.slot[ids]
        if bool((slots < 0).any()):
            missing = int(ids[slots < 0][0])
            raise KeyError(f"node {missing} is not in the host cache; read it through a "
                           "TieredStore that has a slower tier behind the cache")
        torch.index_select(self.rows, 0, slots.long(), out=out)


def hotness_order(counts: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Node ids from most to least accessed (ties by id), for :class:`HostCacheStore`."""
    counts = torch.as_tensor(counts)
    return torch.sort(counts, descending=True, stable=True).indices
