"""Layer freezing with compressed caches: epoch time, cache size, accuracy, disk reads.

3-layer GraphSAGE on Cora (features in RAM) and on an out-of-core synthetic graph
(features several times the host-cache budget, read with host cache + ``O_DIRECT``).
Each dataset is trained, with the same seeds, three ways:

- ``never``: no freezing;
- ``freeze``: layer 1 freezes at the first freeze epoch (half the epochs) and layers
  1-2 at the second (three quarters), caches INT8 then INT4 (LZ4 zarr chunks), the
  feature dropout carried to the cached rows (``augment="dropout"``);
- ``freeze-noise``: also the frozen layers' own training noise, calibrated
  (``augment="noise"``);
- ``freeze-none``: cached rows as they are (``augment="none"``, the library default
  since this bench found it the one that keeps accuracy).

The headline speed-up and accuracy figures in the summary are ``freeze``'s; every
variant's are in ``summary.variants``.

Reported: mean training-epoch seconds with 0, 1 and 2 layers frozen (the first epoch is
left out: it compiles the sampler) and the speed-up after 2 of 3 (target >= 2x); each
stage's cache on disk vs FP32 (target >= 8x at the last stage); test accuracy at the
best validation epoch and at the last epoch, mean over seeds, vs ``never`` (target:
within 0.5 points); bytes read from disk per epoch. Writes
``bench/results/freezing.json`` and ``.png`` (accuracy and epoch time vs epoch, freeze
points marked).

Example:
    python bench/freezing.py              # Cora 5 seeds x 40 epochs; 150k-node synthetic
    python bench/freezing.py --quick      # Cora 1 seed x 16 epochs; 40k-node synthetic
"""

from __future__ import annotations

import argparse
import json
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


def run(dataset: graphsys.Dataset, config: TrainConfig, variant: str, freeze_at: tuple,
        codecs: tuple, work: Path) -> dict:
    freeze = None
    if variant != "never":
        freeze = FreezeConfig(at=freeze_at, codecs=codecs,
                              augment=AUGMENT[variant],
                              cache_dir=str(work / f"{variant}-{config.seed}"))
    config = TrainConfig(**{**asdict(config), "freeze": freeze})
    start = time.perf_counter()
    trainer = Trainer(dataset, config)
    result = trainer.fit()
    stages = [asdict(s) for s in trainer.freezer.stages] if trainer.freezer else []
    last = result.history[-1]
    print(f"  {variant:<12} seed {config.seed}: test {result.test_acc:.4f} at best val "
          f"(epoch {result.best_epoch}), {last.test_acc:.4f} at the last epoch, "
          f"{time.perf_counter() - start:.0f}s", flush=True)
    return {"variant": variant, "seed": config.seed, "test_acc_best_val": result.test_acc,
            "best_epoch": result.best_epoch, "test_acc_last": last.test_acc,
            "wall_s": time.perf_counter() - start, "stages": stages,
            "history": [asdict(m) for m in result.history]}


def phase_of(epoch: int, freeze_at: tuple) -> int:
    return sum(1 for e in freeze_at if e <= epoch)


def summarize(runs: list[dict], freeze_at: tuple, num_layers: int) -> dict:
    """Epoch time per phase, accuracy per variant, cache sizes, disk bytes per epoch."""
    out: dict = {"variants": {}}
    for variant in VARIANTS:
        mine = [r for r in runs if r["variant"] == variant]
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
            "epoch_s_by_phase": {str(p): statistics.fmean(v) for p, v in sorted(phases.items())},
            "disk_bytes_per_epoch_by_phase": {str(p): statistics.fmean(v)
                                              for p, v in sorted(disk.items())},
        }
        if mine[0]["stages"]:
            entry["stages"] = [{k: s[k] for k in ("frozen_layers", "codec", "disk_bytes",
                                                  "encoded_bytes", "fp32_bytes",
                                                  "max_abs_error", "max_bound", "build_s",
                                                  "noise_rms", "load_disk_bytes")}
                               | {"fp32_over_disk": s["fp32_bytes"] / max(s["disk_bytes"], 1),
                                  "fp32_over_encoded": s["fp32_bytes"] / s["encoded_bytes"]}
                               for s in mine[0]["stages"]]
        out["variants"][variant] = entry
    never, freeze = out["variants"].get("never"), out["variants"].get("freeze")
    if never and freeze:
        t = freeze["epoch_s_by_phase"]
        last = str(num_layers - 1)
        out["speedup_after_1_frozen"] = t["0"] / t["1"] if "1" in t else None
        out["speedup_after_2_frozen"] = t["0"] / t[last] if last in t else None
        out["speedup_vs_never_same_epochs"] = (
            never["epoch_s_by_phase"].get(last, never["epoch_s_by_phase"]["0"]) / t[last]
            if last in t else None)
        out["accuracy_delta_points_best_val"] = 100 * (freeze["test_acc_best_val"]
                                                        - never["test_acc_best_val"])
        out["accuracy_delta_points_last"] = 100 * (freeze["test_acc_last"]
                                                    - never["test_acc_last"])
        if "stages" in freeze:
            out["last_stage_fp32_over_disk"] = freeze["stages"][-1]["fp32_over_disk"]
    for variant in ("freeze-noise", "freeze-none"):
        other = out["variants"].get(variant)
        if never and other:
            out[f"accuracy_delta_points_best_val_{variant}"] = 100 * (
                other["test_acc_best_val"] - never["test_acc_best_val"])
            out[f"accuracy_delta_points_last_{variant}"] = 100 * (
                other["test_acc_last"] - never["test_acc_last"])
    return out


def bench_dataset(name: str, dataset: graphsys.Dataset, config: TrainConfig, seeds: list[int],
                  freeze_at: tuple, codecs: tuple, variants: tuple) -> dict:
    print(f"{name}: {dataset.graph.num_nodes():,} nodes, {dataset.graph.num_edges():,} edges, "
          f"fanouts {list(config.fanouts)}, freeze at {list(freeze_at)}, codecs "
          f"{','.join(codecs)}", flush=True)
    runs = []
    with tempfile.TemporaryDirectory(prefix="graphsys-freezing-") as work:
        for seed in seeds:
            for variant in variants:
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
            acc = [statistics.fmean(r["history"][i]["test_acc"] or 0.0 for r in mine)
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
        row[0].set_ylabel("test accuracy (mean over seeds)")
        row[0].set_title(f"{res['dataset']}: {s.get('accuracy_delta_points_best_val', 0):+.2f} "
                         "points at best val vs never", fontsize=9)
        row[1].set_ylabel("training epoch (s)")
        row[1].set_yscale("log")
        row[1].set_title(f"{s.get('speedup_after_2_frozen') or 0:.1f}x faster after 2 of 3 "
                         f"frozen; last cache {s.get('last_stage_fp32_over_disk') or 0:.1f}x "
                         "smaller than fp32", fontsize=9)
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
    parser.add_argument("--cora-seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--cora-epochs", type=int, default=40)
    parser.add_argument("--nodes", type=int, default=150_000)
    parser.add_argument("--edges", type=int, default=1_500_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--train-frac", type=float, default=0.1)
    parser.add_argument("--noise", type=float, default=3.0,
                        help="synthetic feature noise (the generator's default 6.0 is not "
                             "learnable by a 3-layer SAGE in a dozen epochs)")
    parser.add_argument("--budget", default="16MB", help="host-cache budget (synthetic)")
    parser.add_argument("--syn-epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=1024, help="synthetic batch size")
    parser.add_argument("--syn-seeds", type=int, nargs="+", default=[0, 1])
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

    results = []
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
    report = {"bench": "freezing",
              "command": "python bench/freezing.py " + shlex.join(argv or sys.argv[1:]),
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": machine(), "graphsys": graphsys.__version__, "datasets": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    plot(results, args.out.with_suffix(".png"))
    print(f"\n{'dataset':<10} {'variant':<12} {'s/epoch 0|1|2 frozen':>24} {'test@val':>9} "
          f"{'test@last':>9} {'disk/epoch 0|1|2':>28}")
    for res in results:
        for variant, v in res["summary"]["variants"].items():
            t = " | ".join(f"{s:.3f}" for s in v["epoch_s_by_phase"].values())
            d = " | ".join(format_size(int(b)) for b in
                           v["disk_bytes_per_epoch_by_phase"].values())
            print(f"{res['dataset']:<10} {variant:<12} {t:>24} {v['test_acc_best_val']:>9.4f} "
                  f"{v['test_acc_last']:>9.4f} {d:>28}")
        s = res["summary"]
        for stage in s["variants"].get("freeze", {}).get("stages", []):
            print(f"  stage {stage['frozen_layers']}: {stage['codec']}, "
                  f"{format_size(stage['disk_bytes'])} on disk = "
                  f"{stage['fp32_over_disk']:.2f}x smaller than fp32 "
                  f"({stage['fp32_over_encoded']:.2f}x before LZ4), max error "
                  f"{stage['max_abs_error']:.3g} <= bound {stage['max_bound']:.3g}, built in "
                  f"{stage['build_s']:.1f}s")
        print(f"  speed-up after 1 frozen {s.get('speedup_after_1_frozen') or 0:.2f}x, after 2 "
              f"{s.get('speedup_after_2_frozen') or 0:.2f}x; accuracy vs never "
              f"{s.get('accuracy_delta_points_best_val', 0):+.2f} points at best val, "
              f"{s.get('accuracy_delta_points_last', 0):+.2f} at the last epoch")
        for variant in ("freeze-noise", "freeze-none"):
            print(f"  {variant}: "
                  f"{s.get(f'accuracy_delta_points_best_val_{variant}', 0):+.2f} points at "
                  f"best val, {s.get(f'accuracy_delta_points_last_{variant}', 0):+.2f} at the "
                  "last epoch")
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
