"""Mini-batch loading: :class:`DataLoader`, a drop-in for DGL's."""

from graphsys.loader.dataloader import DataLoader

__all__ = ["DataLoader"]
