"""Belady's MIN at batch granularity: the fewest misses any demand cache can have.

The stream is a sequence of batches, each a set of row ids. A demand cache of
``capacity`` rows serves a batch from what it holds, fetches the rest, and may then
keep any ``capacity`` rows among those it held and those it just fetched (it may also
bypass a fetched row). Keeping the rows whose next use is nearest is optimal (the
exchange argument of Belady's MIN with bypass); the tests check it against an
exhaustive search on small streams.

Because this needs the whole future, it is computed from the offline sampling log
and serves as the yardstick: ``misses`` is the least host -> device traffic, in rows,
of any policy that fetches only rows it is asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


def next_uses(batches: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """For each batch (distinct ids), the index of the next batch holding each id.

    Ids never asked for again get ``len(batches)``.
    """
    if not batches:
        return []
    sizes = torch.tensor([b.numel() for b in batches])
    ids = torch.cat([b.reshape(-1).to("cpu", torch.int64) for b in batches])
    when = torch.repeat_interleave(torch.arange(len(batches)), sizes)
    order = torch.argsort(ids, stable=True)  # by id, then batch (concatenation order)
    sorted_ids, sorted_when = ids[order], when[order]
    nxt = torch.full_like(sorted_when, len(batches))
    same = sorted_ids[1:] == sorted_ids[:-1]
    nxt[:-1] = torch.where(same, sorted_when[1:], nxt[:-1])
    out = torch.empty_like(nxt)
    out[order] = nxt
    return list(torch.split(out, sizes.tolist()))


@dataclass
class BeladyResult:
    """Per-batch outcome of the optimal demand cache."""

    capacity: int
    requests: np.ndarray  # distinct rows asked per batch
    misses: np.ndarray  # rows fetched per batch

    @property
    def total_requests(self) -> int:
        return int(self.requests.sum())

    @property
    def total_misses(self) -> int:
        return int(self.misses.sum())

    @property
    def hit_rate(self) -> float:
        total = self.total_requests
        return 1 - self.total_misses / total if total else 0.0


def belady(batches: Sequence[torch.Tensor], capacity: int, num_rows: int) -> BeladyResult:
    """Misses of the optimal demand cache of ``capacity`` rows on ``batches``.

    Each batch must hold distinct ids (``batch.input_nodes`` does). The cache starts
    empty.
    """
    batches = [b.reshape(-1).to("cpu", torch.int64) for b in batches]
    for i, b in enumerate(batches):
        if torch.unique(b).numel() != b.numel():
            raise ValueError(f"batch {i} repeats ids; pass distinct ids per batch")
    never = len(batches)
    nexts = next_uses(batches)
    in_cache = torch.zeros(num_rows, dtype=torch.bool)
    in_batch = torch.zeros(num_rows, dtype=torch.bool)
    key = torch.full((num_rows,), never, dtype=torch.int64)
    cached = torch.empty(0, dtype=torch.int64)
    requests = np.zeros(len(batches), np.int64)
    misses = np.zeros(len(batches), np.int64)
    for t, (batch, nxt) in enumerate(zip(batches, nexts, strict=True)):
        requests[t] = batch.numel()
        misses[t] = batch.numel() - int(in_cache[batch].sum())
        key[batch] = nxt
        in_batch[batch] = True
        cand = torch.cat([cached[~in_batch[cached]], batch])
        in_batch[batch] = False
        keys = key[cand]
        useful = keys < never  # a row never asked again is not worth a slot
        cand, keys = cand[useful], keys[useful]
        if cand.numel() > capacity:
            cand = cand[torch.topk(keys, capacity, largest=False).indices]
        in_cache[cached] = False
        in_cache[cand] = True
        cached = cand
    return BeladyResult(capacity, requests, misses)
