"""Compose stores fastest first; each row comes from the first tier that holds it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from graphsys.storage.base import StoreBase


class TieredStore(StoreBase):
    """A :class:`FeatureStore` over ``tiers``, fastest first.

    Every tier but the last must have ``contains(ids) -> BoolTensor``; the last serves
    whatever the others do not hold. ``stats`` records rows, bytes and time per tier
    (by each tier's ``tier`` name) and the disk bytes the tiers reported.
    """

    tier = "tiered"

    def __init__(self, tiers: Sequence[Any]) -> None:
        if not tiers:
            raise ValueError("TieredStore needs at least one tier")
        first = tiers[0]
        for t in tiers:
            if (t.num_rows, t.dim, t.dtype) != (first.num_rows, first.dim, first.dtype):
                raise ValueError(f"tiers disagree on shape or dtype: {t!r} vs {first!r}")
        for t in tiers[:-1]:
            if not hasattr(t, "contains"):
                raise TypeError(f"{t!r} cannot be an upper tier: it has no contains(ids)")
        super().__init__(first.num_rows, first.dim, first.dtype, first.device)
        self.tiers = list(tiers)

    def read(self, ids: Any, out: torch.Tensor | None = None) -> torch.Tensor:
        ids = self._ids(ids)
        out = self._out(ids.numel(), out)
        remaining = torch.arange(ids.numel())
        self.stats.reads += 1
        for i, tier in enumerate(self.tiers):
            if remaining.numel() == 0:
                break
            last = i == len(self.tiers) - 1
            mask = None if last else tier.contains(ids[remaining])
            here = remaining if mask is None else remaining[mask]
            if here.numel():
                disk_before = tier.stats.disk_bytes
                start = time.perf_counter()
                out[here] = tier.read(ids[here])
                self.stats.add(tier.tier, here.numel(), here.numel() * self.row_bytes,
                               time.perf_counter() - start,
                               tier.stats.disk_bytes - disk_before)
            if mask is not None:
                remaining = remaining[~mask]
        return out
