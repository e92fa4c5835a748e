"""Device-cache policies replayed on the same access streams, against Belady's optimum.

For each workload (a >= 2M-node power-law graph) and scenario, one epoch of GraphSAGE
batches (fanouts [15,10,5], batch 1024) is sampled offline and replayed through the
real :class:`graphsys.storage.DeviceCache` (CPU slots; the logic is the device's) at
capacities of 5, 10 and 20% of the rows, for: no cache, static degree, static
presampled frequency, LRU, CLOCK, hybrid, hybrid + victim buffer + prefetch, and the
Belady (MIN with bypass) optimum computed from the log.

Every run first replays a warm-up epoch (not counted), so the figures are the steady
state a multi-epoch job sees; static caches are filled before it. The presample is a
separate epoch (number 1000) of the scenario's starting loader, as GNNLab presamples.

Workloads:
- ``papers``: labelled nodes are one community of a big graph (as arXiv papers in
  ogbn-papers100M): seeds are the training nodes of class 0; homophily 0.98 and
  source skew 3 keep their 3-hop neighbourhoods inside a hot core.
- ``products``: seeds spread over the whole graph (10% of nodes, random), homophily
  0.8, default skew: little locality, as ogbn-products.

Scenarios: ``stationary`` (the stream matches the presample); ``seed-drift`` (after
half an epoch the training seeds switch to another community); ``fanout-drift``
(after half an epoch the fanouts change to [10,10,10]).

Demand misses of the prefetching run depend on the link: the prefetcher may move at
most ``headroom`` x (Belady's mean rows per batch) rows while a batch computes, i.e.
a link that could carry the least possible traffic with 25% to spare. It looks
``lookahead`` batches ahead and stages rows beside the slots: the next batch's
missing rows, plus rows of later batches while fewer than ``stage`` x the link's rows
per batch, and at most 1/16 of the cache, are staged (device memory beyond the cache's
capacity, reported as ``stage_rows``; with the default it is one compute step of
transfers, capped so a slow link cannot turn the stage into a second cache).

Run: ``python bench/cache_policy.py`` (about 15 minutes on 2 cores) or ``--quick``.
Writes ``bench/results/cache_policy[_quick].json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))

from _machine import machine  # noqa: E402  (a sibling script, not a package)

import graphsys  # noqa: E402
from graphsys._atomic import atomic_write_bytes  # noqa: E402
from graphsys.datasets.synthetic import SyntheticConfig, generate_synthetic  # noqa: E402
from graphsys.samplers.offline import offline_sample  # noqa: E402
from graphsys.storage import DeviceCache, TensorStore, VictimBuffer  # noqa: E402
from graphsys.storage.belady import belady  # noqa: E402
from graphsys.storage.policies import make_policy  # noqa: E402

FANOUTS = [15, 10, 5]
DRIFT_FANOUTS = [10, 10, 10]
BATCH = 1024
CAPACITIES = (0.05, 0.10, 0.20)
SCENARIOS = ("stationary", "seed-drift", "fanout-drift")
POLICIES = ("none", "degree", "frequency", "lru", "clock", "hybrid", "hybrid+victim+prefetch",
            "belady")


def workloads(quick: bool) -> dict[str, SyntheticConfig]:
    scale = 10 if quick else 1
    return {
        "papers": SyntheticConfig(num_nodes=2_000_000 // scale, num_edges=30_000_000 // scale,
                                  feat_dim=16, homophily=0.98, source_skew=3.0,
                                  train_frac=0.5, val_frac=0.1, test_frac=0.1),
        "products": SyntheticConfig(num_nodes=2_000_000 // scale,
                                    num_edges=40_000_000 // scale, feat_dim=16,
                                    train_frac=0.1, val_frac=0.05, test_frac=0.05),
    }


def load(name: str, config: SyntheticConfig) -> graphsys.Dataset:
    path = ROOT / ".data" / f"cache-{name}-{config.num_nodes}-{config.num_edges}"
    if not (path / "manifest.json").exists():
        generate_synthetic(path, config, progress=False)
    return graphsys.load_dataset(path)


def seed_sets(name: str, ds: graphsys.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """(starting seeds, seeds after a seed drift)."""
    train = np.asarray(ds.train_idx, dtype=np.int64)
    labels = ds.labels.numpy()[train]
    if name == "papers":  # one community, then another
        return train[labels == 0], train[labels == 1]
    half = ds.num_classes // 2
    return train[labels < half], train[labels >= half]


def loader(graph, seeds: np.ndarray, fanouts: list[int]) -> graphsys.DataLoader:
    return graphsys.DataLoader(graph, seeds, graphsys.NeighborSampler(fanouts, seed=0),
                               batch_size=BATCH, shuffle=True, seed=0)


def stream(name: str, ds: graphsys.Dataset, scenario: str):
    """(presample log, warm-up batches, measured batches)."""
    g = ds.graph
    first, second = seed_sets(name, ds)
    start = loader(g, first, FANOUTS)
    pre = offline_sample(start, [1000])
    warm = [torch.from_numpy(b) for b in offline_sample(start, [0])]
    now = [torch.from_numpy(b) for b in offline_sample(start, [1])]
    if scenario == "stationary":
        return pre, warm, now
    after = loader(g, second, FANOUTS) if scenario == "seed-drift" \
        else loader(g, first, DRIFT_FANOUTS)
    later = [torch.from_numpy(b) for b in offline_sample(after, [1])]
    half = len(now) // 2
    return pre, warm, now[:half] + later[: len(now) - half]


def replay(cache: DeviceCache, warm, measured, *, lookahead: int = 0,
           budget: int | None = None) -> dict:
    """Counters over ``measured``: the snapshot is taken after the warm-up's last read and
    before the prefetch for the first measured batch, so that traffic is counted."""
    batches = warm + measured
    before = dict(vars(cache.counters))
    start = time.perf_counter()
    if lookahead:
        cache.prefetch(batches[:lookahead], budget)
    for t, ids in enumerate(batches):
        cache.read(ids)
        if t == len(warm) - 1:
            before = dict(vars(cache.counters))
        if lookahead:
            cache.prefetch(batches[t + 1 : t + 1 + lookahead], budget)
    seconds = time.perf_counter() - start
    after = vars(cache.counters)
    out = {k: after[k] - before[k] for k in after if k != "preload_rows"}
    out["preload_rows"] = after["preload_rows"]
    out["replay_seconds"] = seconds
    return out


def summarise(raw: dict, requests: int, belady_misses: int) -> dict:
    moved = raw["moved_rows"]
    return {**raw,
            "request_hit_rate": (raw["hits"] + raw["staged_hits"]) / requests,
            "cache_hit_rate": raw["hits"] / requests,
            "demand_miss_rate": raw["demand_misses"] / requests,
            "moved_vs_belady": moved / belady_misses if belady_misses else float("inf"),
            "traffic_vs_none": moved / requests}


def run_scenario(name: str, ds, scenario: str, args) -> dict:
    g = ds.graph
    n = g.num_nodes()
    pre, warm, measured = stream(name, ds, scenario)
    counts = np.bincount(pre.input_nodes, minlength=n)
    degrees = g.out_degrees().numpy()
    requests = sum(b.numel() for b in measured)
    source = TensorStore(torch.zeros(n, 1))
    result = {"batches": len(measured), "requests": requests,
              "rows_per_batch": requests / len(measured), "capacities": {}}
    for frac in args.capacities:
        capacity = int(frac * n)
        budget = capacity * source.row_bytes
        opt = belady(warm + measured, capacity, n)
        opt_misses = int(opt.misses[len(warm):].sum())
        link = int(np.ceil(args.headroom * opt_misses / len(measured)))
        rows = {"belady": {"moved_rows": opt_misses, "demand_misses": opt_misses,
                           "hits": requests - opt_misses, "staged_hits": 0}}
        rows["none"] = {"moved_rows": requests, "demand_misses": requests, "hits": 0,
                        "staged_hits": 0}
        for policy in POLICIES:
            if policy in rows:
                continue
            base = "hybrid" if policy.startswith("hybrid") else policy
            pol = make_policy(base, counts=counts, presample_batches=pre.num_batches,
                              degrees=degrees)
            if policy == "hybrid+victim+prefetch":
                victim = VictimBuffer(capacity, n, 1, torch.float32)
                cache = DeviceCache(source, budget, pol, device="cpu", victim=victim,
                                    lookahead=args.lookahead,
                                    stage_rows=min(int(args.stage * link), capacity // 16))
                rows[policy] = replay(cache, warm, measured, lookahead=args.lookahead,
                                      budget=link)
                rows[policy]["stage_rows"] = cache.stage_rows
            else:
                cache = DeviceCache(source, budget, pol, device="cpu")
                rows[policy] = replay(cache, warm, measured)
            if hasattr(pol, "static_fraction"):
                rows[policy]["static_fraction"] = pol.static_fraction
        result["capacities"][f"{frac:g}"] = {
            "capacity_rows": capacity, "link_rows_per_batch": link,
            "policies": {p: summarise(rows[p], requests, opt_misses) for p in POLICIES}}
        line = "  ".join(f"{p}={rows[p]['hits'] / requests:.3f}" for p in POLICIES)
        print(f"{name}/{scenario} {frac:.0%}: hit {line}", flush=True)
    return result


def targets(results: dict) -> dict:
    """The issue's targets at a 10% cache, per workload and scenario."""
    out = {}
    for wl, scenarios in results.items():
        for sc, r in scenarios.items():
            if "0.1" not in r["capacities"]:
                continue
            p = r["capacities"]["0.1"]["policies"]
            pf = p["hybrid+victim+prefetch"]
            check = {
                "hybrid_hit_minus_frequency": p["hybrid"]["cache_hit_rate"]
                - p["frequency"]["cache_hit_rate"],
                "prefetch_moved_vs_belady": pf["moved_vs_belady"],
                "prefetch_demand_miss_rate": pf["demand_miss_rate"],
                "prefetch_traffic_reduction_vs_none": 1 - pf["traffic_vs_none"],
            }
            check["ok"] = {
                "hybrid>=frequency": check["hybrid_hit_minus_frequency"] >= 0
                and (sc == "stationary" or check["hybrid_hit_minus_frequency"] > 0),
                "moved<=1.15x_belady": check["prefetch_moved_vs_belady"] <= 1.15,
                "demand<=2%": check["prefetch_demand_miss_rate"] <= 0.02,
                "traffic>=90%_below_none": check["prefetch_traffic_reduction_vs_none"] >= 0.9,
            }
            out[f"{wl}/{sc}"] = check
    return out


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(wl, sc) for wl, scs in result["results"].items() for sc in scs]
    fig, axes = plt.subplots(2, len(panels), figsize=(4.2 * len(panels), 7), squeeze=False)
    for col, (wl, sc) in enumerate(panels):
        r = result["results"][wl][sc]["capacities"]
        xs = [float(k) * 100 for k in r]
        for policy in POLICIES:
            hit = [r[k]["policies"][policy]["request_hit_rate"] * 100 for k in r]
            moved = [r[k]["policies"][policy]["traffic_vs_none"] * 100 for k in r]
            style = "k--" if policy == "belady" else "-o"
            axes[0][col].plot(xs, hit, style, label=policy, markersize=3)
            axes[1][col].plot(xs, moved, style, label=policy, markersize=3)
        axes[0][col].set_title(f"{wl} / {sc}")
        axes[0][col].set_ylabel("hit rate at request (%)")
        axes[1][col].set_ylabel("rows moved host->device (% of no cache)")
        axes[1][col].set_xlabel("device cache (% of rows)")
        for ax in axes[:, col]:
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="200k-node graphs (~1 min)")
    parser.add_argument("--lookahead", type=int, default=16,
                        help="prefetch window (batches)")
    parser.add_argument("--stage", type=float, default=1.0,
                        help="rows staged for later batches, in link rows per batch")
    parser.add_argument("--headroom", type=float, default=1.25,
                        help="link rows per batch, as a multiple of Belady's mean misses")
    parser.add_argument("--capacities", type=float, nargs="+", default=list(CAPACITIES))
    parser.add_argument("--workloads", nargs="+", default=["papers", "products"],
                        choices=["papers", "products"])
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=SCENARIOS)
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON path (default bench/results/cache_policy[_quick].json)")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    results: dict = {}
    for name, config in workloads(args.quick).items():
        if name not in args.workloads:
            continue
        ds = load(name, config)
        results[name] = {sc: run_scenario(name, ds, sc, args) for sc in args.scenarios}
    result = {"bench": "cache_policy", "date": datetime.now(timezone.utc).isoformat(),
              "machine": machine(), "command": "python bench/cache_policy.py"
              + " ".join([""] + (argv if argv is not None else sys.argv[1:])),
              "fanouts": FANOUTS, "batch_size": BATCH, "lookahead": args.lookahead,
              "headroom": args.headroom, "stage": args.stage,
              "workloads": {k: vars(v) for k, v in workloads(args.quick).items()},
              "results": results}
    result["targets_at_10pct"] = targets(results)
    suffix = "_quick" if args.quick else ""
    out = args.out or ROOT / "results" / f"cache_policy{suffix}.json"
    atomic_write_bytes(out, json.dumps(result, indent=2).encode())
    plot(result, out.with_suffix(".png"))
    for key, check in result["targets_at_10pct"].items():
        print(key, {k: round(v, 4) for k, v in check.items() if k != "ok"}, check["ok"])
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
