"""The Planetoid reader against the Cora files and a plain-pickle reference."""

from __future__ import annotations

import pickle
import re
import shutil

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from graphsys import InputFormatError, UnsafePickleError, load_dataset, verify_dataset
from graphsys.datasets.planetoid import normalize_rows, prepare_planetoid, read_planetoid
from graphsys.datasets.safe_pickle import safe_load


def trusted_load(path):
    """The unrestricted loader, acceptable only in a test on the known Cora files."""
    with open(path, "rb") as handle:
        return pickle.load(handle, encoding="latin1")


def test_cora_counts(planetoid_dir):
    data = read_planetoid(planetoid_dir, "cora")
    assert data.graph.num_nodes() == 2708
    assert data.graph.num_edges() == 10556  # 5278 undirected pairs, both directions
    assert data.features.shape == (2708, 1433) and data.num_classes == 7
    assert (len(data.train_idx), len(data.val_idx), len(data.test_idx)) == (140, 500, 1000)
    data.graph.validate()
    src, dst = (t.numpy() for t in data.graph.edges())
    assert not np.any(src == dst)
    pairs = set(zip(src.tolist(), dst.tolist(), strict=True))
    assert len(pairs) == 10556 and all((d, s) in pairs for s, d in pairs)
    assert np.bincount(data.labels).tolist() == [351, 217, 418, 818, 426, 298, 180]


def test_cora_matches_plain_pickle_reference(planetoid_dir):
    data = read_planetoid(planetoid_dir, "cora")
    raw = {k: trusted_load(planetoid_dir / f"ind.cora.{k}")
           for k in ("x", "y", "allx", "ally", "tx", "ty", "graph")}
    test_index = np.loadtxt(planetoid_dir / "ind.cora.test.index", dtype=np.int64)
    features = sp.vstack([raw["allx"], raw["tx"]]).toarray()
    labels = np.vstack([raw["ally"], raw["ty"]]).argmax(1)
    order = np.sort(test_index)
    features[test_index] = features[order].copy()
    labels[test_index] = labels[order].copy()
    np.testing.assert_array_equal(data.features, features.astype(np.float32))
    np.testing.assert_array_equal(data.labels, labels)
    np.testing.assert_array_equal(data.test_idx, order)
    dense = np.zeros((2708, 2708), dtype=bool)
    for node, neighbours in raw["graph"].items():
        for other in neighbours:
            if node != other:
                dense[node, other] = dense[other, node] = True
    got = np.zeros_like(dense)
    src, dst = (t.numpy() for t in data.graph.edges())
    got[src, dst] = True
    np.testing.assert_array_equal(got, dense)


@pytest.mark.parametrize("storage", ["raw", "zarr"])
def test_cora_round_trip(planetoid_dir, tmp_path, storage):
    data = read_planetoid(planetoid_dir, "cora")
    prepare_planetoid(planetoid_dir, tmp_path / "cora", "cora", feature_storage=storage)
    ds = load_dataset(tmp_path / "cora")
    features = ds.features if storage == "raw" else ds.features.to_tensor()
    np.testing.assert_array_equal(features.numpy(), data.features)
    np.testing.assert_array_equal(ds.labels.numpy(), data.labels)
    np.testing.assert_array_equal(ds.graph.indices.numpy(), data.graph.indices.numpy())
    assert ds.manifest.splits == {"train": 140, "val": 500, "test": 1000}
    assert verify_dataset(tmp_path / "cora", progress=False).ok


def test_normalize_rows_divides_by_row_sums_and_keeps_zero_rows():
    x = np.array([[1, 0, 3], [0, 0, 0], [0.5, 0.25, 0.25], [2, 2, 0]], dtype=np.float32)
    got = normalize_rows(x)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got[1], 0)  # CiteSeer's featureless nodes stay 0
    np.testing.assert_allclose(got, [[0.25, 0, 0.75], [0, 0, 0], [0.5, 0.25, 0.25],
                                     [0.5, 0.5, 0]], rtol=1e-7)
    np.testing.assert_array_equal(x[1], 0)  # the input is left as it was


@pytest.mark.parametrize("storage", ["raw", "zarr"])
def test_row_normalize_writes_dgl_features(planetoid_dir, tmp_path, storage):
    raw = read_planetoid(planetoid_dir, "cora").features
    manifest = prepare_planetoid(planetoid_dir, tmp_path / "cora", "cora",
                                 feature_storage=storage, row_normalize=True)
    assert manifest.source["row_normalize"] is True
    ds = load_dataset(tmp_path / "cora")
    assert ds.manifest.source["row_normalize"] is True
    features = (ds.features if storage == "raw" else ds.features.to_tensor()).numpy()
    sums = raw.sum(1, keepdims=True)
    expected = np.divide(raw, sums, out=np.zeros_like(raw), where=sums != 0)
    np.testing.assert_array_equal(features, expected)  # binary rows: exactly x / sum
    np.testing.assert_allclose(features.sum(1), np.where(sums[:, 0] > 0, 1.0, 0.0), rtol=1e-5)
    g = ds[0]  # DGL's dataset[0]: the same features, and the split masks
    np.testing.assert_array_equal(np.asarray(g.ndata["feat"][:]), expected)
    for split, count in (("train", 140), ("val", 500), ("test", 1000)):
        mask = g.ndata[f"{split}_mask"]
        assert mask.dtype == torch.bool and int(mask.sum()) == count
        assert torch.equal(torch.nonzero(mask).squeeze(1), getattr(ds, f"{split}_idx").long())
    assert verify_dataset(tmp_path / "cora", progress=False).ok


def test_default_keeps_the_raw_features_byte_for_byte(planetoid_dir, tmp_path):
    raw = read_planetoid(planetoid_dir, "cora").features
    manifest = prepare_planetoid(planetoid_dir, tmp_path / "cora", "cora")
    assert "row_normalize" not in manifest.source  # earlier manifests: no new key
    assert (tmp_path / "cora" / "features.bin").read_bytes() == raw.tobytes()


class Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > /dev/null",))


def test_restricted_unpickler_refuses_crafted_pickle(tmp_path):
    path = tmp_path / "ind.evil.x"
    path.write_bytes(pickle.dumps(Exploit(), protocol=2))
    with pytest.raises(UnsafePickleError, match=r"ind\.evil\.x asks to load posix\.system"):
        safe_load(path)


def test_restricted_unpickler_refuses_nested_type(tmp_path):
    path = tmp_path / "nested"
    path.write_bytes(pickle.dumps({"a": [1, 2, Exploit()]}, protocol=4))
    with pytest.raises(UnsafePickleError, match="not a type a dataset file needs"):
        safe_load(path)


def test_restricted_unpickler_reads_allowed_types(tmp_path):
    obj = {"m": sp.csr_matrix(np.eye(3, dtype=np.float32)), "a": np.arange(4), "l": [1, 2]}
    path = tmp_path / "ok"
    path.write_bytes(pickle.dumps(obj, protocol=2))
    back = safe_load(path)
    assert (back["m"] != obj["m"]).nnz == 0 and back["l"] == [1, 2]
    np.testing.assert_array_equal(back["a"], obj["a"])


def test_crafted_file_in_dataset_directory_refused(planetoid_dir, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(planetoid_dir, raw)
    (raw / "ind.cora.graph").write_bytes(pickle.dumps(Exploit(), protocol=2))
    with pytest.raises(UnsafePickleError, match=r"ind\.cora\.graph"):
        prepare_planetoid(raw, tmp_path / "out", "cora")
    assert not (tmp_path / "out").exists()


def test_truncated_pickle(planetoid_dir, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(planetoid_dir, raw)
    path = raw / "ind.cora.allx"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(InputFormatError, match=r"ind\.cora\.allx is not a readable pickle"):
        read_planetoid(raw, "cora")


def test_missing_files(tmp_path):
    with pytest.raises(InputFormatError, match=r"ind\.citeseer\.x.*--raw must be"):
        read_planetoid(tmp_path, "citeseer")


def test_citeseer_style_gaps(planetoid_dir, tmp_path):
    """Test ids with a hole in their range (CiteSeer's isolated nodes) get no label."""
    raw = tmp_path / "raw"
    shutil.copytree(planetoid_dir, raw)
    ids = np.loadtxt(raw / "ind.cora.test.index", dtype=np.int64)
    ids[ids == ids.max()] = ids.max() + 5  # leaves ids max..max+4 out of the files
    np.savetxt(raw / "ind.cora.test.index", ids, fmt="%d")
    data = read_planetoid(raw, "cora")
    assert data.graph.num_nodes() == 2708 + 5
    gap = np.setdiff1d(np.arange(1708, 2713), ids)
    assert len(gap) == 5 and np.all(data.labels[gap] == -1)
    assert not data.features[gap].any()


def _cora_with(planetoid_dir, tmp_path, part, content):
    raw = tmp_path / "raw"
    shutil.copytree(planetoid_dir, raw)
    path = raw / f"ind.cora.{part}"
    if isinstance(content, str):
        path.write_text(content)
    else:
        path.write_bytes(pickle.dumps(content, protocol=2))
    return raw


# Files of the wrong content, each made only of types the unpickler allows; Cora has
# 140 training nodes, 1708 allx rows, 1000 test rows, 1433 features and 7 classes.
WRONG_CONTENT = {
    "x of strings": ("x", np.array(["a", "b"]), "2-D matrix"),
    "x as a list": ("x", [1, 2, 3], "2-D matrix, found list"),
    "x of another width": ("x", np.zeros((140, 5), np.float32), "first rows of allx"),
    "allx with NaN": ("allx", sp.csr_matrix(np.full((1708, 1433), np.nan, np.float32)),
                      "NaN or infinite"),
    "allx of complex numbers": ("allx", np.zeros((1708, 1433), np.complex64), "complex64"),
    "ally of strings": ("ally", np.full((1708, 7), "a"), "<U1"),
    "ally not one-hot": ("ally", np.full((1708, 7), 2.0), "one-hot"),
    "ty 3-D": ("ty", np.zeros((1000, 7, 2)), "3 dimension"),
    "graph as a list": ("graph", [[1, 2], [0]], "dict of adjacency lists"),
    "graph with string ids": ("graph", {"0": [1]}, "not an integer node id"),
    "graph with float ids": ("graph", {i: [1.5] for i in range(2708)},
                             "not an integer node id"),
    "graph with nested lists": ("graph", {i: [[1]] for i in range(2708)},
                                "not an integer node id"),
    "test.index too large": ("test.index", "99999999999999999999\n", "one node id per line"),
    "test.index repeats": ("test.index", "2000\n" * 1000, "more than once"),
}


@pytest.mark.parametrize("case", WRONG_CONTENT, ids=list(WRONG_CONTENT))
def test_files_of_the_wrong_content_are_named(planetoid_dir, tmp_path, case):
    part, content, message = WRONG_CONTENT[case]
    raw = _cora_with(planetoid_dir, tmp_path, part, content)
    with pytest.raises(InputFormatError, match=rf"ind\.cora\.{re.escape(part)}") as info:
        prepare_planetoid(raw, tmp_path / "out", "cora")
    assert message in str(info.value)
    assert not (tmp_path / "out").exists()


def test_wrong_content_is_one_line_from_the_cli(planetoid_dir, tmp_path):
    import subprocess
    import sys

    raw = _cora_with(planetoid_dir, tmp_path, "graph", {0: ["x"]})
    result = subprocess.run([sys.executable, "-m", "graphsys", "prepare", "planetoid",
                             "--raw", str(raw), "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=120)
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(errors) == 1 and "ind.cora.graph" in errors[0]
    assert not (tmp_path / "out").exists()
