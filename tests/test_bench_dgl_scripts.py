"""bench/dgl_scripts.py: the DGL twin of each example is the example with only its
imports and ``load_data`` changed, and it is fed the very arrays graphsys trains on."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from dgl_scripts import DGL_PYTHON, SCRIPTS, dgl_twin, export_npz  # noqa: E402

PLANETOID = ROOT.parent / "shared" / "data" / "planetoid"


def _imports(tree: ast.Module) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("script", SCRIPTS)
def test_twin_changes_only_imports_and_load_data(script: str) -> None:
    ours = (ROOT / "examples" / "dgl" / script).read_text()
    twin = dgl_twin(ours)
    ours_tree, twin_tree = ast.parse(ours), ast.parse(twin)
    assert not any(n.startswith("graphsys") for n in _imports(twin_tree))
    assert {"dgl", "dgl.nn", "dgl.dataloading"} <= _imports(twin_tree)

    def body(tree: ast.Module) -> list[str]:  # every top-level statement but the swaps
        return [ast.dump(n) for n in tree.body
                if not isinstance(n, ast.Import | ast.ImportFrom)
                and not (isinstance(n, ast.FunctionDef) and n.name == "load_data")]

    assert body(ours_tree) == body(twin_tree)
    load = next(n for n in twin_tree.body if isinstance(n, ast.FunctionDef)
                and n.name == "load_data")
    assert "graph.npz" in ast.get_source_segment(twin, load)


def test_twin_refuses_an_example_it_cannot_swap() -> None:
    with pytest.raises(ValueError, match="import lines"):
        dgl_twin("import torch\n\ndef load_data(path):\n    pass\n")


@pytest.mark.skipif(not PLANETOID.is_dir(), reason="needs ../shared/data/planetoid")
def test_export_holds_the_graph_and_arrays_graphsys_trains_on(tmp_path: Path) -> None:
    import graphsys
    from graphsys.datasets.planetoid import prepare_planetoid

    prepare_planetoid(PLANETOID, tmp_path / "cora", "cora")
    shape = export_npz(tmp_path / "cora", tmp_path / "npz")
    d = np.load(tmp_path / "npz" / "graph.npz")
    ds = graphsys.load_dataset(tmp_path / "cora")
    g = ds[0]
    assert shape == {"num_nodes": 2708, "num_edges": 10556, "feat_dim": 1433}
    # every edge u -> v of the CSC graph, as (dst, src) pairs, and nothing else
    indptr, indices = g.indptr.numpy(), g.indices.numpy()
    expected = sorted((v, int(u)) for v in range(g.num_nodes())
                      for u in indices[indptr[v]:indptr[v + 1]])
    assert sorted(zip(d["dst"].tolist(), d["src"].tolist(), strict=True)) == expected
    np.testing.assert_array_equal(d["feat"], np.asarray(ds.features[:]))
    np.testing.assert_array_equal(d["label"], np.asarray(ds.labels[:]))
    assert np.flatnonzero(d["train_mask"]).tolist() == np.asarray(ds.train_idx).tolist()
    assert int(d["num_classes"]) == ds.num_classes == 7


@pytest.mark.skipif(not DGL_PYTHON.exists() or not PLANETOID.is_dir(),
                    reason="needs bench/.dgl-venv (bash bench/dgl_env.sh) and Cora")
def test_bench_runs_both_contenders(tmp_path: Path) -> None:
    out = tmp_path / "d.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "dgl_scripts.py"),
                           "--rounds", "1", "--epochs", "1", "--profile", "0",
                           "--scripts", "node_classification.py", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(out.read_text())
    s = result["scripts"]["node_classification.py"]
    for who in ("graphsys", "dgl"):
        assert s[who]["main_s"][0] > 0 and 0 < s[who]["test_acc"][0] <= 1
    assert s["dgl"]["torch"].startswith("2.2") and s["graphsys"]["threads"] == 2
    assert s["dgl_over_graphsys_main"] == pytest.approx(
        s["dgl"]["main_s_median"] / s["graphsys"]["main_s_median"])
    assert out.with_suffix(".png").stat().st_size > 0
