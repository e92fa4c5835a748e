"""``graphsys.graph((src, dst))``, DGL's ``dgl.graph``: the edges it builds, checked
edge by edge against the input, and its reach from ``import graphsys as dgl``."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

import graphsys
from graphsys import CSCGraph

ROOT = Path(graphsys.__file__).resolve().parent.parent


def edge_pairs(g: CSCGraph) -> Counter:
    src, dst = g.edges()
    return Counter(zip(src.tolist(), dst.tolist(), strict=True))


@pytest.mark.parametrize("kind", ["tensor", "numpy", "list"])
def test_graph_builds_the_given_edges(kind):
    src, dst = [3, 0, 1, 1, 4], [0, 2, 2, 0, 4]
    convert = {"tensor": torch.tensor, "numpy": np.array, "list": list}[kind]
    g = graphsys.graph((convert(src), convert(dst)))
    assert isinstance(g, CSCGraph) and g.num_nodes() == 5 and g.num_edges() == 5
    assert edge_pairs(g) == Counter(zip(src, dst, strict=True))
    assert graphsys.graph((convert(src), convert(dst)), num_nodes=9).num_nodes() == 9


def test_graph_takes_dgl_keywords():
    src, dst = torch.tensor([0, 1]), torch.tensor([1, 2])
    assert graphsys.graph(("coo", (src, dst))).num_edges() == 2
    assert graphsys.graph((src, dst), idtype=torch.int32).idtype == torch.int32
    assert graphsys.graph((src, dst), idtype=torch.int64).idtype == torch.int64
    assert graphsys.graph((src, dst), device="cpu").device == torch.device("cpu")
    from graphsys.graph import graph
    assert graph((src, dst), row_sorted=True).num_edges() == 2


@pytest.mark.parametrize(("args", "kwargs", "error"), [
    ((torch.tensor([0, 1]),), {}, TypeError),
    ((("csr", ([0, 1], [1, 0], [])),), {}, NotImplementedError),
    (((torch.tensor([0]), torch.tensor([1])), "paper"), {}, NotImplementedError),
    (((torch.tensor([0]), torch.tensor([1])),), {"idtype": torch.float32}, ValueError),
])
def test_graph_refuses_what_it_cannot_build(args, kwargs, error):
    with pytest.raises(error):
        graphsys.graph(*args, **kwargs)


def test_import_graphsys_as_dgl_finds_graph_lazily():
    code = (
        "import sys\n"
        "import graphsys as dgl\n"
        "assert 'graphsys.graph' not in sys.modules\n"
        "g = dgl.graph(([0, 1, 2], [1, 2, 0]), num_nodes=3)\n"
        "from graphsys.graph import CSCGraph\n"
        "assert isinstance(g, CSCGraph) and g.num_edges() == 3\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
