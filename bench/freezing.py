"""Layer freezing with compressed caches: epoch and whole-run time, cache size, accuracy.

3-layer GraphSAGE on Cora (features in RAM) and on an out-of-core synthetic graph
(features several times the host-cache budget, read with host cache + ``O_DIRECT``).
Each dataset is trained, with the same seeds, four ways:

- ``never``: no freezing;
- ``freeze``: layer 1 freezes at the first freeze epoch (half the epochs) and layers
  1-2 at the second (three quarters), caches INT8 then INT4 (LZ4 zarr chunks), the
  feature dropout carried to the cached rows (``augment="dropout"``);
- ``freeze-noise``: also the frozen layers' own training noise, calibrated
  (``augment="noise"``);
- ``freeze-none``: cached rows as they are (``augment="none"``, the library default).

Every variant gets the same figures (``summary.variants``; ``summary.default_variant``
names the library default's). Runs are interleaved: each seed runs every variant, in an
order that rotates from seed to seed; each run records the load average.

Reported per variant: mean training-epoch seconds with 0, 1 and 2 layers frozen (the
first epoch is left out: it compiles the sampler) and the epoch speed-up after 2 of 3
(target >= 2x); the whole run (``whole_run_s``: ``Trainer.fit`` from the first epoch to
the end, so every epoch's training and evaluation, the cache builds and the noise
calibration), timed alike for ``never``, and its speed-up over ``never``; each stage's
cache on disk vs FP32 (target >= 8x at the last stage); validation accuracy at the best
validation epoch and at the last epoch, mean +- std over seeds; test accuracy at the
best validation epoch and at the last epoch vs ``never`` (target: within 0.5 points);
bytes read from disk per epoch.

The augmentation is chosen on validation accuracy, not test accuracy:
``summary.augment_choice`` gives each augmenting variant minus the default, paired by
seed, with a 95% t interval; a difference whose interval holds 0 is within noise.

Writes ``bench/results/freezing.json`` and ``.png`` (accuracy and epoch time vs epoch,
freeze points marked).

Sizes: the synthetic graph was 150k nodes with 2 seeds (about 27 minutes here); to get
5 seeds within ~25 minutes it is 80k nodes / 800k edges with an 8 MB budget (features
still 5x the budget), and Cora has 10 seeds.

Example:
    python bench/freezing.py              # Cora 10 seeds x 40 epochs; 80k-node synthetic, 5 seeds
    python bench/freezing.py --quick      # Cora 1 seed x 16 epochs; 40k-node synthetic
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine  # noqa: E402  (a sibling script, not a package)

import graphsys  # noqa: E402
from graphsys._sizes import format_size, parse_size  # noqa: E402
from graphsys.datasets.planetoid import prepare_planetoid  # noqa: E402
from graphsys.datasets.synthetic import SyntheticConfig, generate_synthetic  # noqa: E402
from graphsys.train import TrainConfig, Trainer  # noqa: E402
from graphsys.train.freezing import FreezeConfig  # noqa: E402

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
RAW = ROOT.parent.parent / "shared" / "data" / "planetoid"
VARIANTS = ("never", "freeze", "freeze-noise", "freeze-none")
AUGMENT = {"freeze": "dropout", "freeze-noise": "noise", "freeze-none": "none"}
DEFAULT_VARIANT = {a: v for v, a in AUGMENT.items()}[FreezeConfig().augment]


def run(dataset: graphsys.Dataset, config: TrainConfig, variant: str, freeze_at: tuple,
        codecs: tuple, work: Path) -> dict:
    freeze = None
    if variant != "never":
        freeze = FreezeConfig(at=freeze_at, codecs=codecs,
                              augment=AUGMENT[variant],
                              cache_dir=str(work / f"{variant}-{config.seed}"))
    config = TrainConfig(**{**asdict(config), "freeze": freeze})
    load_start = os.getloadavg()
    start = time.perf_counter()
    trainer = Trainer(dataset, config)
    fit_start = time.perf_counter()
    result = trainer.fit()
    # The whole run: every epoch's training and evaluation, the cache builds (and the
    # noise calibration) at the freezes; timed alike for every variant, ``never`` too.
    fit_s = time.perf_counter() - fit_start
    stages = [asdict(s) for s in trainer.freezer.stages] if trainer.freezer else []
    last = result.history[-1]
    print(f"  {variant:<12} seed {config.seed}: val {result.best_val_acc:.4f} / test "
          f"{result.test_acc:.4f} at best val (epoch {result.best_epoch}), test "
          f"{last.test_acc:.4f} at the last epoch, whole run {fit_s:.1f}s", flush=True)
    return {"variant": variant, "seed": config.seed, "test_acc_best_val": result.test_acc,
            "val_acc_best": result.best_val_acc, "val_acc_last": last.val_acc,
            "best_epoch": result.best_epoch, "test_acc_last": last.test_acc,
            "setup_s": fit_start - start, "whole_run_s": fit_s,
            "wall_s": time.perf_counter() - start,
            "train_epochs_s": sum(m.epoch_s for m in result.history),
            "eval_s": sum(m.eval_s for m in result.history),
            "cache_build_s": sum(s["build_s"] for s in stages),
            "loadavg_start": [round(x, 2) for x in load_start],
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
            "stages": stages, "history": [asdict(m) for m in result.history]}


# Two-sided 95% Student t quantiles by degrees of freedom (for the paired seed tests).
T95 = {1: 12.71, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
       9: 2.262, 10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}


def t95(df: int) -> float:
    return T95[max(k for k in T95 if k <= df)] if df >= 1 else float("inf")


def mean_std(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}


def paired(a: list[float], b: list[float]) -> dict:
    """``a - b`` over the same seeds, in points: mean, std, 95% CI, beyond noise or not."""
    diffs = [100 * (x - y) for x, y in zip(a, b, strict=True)]
    stats = mean_std(diffs)
    if len(diffs) < 2:  # one seed: no estimate of the noise
        return {"mean_points": stats["mean"], "std_points": None, "n": len(diffs),
                "ci95_points": None, "exceeds_noise": None}
    half = t95(len(diffs) - 1) * stats["std"] / len(diffs) ** 0.5
    return {"mean_points": stats["mean"], "std_points": stats["std"], "n": len(diffs),
            "ci95_points": [stats["mean"] - half, stats["mean"] + half],
            "exceeds_noise": bool(abs(stats["mean"]) > half)}


def phase_of(epoch: int, freeze_at: tuple) -> int:
    return sum(1 for e in freeze_at if e <= epoch)


def summarize(runs: list[dict], freeze_at: tuple, num_layers: int) -> dict:
    """Epoch and whole-run time, accuracy (val and test), cache sizes, disk bytes per epoch.

    Every variant gets the same figures. The augmentation is chosen on validation
    accuracy: ``augment_choice`` compares each augmenting variant with the library
    default seed by seed (paired differences, 95% t interval); test accuracy is
    reported, not used to choose.
    """
    out: dict = {"default_variant": DEFAULT_VARIANT, "variants": {}}
    last = str(num_layers - 1)
    by_variant = {v: sorted((r for r in runs if r["variant"] == v), key=lambda r: r["seed"])
                  for v in VARIANTS}
    never_runs = by_variant.get("never") or []
    for variant in VARIANTS:
        mine = by_variant[variant]
        if not mine:
            continue
        phases: dict[int, list[float]] = {}
        disk: dict[int, list[int]] = {}
        for r in mine:
            for m in r["history"][1:]:  # epoch 0 compiles the sampler
                p = phase_of(m["epoch"], freeze_at)
                phases.setdefault(p, []).append(m["epoch_s"])
                disk.setdefault(p, []).append(m["disk_bytes"])
        entry = {
            "test_acc_best_val": statistics.fmean(r["test_acc_best_val"] for r in mine),
            "test_acc_last": statistics.fmean(r["test_acc_last"] for r in mine),
            "per_seed_best_val": [r["test_acc_best_val"] for r in mine],
            "per_seed_last": [r["test_acc_last"] for r in mine],
            "val_acc_best": mean_std([r["val_acc_best"] for r in mine]),
            "val_acc_last": mean_std([r["val_acc_last"] for r in mine]),
            "test_acc_best_val_stats": mean_std([r["test_acc_best_val"] for r in mine]),
            "per_seed_val_best": [r["val_acc_best"] for r in mine],
            "per_seed_val_last": [r["val_acc_last"] for r in mine],
            "epoch_s_by_phase": {str(p): statistics.fmean(v) for p, v in sorted(phases.items())},
            "disk_bytes_per_epoch_by_phase": {str(p): statistics.fmean(v)
                                              for p, v in sorted(disk.items())},
            "whole_run_s": mean_std([r["whole_run_s"] for r in mine]),
            "per_seed_whole_run_s": [r["whole_run_s"] for r in mine],
            "train_epochs_s": statistics.fmean(r["train_epochs_s"] for r in mine),
            "eval_s": statistics.fmean(r["eval_s"] for r in mine),
            "cache_build_s": statistics.fmean(r["cache_build_s"] for r in mine),
        }
        t = entry["epoch_s_by_phase"]
        if variant != "never" and last in t:
            entry["epoch_speedup_after_1_frozen"] = t["0"] / t["1"] if "1" in t else None
            entry["epoch_speedup_after_2_frozen"] = t["0"] / t[last]
        if never_runs and len(never_runs) == len(mine):
            # Mean never whole run over mean variant whole run, same seeds, runs
            # interleaved (seed by seed, variants in turn).
            entry["whole_run_speedup_vs_never"] = (
                statistics.fmean(r["whole_run_s"] for r in never_runs)
                / entry["whole_run_s"]["mean"])
            entry["per_seed_whole_run_speedup_vs_never"] = [
                n["whole_run_s"] / r["whole_run_s"] for n, r in zip(never_runs, mine,
                                                                    strict=True)]
            if variant != "never":
                entry["val_best_vs_never"] = paired([r["val_acc_best"] for r in mine],
                                                    [r["val_acc_best"] for r in never_runs])
        if mine[0]["stages"]:
            entry["stages"] = [{k: s[k] for k in ("frozen_layers", "codec", "disk_bytes",
                                                  "encoded_bytes", "fp32_bytes",
                                                  "max_abs_error", "max_bound", "build_s",
                                                  "noise_rms", "load_disk_bytes")}
                               | {"fp32_over_disk": s["fp32_bytes"] / max(s["disk_bytes"], 1),
                                  "fp32_over_encoded": s["fp32_bytes"] / s["encoded_bytes"]}
                               for s in mine[0]["stages"]]
        out["variants"][variant] = entry
    never = out["variants"].get("never")
    if never:
        for variant, v in out["variants"].items():
            if variant == "never" or last not in v["epoch_s_by_phase"]:
                continue
            v["epoch_speedup_vs_never_same_epochs"] = (
                never["epoch_s_by_phase"].get(last, never["epoch_s_by_phase"]["0"])
                / v["epoch_s_by_phase"][last])
            v["accuracy_delta_points_best_val"] = 100 * (v["test_acc_best_val"]
                                                          - never["test_acc_best_val"])
            v["accuracy_delta_points_last"] = 100 * (v["test_acc_last"]
                                                      - never["test_acc_last"])
    # Flat keys, as before, for the dropout variant ("freeze"), kept for old readers.
    freeze = out["variants"].get("freeze")
    if never and freeze and last in freeze["epoch_s_by_phase"]:
        out["speedup_after_1_frozen"] = freeze.get("epoch_speedup_after_1_frozen")
        out["speedup_after_2_frozen"] = freeze["epoch_speedup_after_2_frozen"]
        out["speedup_vs_never_same_epochs"] = freeze["epoch_speedup_vs_never_same_epochs"]
        out["accuracy_delta_points_best_val"] = freeze["accuracy_delta_points_best_val"]
        out["accuracy_delta_points_last"] = freeze["accuracy_delta_points_last"]
        if "stages" in freeze:
            out["last_stage_fp32_over_disk"] = freeze["stages"][-1]["fp32_over_disk"]
    for variant in ("freeze-noise", "freeze-none"):
        other = out["variants"].get(variant)
        if never and other and "accuracy_delta_points_best_val" in other:
            out[f"accuracy_delta_points_best_val_{variant}"] = other[
                "accuracy_delta_points_best_val"]
            out[f"accuracy_delta_points_last_{variant}"] = other["accuracy_delta_points_last"]
    out["augment_choice"] = augment_choice(by_variant)
    return out


def augment_choice(by_variant: dict[str, list[dict]]) -> dict:
    """Each augmenting variant against the default on validation accuracy, paired by seed."""
    base = by_variant.get(DEFAULT_VARIANT) or []
    choice: dict = {"default": DEFAULT_VARIANT, "criterion": "val_acc_best (validation "
                    "accuracy at the best validation epoch), paired by seed; 95% t interval",
                    "vs_default": {}}
    if not base:
        return choice
    means = {}
    for variant in AUGMENT:
        mine = by_variant.get(variant) or []
        if not mine:
            continue
        means[variant] = statistics.fmean(r["val_acc_best"] for r in mine)
        if variant != DEFAULT_VARIANT and len(mine) == len(base):
            choice["vs_default"][variant] = {
                "val_best": paired([r["val_acc_best"] for r in mine],
                                   [r["val_acc_best"] for r in base]),
                "val_last": paired([r["val_acc_last"] for r in mine],
                                   [r["val_acc_last"] for r in base])}
    best = max(means, key=means.get)
    beats = choice["vs_default"].get(best, {}).get("val_best", {})
    choice["highest_mean_val"] = best
    choice["beats_default_beyond_noise"] = bool(
        best != DEFAULT_VARIANT and beats.get("exceeds_noise") and beats["mean_points"] > 0)
    return choice


def bench_dataset(name: str, dataset: graphsys.Dataset, config: TrainConfig, seeds: list[int],
                  freeze_at: tuple, codecs: tuple, variants: tuple) -> dict:
    print(f"{name}: {dataset.graph.num_nodes():,} nodes, {dataset.graph.num_edges():,} edges, "
          f"fanouts {list(config.fanouts)}, freeze at {list(freeze_at)}, codecs "
          f"{','.join(codecs)}", flush=True)
    runs = []
    with tempfile.TemporaryDirectory(prefix="graphsys-freezing-") as work:
        for i, seed in enumerate(seeds):
            # Interleaved: every variant once per seed, the order rotating from seed to
            # seed, so drift in the machine's load falls on all of them alike.
            for variant in variants[i % len(variants):] + variants[: i % len(variants)]:
                runs.append(run(dataset, TrainConfig(**{**asdict(config), "seed": seed}),
                                variant, freeze_at, codecs, Path(work)))
    summary = summarize(runs, freeze_at, config.num_layers)
    config_dict = {k: (list(v) if isinstance(v, tuple) else v)
                   for k, v in asdict(config).items() if k not in ("seed", "freeze")}
    return {"dataset": name, "nodes": dataset.graph.num_nodes(),
            "edges": dataset.graph.num_edges(), "feature_dim": int(dataset.features.shape[1]),
            "config": config_dict, "seeds": seeds, "freeze_at": list(freeze_at),
            "codecs": list(codecs), "summary": summary, "runs": runs}


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 2, figsize=(11, 3.6 * len(results)), squeeze=False)
    colors = {"never": "#888", "freeze": "#27c", "freeze-noise": "#4a7", "freeze-none": "#d62"}
    for row, res in zip(axes, results, strict=True):
        for variant in VARIANTS:
            mine = [r for r in res["runs"] if r["variant"] == variant]
            if not mine:
                continue
            epochs = [m["epoch"] for m in mine[0]["history"]]
            acc = [statistics.fmean(r["history"][i]["val_acc"] or 0.0 for r in mine)
                   for i in range(len(epochs))]
            secs = [statistics.fmean(r["history"][i]["epoch_s"] for r in mine)
                    for i in range(len(epochs))]
            row[0].plot(epochs, acc, label=variant, color=colors[variant])
            row[1].plot(epochs, secs, label=variant, color=colors[variant])
        for ax in row:
            for k, e in enumerate(res["freeze_at"], start=1):
                ax.axvline(e, color="k", ls=":", lw=1)
                ax.annotate(f"{k} frozen", (e, 1), xycoords=("data", "axes fraction"),
                            ha="left", va="top", fontsize=8)
            ax.set_xlabel("epoch")
            ax.legend(fontsize=8)
        s = res["summary"]
        row[0].set_ylabel("validation accuracy (mean over seeds)")
        d = s["variants"].get(DEFAULT_VARIANT, {})
        vs_never = d.get("val_best_vs_never", {}).get("mean_points", 0.0)
        row[0].set_title(f"{res['dataset']}, {len(res['seeds'])} seeds: {DEFAULT_VARIANT} "
                         f"(default) {vs_never:+.2f} val points at best val vs never",
                         fontsize=9)
        row[1].set_ylabel("training epoch (s)")
        row[1].set_yscale("log")
        stages = d.get("stages") or [{}]
        epoch_x = d.get("epoch_speedup_after_2_frozen") or 0
        row[1].set_title(f"{DEFAULT_VARIANT}: epoch {epoch_x:.1f}x after 2 frozen, whole run "
                         f"{d.get('whole_run_speedup_vs_never') or 0:.2f}x; cache "
                         f"{stages[-1].get('fp32_over_disk', 0):.1f}x < fp32",
                         fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def synthetic_dataset(args: argparse.Namespace) -> graphsys.Dataset:
    path = ROOT / ".data" / (f"freeze-{args.nodes}-{args.edges}-d{args.dim}-t{args.train_frac}"
                             f"-n{args.noise}")
    if not (path / "manifest.json").is_file():
        print(f"generating {path}", flush=True)
        generate_synthetic(path, SyntheticConfig(num_nodes=args.nodes, num_edges=args.edges,
                                                 feat_dim=args.dim, train_frac=args.train_frac,
                                                 val_frac=0.1, test_frac=0.1,
                                                 feature_noise=args.noise, seed=0),
                           progress=False)
    return graphsys.load_dataset(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--raw", type=Path, default=RAW, help="Planetoid files (Cora)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip-cora", action="store_true")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--cora-seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--cora-epochs", type=int, default=40)
    parser.add_argument("--nodes", type=int, default=80_000)
    parser.add_argument("--edges", type=int, default=800_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--train-frac", type=float, default=0.1)
    parser.add_argument("--noise", type=float, default=3.0,
                        help="synthetic feature noise (the generator's default 6.0 is not "
                             "learnable by a 3-layer SAGE in a dozen epochs)")
    parser.add_argument("--budget", default="8MB", help="host-cache budget (synthetic)")
    parser.add_argument("--syn-epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=1024, help="synthetic batch size")
    parser.add_argument("--syn-seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--codecs", default="int8,int4")
    parser.add_argument("--freeze-frac", default="0.5,0.75",
                        help="freeze points as fractions of the epochs")
    parser.add_argument("--out", type=Path, default=RESULTS / "freezing.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.cora_seeds, args.cora_epochs = [0], 16
        args.nodes, args.edges, args.budget, args.syn_epochs = 40_000, 400_000, "4MB", 6
        args.syn_seeds, args.batch_size = [0], 512
        args.out = args.out.with_name("freezing_quick.json")
    codecs = tuple(args.codecs.split(","))
    fracs = [float(f) for f in args.freeze_frac.split(",")]

    def freeze_at(epochs: int) -> tuple[int, ...]:
        return tuple(max(1, round(f * epochs)) for f in fracs)

    results: list[dict] = []
    load_start = [round(x, 2) for x in os.getloadavg()]

    def write(results: list[dict], complete: bool) -> None:
        """The JSON and PNG; written after each dataset, so a long run leaves its part."""
        report = {"bench": "freezing",
                  "command": "python bench/freezing.py " + shlex.join(argv or sys.argv[1:]),
                  "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "complete": complete, "machine": machine(),
                  "load_average_at_start": load_start,
                  "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
                  "graphsys": graphsys.__version__, "datasets": results}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        plot(results, args.out.with_suffix(".png"))

    if not args.skip_cora:
        if not (args.raw / "ind.cora.x").is_file():
            print(f"Cora files not found in {args.raw}; pass --raw or --skip-cora",
                  file=sys.stderr)
            return 2
        with tempfile.TemporaryDirectory() as tmp:
            prepare_planetoid(args.raw, Path(tmp) / "cora", name="cora")
            cora = graphsys.load_dataset(Path(tmp) / "cora")
            e = args.cora_epochs
            config = TrainConfig(fanouts=(15, 10, 5), batch_size=16, hidden=64, lr=0.01,
                                 epochs=e, feature_norm="row", storage="memory",
                                 progress=False)
            results.append(bench_dataset("cora", cora, config, args.cora_seeds,
                                         freeze_at(e), codecs, VARIANTS))
            if not args.skip_synthetic:
                write(results, complete=False)
    if not args.skip_synthetic:
        syn = synthetic_dataset(args)
        e = args.syn_epochs
        config = TrainConfig(fanouts=(15, 10, 5), batch_size=args.batch_size, hidden=128,
                             lr=0.01,
                             epochs=e, storage="direct", host_cache=parse_size(args.budget),
                             eval_batch_size=8192, progress=False)
        feature_bytes = syn.manifest.arrays["features"].nbytes
        print(f"synthetic features {format_size(feature_bytes)} = "
              f"{feature_bytes / parse_size(args.budget):.1f}x the {args.budget} budget",
              flush=True)
        res = bench_dataset("synthetic", syn, config, args.syn_seeds, freeze_at(e), codecs,
                            VARIANTS)
        res["feature_bytes"] = feature_bytes
        res["budget"] = parse_size(args.budget)
        results.append(res)
    write(results, complete=True)
    print(f"\n{'dataset':<10} {'variant':<12} {'s/epoch 0|1|2 frozen':>22} {'epoch x':>7} "
          f"{'run s':>7} {'run x':>6} {'val@best':>15} {'test@val':>9} {'test@last':>9} "
          f"{'disk/epoch 0|1|2':>28}")
    for res in results:
        for variant, v in res["summary"]["variants"].items():
            t = " | ".join(f"{s:.3f}" for s in v["epoch_s_by_phase"].values())
            d = " | ".join(format_size(int(b)) for b in
                           v["disk_bytes_per_epoch_by_phase"].values())
            val = f"{v['val_acc_best']['mean']:.4f}+-{v['val_acc_best']['std']:.4f}"
            print(f"{res['dataset']:<10} {variant:<12} {t:>22} "
                  f"{v.get('epoch_speedup_after_2_frozen') or 1:>6.2f}x "
                  f"{v['whole_run_s']['mean']:>7.1f} "
                  f"{v.get('whole_run_speedup_vs_never') or 0:>5.2f}x {val:>15} "
                  f"{v['test_acc_best_val']:>9.4f} {v['test_acc_last']:>9.4f} {d:>28}")
        s = res["summary"]
        for stage in s["variants"].get(DEFAULT_VARIANT, {}).get("stages", []):
            print(f"  stage {stage['frozen_layers']}: {stage['codec']}, "
                  f"{format_size(stage['disk_bytes'])} on disk = "
                  f"{stage['fp32_over_disk']:.2f}x smaller than fp32 "
                  f"({stage['fp32_over_encoded']:.2f}x before LZ4), max error "
                  f"{stage['max_abs_error']:.3g} <= bound {stage['max_bound']:.3g}, built in "
                  f"{stage['build_s']:.1f}s")
        c = s["augment_choice"]
        for variant, cmp in c["vs_default"].items():
            vb = cmp["val_best"]
            spread = (f" +- {vb['std_points']:.2f}, 95% CI [{vb['ci95_points'][0]:+.2f}, "
                      f"{vb['ci95_points'][1]:+.2f}]"
                      f"{' (beyond noise)' if vb['exceeds_noise'] else ' (within noise)'}"
                      if vb["ci95_points"] else " (one seed: no noise estimate)")
            print(f"  {variant} - {c['default']} on val at best val: {vb['mean_points']:+.2f}"
                  f"{spread} points over {vb['n']} seeds")
        print(f"  highest mean val: {c.get('highest_mean_val')}; beats the default "
              f"{c['default']} beyond noise: {c.get('beats_default_beyond_noise')}")
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
