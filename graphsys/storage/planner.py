"""Size the feature tiers and split the device cache from a short presample.

``plan_tiers`` takes a few batches' input nodes, sampled the way training will, replays
the second half of them through the tiers it proposes (device cache with the hybrid
policy, victim buffer, host cache, disk) using the first half as the presample, and
reports the share of requested rows each tier is expected to serve and the bytes per
epoch on each link. Pure Python on the CPU: a plan for a GPU run is made anywhere (the
slots' logic is the same on both). It never sees a loader: a :class:`BatchSpec` says
which batches the ids are of, and :mod:`graphsys.loader.presample` samples them (storage
sits below the loader). ``graphsys plan`` prints the plan and writes it as JSON;
``graphsys train --plan`` applies it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from graphsys._atomic import atomic_write_bytes
from graphsys.errors import TrainingConfigError
from graphsys.samplers.offline import SamplingLog
from graphsys.storage.base import StoreBase
from graphsys.storage.device_cache import DeviceCache
from graphsys.storage.policies import HybridPolicy, confident_static_fraction
from graphsys.storage.victim import VictimBuffer

PLAN_VERSION = 1


@dataclass(frozen=True)
class BatchSpec:
    """What decides the batches a plan is made from, and is checked against later."""

    fanouts: tuple[int, ...]
    batch_size: int
    seed: int
    num_rows: int
    batches_per_epoch: int


@dataclass(frozen=True)
class CachePlan:
    """Tier sizes, device-cache policy and what they are expected to achieve."""

    device_cache_bytes: int
    victim_bytes: int
    host_cache_bytes: int
    static_fraction: float
    half_life: float
    lookahead: int
    presample_batches: int
    fanouts: tuple[int, ...]
    batch_size: int
    seed: int
    num_rows: int
    row_bytes: int
    batches_per_epoch: int
    policy: str = "hybrid"
    #: Share of requested rows served from device slots without a transfer
    #: (``device``) and moved from each lower tier (``victim``, ``host``, ``disk``);
    #: ``prefetched`` is the share on the device when asked, prefetched rows included.
    expected_share: dict[str, float] = field(default_factory=dict)
    #: Bytes per epoch on each link (host_to_device, disk_to_host).
    expected_bytes_per_epoch: dict[str, int] = field(default_factory=dict)
    version: int = PLAN_VERSION

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "fanouts": list(self.fanouts)}, indent=2)

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        atomic_write_bytes(path, self.to_json().encode())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> CachePlan:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise TrainingConfigError(f"cannot read the cache plan {path}: {exc}; make one "
                                      "with graphsys plan") from None
        known = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or set(data) - known or data.get("version") != PLAN_VERSION:
            raise TrainingConfigError(f"{path} is not a graphsys cache plan (version "
                                      f"{PLAN_VERSION}); make one with graphsys plan")
        try:
            return cls(**{**data, "fanouts": tuple(data["fanouts"])})
        except (TypeError, KeyError) as exc:
            raise TrainingConfigError(f"{path} is missing plan fields ({exc}); make it "
                                      "again with graphsys plan") from None

    def check(self, spec: BatchSpec) -> None:
        """Refuse batches that differ from the ones the plan was made from."""
        mine = (list(self.fanouts), self.batch_size, self.seed, self.num_rows)
        theirs = (list(spec.fanouts), spec.batch_size, spec.seed, spec.num_rows)
        if mine != theirs:
            raise TrainingConfigError(
                f"the cache plan was made for fanouts {mine[0]}, batch size {mine[1]}, seed "
                f"{mine[2]} on {mine[3]} nodes, not {theirs}; run graphsys plan again with "
                "the training options")


def presample_counts(log: SamplingLog, num_rows: int, batches: int | None = None
                     ) -> np.ndarray:
    """How often each row is read in the log's first ``batches`` batches (default all)."""
    end = log.offsets[log.num_batches if batches is None else batches]
    return np.bincount(log.input_nodes[:end], minlength=num_rows)


def hybrid_for(plan: CachePlan, counts: np.ndarray, batches: int) -> HybridPolicy:
    return HybridPolicy(counts, max(batches, 1), static_fraction=plan.static_fraction,
                        half_life=plan.half_life)


class _CountingSource(StoreBase):
    """Zero rows that record whether the host cache or the disk would have served them."""

    tier = "host+disk"

    def __init__(self, num_rows: int, in_host: torch.Tensor) -> None:
        super().__init__(num_rows, 1, torch.float32)
        self.in_host = in_host
        self.host_rows = 0
        self.disk_rows = 0

    def _gather(self, ids: torch.Tensor, out: torch.Tensor) -> None:
        out.zero_()
        host = int(self.in_host[ids].sum())
        self.host_rows += host
        self.disk_rows += ids.numel() - host


def check_budgets(device_cache: int, victim: int, host_cache: int) -> None:
    """Refuse a negative tier budget."""
    for name, value in (("device_cache", device_cache), ("victim", victim),
                        ("host_cache", host_cache)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0 bytes, got {value}")


def plan_tiers(batches: Sequence[np.ndarray | torch.Tensor], spec: BatchSpec, row_bytes: int,
               *, device_cache: int, victim: int, host_cache: int, lookahead: int = 16,
               half_life: float = 16.0) -> CachePlan:
    """Propose tiers within the given byte budgets for presampled ``batches``.

    Args:
        batches: input-node ids of the first batches of an epoch, in training order
            (a :class:`~graphsys.samplers.offline.SamplingLog` iterates as such).
        spec: the loader settings the batches came from (recorded in the plan).
        row_bytes: bytes of one feature row.
    """
    num_rows = spec.num_rows
    check_budgets(device_cache, victim, host_cache)
    batches = [torch.as_tensor(b) for b in batches]
    if not batches:
        raise ValueError("batches is empty: presample at least one batch")
    # Tiers never need more rows than the store has.
    full = num_rows * row_bytes
    device_cache, victim, host_cache = (min(v, full) for v in (device_cache, victim,
                                                                host_cache))
    n = len(batches)
    half = max(1, n // 2)
    counts = np.bincount(torch.cat(batches[:half]).numpy(), minlength=num_rows)
    held_out = batches[half:] or batches[:half]
    device_rows = device_cache // row_bytes
    static_fraction = confident_static_fraction(counts, device_rows)
    host_rows = host_cache // row_bytes
    in_host = torch.zeros(num_rows, dtype=torch.bool)
    order = torch.sort(torch.as_tensor(counts), descending=True, stable=True).indices
    in_host[order[:host_rows]] = True
    source = _CountingSource(num_rows, in_host)
    policy = HybridPolicy(counts, half, static_fraction=static_fraction, half_life=half_life)
    cache = DeviceCache(source, device_rows * source.row_bytes, policy, device="cpu",
                        victim=VictimBuffer(victim // row_bytes, num_rows, 1, torch.float32,
                                            pin=False))
    source.host_rows = source.disk_rows = 0  # the preload is not per-epoch traffic
    # Training prefetches continuously; so does the replay, from its first batch (a
    # cold first batch would weigh 1/len(held_out) here but ~nothing over an epoch).
    cache.prefetch(held_out[:lookahead])
    for t, ids in enumerate(held_out):
        cache.read(ids)
        cache.prefetch(held_out[t + 1 : t + 1 + lookahead])
    c = cache.counters
    requests = max(c.requests, 1)
    scale = spec.batches_per_epoch / len(held_out)
    plan = CachePlan(
        device_cache_bytes=int(device_cache), victim_bytes=int(victim),
        host_cache_bytes=int(host_cache), static_fraction=static_fraction,
        half_life=half_life, lookahead=lookahead, presample_batches=n,
        fanouts=tuple(int(f) for f in spec.fanouts),
        batch_size=spec.batch_size, seed=spec.seed, num_rows=num_rows,
        row_bytes=row_bytes, batches_per_epoch=spec.batches_per_epoch,
        # A staged row is on the device when asked but was still moved: the
        # device's share is what never crossed the link, so the shares add up to one.
        expected_share={"device": max(0.0, 1 - c.moved_rows / requests),
                        "prefetched": (c.hits + c.staged_hits) / requests,
                        "victim": c.victim_rows / requests,
                        "host": source.host_rows / requests,
                        "disk": source.disk_rows / requests},
        expected_bytes_per_epoch={
            "host_to_device": int(c.moved_rows * row_bytes * scale),
            "disk_to_host": int(source.disk_rows * row_bytes * scale),
            "no_cache_host_to_device": int(c.requests * row_bytes * scale)})
    return plan
