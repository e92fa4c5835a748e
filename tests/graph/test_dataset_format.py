"""The on-disk dataset format: round trips, checksums, atomicity and bad input."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_arrays, write_arrays
from graphsys.graph.manifest import manifest_digest

import graphsys
from graphsys import DatasetError, DatasetExistsError, DatasetWriter, load_dataset
from graphsys.graph import ZarrFeatures, verify_dataset


def leftovers(parent: Path, name: str) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(f".{name}")]


@pytest.mark.parametrize("storage", ["raw", "zarr"])
def test_round_trip_identical_arrays(tmp_path, storage):
    arrays = random_arrays(num_nodes=200, num_edges=900, dim=13, seed=7)
    write_arrays(tmp_path / "ds", arrays, storage=storage, chunk_rows=17)
    ds = load_dataset(tmp_path / "ds")
    assert torch.equal(ds.graph.indptr, arrays["graph"].indptr)
    assert torch.equal(ds.graph.indices, arrays["graph"].indices)
    if storage == "zarr":
        assert isinstance(ds.features, ZarrFeatures)
        ids = np.array([5, 199, 0, 5, 42])
        np.testing.assert_array_equal(ds.features[torch.from_numpy(ids)].numpy(),
                                      arrays["features"][ids])
        np.testing.assert_array_equal(ds.features.to_tensor().numpy(), arrays["features"])
        assert ds.features[[]].shape == (0, 13)
    else:
        np.testing.assert_array_equal(ds.features.numpy(), arrays["features"])
    for key in ("labels", "train_idx", "val_idx", "test_idx"):
        np.testing.assert_array_equal(getattr(ds, key).numpy(), arrays[key])
    m = ds.manifest
    assert (m.num_nodes, m.num_edges, m.num_classes) == (200, 900, 3)
    assert m.feature_shape == (200, 13) and m.feature_dtype == "float32"
    assert m.feature_storage == storage
    assert m.splits == {"train": 20, "val": 10, "test": 170}
    assert verify_dataset(tmp_path / "ds", progress=False).ok


def test_manifest_fields(toy_dataset):
    data = json.loads((toy_dataset / "manifest.json").read_text())
    assert data["format_version"] == 1 and data["name"] == "toy"
    assert data["features"] == {"shape": [50, 7], "dtype": "float32", "storage": "raw"}
    for entry in data["arrays"].values():
        assert len(entry["sha256"]) == 64


def test_load_is_lazy(toy_dataset):
    ds = load_dataset(toy_dataset)
    assert "features" not in ds.__dict__ and "graph" not in ds.__dict__
    # Memory-mapped: the tensor's storage is the file, not a private copy.
    features = ds.features
    assert isinstance(features, torch.Tensor)
    assert not features.untyped_storage().resizable()


def test_mapping_never_writes_the_file(toy_dataset):
    ds = load_dataset(toy_dataset)
    ds.features[0, 0] = 1234.0  # copy-on-write: visible here, never on disk
    assert verify_dataset(toy_dataset, progress=False).ok


@pytest.mark.parametrize("key", ["indptr", "indices", "features", "labels", "test_idx"])
def test_flipped_byte_is_caught(toy_dataset, key):
    path = toy_dataset / f"{key}.bin"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    report = verify_dataset(toy_dataset, progress=False)
    assert not report.ok
    assert any(str(path) in p and "checksum mismatch" in p for p in report.problems)
    with pytest.raises(DatasetError, match="re-create"):
        report.raise_if_failed()


def test_flipped_byte_in_zarr_chunk_is_caught(tmp_path, toy_arrays):
    write_arrays(tmp_path / "z", toy_arrays, storage="zarr", chunk_rows=8)
    chunk = next(p for p in (tmp_path / "z" / "features.zarr").rglob("*")
                 if p.is_file() and p.name != "zarr.json")
    data = bytearray(chunk.read_bytes())
    data[-1] ^= 0x80
    chunk.write_bytes(bytes(data))
    assert not verify_dataset(tmp_path / "z", progress=False).ok


def test_truncated_array_names_file(toy_dataset):
    path = toy_dataset / "features.bin"
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size - 4)
    with pytest.raises(DatasetError, match=r"features\.bin is truncated.*re-create"):
        load_dataset(toy_dataset)


def test_missing_array_and_manifest(toy_dataset):
    (toy_dataset / "labels.bin").unlink()
    with pytest.raises(DatasetError, match=r"labels\.bin is missing"):
        load_dataset(toy_dataset)
    (toy_dataset / "manifest.json").unlink()
    with pytest.raises(DatasetError, match=r"manifest\.json is missing"):
        load_dataset(toy_dataset)


def _edit_manifest(path: Path, edit) -> None:
    """Edit the manifest and sign it again: a wrong manifest that is consistent with its
    own digest (a buggy writer), so the checks behind the digest are what must catch it."""
    data = json.loads((path / "manifest.json").read_text())
    edit(data)
    data["manifest_sha256"] = manifest_digest(data)
    (path / "manifest.json").write_text(json.dumps(data))


def test_manifest_disagreeing_with_arrays(toy_dataset):
    _edit_manifest(toy_dataset, lambda d: d.update(num_nodes=51))
    with pytest.raises(DatasetError, match=r"'indptr' has shape \(51,\).*require \(52,\)"):
        load_dataset(toy_dataset)


def test_manifest_shape_disagreeing_with_file(toy_dataset):
    def edit(d):
        d["arrays"]["features"]["shape"] = [50, 8]
    _edit_manifest(toy_dataset, edit)
    with pytest.raises(DatasetError, match=r"features\.bin is truncated"):
        load_dataset(toy_dataset)


def test_manifest_split_size_disagreeing(toy_dataset):
    _edit_manifest(toy_dataset, lambda d: d["splits"].update(train=21))
    with pytest.raises(DatasetError, match="split 'train'"):
        load_dataset(toy_dataset)


def test_manifest_not_json_and_wrong_version(toy_dataset):
    manifest = toy_dataset / "manifest.json"
    text = manifest.read_text()
    manifest.write_text(text[:40])
    with pytest.raises(DatasetError, match="not valid JSON"):
        load_dataset(toy_dataset)
    manifest.write_text(text)
    _edit_manifest(toy_dataset, lambda d: d.update(format_version=99))
    with pytest.raises(DatasetError, match="format version 99"):
        load_dataset(toy_dataset)


def test_manifest_path_escape_refused(toy_dataset):
    def edit(d):
        d["arrays"]["labels"]["path"] = "../elsewhere.bin"
    _edit_manifest(toy_dataset, edit)
    with pytest.raises(DatasetError, match="outside the dataset"):
        load_dataset(toy_dataset)


def test_content_errors_with_valid_checksums(tmp_path):
    arrays = random_arrays()
    arrays["labels"][3] = 9  # num_classes is 3
    write_arrays(tmp_path / "bad", arrays)
    report = verify_dataset(tmp_path / "bad", progress=False)
    assert any("labels[3] = 9" in p for p in report.problems)


def test_existing_output_refused_and_untouched(toy_dataset, toy_arrays):
    before = (toy_dataset / "manifest.json").read_bytes()
    with pytest.raises(DatasetExistsError, match="already exists.*--overwrite"):
        write_arrays(toy_dataset, toy_arrays)
    assert (toy_dataset / "manifest.json").read_bytes() == before


def test_overwrite_replaces(toy_dataset):
    arrays = random_arrays(num_nodes=60, seed=9)
    with DatasetWriter(toy_dataset, name="new", overwrite=True) as writer:
        writer.write_graph(arrays["graph"])
        for key in ("features", "labels", "train_idx", "val_idx", "test_idx"):
            writer.write_array(key, arrays[key])
        writer.finish(num_classes=3)
    assert load_dataset(toy_dataset).manifest.num_nodes == 60
    assert leftovers(toy_dataset.parent, toy_dataset.name) == []


def test_failure_mid_write_leaves_nothing(tmp_path, toy_arrays):
    out = tmp_path / "ds"
    with pytest.raises(RuntimeError, match="killed"):
        with DatasetWriter(out, name="toy") as writer:
            writer.write_graph(toy_arrays["graph"])
            writer.write_array("features", toy_arrays["features"])
            raise RuntimeError("killed")
    assert not out.exists() and leftovers(tmp_path, "ds") == []


def test_missing_arrays_refused_at_finish(tmp_path, toy_arrays):
    with pytest.raises(DatasetError, match=r"\['labels'"):
        with DatasetWriter(tmp_path / "ds", name="toy") as writer:
            writer.write_graph(toy_arrays["graph"])
            writer.write_array("features", toy_arrays["features"])
            writer.finish(num_classes=3)
    assert not (tmp_path / "ds").exists() and leftovers(tmp_path, "ds") == []


def test_full_disk_gives_clear_error_and_leaves_nothing(tmp_path, toy_arrays, monkeypatch):
    from graphsys.graph import writer as writer_module

    real_open = open

    class FullDisk:
        def __init__(self, handle):
            self.handle = handle

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name):
            return getattr(self.handle, name)

    def fake_open(path, mode="r", *args, **kwargs):
        handle = real_open(path, mode, *args, **kwargs)
        return FullDisk(handle) if str(path).endswith("features.bin") else handle

    monkeypatch.setattr(writer_module, "open", fake_open, raising=False)
    out = tmp_path / "ds"
    with pytest.raises(DatasetError, match=r"no space left.*features\.bin.*Free space"):
        write_arrays(out, toy_arrays)
    assert not out.exists() and leftovers(tmp_path, "ds") == []


def test_real_file_size_limit_is_reported(tmp_path, toy_arrays):
    """A real write failure from the kernel (RLIMIT_FSIZE -> EFBIG) in a child process."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import resource, signal, sys
        sys.path.insert(0, {str(Path(__file__).parents[1])!r})
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
        from conftest import random_arrays, write_arrays
        from graphsys import DatasetError
        try:
            write_arrays({str(tmp_path / "ds")!r}, random_arrays(num_nodes=500, dim=64))
        except DatasetError as exc:
            print("ERROR", exc)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120)
    assert "ERROR no space left" in result.stdout, result.stdout + result.stderr
    assert not (tmp_path / "ds").exists() and leftovers(tmp_path, "ds") == []


def test_stale_partial_from_dead_writer_is_removed(tmp_path, toy_arrays):
    stale = tmp_path / ".ds.partial-999999999-deadbeef"
    stale.mkdir()
    (stale / "indptr.bin").write_bytes(b"half")
    write_arrays(tmp_path / "ds", toy_arrays)
    assert not stale.exists() and load_dataset(tmp_path / "ds").manifest.num_nodes == 50


def test_not_a_directory(tmp_path):
    with pytest.raises(DatasetError, match="not a directory"):
        graphsys.load_dataset(tmp_path / "nope")


def test_float16_and_empty_splits(tmp_path):
    arrays = random_arrays(num_nodes=10, num_edges=0)
    arrays["features"] = arrays["features"].astype(np.float16)
    arrays["val_idx"] = np.array([], dtype=np.int64)
    arrays["test_idx"] = np.array([], dtype=np.int64)
    write_arrays(tmp_path / "h", arrays)
    ds = load_dataset(tmp_path / "h")
    assert ds.features.dtype == torch.float16 and ds.val_idx.numel() == 0
    assert ds.graph.num_edges() == 0
    assert verify_dataset(tmp_path / "h", progress=False).ok
