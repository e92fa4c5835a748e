"""Benchmark the synthetic generator: wall time, peak memory and disk throughput.

Generation runs in a child process while this one samples the child's resident set
size (with its own children) every 50 ms; the kernel's high-water mark
(``getrusage(RUSAGE_CHILDREN)``) is recorded too, so short spikes are not missed.
The dataset is written to a temporary directory and deleted afterwards unless
``--keep``. Results go to ``bench/results/generate.json``.

Example:
    python bench/generate.py                       # 10M nodes, 200M edges, 128-dim
    python bench/generate.py --quick               # 100k nodes, 2M edges
    python bench/generate.py --nodes 1000000 --edges 20000000 --storage zarr --keep
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine  # noqa: E402  (a sibling script, not a package)

RESULTS = Path(__file__).resolve().parent / "results"
SAMPLE_S = 0.05


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=None, help="default 10_000_000")
    parser.add_argument("--edges", type=int, default=None, help="default 200_000_000")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    parser.add_argument("--storage", choices=["raw", "zarr"], default="raw")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="a quick check: 100k nodes, 2M edges unless given")
    parser.add_argument("--out", type=Path, default=None,
                        help="dataset directory (must not exist); default: a temporary one")
    parser.add_argument("--tmpdir", type=Path, default=None,
                        help="where the temporary dataset goes (default: the system's)")
    parser.add_argument("--keep", action="store_true", help="keep the dataset afterwards")
    parser.add_argument("--name", default=None, help="benchmark name (generate-10M)")
    parser.add_argument("--results", type=Path, default=None,
                        help="JSON output (bench/results/generate.json, or "
                             "generate-quick.json with --quick)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    big = not args.quick
    args.nodes = args.nodes or (10_000_000 if big else 100_000)
    args.edges = args.edges if args.edges is not None else (200_000_000 if big else 2_000_000)
    args.name = args.name or ("generate-10M" if big else "generate-quick")
    args.results = args.results or RESULTS / ("generate.json" if big else "generate-quick.json")
    return args


def child(spec: str) -> None:
    """Generate the dataset described by ``spec`` (JSON); print a JSON summary."""
    from graphsys.datasets.synthetic import SyntheticConfig, generate_synthetic

    spec_data = json.loads(spec)
    config = SyntheticConfig(**spec_data["config"])
    start = time.perf_counter()
    manifest = generate_synthetic(spec_data["out"], config, progress=False,
                                  feature_storage=spec_data["storage"])
    seconds = time.perf_counter() - start
    print(json.dumps({"generate_s": seconds, "num_nodes": manifest.num_nodes,
                      "num_edges": manifest.num_edges}))


def tree_rss(proc: psutil.Process) -> int:
    """RSS of a process and all its descendants (0 for ones that just exited)."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run(args: argparse.Namespace) -> dict:
    from graphsys.graph.checksum import size_on_disk

    tmp = None
    if args.out is None:
        tmp = Path(tempfile.mkdtemp(prefix="graphsys-generate-", dir=args.tmpdir))
        out = tmp / args.name
    else:
        out = args.out
    config = {"num_nodes": args.nodes, "num_edges": args.edges, "feat_dim": args.dim,
              "dtype": args.dtype, "seed": args.seed}
    spec = json.dumps({"config": config, "out": str(out), "storage": args.storage})
    try:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, __file__, "--child", spec],
                                stdout=subprocess.PIPE, text=True)
        watched = psutil.Process(proc.pid)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, tree_rss(watched))
            time.sleep(SAMPLE_S)
        stdout = proc.stdout.read() if proc.stdout else ""
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"generation failed with exit status {proc.returncode}")
        summary = json.loads(stdout.strip().splitlines()[-1])
        # ru_maxrss is in KiB on Linux: the largest child's high-water mark.
        kernel_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        written = size_on_disk(out)
    finally:
        if not args.keep:
            shutil.rmtree(tmp if tmp is not None else out, ignore_errors=True)
    peak_rss = max(peak, kernel_peak)
    seconds = summary["generate_s"]
    return {
        "name": args.name,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "nodes": summary["num_nodes"],
        "edges": summary["num_edges"],
        "dim": args.dim,
        "dtype": args.dtype,
        "storage": args.storage,
        "seed": args.seed,
        "wall_s": round(wall, 2),
        "generate_s": round(seconds, 2),
        "peak_rss_bytes": peak_rss,
        "peak_rss_gib": round(peak_rss / 2**30, 3),
        "peak_rss_sampled_bytes": peak,
        "peak_rss_kernel_bytes": kernel_peak,
        "bytes_written": written,
        "edges_per_s": round(summary["num_edges"] / seconds),
        "nodes_per_s": round(summary["num_nodes"] / seconds),
        "write_mb_per_s": round(written / seconds / 1e6, 1),
        "output": str(out) if args.keep else None,
        "machine": machine(),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        child(args.child)
        return
    result = run(args)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=2) + "\n")
    rows = [
        ("graph", f"{result['nodes']:,} nodes, {result['edges']:,} edges, "
                  f"{result['dim']}-dim {result['dtype']} ({result['storage']})"),
        ("wall time", f"{result['wall_s']:.1f} s (generation {result['generate_s']:.1f} s)"),
        ("peak RSS", f"{result['peak_rss_gib']:.2f} GiB"),
        ("written", f"{result['bytes_written'] / 2**30:.2f} GiB"),
        ("throughput", f"{result['edges_per_s'] / 1e6:.1f} M edges/s, "
                       f"{result['write_mb_per_s']:.0f} MB/s"),
        ("results", str(args.results)),
    ]
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
