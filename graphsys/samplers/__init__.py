"""Neighbour sampling: :class:`NeighborSampler` turns seeds into a :class:`MiniBatch`."""

from graphsys._lazy import attach

# Public name -> defining module, imported on first use (see graphsys._lazy).
_NAMES = {
    "Block": "graphsys.samplers.block",
    "MiniBatch": "graphsys.samplers.block",
    "NID": "graphsys.samplers.block",
    "EID": "graphsys.samplers.block",
    "NeighborSampler": "graphsys.samplers.neighbor",
    "MultiLayerNeighborSampler": "graphsys.samplers.neighbor",
    "MultiLayerFullNeighborSampler": "graphsys.samplers.neighbor",
}

__getattr__, __dir__ = attach(__name__, _NAMES)

__all__ = ["EID", "NID", "Block", "MiniBatch", "MultiLayerFullNeighborSampler",
           "MultiLayerNeighborSampler", "NeighborSampler"]
