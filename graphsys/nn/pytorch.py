"""``dgl.nn.pytorch``: DGL's path to its PyTorch layers, the same as :mod:`graphsys.nn`."""

from graphsys.nn import *  # noqa: F403
from graphsys.nn import __all__  # noqa: F401
