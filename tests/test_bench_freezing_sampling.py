"""The freezing and sampling benches' summaries: the figures the README quotes.

The README quotes ratios from ``bench/results/freezing.json`` and ``sampling.json``; these
tests hold the arithmetic that makes them (whole-run speed-up, the paired validation
comparison that picks the augmentation, the equal-dtype ratio) to hand-made runs, and
check the committed JSONs carry what the README relies on.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def bench(name: str):
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(ROOT / "bench"))


def fake_run(variant: str, seed: int, whole: float, val: float, epoch_s: list[float]) -> dict:
    history = [{"epoch": e, "epoch_s": t, "eval_s": 0.1, "disk_bytes": 0, "val_acc": val,
                "test_acc": val} for e, t in enumerate(epoch_s)]
    return {"variant": variant, "seed": seed, "test_acc_best_val": val, "val_acc_best": val,
            "val_acc_last": val, "test_acc_last": val, "whole_run_s": whole,
            "train_epochs_s": sum(epoch_s), "eval_s": 0.1 * len(epoch_s),
            "cache_build_s": 0.0, "stages": [], "history": history}


def test_freezing_summary_whole_run_and_augment_choice():
    freezing = bench("freezing")
    runs = []
    for seed in range(5):
        runs.append(fake_run("never", seed, 10.0, 0.80, [9, 1, 1, 1, 1]))
        # none: 2x faster over the run, 4x per epoch after 2 frozen
        runs.append(fake_run("freeze-none", seed, 5.0, 0.80 + 0.001 * seed,
                             [9, 1, 1, 0.5, 0.25]))
        # dropout: clearly better on val (3 points, tiny spread); noise: within noise
        runs.append(fake_run("freeze", seed, 4.0, 0.83 + 0.001 * seed, [9, 1, 1, 0.5, 0.25]))
        runs.append(fake_run("freeze-noise", seed, 8.0, 0.80 + 0.01 * (-1) ** seed,
                             [9, 1, 1, 0.5, 0.25]))
    s = freezing.summarize(runs, freeze_at=(2, 4), num_layers=3)
    none = s["variants"]["freeze-none"]
    assert none["whole_run_speedup_vs_never"] == pytest.approx(2.0)
    assert none["epoch_speedup_after_2_frozen"] == pytest.approx(4.0)  # phase 0 / phase 2
    assert none["per_seed_whole_run_speedup_vs_never"] == pytest.approx([2.0] * 5)
    assert s["variants"]["never"]["whole_run_speedup_vs_never"] == pytest.approx(1.0)
    c = s["augment_choice"]
    assert c["default"] == freezing.DEFAULT_VARIANT == "freeze-none"
    assert c["vs_default"]["freeze"]["val_best"]["mean_points"] == pytest.approx(3.0)
    assert c["vs_default"]["freeze"]["val_best"]["exceeds_noise"] is True
    assert c["vs_default"]["freeze-noise"]["val_best"]["exceeds_noise"] is False
    assert c["highest_mean_val"] == "freeze"
    assert c["beats_default_beyond_noise"] is True


def test_paired_one_seed_has_no_noise_estimate():
    freezing = bench("freezing")
    p = freezing.paired([0.8], [0.7])
    assert p["mean_points"] == pytest.approx(10.0)
    assert p["ci95_points"] is None and p["exceeds_noise"] is None


def test_sampling_ratios_by_round():
    sampling = bench("sampling")
    a = {"edges_per_s_by_round": [10, 20]}
    b = {"edges_per_s_by_round": [5, 5]}
    assert sampling.ratios(a, b) == [2.0, 4.0]


@pytest.mark.parametrize("name", ["sampling.json", "sampling-quick.json"])
def test_sampling_json_records_index_dtypes(name: str):
    path = RESULTS / name
    if not path.is_file():
        pytest.skip(f"{name} not committed")
    r = json.loads(path.read_text())
    assert r["index_dtypes"] == {"graphsys": r["graphsys"]["index_dtype"],
                                 "graphsys_int64": "int64", "dgl": r["dgl"]["index_dtype"]}
    eq = r["equal_dtype"]
    assert r[eq["graphsys_contender"]]["index_dtype"] == r["dgl"]["index_dtype"]
    assert eq["ratio_edges_per_s"] == pytest.approx(
        r[eq["graphsys_contender"]]["edges_per_s"] / r["dgl"]["edges_per_s"], abs=1e-3)
    assert r["ratio_edges_per_s"] == pytest.approx(
        r["graphsys"]["edges_per_s"] / r["dgl"]["edges_per_s"], abs=1e-3)
    assert r["graphsys_int64_same_samples_same_key"] is True


def test_freezing_json_has_whole_run_for_every_variant():
    path = RESULTS / "freezing.json"
    r = json.loads(path.read_text())
    for dataset in r["datasets"]:
        s = dataset["summary"]
        assert s["default_variant"] in s["variants"]
        for name, v in s["variants"].items():
            assert v["whole_run_s"]["n"] == len(dataset["seeds"]), name
            assert "whole_run_speedup_vs_never" in v, name
            assert "val_acc_best" in v, name
        assert "augment_choice" in s
