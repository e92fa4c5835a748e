"""Test accuracy of GraphSAGE with INT8 (and INT4) features and quantized aggregation
against float32, on Cora and on a synthetic graph, same seeds, same batches.

Each run trains a 2-layer mean GraphSAGE with mini-batches (the same sampler seed and
batch order for every precision), picks the epoch with the best validation accuracy and
reports the test accuracy there (full-neighbour evaluation). The quantized model stores
the input features as INT8/INT4 rows (per-row scale and zero point), aggregates every
layer from quantized rows with the fused kernel's CPU path, and protects the 10% of
destinations of highest in-degree in each block (Degree-Quant). Writes
``bench/results/quantized_accuracy.json``.

Example:
    python bench/quantized_accuracy.py                     # cora + synthetic, seeds 0 1 2
    python bench/quantized_accuracy.py --datasets cora --seeds 0
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

import graphsys
from graphsys.cuda import QuantizedRows, quantize
from graphsys.datasets.planetoid import prepare_planetoid
from graphsys.datasets.synthetic import SyntheticConfig, generate_synthetic
from graphsys.loader import DataLoader
from graphsys.nn import GraphSAGE
from graphsys.samplers import NeighborSampler

ROOT = Path(__file__).resolve().parent
RAW = ROOT.parent.parent / "shared" / "data" / "planetoid"
PRECISIONS = {"fp32": None, "int8": "int8", "int4": "int4"}


def rows(table, ids: torch.Tensor):
    return table.index_select(ids) if isinstance(table, QuantizedRows) else table[ids]


@torch.no_grad()
def accuracy(model, graph, table, labels, nodes: np.ndarray) -> float:
    model.eval()
    batch = NeighborSampler([-1] * model.num_layers).sample(graph, nodes, key=0)
    logits = model(batch.blocks, rows(table, batch.input_nodes))
    return float((logits.argmax(1) == labels[batch.output_nodes]).float().mean())


def train(data: dict, precision: str, seed: int, args) -> dict:
    """Train one model; the test accuracy at the best validation epoch."""
    quant = PRECISIONS[precision]
    feats, labels, graph = data["features"], data["labels"], data["graph"]
    table = quantize(feats, 8 if quant == "int8" else 4) if quant else feats
    torch.manual_seed(seed)
    model = GraphSAGE(feats.shape[1], args.hidden, data["num_classes"], num_layers=2,
                      dropout=args.dropout, quantize=quant, protect=args.protect if quant else 0)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    loader = DataLoader(graph, data["train_idx"], NeighborSampler(args.fanouts),
                        batch_size=args.batch_size, shuffle=True, seed=seed)
    best_val, test_at_best, best_epoch = -1.0, 0.0, 0
    for epoch in range(args.epochs):
        model.train()
        for input_nodes, output_nodes, blocks in loader:
            loss = F.cross_entropy(model(blocks, rows(table, input_nodes)), labels[output_nodes])
            opt.zero_grad()
            loss.backward()
            opt.step()
        val = accuracy(model, graph, table, labels, data["val_idx"])
        if val > best_val:
            best_val, best_epoch = val, epoch
            test_at_best = accuracy(model, graph, table, labels, data["test_idx"])
    feature_bytes = table.nbytes() if isinstance(table, QuantizedRows) else feats.nbytes
    return {"test_acc": test_at_best, "best_val_acc": best_val, "best_epoch": best_epoch,
            "feature_bytes": int(feature_bytes)}


def load(name: str, tmp: Path, args) -> dict:
    if name == "cora":
        prepare_planetoid(args.raw, tmp / "cora", name="cora")
        ds = graphsys.load_dataset(tmp / "cora")
    else:
        cfg = SyntheticConfig(num_nodes=args.syn_nodes, num_edges=args.syn_nodes * 10,
                              feat_dim=64, num_classes=8, feature_noise=6.0)
        generate_synthetic(tmp / "syn", cfg, progress=False)
        ds = graphsys.load_dataset(tmp / "syn")
    feats = torch.as_tensor(np.asarray(ds.features[:]), dtype=torch.float32)
    if name == "cora":  # bag of words: rows sum to 1, as in the Cora benchmark
        feats = feats / feats.sum(1, keepdim=True).clamp(min=1e-12)
    return {"graph": ds.graph, "features": feats, "labels": torch.as_tensor(ds.labels).long(),
            "train_idx": np.asarray(ds.train_idx), "val_idx": np.asarray(ds.val_idx),
            "test_idx": np.asarray(ds.test_idx), "num_classes": int(ds.num_classes)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--raw", type=Path, default=RAW)
    parser.add_argument("--datasets", nargs="+", default=["cora", "synthetic"],
                        choices=("cora", "synthetic"))
    parser.add_argument("--precisions", nargs="+", default=["fp32", "int8", "int4"],
                        choices=tuple(PRECISIONS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--fanouts", type=lambda s: [int(f) for f in s.split(",")],
                        default=[25, 10])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--dropout", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--protect", type=float, default=0.1)
    parser.add_argument("--syn-nodes", type=int, default=5000)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "quantized_accuracy.json")
    args = parser.parse_args(argv)
    if "cora" in args.datasets and not (args.raw / "ind.cora.x").is_file():
        print(f"Cora files not found in {args.raw}; pass --raw or --datasets synthetic",
              file=sys.stderr)
        return 2
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets:
            data = load(name, Path(tmp), args)
            if name == "synthetic":  # mini-batches of 16 would take long on 3000 nodes
                batch_args = argparse.Namespace(**{**vars(args), "batch_size": 256,
                                                   "epochs": min(args.epochs, 20)})
            else:
                batch_args = args
            results[name] = {"config": {"batch_size": batch_args.batch_size,
                                        "epochs": batch_args.epochs}}
            for precision in args.precisions:
                runs = []
                for seed in args.seeds:
                    start = time.perf_counter()
                    run = train(data, precision, seed, batch_args)
                    run.update(seed=seed, seconds=round(time.perf_counter() - start, 1))
                    runs.append(run)
                    print(f"{name:9s} {precision:4s} seed {seed}: test {run['test_acc']:.4f} "
                          f"(val {run['best_val_acc']:.4f}, epoch {run['best_epoch']})",
                          flush=True)
                accs = [r["test_acc"] for r in runs]
                results[name][precision] = {"runs": runs, "mean_test_acc": statistics.fmean(accs),
                                            "std_test_acc": statistics.pstdev(accs)}
    print(f"\n{'dataset':10s} {'precision':9s} {'test acc':>9s} {'vs fp32':>8s} {'features':>9s}")
    for name, per in results.items():
        base = per.get("fp32", {}).get("mean_test_acc")
        for precision in args.precisions:
            r = per[precision]
            gap = "" if base is None else f"{100 * (r['mean_test_acc'] - base):+.2f}"
            r["points_vs_fp32"] = None if base is None else 100 * (r["mean_test_acc"] - base)
            mib = r["runs"][0]["feature_bytes"] / 2**20
            print(f"{name:10s} {precision:9s} {r['mean_test_acc']:9.4f} {gap:>8s} "
                  f"{mib:8.2f}M")
    summary = {
        "name": "quantized_accuracy",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python bench/quantized_accuracy.py " + shlex.join(argv or sys.argv[1:]),
        "model": {"arch": "GraphSAGE mean, 2 layers", "hidden": args.hidden,
                  "fanouts": args.fanouts, "lr": args.lr, "weight_decay": args.weight_decay,
                  "dropout": args.dropout, "protect": args.protect},
        "results": results,
        "graphsys": graphsys.__version__,
    }
    try:
        from _machine import machine

        summary["machine"] = machine()
    except ImportError:
        pass
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
