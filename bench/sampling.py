"""Sampled edges per second: graphsys's CPU NeighborSampler against DGL's, side by side.

Both contenders sample the same seed batches (a seeded permutation of the training
nodes, cut into ``--batch-size`` batches) from the same synthetic power-law graph with
the same fanouts and the same number of threads. graphsys runs in this process
(``numba.set_num_threads``); DGL 2.1.0 runs in a child process under its own virtual
environment (``bash bench/dgl_env.sh`` creates it) with ``OMP_NUM_THREADS`` and
``torch.set_num_threads``. Each contender builds its graph and warms up (numba's JIT,
DGL's first calls) on the first ``--warmup`` batches before any timing; a timed call
is one ``sampler.sample(graph, seeds)``, which includes relabelling to block-local ids
in both libraries. ``--rounds`` rounds alternate between the two (the idle one sleeps
on a pipe) so drift in the machine's load hits both alike; besides the overall rate
(all sampled edges / all timed seconds) the results give each contender's best round and
the median of the per-round ratios, which resist bursts of load from other processes.

Index dtypes differ by default: graphsys loads the graph's indices as int32 (the
narrowest that holds the node ids), DGL's id type is int64. A third contender, the same
graphsys sampler on the graph with int64 indices, gives an equal-dtype pair
(``equal_dtype`` in the JSON); every contender's ``index_dtype`` is recorded. (DGL with
``--dgl-idtype int32`` is the other equal pair, but DGL 2.1.0 samples wrongly with int32
on more than one thread.) The three take turns, rotating who goes first each round.

The graph is generated once into ``bench/.data/`` and reused. Results go to
``bench/results/sampling.json`` and ``sampling.png`` (``sampling-quick.*`` with ``--quick``).

Example:
    bash bench/dgl_env.sh && python bench/sampling.py       # 2M nodes, 40M edges
    python bench/sampling.py --quick                         # 200k nodes, 4M edges
    python bench/sampling.py --threads 1 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine  # noqa: E402  (a sibling script, not a package)

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
DATA = BENCH / ".data"
DGL_PYTHON = BENCH / ".dgl-venv" / "bin" / "python"
WORKER = BENCH / "_dgl_sampling_worker.py"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=None, help="default 2_000_000")
    parser.add_argument("--edges", type=int, default=None, help="default 40_000_000")
    parser.add_argument("--fanouts", default="15,10,5", help="input layer first")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--batches", type=int, default=None,
                        help="timed batches per round (default 20, 10 with --quick)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed batches first")
    parser.add_argument("--rounds", type=int, default=None,
                        help="timed rounds per contender, alternating (default 10, 3 with "
                             "--quick)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--dgl-idtype", choices=["int32", "int64"], default="int64",
                        help="id type of the DGL graph (DGL's default is int64). DGL 2.1.0 "
                             "samples wrongly with int32 on more than one thread: from the "
                             "second call on, blocks shrink (sampled_edges_rel_diff shows it)")
    parser.add_argument("--dgl-python", type=Path, default=DGL_PYTHON,
                        help="Python of the DGL environment (bench/.dgl-venv)")
    parser.add_argument("--data-dir", type=Path, default=DATA,
                        help="where generated graphs are cached")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke test: 200k nodes, 4M edges, 10 batches per round")
    parser.add_argument("--results", type=Path, default=None,
                        help="JSON output; the PNG goes beside it with the same stem")
    args = parser.parse_args(argv)
    big = not args.quick
    args.nodes = args.nodes or (2_000_000 if big else 200_000)
    args.edges = args.edges or (40_000_000 if big else 4_000_000)
    args.batches = args.batches or (20 if big else 10)
    args.rounds = args.rounds or (10 if big else 3)
    args.fanouts = [int(f) for f in args.fanouts.split(",")]
    if args.results is None:
        args.results = RESULTS / ("sampling.json" if big else "sampling-quick.json")
    return args


# -- the graph -------------------------------------------------------------------------
def dataset_path(args: argparse.Namespace) -> Path:
    """Generate the synthetic graph once; later runs reuse the cached directory."""
    from graphsys.datasets.synthetic import SyntheticConfig, generate_synthetic

    config = SyntheticConfig(num_nodes=args.nodes, num_edges=args.edges, feat_dim=1,
                             num_classes=2, seed=0)
    path = args.data_dir / f"synthetic-{args.nodes}-{args.edges}-seed0"
    if not (path / "manifest.json").is_file():
        print(f"generating {path} (once) ...", file=sys.stderr)
        generate_synthetic(path, config, progress=sys.stderr.isatty())
    return path


def seed_batches(train_idx: np.ndarray, args: argparse.Namespace) -> np.ndarray:
    """``[warmup + batches, batch_size]`` seeds: a seed-0 permutation of the train ids."""
    needed = (args.warmup + args.batches) * args.batch_size
    if needed > len(train_idx):
        raise SystemExit(f"{args.warmup + args.batches} batches of {args.batch_size} need "
                         f"{needed} training nodes, the graph has {len(train_idx)}")
    perm = np.random.default_rng(0).permutation(train_idx)
    return np.ascontiguousarray(perm[:needed].reshape(-1, args.batch_size), dtype=np.int64)


# -- graphsys, in this process ---------------------------------------------------------
def graphsys_sampler(fanouts: list[int]) -> tuple[object, str]:
    """graphsys's sampler; the bench has no stand-in (a failed import is a failed run)."""
    from graphsys.samplers import NeighborSampler

    return NeighborSampler(fanouts, seed=0), "graphsys.samplers.NeighborSampler"


def graphsys_round(sampler: object, graph: object, batches: list) -> dict:
    times: list[float] = []
    layers = len(sampler.fanouts)
    edges, src_nodes = [0] * layers, [0] * layers
    for seeds in batches:
        t0 = time.perf_counter()
        minibatch = sampler.sample(graph, seeds)
        times.append(time.perf_counter() - t0)
        for i, block in enumerate(minibatch.blocks):
            edges[i] += block.num_edges()
            src_nodes[i] += block.num_src_nodes()
    return {"seconds": sum(times), "batch_seconds": times, "edges_per_layer": edges,
            "src_nodes_per_layer": src_nodes}


# -- DGL, in a child process -----------------------------------------------------------
class DGLWorker:
    """The child running bench/_dgl_sampling_worker.py; one JSON line per message."""

    def __init__(self, args: argparse.Namespace, data: Path, seeds_file: Path) -> None:
        if not args.dgl_python.exists():
            raise SystemExit(f"{args.dgl_python} is missing: run `bash bench/dgl_env.sh` "
                             "first (it creates bench/.dgl-venv)")
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), DGLBACKEND="pytorch",
                   MKL_NUM_THREADS=str(args.threads))
        command = [str(args.dgl_python), str(WORKER), "--data", str(data),
                   "--seeds", str(seeds_file), "--fanouts", ",".join(map(str, args.fanouts)),
                   "--threads", str(args.threads), "--warmup", str(args.warmup),
                   "--idtype", args.dgl_idtype]
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env)
        self.info = self._read()

    def _read(self) -> dict:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.strip()
            if line.startswith("{"):  # DGL may print its own notices to stdout
                message = json.loads(line)
                if "error" in message:
                    raise SystemExit(f"DGL worker: {message['error']}")
                return message
        raise SystemExit(f"the DGL worker exited with status {self.proc.wait()}")

    def round(self) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write("round\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()


# -- reporting -------------------------------------------------------------------------
def summarise(rounds: list[dict], num_batches: int) -> dict:
    seconds = sum(r["seconds"] for r in rounds)
    batch_times = [t for r in rounds for t in r["batch_seconds"]]
    edges = [sum(r["edges_per_layer"][i] for r in rounds)
             for i in range(len(rounds[0]["edges_per_layer"]))]
    src = [sum(r["src_nodes_per_layer"][i] for r in rounds)
           for i in range(len(rounds[0]["src_nodes_per_layer"]))]
    total_batches = num_batches * len(rounds)
    return {
        "seconds": round(seconds, 4),
        "batches": total_batches,
        "sampled_edges": sum(edges),
        "edges_per_s": round(sum(edges) / seconds),
        "batches_per_s": round(total_batches / seconds, 2),
        "median_batch_ms": round(1e3 * statistics.median(batch_times), 3),
        "edges_per_batch_by_layer": [round(e / total_batches, 1) for e in edges],
        "src_nodes_per_batch_by_layer": [round(s / total_batches, 1) for s in src],
        "edges_per_s_by_round": [round(sum(r["edges_per_layer"]) / r["seconds"])
                                 for r in rounds],
    }


def ratios(a: dict, b: dict) -> list[float]:
    """``a``'s rate over ``b``'s, round by round (the rounds ran back to back)."""
    return [x / y for x, y in zip(a["edges_per_s_by_round"], b["edges_per_s_by_round"],
                                  strict=True)]


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dt = result["index_dtypes"]
    keys = ["graphsys", "graphsys_int64", "dgl"]
    names = [f"graphsys\n{dt['graphsys']}", "graphsys\nint64",
             f"DGL {result['versions']['dgl']}\n{dt['dgl']}"]
    colors = ["#1f77b4", "#6baed6", "#ff7f0e"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.2),
                                   gridspec_kw={"width_ratios": [1, 1.4]})
    rates = [result[k]["edges_per_s"] / 1e6 for k in keys]
    bars = ax1.bar(names, rates, color=colors, alpha=0.85,
                   label="all rounds")
    ax1.bar_label(bars, fmt="%.2f", label_type="center", color="white", fontweight="bold")
    for j, key in enumerate(keys):  # each round's rate: the spread is the machine's noise
        per_round = np.array(result[key]["edges_per_s_by_round"]) / 1e6
        ax1.scatter(np.full(len(per_round), j), per_round, s=12, color="k", zorder=3,
                    label="one round" if j == 0 else None)
    ax1.set_ylabel("sampled edges / s (millions)")
    ax1.legend(fontsize=8)
    eq = result["equal_dtype"]
    ax1.set_title(f"graphsys / DGL = {result['ratio_edges_per_s']:.2f}x "
                  f"({dt['graphsys']} vs {dt['dgl']}),\n{eq['ratio_edges_per_s']:.2f}x with "
                  f"{eq['index_dtype']} on both", fontsize=10)
    layers = len(result["fanouts"])
    x = np.arange(layers)
    for j, (key, name) in enumerate(zip(keys, names, strict=True)):
        counts = np.array(result[key]["edges_per_batch_by_layer"]) / 1e3
        b = ax2.bar(x + (j - 1) * 0.27, counts, 0.27, label=name.replace("\n", " "),
                    color=colors[j])
        ax2.bar_label(b, fmt="%.1f", fontsize=6)
    ax2.set_xticks(x, [f"block {i}\nfanout {f}" for i, f in enumerate(result["fanouts"])])
    ax2.set_ylabel("edges per batch (thousands)")
    ax2.set_title("same work: sampled edges per layer")
    ax2.legend()
    g, m = result["graph"], result["machine"]
    fig.suptitle(f"CPU neighbour sampling, {g['num_nodes']:,} nodes / {g['num_edges']:,} "
                 f"edges, fanouts {result['fanouts']}, batch {result['batch_size']}, "
                 f"{result['threads']} threads\n{m['cpu_model']}, "
                 f"{m['cpu_count_logical']} cores", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args: argparse.Namespace) -> dict:
    import numba
    import torch

    import graphsys
    from graphsys import CSCGraph

    load_at_start = [round(x, 2) for x in os.getloadavg()]
    numba.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    data = dataset_path(args)
    dataset = graphsys.load_dataset(data)
    # Read the memory-mapped arrays into RAM now, so no page fault is timed.
    mapped = dataset.graph
    graph = CSCGraph(mapped.indptr.clone(), mapped.indices.clone())
    seeds = seed_batches(dataset.train_idx.numpy(), args)
    batches = [torch.from_numpy(row) for row in seeds]
    warm, timed = batches[: args.warmup], batches[args.warmup :]

    # The same graph with int64 indices: DGL's default id type, for an equal-dtype pair.
    graph64 = CSCGraph(graph.indptr, graph.indices.to(torch.int64))
    graphs = {str(graph.indices.dtype).replace("torch.", ""): graph, "int64": graph64}
    sampler, impl = graphsys_sampler(args.fanouts)
    start = time.perf_counter()
    for row in warm:  # the first call compiles the numba kernels (or loads their cache)
        sampler.sample(graph, row)
    warmup_s = time.perf_counter() - start
    for row in warm:  # int64 indices compile their own specialisation
        sampler.sample(graph64, row)
    # Untimed: with the same key, int64 indices must give exactly the int32 samples (the
    # timed calls draw fresh keys, so their samples differ from round to round).
    same_samples = all(
        torch.equal(a.src_nodes, b.src_nodes) and torch.equal(a.indices, b.indices)
        for row in warm
        for a, b in zip(sampler.sample(graph, row, key=7).blocks,
                        sampler.sample(graph64, row, key=7).blocks, strict=True))

    with tempfile.TemporaryDirectory(prefix="graphsys-sampling-") as tmp:
        seeds_file = Path(tmp) / "seeds.npy"
        np.save(seeds_file, seeds)
        worker = DGLWorker(args, data, seeds_file)
        names = ["graphsys", "graphsys_int64", "dgl"]
        rounds: dict[str, list[dict]] = {n: [] for n in names}
        try:
            for r in range(args.rounds):
                # Rotate who goes first, so no contender always follows another.
                for name in names[r % 3:] + names[: r % 3]:
                    if name == "dgl":
                        rounds[name].append(worker.round())
                    else:
                        g = graph if name == "graphsys" else graph64
                        rounds[name].append(graphsys_round(sampler, g, timed))
                rate = {n: sum(rounds[n][-1]["edges_per_layer"]) / rounds[n][-1]["seconds"]
                        / 1e6 for n in names}
                print(f"round {r + 1}/{args.rounds}: graphsys {rate['graphsys']:.2f} "
                      f"(int64 indices {rate['graphsys_int64']:.2f}), DGL {rate['dgl']:.2f}"
                      " M edges/s", file=sys.stderr)
        finally:
            worker.close()
    ours, ours64, theirs = rounds["graphsys"], rounds["graphsys_int64"], rounds["dgl"]

    info = worker.info
    ours_s, theirs_s = summarise(ours, len(timed)), summarise(theirs, len(timed))
    ours64_s = summarise(ours64, len(timed))
    gs_dtype = str(graph.indices.dtype).replace("torch.", "")
    # The pair with equal index dtypes: graphsys at DGL's id type.
    equal_s = ours_s if args.dgl_idtype == gs_dtype else ours64_s
    equal_name = "graphsys" if args.dgl_idtype == gs_dtype else "graphsys_int64"
    paired = ratios(ours_s, theirs_s)
    paired_equal = ratios(equal_s, theirs_s)
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel ran
        layer = None
    return {
        "name": "sampling-quick" if args.quick else "sampling",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "graph": {"path": str(data), "num_nodes": graph.num_nodes(),
                  "num_edges": graph.num_edges(), "generator": "graphsys synthetic DC-SBM, "
                  "power-law in-degrees (exponent 2.1), seed 0"},
        "fanouts": args.fanouts,
        "batch_size": args.batch_size,
        "seeds": "seed-0 permutation of train_idx; first warmup batches untimed",
        "warmup_batches": args.warmup,
        "timed_batches_per_round": len(timed),
        "rounds": args.rounds,
        "threads": args.threads,
        "replace": False,
        "graphsys_sampler": impl,
        "graphsys": {**ours_s, "warmup_s": round(warmup_s, 3),
                     "numba_threads": numba.get_num_threads(),
                     "numba_threading_layer": layer,
                     "torch_threads": torch.get_num_threads(),
                     "index_dtype": gs_dtype,
                     "graph_indices_dtype": gs_dtype},
        "graphsys_int64": {**ours64_s, "index_dtype": "int64",
                           "note": "the same graph with its indices cast to int64 (DGL's "
                                   "default id type); same sampler and batches"},
        "dgl": {**theirs_s, "graph_build_s": round(info["build_s"], 3),
                "torch_threads": info["torch_threads"], "omp_num_threads": args.threads,
                "index_dtype": info["idtype"],
                "idtype": info["idtype"], "graph_formats": info["graph_formats"]},
        "index_dtypes": {"graphsys": gs_dtype, "graphsys_int64": "int64",
                         "dgl": info["idtype"]},
        "ratio_edges_per_s": round(ours_s["edges_per_s"] / theirs_s["edges_per_s"], 3),
        "ratio_batches_per_s": round(ours_s["batches_per_s"] / theirs_s["batches_per_s"], 3),
        "ratio_best_round": round(max(ours_s["edges_per_s_by_round"])
                                  / max(theirs_s["edges_per_s_by_round"]), 3),
        "ratio_median_of_rounds": round(statistics.median(paired), 3),
        "ratio_by_round": [round(r, 3) for r in paired],
        # Both sample without replacement, so the work should agree to a fraction of 1%.
        "sampled_edges_rel_diff": round(
            ours_s["sampled_edges"] / theirs_s["sampled_edges"] - 1, 5),
        "equal_dtype": {
            "index_dtype": args.dgl_idtype, "graphsys_contender": equal_name,
            "ratio_edges_per_s": round(equal_s["edges_per_s"] / theirs_s["edges_per_s"], 3),
            "ratio_best_round": round(max(equal_s["edges_per_s_by_round"])
                                      / max(theirs_s["edges_per_s_by_round"]), 3),
            "ratio_median_of_rounds": round(statistics.median(paired_equal), 3),
            "ratio_by_round": [round(r, 3) for r in paired_equal],
            "sampled_edges_rel_diff": round(
                equal_s["sampled_edges"] / theirs_s["sampled_edges"] - 1, 5)},
        "graphsys_int32_over_int64": round(ours_s["edges_per_s"] / ours64_s["edges_per_s"], 3),
        "graphsys_int64_same_samples_same_key": same_samples,
        "versions": {"graphsys": graphsys.__version__, "torch": torch.__version__,
                     "numba": numba.__version__, "numpy": np.__version__,
                     "dgl": info["dgl"], "dgl_torch": info["torch"],
                     "dgl_numpy": info["numpy"]},
        "machine": {**machine(), "load_average_at_start": load_at_start,
                    "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = run(args)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=2) + "\n")
    png = args.results.with_suffix(".png")
    plot(result, png)

    g = result["graph"]
    dt = result["index_dtypes"]
    print(f"graph {g['num_nodes']:,} nodes, {g['num_edges']:,} edges; fanouts "
          f"{result['fanouts']}, batch {result['batch_size']}, {result['threads']} threads, "
          f"{result['rounds']} x {result['timed_batches_per_round']} timed batches")
    keys = ["graphsys", "graphsys_int64", "dgl"]
    heads = [f"graphsys {dt['graphsys']}", "graphsys int64", f"DGL {dt['dgl']}"]
    print(f"{'':<32}" + "".join(f"{h:>16}" for h in heads))
    rows = [("M sampled edges/s", "edges_per_s", 1e-6, ".2f"),
            ("batches/s", "batches_per_s", 1, ".2f"),
            ("median ms/batch", "median_batch_ms", 1, ".2f")]
    for label, key, scale, fmt in rows:
        print(f"{label:<32}" + "".join(f"{result[k][key] * scale:>16{fmt}}" for k in keys))
    for i, f in enumerate(result["fanouts"]):
        for what, key in (("edges", "edges_per_batch_by_layer"),
                          ("src nodes", "src_nodes_per_batch_by_layer")):
            label = f"block {i} (fanout {f}) {what}"
            print(f"{label:<32}" + "".join(f"{result[k][key][i]:>16,.0f}" for k in keys))
    best = [max(result[k]["edges_per_s_by_round"]) / 1e6 for k in keys]
    print(f"{'best round M edges/s':<32}" + "".join(f"{b:>16.2f}" for b in best))
    eq = result["equal_dtype"]
    print(f"ratio graphsys/DGL ({dt['graphsys']} vs {dt['dgl']}): "
          f"{result['ratio_edges_per_s']:.2f}x edges/s overall, "
          f"{result['ratio_median_of_rounds']:.2f}x median of rounds, "
          f"{result['ratio_best_round']:.2f}x best rounds "
          f"(sampled edges differ by {100 * result['sampled_edges_rel_diff']:+.2f}%)")
    print(f"ratio graphsys/DGL, both {eq['index_dtype']}: {eq['ratio_edges_per_s']:.2f}x "
          f"overall, {eq['ratio_median_of_rounds']:.2f}x median of rounds, "
          f"{eq['ratio_best_round']:.2f}x best rounds; graphsys int32/int64 "
          f"{result['graphsys_int32_over_int64']:.2f}x (same samples for the same key: "
          f"{result['graphsys_int64_same_samples_same_key']})")
    print(f"load average at start/end: {result['machine']['load_average_at_start'][0]}/"
          f"{result['machine']['load_average_at_end'][0]} on {os.cpu_count()} cores")
    print(f"results: {args.results}, {png}")


if __name__ == "__main__":
    main()
