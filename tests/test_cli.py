"""The graphsys command line, run as a user runs it (a subprocess)."""

from __future__ import annotations

import json
import os
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


def test_prepare_planetoid_row_normalize_is_recorded_and_shown(planetoid_dir, tmp_path):
    plain, normalized = tmp_path / "plain", tmp_path / "normalized"
    for out, extra in ((plain, ()), (normalized, ("--row-normalize",))):
        result = graphsys("prepare", "planetoid", "--raw", str(planetoid_dir), "--out",
                          str(out), "--no-progress", *extra)
        assert result.returncode == 0, result.stderr
    shown = graphsys("info", str(normalized)).stdout
    features_row = next(line for line in shown.splitlines() if "features" in line)
    assert "rows normalized to sum 1" in features_row
    assert "normalized" not in graphsys("info", str(plain)).stdout
    manifest = json.loads(graphsys("info", str(normalized), "--json").stdout)
    assert manifest["source"]["row_normalize"] is True
    assert "row_normalize" not in json.loads(graphsys("info", str(plain), "--json").stdout)[
        "source"]
    assert (plain / "features.bin").read_bytes() != (normalized / "features.bin").read_bytes()


def _info_rows(stdout: str) -> dict[str, tuple[str, str]]:
    rows = {}
    for line in stdout.splitlines()[1:]:
        parts = line.split(None, 2)
        if len(parts) >= 2 and parts[1] in ("yes", "no"):
            rows[parts[0]] = (parts[1], parts[2] if len(parts) > 2 else "")
    return rows


def test_info_reports_what_each_package_really_is(tmp_path):
    """Each row against what a separate interpreter finds (installed? which version?),
    and packages planted on the path: one that works, one that breaks on import."""
    import subprocess
    import sys

    fake = tmp_path / "site"
    (fake / "dgl").mkdir(parents=True)
    (fake / "dgl" / "__init__.py").write_text("__version__ = '9.9.9-planted'\n")
    (fake / "torch_geometric").mkdir()
    (fake / "torch_geometric" / "__init__.py").write_text("raise RuntimeError('planted')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(fake), *filter(None, [os.environ.get("PYTHONPATH")])])}
    result = subprocess.run([sys.executable, "-m", "graphsys", "info"], capture_output=True,
                            text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = _info_rows(result.stdout)
    assert rows["dgl"] == ("yes", "9.9.9-planted")
    assert rows["torch_geometric"][0] == "no" and "planted" in rows["torch_geometric"][1]
    truth = json.loads(subprocess.run([sys.executable, "-c", (
        "import importlib.metadata as m, importlib.util as u, json, torch\n"
        "def v(name):\n"
        "    return m.version(name) if u.find_spec(name) else None\n"
        "print(json.dumps({'torch': v('torch'), 'numba': v('numba'), 'zarr': v('zarr'),\n"
        "                  'scipy': v('scipy'), 'cuda': torch.cuda.is_available()}))")],
        capture_output=True, text=True, check=True, timeout=120).stdout)
    for name in ("torch", "numba", "zarr", "scipy"):
        assert rows[name] == ("yes", truth[name]), name
    assert rows["torch.cuda"][0] == ("yes" if truth["cuda"] else "no")
    if not truth["cuda"]:
        assert rows["cupy"][0] == "no"


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
