"""A damaged graph raises one clear error, never crashes a compiled kernel (issue 15)."""

from __future__ import annotations

import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import graphsys
from conftest import damaged_copy, synthetic_dir
from graphsys import CSCGraph, InputFormatError, NeighborSampler
from graphsys.cuda import GPUNeighborSampler
from graphsys.datasets.planetoid import read_planetoid


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    return synthetic_dir(tmp_path_factory, "dmg", num_nodes=500, num_edges=4000, feat_dim=8,
                         num_classes=3, seed=1)


def _damaged(dataset_dir, tmp_path, key, position, value):
    return damaged_copy(dataset_dir, tmp_path / "copy", key, position, value)


def _train(root):
    return subprocess.run([sys.executable, "-m", "graphsys", "train", str(root), "--epochs", "1",
                           "--eval-every", "0", "--fanouts", "3,3", "--no-progress"],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("key,where,value", [
    ("indices", 17, 10**9),   # a source id far outside the graph
    ("indices", -1, -5),      # a negative id
    ("indptr", 100, 10**7),   # indptr no longer monotone
])
def test_train_on_a_damaged_graph_exits_2_with_one_line(dataset_dir, tmp_path, key, where,
                                                        value) -> None:
    root = _damaged(dataset_dir, tmp_path, key, where, value)
    result = _train(root)
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(root) in lines[0] and "damaged" in lines[0], lines
    assert _train(dataset_dir).returncode == 0  # the intact dataset still trains


def test_hand_built_graph_is_checked_before_the_kernels() -> None:
    indptr = torch.tensor([0, 2, 3, 3], dtype=torch.int64)
    indices = torch.tensor([1, 2, 10**9], dtype=torch.int64)  # ends are right, an id is not
    graph = CSCGraph(indptr, indices)
    for sampler in (NeighborSampler([2]), GPUNeighborSampler([2])):
        with pytest.raises(InputFormatError, match="node ids"):
            sampler.sample(graph, [0, 1])
    good = CSCGraph(indptr, torch.tensor([1, 2, 0]))
    batch = NeighborSampler([2]).sample(good, [0, 1])  # and a valid one samples
    assert sorted(batch.input_nodes.tolist()) == [0, 1, 2]


def test_crafted_planetoid_sparse_matrix_is_refused(planetoid_dir, tmp_path) -> None:
    """A CSR matrix of allow-listed types whose column index is 10**9: scipy's todense()
    would write out of bounds; the reader refuses it first."""
    raw = tmp_path / "raw"
    shutil.copytree(planetoid_dir, raw)
    matrix = sp.csr_matrix(np.eye(3, dtype=np.float32))
    matrix.indices[1] = 10**9
    (raw / "ind.cora.tx").write_bytes(pickle.dumps(matrix, protocol=2))
    with pytest.raises(InputFormatError, match=r"ind\.cora\.tx holds a damaged sparse matrix"):
        read_planetoid(raw, "cora")
    result = subprocess.run([sys.executable, "-m", "graphsys", "prepare", "planetoid",
                             "--raw", str(raw), "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "ind.cora.tx" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def zarr_dataset(tmp_path_factory):
    from conftest import random_arrays, write_arrays

    out = tmp_path_factory.mktemp("zarr") / "toy"
    arrays = random_arrays(num_nodes=300, num_edges=2000, dim=6)
    arrays["features"][:100] = 0  # a whole chunk of zeros is still written
    write_arrays(out, arrays, storage="zarr", chunk_rows=50)
    return out, arrays


def _feature_chunks(root):
    entry = graphsys.load_dataset(root).manifest.arrays["features"]
    return sorted(p for p in (root / entry.path).rglob("*") if p.is_file()
                  and not p.name.startswith(("zarr.json", ".z")))


def test_zarr_chunks_all_written_and_read_back(zarr_dataset) -> None:
    root, arrays = zarr_dataset
    assert len(_feature_chunks(root)) == 6  # 300 rows / 50, the zero chunks included
    got = graphsys.load_dataset(root).features[np.arange(300)].numpy()
    np.testing.assert_array_equal(got, arrays["features"])


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_damaged_zarr_chunk_is_named_not_read_as_zeros(zarr_dataset, tmp_path, damage) -> None:
    root = tmp_path / "copy"
    shutil.copytree(zarr_dataset[0], root)
    chunk = _feature_chunks(root)[3]
    if damage == "delete":
        chunk.unlink()
    else:
        chunk.write_bytes(chunk.read_bytes()[:10])
    with pytest.raises(graphsys.DatasetError, match="damaged"):
        dataset = graphsys.load_dataset(root)
        dataset.features[np.arange(300)]
    result = _train(root)
    assert result.returncode == 2 and "damaged" in result.stderr, result.stderr[-1500:]


def test_edited_manifest_is_refused(dataset_dir, tmp_path) -> None:
    """float32 -> int32 keeps the byte size, so only the manifest's own digest sees it."""
    import json

    root = tmp_path / "copy"
    shutil.copytree(dataset_dir, root)
    data = json.loads((root / "manifest.json").read_text())
    assert "manifest_sha256" in data
    data["arrays"]["features"]["dtype"] = "int32"
    data["features"]["dtype"] = "int32"
    (root / "manifest.json").write_text(json.dumps(data, indent=2))
    with pytest.raises(graphsys.DatasetError, match="edited"):
        graphsys.load_dataset(root)
    result = _train(root)
    assert result.returncode == 2 and "edited" in result.stderr


def test_symlink_out_of_the_dataset_is_refused(dataset_dir, tmp_path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(dataset_dir, root)
    entry = graphsys.load_dataset(root).manifest.arrays["labels"]
    outside = tmp_path / "elsewhere.bin"
    shutil.move(root / entry.path, outside)
    (root / entry.path).symlink_to(outside)
    with pytest.raises(graphsys.DatasetError, match="outside the dataset"):
        graphsys.load_dataset(root)
    inner = root / "labels_copy.bin"  # a link that stays inside is fine
    shutil.copy(outside, inner)
    (root / entry.path).unlink()
    (root / entry.path).symlink_to(inner)
    graphsys.load_dataset(root)


def test_in_range_damage_is_caught_at_first_read(dataset_dir, tmp_path) -> None:
    """A label that stays a valid class, an edge to another real node: range checks pass,
    the checksum at first read does not (before, only graphsys verify saw them)."""
    labels = graphsys.load_dataset(dataset_dir).labels
    root = _damaged(dataset_dir, tmp_path, "labels", 5, (int(labels[5]) + 1) % 3)
    dataset = graphsys.load_dataset(root)  # sizes and manifest are fine
    with pytest.raises(graphsys.ChecksumError, match=r"labels\.bin.*fails its checksum"):
        dataset.labels
    indices = graphsys.load_dataset(dataset_dir).graph.indices
    root = damaged_copy(dataset_dir, tmp_path / "edge", "indices", 3, (int(indices[3]) + 1) % 500)
    with pytest.raises(graphsys.ChecksumError, match=r"indices\.bin"):
        graphsys.load_dataset(root).graph
    assert graphsys.verify_dataset(root, progress=False).problems  # verify agrees


def _cli(*args, timeout=300):
    result = subprocess.run([sys.executable, "-m", "graphsys", *map(str, args)],
                            capture_output=True, text=True, timeout=timeout)
    return result.returncode, [line for line in result.stderr.splitlines() if line.strip()]


# name -> (damage to a copy of the dataset, the file the errors must name)
COMMAND_DAMAGE = {
    "label flipped in range": (lambda r: _flip(r / "labels.bin", 40), "labels.bin"),
    "edge to another node": (lambda r: _flip(r / "indices.bin", 64), "indices.bin"),
    "features truncated": (lambda r: _truncate(r / "features.bin"), "features.bin"),
    "manifest edited": (lambda r: _edit_manifest(r), "manifest.json"),
}


def _flip(path, offset) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def _edit_manifest(root) -> None:
    path = root / "manifest.json"
    path.write_text(path.read_text().replace('"float32"', '"int32"', 1))


@pytest.mark.parametrize("case", COMMAND_DAMAGE, ids=list(COMMAND_DAMAGE))
def test_every_command_refuses_damaged_data(dataset_dir, tmp_path, case) -> None:
    """verify, pack and train as subprocesses: never a signal, never exit 0, the damaged
    file named, no pack left behind; info (which reads only the manifest) refuses what
    the manifest checks see. The intact dataset then works."""
    damage, named = COMMAND_DAMAGE[case]
    root = tmp_path / "copy"
    shutil.copytree(dataset_dir, root)
    damage(root)
    rc, errors = _cli("verify", root, "--no-progress")
    assert rc in (1, 2) and any(named in line for line in errors), (rc, errors)
    pack = tmp_path / "pack"
    rc, errors = _cli("pack", root, "--epochs", "1", "--fanouts", "3,3", "--pack", pack,
                      "--no-progress")
    if named == "labels.bin":  # pack reads the graph, the split and the features only
        assert rc == 0, errors
    else:
        assert rc == 2 and len(errors) == 1 and named in errors[0], ("pack", rc, errors)
        assert not pack.exists() and not (tmp_path / ".pack.packing").exists()
    rc, errors = _cli("train", root, "--epochs", "1", "--eval-every", "0", "--fanouts", "3,3",
                      "--no-progress")
    assert rc == 2 and len(errors) == 1 and named in errors[0], ("train", rc, errors)
    rc, errors = _cli("info", root)
    if named in ("features.bin", "manifest.json"):  # what load_dataset checks at open
        assert rc == 2 and len(errors) == 1 and named in errors[0], errors
    else:
        assert rc == 0  # array bytes are checked at first read and by verify, not by info
    assert _cli("info", dataset_dir)[0] == 0
    assert _cli("verify", dataset_dir, "--no-progress")[0] == 0
