"""The GPU check's pieces, run on the CPU as the lent GPU machine will run them.

A GPU is lent rarely and for minutes, so ``scripts/gpu_check.sh``, ``bench/kernels.py``
and ``bench/gpu_e2e.py`` must work the first time there: the script must parse, and the
benches' every code path runs here through the CPU twins (``--cpu-dry-run``,
``--quick --device cpu``) and writes the JSON the GPU run will write.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
ROW_BYTES = [128, 256, 512, 1024, 2048, 4096]
CONTENDERS = ["cpu_gather", "device_path", "device_path_cache", "dataloader_uva"]


def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def gpu_ready() -> bool:
    from graphsys.cuda import gpu_ready as ready

    return ready()


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_check_script_parses():
    script = ROOT / "scripts" / "gpu_check.sh"
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = script.read_text()
    for step in ("pytest -m gpu", "bench/kernels.py", "bench/gpu_e2e.py", "bench/gpu_probe.py",
                 "${PYTHON:-python}"):
        assert step in text, f"gpu_check.sh lost its step {step!r}"


@pytest.fixture(scope="module")
def e2e(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("e2e") / "e2e.json"
    result = run("bench/gpu_e2e.py", "--quick", "--device", "cpu", "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(out.read_text())


def test_e2e_quick_losses_agree(e2e):
    batches = e2e["config"]["batches"]
    assert batches >= 5
    losses = {name: e2e["contenders"][name]["losses"] for name in CONTENDERS}
    for name, values in losses.items():
        assert len(values) == batches, name
        assert all(math.isfinite(v) for v in values), name
    # Every contender gets bitwise-equal blocks and features, so the losses agree up to
    # the order of float reductions (threaded on larger inputs): far tighter than the
    # bench's own GPU tolerance, so a wrong row or block shows.
    for name in ("device_path", "device_path_cache", "dataloader_uva"):
        assert np.allclose(losses[name], losses["cpu_gather"], rtol=1e-5, atol=1e-7), name
    assert e2e["losses_equal"] is True and e2e["targets"]["losses_equal"]["met"] is True
    # the deterministic pass retrains the first batches: bitwise the timed losses on CPU
    det = e2e["deterministic_losses"]
    assert set(det) == set(CONTENDERS)
    for name, values in det.items():
        assert values == losses["cpu_gather"][: len(values)], name
    assert losses["cpu_gather"][-1] < losses["cpu_gather"][0], "the model did not train"


def test_e2e_quick_accounting(e2e):
    c = {name: e2e["contenders"][name] for name in CONTENDERS}
    row_bytes = e2e["config"]["dim"] * 4
    for name, r in c.items():
        assert r["seconds"] > 0 and r["batches_per_s"] > 0, name
        b = r["h2d_bytes"]
        assert b["total"] == b["features"] + b["graph"] + b["other"] > 0, name
        assert b["features"] % row_bytes == 0, name
    # Both uncached paths move the same input rows; the cache moves at most as many.
    assert c["device_path"]["h2d_bytes"]["features"] == c["cpu_gather"]["h2d_bytes"]["features"]
    assert c["dataloader_uva"]["h2d_bytes"] == c["device_path"]["h2d_bytes"]
    assert 0 < c["device_path_cache"]["h2d_bytes"]["features"] \
        <= c["device_path"]["h2d_bytes"]["features"]
    assert c["cpu_gather"]["h2d_bytes"]["graph"] == 0
    assert c["device_path"]["h2d_bytes"]["graph"] == c["device_path_cache"]["h2d_bytes"]["graph"]
    cache = c["device_path_cache"]["cache"]
    assert cache["capacity_rows"] == e2e["config"]["cache_rows"] > 0
    assert cache["counters"]["moved_rows"] * row_bytes \
        == c["device_path_cache"]["h2d_bytes"]["features"]
    assert 0 < cache["request_hit_rate"] < 1
    assert set(e2e["speedup_vs_cpu_gather"]) == set(CONTENDERS)
    target = e2e["targets"]["device_path_speedup_vs_cpu_gather>=3"]
    assert target["target"] == 3 and isinstance(target["met"], bool)


@pytest.fixture(scope="module")
def kernels(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("kernels") / "kernels.json"
    result = run("bench/kernels.py", "--cpu-dry-run", "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(out.read_text())


def test_kernels_dry_run_fields(kernels):
    assert kernels["cpu_dry_run"] is True
    gather = kernels["gather"]
    assert [r["row_bytes"] for r in gather] == ROW_BYTES
    for r in gather:
        for key in ("uva_GBps", "pinned_copy_GBps", "uva_over_pinned_copy",
                    "cpu_gather_copy_GBps", "device_gather_GBps"):
            assert r[key] > 0, (r["row_bytes"], key)
        assert ("target_met" in r) == (r["row_bytes"] >= 512)
    agg = kernels["aggregation"]
    for key in ("fp32_index_add_ms", "fp32_csr_spmm_ms", "int8_fused_ms"):
        assert agg[key] > 0, key
    assert 3.75 <= agg["memory_ratio"] < 4
    s = kernels["sampling"]
    assert s["cpu_edges"] == s["gpu_device_edges"] == s["gpu_pinned_edges"] > 0
    assert s["cpu_edges"] <= s["batches"] * s["batch_size"] * (15 + 150 + 750)
    ops = kernels["cache_ops"]["cpu"]
    assert set(ops) == {"lookup_us", "split_hits_us", "scatter_rows_us", "assign_slots_x2_us"}
    for t in kernels["targets"].values():
        assert {"target", "measured", "met"} <= set(t) and isinstance(t["met"], bool)


def test_kernels_dry_run_never_writes_results():
    result = run("bench/kernels.py", "--cpu-dry-run", "--out",
                 str(ROOT / "bench" / "results" / "should_not_exist.json"))
    assert result.returncode == 2
    assert not (ROOT / "bench" / "results" / "should_not_exist.json").exists()


@pytest.mark.skipif(gpu_ready(), reason="checks the no-GPU exit")
@pytest.mark.parametrize("script", ["bench/kernels.py", "bench/gpu_e2e.py",
                                    "bench/cache_syncs.py"])
def test_without_gpu_exits_2_with_one_line(script):
    result = run(script, timeout=120)
    assert result.returncode == 2
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines


def test_cache_syncs_dry_run(tmp_path):
    """The sync counter's reads run (and are checked against the table) on CPU."""
    out = tmp_path / "syncs.json"
    result = run("bench/cache_syncs.py", "--cpu-dry-run", "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(out.read_text())
    assert data["device"] == "cpu" and data["target_syncs_per_read"] == 1
    assert data["counters"]["hits"] > 0 and data["counters"]["requests"] > 0
    assert data["target_met"] is False  # nothing counted on CPU: never claimed


def test_gpu_probe_dry_run(tmp_path):
    """Every probe section runs through the CPU paths and reports, none errors."""
    out = tmp_path / "probe.json"
    result = run("bench/gpu_probe.py", "--cpu-dry-run", "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    probe = json.loads(out.read_text())
    for section in ("launch", "gather", "sampling", "cache"):
        assert "error" not in probe[section], probe[section]
    rows = probe["gather"]["rows"]
    assert [r["row_bytes"] for r in rows] == [128, 512, 1024, 4096]
    for r in rows:
        for key in ("pinned_copy_GBps", "cudahostalloc_random_GBps", "hugepage_sorted_GBps"):
            assert r[key] > 0, (r["row_bytes"], key)
    for row in probe["sampling"]["batch_scaling"]:
        assert row["cpu_edges_per_s"] > 0 and row["gpu_edges_per_s"] > 0
    assert probe["sampling"]["profile_gpu_sample_20x1024"]
    for name in ("lru", "degree"):
        assert probe["cache"][name]["ms_per_read_host_ids"] > 0
