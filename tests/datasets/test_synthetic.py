"""The synthetic generator: exact sizes, determinism, the degree law, homophily, and
that the graph carries signal a feature-only model cannot see."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from graphsys import DatasetExistsError, load_dataset
from graphsys.datasets import synthetic
from graphsys.datasets.synthetic import SyntheticConfig, generate_synthetic

SMALL = SyntheticConfig(num_nodes=3000, num_edges=45_000, feat_dim=8, num_classes=5)


def make(tmp_path: Path, config: SyntheticConfig = SMALL, name: str = "syn", **kwargs):
    manifest = generate_synthetic(tmp_path / name, config, progress=False, **kwargs)
    return manifest, load_dataset(tmp_path / name)


def hashes(manifest) -> dict[str, str]:
    return {key: entry.sha256 for key, entry in manifest.arrays.items()}


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_sizes_dtypes_and_valid_csc(tmp_path: Path, dtype: str) -> None:
    config = replace(SMALL, dtype=dtype)
    manifest, ds = make(tmp_path, config)
    assert manifest.name == "synthetic-3000-45000"
    assert manifest.source == {"kind": "synthetic", "generator_version": 1,
                               **{k: getattr(config, k) for k in config.__dataclass_fields__}}
    graph = ds.graph
    graph.validate()
    assert (graph.num_nodes(), graph.num_edges()) == (3000, 45_000)
    assert graph.indices.dtype == torch.int32
    src, dst = graph.edges()
    assert not torch.any(src == dst), "self loops are avoided"
    assert ds.features.shape == (3000, 8)
    assert ds.features.dtype == getattr(torch, dtype)
    assert torch.isfinite(ds.features.float()).all()
    assert ds.labels.dtype == torch.int64
    assert set(ds.labels.unique().tolist()) == set(range(5)) and ds.num_classes == 5
    splits = [ds.train_idx, ds.val_idx, ds.test_idx]
    assert [len(s) for s in splits] == [1800, 600, 600]
    assert all(s.dtype == torch.int64 and torch.all(s[1:] > s[:-1]) for s in splits)
    assert len(torch.cat(splits).unique()) == 3000


def test_zarr_features_equal_raw(tmp_path: Path) -> None:
    raw_manifest, raw = make(tmp_path, name="raw")
    zarr_manifest, zarr = make(tmp_path, name="zarr", feature_storage="zarr")
    assert zarr_manifest.feature_storage == "zarr"
    assert torch.equal(zarr.features.to_tensor(), raw.features)
    same = {k: v for k, v in hashes(raw_manifest).items() if k != "features"}
    assert same.items() <= hashes(zarr_manifest).items()


def test_deterministic_for_a_seed_whatever_the_block_size(tmp_path: Path) -> None:
    config = replace(SMALL, num_nodes=20_000, num_edges=100_000)  # five random blocks
    runs = [hashes(make(tmp_path, config, name=f"run{i}", block_nodes=b)[0])
            for i, b in enumerate((1 << 16, 1 << 16, 4096, 5000, 1))]
    assert all(run == runs[0] for run in runs)
    other = hashes(make(tmp_path, replace(config, seed=1), name="seed1")[0])
    assert all(other[key] != runs[0][key] for key in other)


@pytest.mark.parametrize(("nodes", "edges"), [(32, 0), (32, 5), (1000, 700), (32, 32 * 31),
                                              (5000, 123_457), (100_000, 2_000_000)])
def test_in_degrees_sum_exactly(nodes: int, edges: int) -> None:
    config = SyntheticConfig(num_nodes=nodes, num_edges=edges)
    degrees = synthetic._in_degrees(config)
    assert degrees.dtype == np.int64 and degrees.sum() == edges
    assert degrees.min() >= 0 and degrees.max() <= min(nodes - 1, max(
        2 * math.ceil(edges / nodes), math.isqrt(edges)))


@pytest.mark.parametrize("exponent", [2.1, 2.6])
def test_in_degrees_follow_the_power_law(exponent: float) -> None:
    config = SyntheticConfig(degree_exponent=exponent)  # 100k nodes, 2M edges
    degrees = synthetic._in_degrees(config)
    assert degrees.max() > 30 * degrees.mean()
    # The CCDF of a power law of exponent a has log-log slope 1 - a.
    xs = np.unique(np.geomspace(8, 120, 16).astype(int))
    ccdf = np.array([(degrees >= x).mean() for x in xs])
    slope = np.polyfit(np.log(xs), np.log(ccdf), 1)[0]
    assert slope == pytest.approx(1 - exponent, abs=0.15)


@pytest.mark.parametrize("homophily", [0.0, 0.3, 0.8, 1.0])
def test_edge_homophily_matches_config(tmp_path: Path, homophily: float) -> None:
    _, ds = make(tmp_path, replace(SMALL, homophily=homophily))
    src, dst = ds.graph.edges()
    same = (ds.labels[src] == ds.labels[dst]).double().mean().item()
    assert same == pytest.approx(homophily, abs=0.01)


def _test_accuracy(x: np.ndarray, ds, steps: int = 300) -> float:
    """Full-batch softmax regression on ``x``; accuracy on the test split."""
    torch.manual_seed(0)
    x = torch.from_numpy(x)
    train, test, y = ds.train_idx, ds.test_idx, ds.labels
    x = (x - x[train].mean(0)) / (x[train].std(0) + 1e-6)
    model = torch.nn.Linear(x.shape[1], ds.num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=1e-4)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[train]), y[train]).backward()
        opt.step()
    with torch.no_grad():
        return (model(x[test]).argmax(1) == y[test]).double().mean().item()


def test_graph_model_beats_feature_only_model(tmp_path: Path) -> None:
    config = SyntheticConfig(num_nodes=20_000, num_edges=400_000)  # default features
    _, ds = make(tmp_path, config)
    x = ds.features.numpy()
    graph = ds.graph
    # Row v of A averages the in-neighbours of v: a linear 2-layer GNN (SGC) on [x, Ax, A²x].
    adj = sp.csr_matrix((np.ones(graph.num_edges(), np.float32), graph.indices.numpy(),
                         graph.indptr.numpy()), shape=(20_000, 20_000))
    adj = sp.diags(1 / np.maximum(1, graph.in_degrees().numpy()).astype(np.float32)) @ adj
    hop1 = adj @ x
    features_only = _test_accuracy(x, ds)
    with_graph = _test_accuracy(np.hstack([x, hop1, adj @ hop1]), ds)
    print(f"test accuracy: features only {features_only:.3f}, 2-hop SGC {with_graph:.3f}")
    assert 0.35 < features_only < 0.7
    assert with_graph > 0.9 and with_graph > features_only + 0.25


@pytest.mark.parametrize(("field", "value"), [
    ("num_nodes", 0), ("num_nodes", 9), ("num_nodes", 10.0), ("num_edges", -1),
    ("num_edges", 10 * 9 + 1), ("feat_dim", 0), ("num_classes", 1), ("num_classes", True),
    ("degree_exponent", 1.0), ("degree_exponent", float("nan")), ("homophily", 1.5),
    ("feature_noise", -0.1), ("dtype", "float64"), ("seed", -1), ("train_frac", 1.2),
    ("val_frac", -0.1), ("test_frac", "0.2"),
])
def test_invalid_config_names_the_field(field: str, value: object) -> None:
    base = {"num_nodes": 10, "num_edges": 20, "num_classes": 5}
    with pytest.raises(ValueError, match=field):
        SyntheticConfig(**{**base, field: value})


def test_split_fractions_must_fit() -> None:
    with pytest.raises(ValueError, match="train_frac"):
        SyntheticConfig(train_frac=0.6, val_frac=0.3, test_frac=0.2)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="feature_storage"):
        generate_synthetic(tmp_path / "a", SMALL, feature_storage="hdf5")  # type: ignore
    with pytest.raises(ValueError, match="block_nodes"):
        generate_synthetic(tmp_path / "a", SMALL, block_nodes=0)
    assert not (tmp_path / "a").exists()


def test_existing_output(tmp_path: Path) -> None:
    manifest, _ = make(tmp_path)
    with pytest.raises(DatasetExistsError):
        make(tmp_path, replace(SMALL, seed=3))
    again, _ = make(tmp_path, replace(SMALL, seed=3), overwrite=True)
    assert hashes(again) != hashes(manifest)


def test_failure_mid_generation_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    calls = []
    real = synthetic._block_features

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("injected failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(synthetic, "_block_features", failing)
    config = replace(SMALL, num_nodes=20_000, num_edges=100_000)
    with pytest.raises(RuntimeError, match="injected"):
        generate_synthetic(tmp_path / "out", config, progress=False, block_nodes=4096)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("options", "named"), [
    (["--nodes", "0"], "(--nodes)"), (["--exponent", "nan"], "(--exponent)"),
    (["--homophily", "2"], "(--homophily)"), (["--noise", "-1"], "(--noise)"),
    (["--seed", "-1"], "(--seed)"), (["--classes", "100000"], "(--nodes)"),
    (["--nodes", str(10**14)], "lower --nodes"),
    (["--nodes", str(10**8), "--dim", "4096"], "or write it elsewhere with --out"),
])
def test_invalid_prepare_options_are_one_line(tmp_path: Path, options, named) -> None:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "graphsys", "prepare", "synthetic",
                             *options, "--out", str(tmp_path / "d"), "--no-progress"],
                            capture_output=True, text=True, timeout=120)
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(errors) == 1 and named in errors[0], errors
    assert list(tmp_path.iterdir()) == []


def test_size_estimate_bounds_what_is_written(tmp_path: Path) -> None:
    manifest, _ = make(tmp_path)
    written = sum(f.stat().st_size for f in (tmp_path / "syn").rglob("*") if f.is_file())
    estimate = synthetic.estimated_disk_bytes(SMALL)
    assert written <= estimate <= 1.2 * written + (64 << 10)


def test_a_disk_too_small_is_refused_before_writing(tmp_path: Path, monkeypatch) -> None:
    from graphsys.errors import DiskSpaceError

    real = synthetic.shutil.disk_usage
    need = synthetic.estimated_disk_bytes(SMALL)
    monkeypatch.setattr(synthetic.shutil, "disk_usage",
                        lambda p: real(p)._replace(free=need - 1))
    with pytest.raises(DiskSpaceError, match="needs up to .* on disk"):
        generate_synthetic(tmp_path / "d", SMALL, progress=False)
    assert not (tmp_path / "d").exists()
    monkeypatch.setattr(synthetic.shutil, "disk_usage", lambda p: real(p)._replace(free=need))
    generate_synthetic(tmp_path / "d", SMALL, progress=False)
