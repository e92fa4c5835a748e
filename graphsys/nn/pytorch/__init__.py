"""DGL's ``dgl.nn.pytorch`` names, so ``import graphsys.nn.pytorch as dglnn`` ports a script.

The same classes as :mod:`graphsys.nn` (DGL 2.1's signatures and parameter names); the
layers also sit in :mod:`graphsys.nn.pytorch.conv`, as DGL's do in ``dgl.nn.pytorch.conv``.

Example:
    >>> import graphsys.nn.pytorch as dglnn
    >>> conv = dglnn.SAGEConv(16, 8, "mean")
"""

from graphsys.nn.pytorch import conv
from graphsys.nn.pytorch.conv import *  # noqa: F403 - the layer names, listed once in conv

__all__ = [*conv.__all__, "conv"]
