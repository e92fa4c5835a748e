"""Training seeds split across the ranks of a data-parallel job, without overlap.

Every rank draws the same permutation of the seeds each epoch (the one a
:class:`DataLoader` with the same ``seed`` draws) and cuts it into *global* batches of
``batch_size x world_size`` seeds; rank ``r`` takes the ``r``-th of ``world_size``
near-equal slices of each global batch. So the ranks see disjoint seeds that cover
the training set, every rank runs the same number of steps (no rank waits at a
collective for a batch that never comes), and batch ``i`` of every rank is sampled
with the key of global batch ``i``: together the ranks sample exactly what one
process sampling the global batches would (samples depend on the batch key and the
node only), which is why a DDP run can match a single-process run.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from graphsys.loader.dataloader import DataLoader
from graphsys.loader.seed_split import (
    global_batch_count,
    rank_batches,
    split_global_batch,
)
from graphsys.loader.seed_split import global_batches as _global_batches
from graphsys.samplers.neighbor import NeighborSampler

__all__ = ["DistributedDataLoader", "split_global_batch"]


class DistributedDataLoader(DataLoader):
    """A :class:`DataLoader` for rank ``rank`` of ``world_size`` (see the module docstring).

    ``batch_size`` is per rank; the global batch is ``batch_size * world_size``. A last
    global batch with fewer seeds than ranks is merged into the one before it, so no
    rank ever gets an empty batch. All other arguments are the DataLoader's.

    Example:
        >>> ctx = graphsys.distributed.init()                          # doctest: +SKIP
        >>> loader = DistributedDataLoader(graph, train_idx, sampler, batch_size=1024,
        ...                                rank=ctx.rank, world_size=ctx.world_size,
        ...                                shuffle=True, seed=0)        # doctest: +SKIP
    """

    def __init__(self, graph: Any, seeds: Any, sampler: NeighborSampler, *, rank: int,
                 world_size: int, batch_size: int = 1, **kwargs: Any) -> None:
        if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
            raise ValueError(f"world_size must be an integer >= 1, got {world_size!r}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} is outside [0, {world_size}); pass the rank "
                             "graphsys.distributed.init() returned")
        super().__init__(graph, seeds, sampler, batch_size=batch_size, **kwargs)
        if len(self.seeds) < world_size:
            raise ValueError(f"{len(self.seeds)} seeds cannot be split over {world_size} "
                             "ranks; use fewer processes or more training nodes")
        self.rank = int(rank)
        self.world_size = int(world_size)

    @classmethod
    def from_loader(cls, loader: DataLoader, *, rank: int, world_size: int
                    ) -> DistributedDataLoader:
        """The rank's share of ``loader`` (same graph, seeds, sampler, data and seed)."""
        return cls(loader.graph, loader.seeds, loader.sampler, rank=rank,
                   world_size=world_size, batch_size=loader.batch_size,
                   shuffle=loader.shuffle, drop_last=loader.drop_last, device=loader.device,
                   features=loader.features, labels=loader.labels, prefetch=loader.prefetch,
                   seed=loader.seed)

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.world_size

    def __len__(self) -> int:
        return global_batch_count(len(self.seeds), self.batch_size, self.world_size,
                                  self.drop_last)

    def global_batches(self, epoch: int) -> list[np.ndarray]:
        """The seeds of every global batch of ``epoch`` (all ranks together)."""
        # The one-process loader's permutation.
        return _global_batches(self.seed_order(epoch), self.batch_size, self.world_size,
                               self.drop_last)

    def batch_seeds(self, epoch: int) -> list[np.ndarray]:
        """This rank's slice of each global batch of ``epoch``."""
        return rank_batches(self.seed_order(epoch), self.batch_size, self.rank,
                            self.world_size, self.drop_last)

    def global_sizes(self, epoch: int) -> list[int]:
        """Seeds in each global batch (the divisor of a DDP loss equal to one process's)."""
        return [len(b) for b in self.global_batches(epoch)]
