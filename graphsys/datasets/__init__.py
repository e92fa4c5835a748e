"""Readers that turn public dataset formats into graphsys datasets.

Each ``prepare_*`` function reads a raw download and writes a dataset directory
atomically (see :class:`graphsys.DatasetWriter`).
"""

from graphsys.datasets.ogb import prepare_ogb

__all__ = ["prepare_ogb"]
