"""Readers that turn public dataset formats into graphsys datasets.

Each ``prepare_*`` function reads a raw download and writes a dataset directory
atomically (see :class:`graphsys.DatasetWriter`).
"""

from graphsys._lazy import attach

# Public name -> defining module, imported on first use (see graphsys._lazy).
_NAMES = {
    "prepare_ogb": "graphsys.datasets.ogb",
    "prepare_planetoid": "graphsys.datasets.planetoid",
    "read_planetoid": "graphsys.datasets.planetoid",
    "SyntheticConfig": "graphsys.datasets.synthetic",
    "generate_synthetic": "graphsys.datasets.synthetic",
}

__getattr__, __dir__ = attach(__name__, _NAMES)

__all__ = ["SyntheticConfig", "generate_synthetic", "prepare_ogb", "prepare_planetoid",
           "read_planetoid"]
