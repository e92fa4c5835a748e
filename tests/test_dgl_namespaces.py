"""``import graphsys as dgl`` resolves the names DGL's node-classification scripts use,
without loading them at ``import graphsys``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import graphsys

ROOT = Path(graphsys.__file__).resolve().parent.parent


def test_dgl_names_resolve_lazily() -> None:
    code = (
        "import sys\n"
        "import graphsys as dgl\n"
        "assert 'graphsys.dataloading' not in sys.modules and 'torch' not in sys.modules\n"
        "dl = dgl.dataloading\n"
        "names = [dl.DataLoader, dl.NeighborSampler, dl.MultiLayerNeighborSampler,\n"
        "         dl.MultiLayerFullNeighborSampler, dgl.nn.SAGEConv, dgl.nn.pytorch.SAGEConv,\n"
        "         dgl.nn.pytorch.GATConv, dgl.NID, dgl.MultiLayerFullNeighborSampler]\n"
        "import graphsys.nn.pytorch as dglnn\n"
        "from graphsys.dataloading import DataLoader, NeighborSampler\n"
        "assert dglnn.SAGEConv is dgl.nn.SAGEConv and DataLoader is dl.DataLoader\n"
        "assert dl.NodeDataLoader is DataLoader  # DGL's old name\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
