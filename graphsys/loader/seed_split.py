"""Seeds of each batch of an epoch, for one process or one rank of a data-parallel job.

Every rank draws the same permutation of the seeds each epoch and cuts it into *global*
batches of ``batch_size x world_size`` seeds; rank ``r`` takes the ``r``-th of
``world_size`` near-equal slices of each global batch. The ranks see disjoint seeds that
cover the training set (all of it unless ``drop_last``), and every rank runs the same
number of steps with no seed repeated: a last global batch with fewer seeds than ranks
is merged into the one before it. (DGL's ``use_ddp`` instead gives each rank a
contiguous chunk of the permutation and pads the chunks with repeated seeds.)
With ``world_size == 1`` these are the plain loader's batches.
"""

from __future__ import annotations

import numpy as np


def split_global_batch(seeds: np.ndarray, world_size: int) -> list[np.ndarray]:
    """``world_size`` contiguous slices of one global batch, sizes differing by at most 1."""
    return np.array_split(seeds, world_size)


def global_batch_count(num_seeds: int, batch_size: int, world_size: int,
                       drop_last: bool) -> int:
    """Steps per epoch: global batches of ``batch_size * world_size`` seeds."""
    g = batch_size * world_size
    full, rest = divmod(num_seeds, g)
    if drop_last or full and rest < world_size:
        return full
    return full + (rest > 0)


def global_batches(order: np.ndarray, batch_size: int, world_size: int,
                   drop_last: bool) -> list[np.ndarray]:
    """The seeds of every global batch, cut from the epoch's ``order``."""
    g = batch_size * world_size
    count = global_batch_count(len(order), batch_size, world_size, drop_last)
    bounds = [i * g for i in range(count)] + [len(order)]
    if drop_last:
        bounds[-1] = count * g
    return [order[bounds[i] : bounds[i + 1]] for i in range(count)]


def rank_batches(order: np.ndarray, batch_size: int, rank: int, world_size: int,
                 drop_last: bool) -> list[np.ndarray]:
    """Rank ``rank``'s slice of each global batch of ``order``."""
    return [split_global_batch(b, world_size)[rank]
            for b in global_batches(order, batch_size, world_size, drop_last)]
