"""Presample a loader's batches and plan the feature tiers from them.

The planner (:mod:`graphsys.storage.planner`) works on input-node ids and a
:class:`~graphsys.storage.planner.BatchSpec`; this module is the loader-side half that
samples those ids the way training will and reads the spec off the loader.
"""

from __future__ import annotations

from typing import Any

from graphsys.samplers.offline import SamplingLog, offline_sample
from graphsys.storage.planner import BatchSpec, CachePlan, check_budgets, plan_tiers

#: Epoch number of presampled batches: far from any training epoch, so a presample is
#: never the very batches it predicts.
PRESAMPLE_EPOCH = 1 << 20


def presample(loader: Any, batches: int) -> SamplingLog:
    """The first ``batches`` batches of the presample epoch, sampled offline."""
    return offline_sample(loader, [PRESAMPLE_EPOCH], max_batches=batches)


def batch_spec(loader: Any) -> BatchSpec:
    """The settings of ``loader`` that decide its batches, as a plan records them."""
    return BatchSpec(fanouts=tuple(int(f) for f in loader.sampler.fanouts),
                     batch_size=int(loader.batch_size), seed=int(loader.seed),
                     num_rows=int(loader.graph.num_nodes()), batches_per_epoch=len(loader))


def plan_cache(loader: Any, row_bytes: int, *, device_cache: int, victim: int,
               host_cache: int, presample_batches: int = 64, lookahead: int = 16,
               half_life: float = 16.0) -> CachePlan:
    """Propose tiers within the given byte budgets for the batches ``loader`` yields."""
    check_budgets(device_cache, victim, host_cache)  # before the presample's cost
    if presample_batches < 2:
        raise ValueError("presample_batches must be >= 2 (half builds the counts, half "
                         "checks them)")
    return plan_tiers(presample(loader, presample_batches), batch_spec(loader), row_bytes,
                      device_cache=device_cache, victim=victim, host_cache=host_cache,
                      lookahead=lookahead, half_life=half_life)
