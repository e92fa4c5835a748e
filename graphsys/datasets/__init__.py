"""Readers that turn public dataset formats into graphsys datasets.

Each ``prepare_*`` function reads a raw download and writes a dataset directory
atomically (see :class:`graphsys.DatasetWriter`).
"""

from graphsys.datasets.ogb import prepare_ogb
from graphsys.datasets.planetoid import prepare_planetoid, read_planetoid
from graphsys.datasets.synthetic import SyntheticConfig, generate_synthetic

__all__ = ["SyntheticConfig", "generate_synthetic", "prepare_ogb", "prepare_planetoid",
           "read_planetoid"]
