"""Mini-batch loading: :class:`DataLoader`, a drop-in for DGL's."""

from graphsys._lazy import attach

# Public name -> defining module, imported on first use (see graphsys._lazy).
_NAMES = {
    "DataLoader": "graphsys.loader.dataloader",
}

__getattr__, __dir__ = attach(__name__, _NAMES)

__all__ = ["DataLoader"]
