"""Neighbour sampling: :class:`NeighborSampler` turns seeds into a :class:`MiniBatch`."""

from graphsys.samplers.block import NID, Block, MiniBatch
from graphsys.samplers.neighbor import NeighborSampler

__all__ = ["NID", "Block", "MiniBatch", "NeighborSampler"]
