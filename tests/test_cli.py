"""The graphsys command line, run as a user runs it (a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def graphsys(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "graphsys", *args], capture_output=True,
                          text=True, timeout=300)


def test_prepare_planetoid_info_verify(planetoid_dir, tmp_path):
    out = tmp_path / "cora"
    result = graphsys("prepare", "planetoid", "--raw", str(planetoid_dir), "--name", "cora",
                      "--out", str(out), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "10,556" in result.stdout and "2,708" in result.stdout

    result = graphsys("info", str(out), "--json")
    manifest = json.loads(result.stdout)
    assert manifest["num_edges"] == 10556 and manifest["features"]["shape"] == [2708, 1433]

    result = graphsys("verify", str(out), "--no-progress")
    assert result.returncode == 0 and "OK" in result.stdout

    result = graphsys("prepare", "planetoid", "--raw", str(planetoid_dir), "--out", str(out))
    assert result.returncode == 2 and "already exists" in result.stderr
    assert "Traceback" not in result.stderr

    features = out / "features.bin"
    data = bytearray(features.read_bytes())
    data[12345] ^= 0xFF
    features.write_bytes(bytes(data))
    result = graphsys("verify", str(out), "--no-progress")
    assert result.returncode == 1 and "features.bin: checksum mismatch" in result.stderr


def test_info_without_path_lists_optional_packages():
    result = graphsys("info")
    assert result.returncode == 0
    for name in ("torch", "cupy", "dgl", "numba"):
        assert name in result.stdout


def test_errors_are_one_clear_line(tmp_path):
    result = graphsys("info", str(tmp_path / "missing"))
    assert result.returncode == 2 and "not a directory" in result.stderr
    assert "Traceback" not in result.stderr
    result = graphsys("prepare", "planetoid", "--raw", str(tmp_path), "--out",
                      str(tmp_path / "o"))
    assert result.returncode == 2 and "Planetoid files missing" in result.stderr


@pytest.mark.parametrize("storage", ["raw", "zarr"])
def test_prepare_synthetic(tmp_path, storage):
    out = tmp_path / "syn"
    result = graphsys("prepare", "synthetic", "--nodes", "2000", "--edges", "20000", "--dim",
                      "16", "--classes", "4", "--storage", storage, "--out", str(out),
                      "--no-progress")
    assert result.returncode == 0, result.stderr
    manifest = json.loads(graphsys("info", str(out), "--json").stdout)
    assert manifest["num_nodes"] == 2000 and manifest["num_edges"] == 20000
    assert manifest["features"] == {"shape": [2000, 16], "dtype": "float32", "storage": storage}
    assert graphsys("verify", str(out), "--no-progress").returncode == 0
