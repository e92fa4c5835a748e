"""GPU kernels of graphsys.cuda against the links and paths they replace (needs CUDA).

Measures, in one run on one GPU:

* the pinned host -> device copy-engine bandwidth (one large ``copy_``), and the
  device -> device copy bandwidth;
* UVA gather (:func:`graphsys.cuda.gather_rows` from a pinned table) at rows of
  128 B, 512 B, 1 KiB and 4 KiB, as GB/s and as a share of the host -> device bandwidth
  (target >= 85% for rows >= 512 B), and against gathering on the CPU into a pinned
  buffer plus a copy (target >= 1.6x);
* gather from GPU memory as a share of the device copy bandwidth (target >= 75%);
* fused INT8 aggregation against float32 aggregation (``index_add`` over gathered
  rows) on one sampled block (target >= 1.5x faster, 4x less feature memory);
* GPU neighbour sampling (graph on the device and pinned) against the CPU sampler,
  in sampled edges per second.

Every kernel's output is checked against its CPU path before it is timed. Writes
``bench/results/kernels.json`` naming the GPU and its PCIe link. Without CUDA and CuPy
it prints why and exits with status 2.

Example:
    python bench/kernels.py            # about two minutes on one GPU
    python bench/kernels.py --quick    # smaller tables, for a smoke run
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent
ROW_BYTES = (128, 512, 1024, 4096)


def gpu_or_exit() -> None:
    from graphsys.cuda import gpu_ready

    if not gpu_ready():
        from graphsys._compat import probe_cupy

        print("bench/kernels.py needs a CUDA GPU and CuPy: torch.cuda.is_available() = "
              f"{torch.cuda.is_available()}, cupy: {probe_cupy().detail}. Install "
              "'graphsys[cuda12]' (or cuda13) on a GPU machine.", file=sys.stderr)
        sys.exit(2)


def pcie_link() -> dict:
    query = "name,pcie.link.gen.current,pcie.link.gen.max,pcie.link.width.current"
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
        name, gen, gen_max, width = [f.strip() for f in out.splitlines()[0].split(",")]
        return {"nvidia_smi_name": name, "pcie_gen_current": gen, "pcie_gen_max": gen_max,
                "pcie_width": width}
    except Exception as exc:  # no nvidia-smi in the image: say so in the results
        return {"pcie": f"unknown ({type(exc).__name__})"}


def timed(fn, repeat: int = 5, warmup: int = 2) -> float:
    """Median seconds of ``fn()`` measured with CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def wall(fn, repeat: int = 5, warmup: int = 1) -> float:
    """Median wall seconds of ``fn()`` (CPU work included), synchronised."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def copy_bandwidths(nbytes: int) -> dict:
    host = torch.empty(nbytes, dtype=torch.uint8).pin_memory()
    dev = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    dev2 = torch.empty_like(dev)
    h2d = nbytes / timed(lambda: dev.copy_(host, non_blocking=True)) / 1e9
    d2d = nbytes / timed(lambda: dev2.copy_(dev)) / 1e9
    return {"h2d_GBps": h2d, "d2d_GBps": d2d}


def gather_one(row_bytes: int, table_bytes: int, gather_bytes: int, links: dict) -> dict:
    """UVA, CPU + copy and device gathers of random rows of ``row_bytes``."""
    from graphsys.cuda import gather_rows

    width = row_bytes // 4
    num_rows = table_bytes // row_bytes
    table = torch.empty(num_rows, width, dtype=torch.float32).pin_memory()
    table.view(torch.int32).random_()
    n = gather_bytes // row_bytes
    ids_cpu = torch.randint(0, num_rows, (n,))
    ids = ids_cpu.cuda()
    got = gather_rows(table, ids, check=False)
    assert torch.equal(got[:1000].cpu(), table[ids_cpu[:1000]]), "UVA gather is wrong"
    uva = n * row_bytes / timed(lambda: gather_rows(table, ids, check=False)) / 1e9
    staging = torch.empty(n, width).pin_memory()
    out = torch.empty(n, width, device="cuda")

    def cpu_path() -> None:
        torch.index_select(table, 0, ids_cpu, out=staging)
        out.copy_(staging, non_blocking=True)

    cpu = n * row_bytes / wall(cpu_path, repeat=3) / 1e9
    dev_table = table[: min(num_rows, (4 << 30) // row_bytes)].cuda()
    dev_ids = torch.randint(0, dev_table.shape[0], (n,), device="cuda")
    assert torch.equal(gather_rows(dev_table, dev_ids, check=False), dev_table[dev_ids])
    dev = n * row_bytes / timed(lambda: gather_rows(dev_table, dev_ids, check=False)) / 1e9
    return {
        "row_bytes": row_bytes, "rows": n,
        "uva_GBps": uva, "uva_share_of_h2d": uva / links["h2d_GBps"],
        "cpu_gather_copy_GBps": cpu, "uva_speedup_vs_cpu": uva / cpu,
        "device_gather_GBps": dev, "device_share_of_d2d": dev / links["d2d_GBps"],
    }


def aggregation_bench(num_dst: int, fanout: int, num_src: int, dim: int) -> dict:
    from graphsys.cuda import aggregate, aggregation_error_bound, quantize

    g = torch.Generator().manual_seed(0)
    indptr = torch.arange(0, (num_dst + 1) * fanout, fanout, dtype=torch.int64)
    indices = torch.randint(0, num_src, (num_dst * fanout,), generator=g)
    x = torch.randn(num_src, dim, generator=g)
    xd, ip, ix = x.cuda(), indptr.cuda(), indices.cuda()
    q = quantize(xd, 8)
    dst = torch.repeat_interleave(torch.arange(num_dst, device="cuda"), fanout)

    def fp32():
        return torch.zeros(num_dst, dim, device="cuda").index_add_(0, dst, xd[ix]) / fanout

    got = aggregate(ip, ix, q)
    bound = aggregation_error_bound(ip, ix, q, xd)
    assert bool(((got - fp32()).abs() <= bound).all()), "quantized aggregation out of bound"
    t_fp32, t_q = timed(fp32), timed(lambda: aggregate(ip, ix, q))
    return {"num_dst": num_dst, "fanout": fanout, "num_src": num_src, "dim": dim,
            "fp32_ms": t_fp32 * 1e3, "int8_ms": t_q * 1e3, "speedup": t_fp32 / t_q,
            "feature_bytes_fp32": x.nbytes, "feature_bytes_int8": q.nbytes(),
            "memory_ratio": x.nbytes / q.nbytes()}


def sampling_bench(num_nodes: int, num_edges: int, batches: int) -> dict:
    from graphsys import CSCGraph
    from graphsys.cuda import GPUNeighborSampler
    from graphsys.samplers import NeighborSampler

    rng = np.random.default_rng(0)
    dst = (rng.pareto(1.5, num_edges) * num_nodes / 50).astype(np.int64) % num_nodes
    graph = CSCGraph.from_edges(rng.integers(0, num_nodes, num_edges), dst, num_nodes)
    fanouts = [15, 10, 5]
    seeds = [rng.permutation(num_nodes)[:1024] for _ in range(batches)]
    result = {"num_nodes": num_nodes, "num_edges": num_edges, "fanouts": fanouts,
              "batch_size": 1024, "batches": batches}
    cpu = NeighborSampler(fanouts, seed=1)
    expected = [cpu.sample(graph, s, key=i) for i, s in enumerate(seeds[:3])]
    edges = sum(b.num_edges() for mb in expected for b in mb.blocks) / len(expected)
    t0 = time.perf_counter()
    for i, s in enumerate(seeds):
        cpu.sample(graph, s, key=i)
    result["cpu_edges_per_s"] = edges * batches / (time.perf_counter() - t0)
    for memory in ("device", "pinned"):
        gpu = GPUNeighborSampler(fanouts, seed=1, graph_memory=memory)
        for i, mb in enumerate(expected):
            got = gpu.sample(graph, seeds[i], key=i)
            for a, b in zip(got.blocks, mb.blocks, strict=True):
                assert torch.equal(a.indices.cpu(), b.indices), "GPU sample differs"
                assert torch.equal(a.src_nodes.cpu(), b.src_nodes), "GPU relabel differs"
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i, s in enumerate(seeds):
            gpu.sample(graph, s, key=i)
        torch.cuda.synchronize()
        result[f"gpu_{memory}_edges_per_s"] = edges * batches / (time.perf_counter() - t0)
    result["speedup_device"] = result["gpu_device_edges_per_s"] / result["cpu_edges_per_s"]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "kernels.json")
    args = parser.parse_args(argv)
    gpu_or_exit()
    import cupy

    import graphsys

    scale = 1 if args.quick else 8
    links = copy_bandwidths(256 << 20 if args.quick else 2 << 30)
    print(f"host->device {links['h2d_GBps']:.1f} GB/s, device copy {links['d2d_GBps']:.1f} GB/s")
    gather = [gather_one(row_bytes, scale * (512 << 20), scale * (32 << 20), links)
              for row_bytes in ROW_BYTES]
    print(f"{'row':>6s} {'UVA GB/s':>9s} {'of H2D':>7s} {'vs CPU':>7s} {'dev GB/s':>9s} "
          f"{'of D2D':>7s}")
    for r in gather:
        print(f"{r['row_bytes']:6d} {r['uva_GBps']:9.1f} {r['uva_share_of_h2d']:7.0%} "
              f"{r['uva_speedup_vs_cpu']:6.2f}x {r['device_gather_GBps']:9.1f} "
              f"{r['device_share_of_d2d']:7.0%}")
    agg = aggregation_bench(num_dst=scale * 25_000, fanout=10, num_src=scale * 100_000,
                            dim=128)
    print(f"aggregation: fp32 {agg['fp32_ms']:.2f} ms, int8 {agg['int8_ms']:.2f} ms "
          f"({agg['speedup']:.2f}x), features {agg['memory_ratio']:.2f}x smaller")
    sampling = sampling_bench(num_nodes=scale * 250_000, num_edges=scale * 5_000_000,
                              batches=20)
    print(f"sampling: CPU {sampling['cpu_edges_per_s'] / 1e6:.1f} M edges/s, GPU "
          f"{sampling['gpu_device_edges_per_s'] / 1e6:.1f} (device) / "
          f"{sampling['gpu_pinned_edges_per_s'] / 1e6:.1f} (pinned) M edges/s")
    big = [r for r in gather if r["row_bytes"] >= 512]
    targets = {
        "uva_share_of_h2d>=0.85 (rows>=512B)": all(r["uva_share_of_h2d"] >= 0.85 for r in big),
        "uva_speedup_vs_cpu>=1.6": all(r["uva_speedup_vs_cpu"] >= 1.6 for r in gather),
        "device_share_of_d2d>=0.75": all(r["device_share_of_d2d"] >= 0.75 for r in big),
        "int8_aggregation_speedup>=1.5": agg["speedup"] >= 1.5,
        "int8_memory_ratio>=3.9": agg["memory_ratio"] >= 3.9,
    }
    for name, met in targets.items():
        print(f"  {'met' if met else 'NOT met'}: {name}")
    from _machine import machine

    props = torch.cuda.get_device_properties(0)
    summary = {
        "name": "kernels", "quick": args.quick,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python bench/kernels.py " + shlex.join(argv or sys.argv[1:]),
        "gpu": {"name": props.name, "memory_bytes": props.total_memory,
                "sm_count": props.multi_processor_count, **pcie_link()},
        "links": links, "gather": gather, "aggregation": agg, "sampling": sampling,
        "targets": targets, "machine": machine(), "cupy": cupy.__version__,
        "graphsys": graphsys.__version__,
    }
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
