"""Cora accuracy of mini-batch GraphSAGE (or GCN/GAT) over several seeds.

Reads Cora from ``../shared/data/planetoid`` (or ``--raw``) into a temporary dataset,
trains with the options below for each seed, selects the epoch by validation accuracy
and reports the test accuracy there. Writes ``bench/results/cora_<model>.json``.

Example:
    python bench/cora_accuracy.py                 # sage, seeds 0 1 2
    python bench/cora_accuracy.py --model gat --seeds 0 1 2 3 4
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

import graphsys
from graphsys.datasets.planetoid import prepare_planetoid
from graphsys.train import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parent
RAW = ROOT.parent.parent / "shared" / "data" / "planetoid"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--raw", type=Path, default=RAW)
    parser.add_argument("--model", default="sage", choices=("sage", "gcn", "gat"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--fanouts", default="25,10")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--feature-norm", default="row")
    args = parser.parse_args(argv)
    if not (args.raw / "ind.cora.x").is_file():
        print(f"Cora files not found in {args.raw}; pass --raw", file=sys.stderr)
        return 2
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        prepare_planetoid(args.raw, Path(tmp) / "cora", name="cora")
        cora = graphsys.load_dataset(Path(tmp) / "cora")
        for seed in args.seeds:
            config = TrainConfig(model=args.model,
                                 fanouts=tuple(int(f) for f in args.fanouts.split(",")),
                                 batch_size=args.batch_size, hidden=args.hidden, lr=args.lr,
                                 epochs=args.epochs, feature_norm=args.feature_norm,
                                 seed=seed, progress=False)
            start = time.perf_counter()
            result = Trainer(cora, config).fit()
            runs.append({"seed": seed, "test_acc": result.test_acc,
                         "best_val_acc": result.best_val_acc, "best_epoch": result.best_epoch,
                         "seconds": time.perf_counter() - start})
            print(f"seed {seed}: test {result.test_acc:.4f} (val {result.best_val_acc:.4f} "
                  f"at epoch {result.best_epoch})", flush=True)
    accs = [r["test_acc"] for r in runs]
    summary = {
        "name": f"cora-{args.model}",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python bench/cora_accuracy.py " + shlex.join(argv or sys.argv[1:]),
        "config": {k: (list(v) if isinstance(v, tuple) else v)
                   for k, v in asdict(config).items() if k != "seed"},
        "runs": runs,
        "mean_test_acc": statistics.fmean(accs),
        "std_test_acc": statistics.pstdev(accs),
        "graphsys": graphsys.__version__,
    }
    out = ROOT / "results" / f"cora_{args.model}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"mean test accuracy {summary['mean_test_acc']:.4f} ± {summary['std_test_acc']:.4f} "
          f"over {len(accs)} seeds -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
