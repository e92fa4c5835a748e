"""End-to-end GraphSAGE training steps: CPU sampling + CPU gather vs the device path.

One papers-like graph held in host memory (power-law in-degrees, popularity-skewed
sources, ``bench/_powerlaw.py``; default 20M nodes, ~15 in-edges each, 128 float32
features = 10.2 GB pinned), a train split of 1.1% of the nodes, fanouts [10, 10],
batch 1024 and the same ``--batches`` seed batches and batch keys for every contender:

* ``cpu_gather``: ``graphsys.NeighborSampler`` on the CPU, features gathered on the CPU
  (``index_select`` into pageable memory) and copied with ``.to(device)`` with the blocks;
* ``device_path``: ``GPUNeighborSampler(graph_memory='pinned')`` (the kernels read the
  pinned CSC arrays over the bus) and ``graphsys.cuda.gather_rows`` reading the pinned
  feature table straight into GPU memory (UVA);
* ``device_path_cache``: the same, features read through a ``DeviceCache`` holding 10% of
  the rows on the GPU (static, highest out-degree first); its misses are read by UVA
  from the pinned table (a ``TensorStore`` of it, whose ``read_to`` is the UVA gather).

Each contender trains a 2-layer GraphSAGE (same init seed, no dropout, Adam) for the same
batches and records the loss of every batch. The inputs are bitwise equal, but GPU
atomic float adds differ in the last bits and Adam amplifies that over the steps, so
the timed losses are reported against a tolerance, and the first
``DETERMINISTIC_BATCHES`` are retrained untimed with torch's deterministic algorithms,
where every contender's losses must be bitwise equal (the target).
Every contender is timed the same way: a few untimed warm-up batches (other keys, a
throwaway model), then ``perf_counter`` around all batches, the device synchronised on
both sides. Reported: seconds, batches/s, host->device bytes per contender (cpu_gather:
the feature tensors and blocks copied; device paths: rows read over UVA or moved by the
cache (its counters), plus the logical bytes of the pinned graph the sampling kernels
read: 2 x 16 B of ``indptr`` per destination and one index per sampled edge, a lower
bound since the bus moves whole sectors), and the speed-up of device_path over
cpu_gather (target >= 3x).

Writes ``bench/results/gpu_e2e_<gpu-name-slug>.json``. ``--quick --device cpu`` runs a
tiny graph through the CPU twins of every contender (figures meaningless, losses must
be equal exactly) and writes to ``--out`` (a temporary file by default).

Example:
    python bench/gpu_e2e.py                        # ~1-2 min on an H200 machine
    python bench/gpu_e2e.py --quick --device cpu --out /tmp/e2e.json
"""

from __future__ import annotations

import argparse
import copy
import json
import shlex
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import gpu_slug, machine  # noqa: E402  (sibling scripts, not a package)
from _powerlaw import powerlaw_graph, random_features  # noqa: E402

import graphsys  # noqa: E402
from graphsys.loader import DataLoader  # noqa: E402
from graphsys.cuda import GPUNeighborSampler, gather_rows  # noqa: E402
from graphsys.nn import GraphSAGE  # noqa: E402
from graphsys.samplers import NeighborSampler  # noqa: E402
from graphsys.storage import DeviceCache, TensorStore, make_policy  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CONTENDERS = ("cpu_gather", "device_path", "device_path_cache", "dataloader_uva")
TARGET_SPEEDUP = 3.0
WARMUP_BATCHES = 3
LOSS_RTOL, LOSS_ATOL = 1e-3, 1e-5
#: Batches trained again, untimed, with torch's deterministic algorithms: there the
#: losses of every contender must be bitwise equal (the timed runs use the GPU's
#: atomic float adds, whose order varies: last-bit differences that Adam amplifies
#: over hundreds of steps, measured 2e-3 after 200 on an H200).
DETERMINISTIC_BATCHES = 20


def block_bytes(mb) -> int:
    """Bytes of a minibatch's block tensors and output ids (what ``.to(device)`` copies)."""
    n = mb.output_nodes.numel() * mb.output_nodes.element_size()
    for b in mb.blocks:
        for t in (b.indptr, b.indices, b.src_nodes):
            n += t.numel() * t.element_size()
    return n


def graph_read_bytes(mb, index_bytes: int) -> int:
    """Logical bytes the sampling kernels read from the graph for ``mb``, and the seeds
    they are given: per destination two int64 of ``indptr`` in each of two kernels, per
    sampled edge one index."""
    n = mb.output_nodes.numel() * 8
    for b in mb.blocks:
        n += b.num_dst_nodes() * 16 * 2 + b.num_edges() * index_bytes
    return n


class Contender:
    """One way to produce ``(blocks, x, output_nodes)`` for a batch, with its byte count."""

    def __init__(self, name: str, graph, features: torch.Tensor, fanouts: list[int],
                 seed: int, device: torch.device, cache_rows: int) -> None:
        self.name, self.graph, self.features, self.device = name, graph, features, device
        self.row_bytes = features.shape[1] * features.element_size()
        self.index_bytes = graph.indices.element_size()
        self.bytes = {"features": 0, "graph": 0, "other": 0}
        self.cache = None
        if name == "cpu_gather":
            self.sampler = NeighborSampler(fanouts, seed=seed)
        elif name == "dataloader_uva":
            # What a DGL script gets: graphsys.DataLoader(..., device, use_uva=True) turns
            # the plain sampler into a GPU one and gathers through its own device path.
            self.loader = DataLoader(graph, np.arange(1), NeighborSampler(fanouts, seed=seed),
                                     device=device, use_uva=True, features=features)
            self.sampler = self.loader.sampler
        else:
            self.sampler = GPUNeighborSampler(fanouts, seed=seed, graph_memory="pinned")
        if name == "device_path_cache":
            store = TensorStore(features)  # pinned: the cache reads misses by UVA
            policy = make_policy("degree", degrees=graph.out_degrees())
            self.cache = DeviceCache(store, cache_rows * self.row_bytes, policy, device=device)

    def batch(self, seeds: np.ndarray, key: int):
        mb = self.sampler.sample(self.graph, seeds, key=key)
        if self.name == "cpu_gather":
            x = torch.index_select(self.features, 0, mb.input_nodes)  # pageable
            self.bytes["features"] += x.numel() * x.element_size()
            self.bytes["other"] += block_bytes(mb)
            x = x.to(self.device)
            blocks = [b.to(self.device) for b in mb.blocks]
            return blocks, x, mb.output_nodes.to(self.device)
        self.bytes["graph"] += graph_read_bytes(mb, self.index_bytes)
        if self.name == "dataloader_uva":
            mb = self.loader._fill(0, 0, mb)
            self.bytes["features"] += mb.input_nodes.numel() * self.row_bytes
            return mb.blocks, mb.blocks[0].srcdata["feat"], mb.output_nodes
        if self.cache is None:
            x = gather_rows(self.features, mb.input_nodes.to(self.device), check=False)
            self.bytes["features"] += mb.input_nodes.numel() * self.row_bytes
        else:
            c = self.cache.counters
            moved, requests = c.moved_rows, c.requests
            x = self.cache.read(mb.input_nodes)
            self.bytes["features"] += (c.moved_rows - moved) * self.row_bytes
            # ids of the batch's distinct rows and of its misses go to the device
            self.bytes["other"] += 8 * ((c.requests - requests) + (c.moved_rows - moved))
        return mb.blocks, x, mb.output_nodes


def make_model(dim: int, classes: int, seed: int, device: torch.device) -> GraphSAGE:
    torch.manual_seed(seed)
    return GraphSAGE(dim, 64, classes, num_layers=2, dropout=0.0).to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_steps(c: Contender, model: GraphSAGE, labels: torch.Tensor,
                seed_batches: list[np.ndarray], key0: int) -> list[torch.Tensor]:
    """Adam steps on ``c``'s batches (keys ``key0 + i``); the loss of each, on device."""
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for i, seeds in enumerate(seed_batches):
        blocks, x, out_nodes = c.batch(seeds, key0 + i)
        loss = F.cross_entropy(model(blocks, x), labels[out_nodes])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return losses


def run_contender(c: Contender, init: GraphSAGE, labels: torch.Tensor,
                  batches: list[np.ndarray], warm: list[np.ndarray]) -> dict:
    def steps(model, seed_batches, key0):
        return train_steps(c, model, labels, seed_batches, key0)

    steps(copy.deepcopy(init), warm, 1_000_000)  # JIT, kernels, pinned graph, allocator
    c.bytes = dict.fromkeys(c.bytes, 0)
    counters0 = c.cache.counters.as_dict() if c.cache is not None else None
    model = copy.deepcopy(init)
    sync(c.device)
    t0 = time.perf_counter()
    losses = steps(model, batches, 0)
    sync(c.device)
    seconds = time.perf_counter() - t0
    losses = torch.stack(losses).cpu().tolist()
    n = len(batches)
    total = sum(c.bytes.values())
    r = {"seconds": seconds, "batches": n, "batches_per_s": n / seconds,
         "h2d_bytes": {**c.bytes, "total": total}, "h2d_bytes_per_batch": total / n,
         "h2d_GBps_effective": total / seconds / 1e9, "losses": losses}
    if c.cache is not None:
        now = c.cache.counters.as_dict()
        r["cache"] = {"capacity_rows": c.cache.capacity, "policy": "degree (static)",
                      "counters": {k: now[k] - counters0[k] for k in now
                                   if isinstance(now[k], int)},
                      "request_hit_rate": ((now["hits"] - counters0["hits"])
                                           / max(1, now["requests"] - counters0["requests"])),
                      "preload_rows": now["preload_rows"]}
    return r


def deterministic_losses(c: Contender, init: GraphSAGE, labels: torch.Tensor,
                         batches: list[np.ndarray]) -> list[float]:
    """Losses of ``batches`` (untimed) with torch's deterministic algorithms on."""
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        losses = train_steps(c, copy.deepcopy(init), labels, batches, 0)
    finally:
        torch.use_deterministic_algorithms(False)
    return torch.stack(losses).cpu().tolist()


def check_same_inputs(contenders: list[Contender], seeds: np.ndarray) -> None:
    """Blocks and features of one batch (key 2_000_000) must be bitwise equal, untimed."""
    ref = None
    for c in contenders:
        blocks, x, out_nodes = c.batch(seeds, 2_000_000)
        got = ([(b.indptr.cpu(), b.indices.cpu(), b.src_nodes.cpu()) for b in blocks],
               x.cpu(), out_nodes.cpu())
        if ref is None:
            ref = got
            continue
        for a, b in zip(ref[0], got[0], strict=True):
            for ta, tb in zip(a, b, strict=True):
                assert torch.equal(ta, tb), f"{c.name}: blocks differ from cpu_gather's"
        assert torch.equal(ref[1], got[1]), f"{c.name}: features differ from cpu_gather's"
        assert torch.equal(ref[2], got[2]), f"{c.name}: output nodes differ"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny graph (a CPU smoke test)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--nodes", type=int, default=None, help="default 20M (quick: 20k)")
    parser.add_argument("--avg-degree", type=float, default=15.0)
    parser.add_argument("--dim", type=int, default=None, help="default 128 (quick: 32)")
    parser.add_argument("--classes", type=int, default=16)
    parser.add_argument("--train-frac", type=float, default=None,
                        help="default 0.011 (quick: 0.05)")
    parser.add_argument("--fanouts", type=int, nargs="+", default=[10, 10])
    parser.add_argument("--batch-size", type=int, default=None, help="default 1024 (quick: 64)")
    parser.add_argument("--batches", type=int, default=None, help="default 200 (quick: 10)")
    parser.add_argument("--cache-fraction", type=float, default=0.10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    quick = args.quick
    nodes = args.nodes or (20_000 if quick else 20_000_000)
    dim = args.dim or (32 if quick else 128)
    train_frac = args.train_frac or (0.05 if quick else 0.011)
    batch_size = args.batch_size or (64 if quick else 1024)
    want_batches = args.batches or (10 if quick else 200)
    if len(args.fanouts) != 2:
        parser.error("the model is a 2-layer GraphSAGE: pass two fanouts")
    started = time.perf_counter()
    if args.device == "cuda":
        from graphsys.cuda import gpu_ready

        if not gpu_ready():
            from graphsys._compat import probe_cupy

            print("bench/gpu_e2e.py needs a CUDA GPU and CuPy (torch.cuda.is_available()="
                  f"{torch.cuda.is_available()}, cupy: {probe_cupy().detail}); use --quick "
                  "--device cpu for a CPU smoke run", file=sys.stderr)
            return 2
        device = torch.device("cuda", torch.cuda.current_device())
        gpu_name = torch.cuda.get_device_name(device)
    else:
        device, gpu_name = torch.device("cpu"), "cpu"
    out = args.out
    if out is None:
        out = (RESULTS / f"gpu_e2e_{gpu_slug(gpu_name)}.json" if device.type == "cuda"
               and not quick else Path(tempfile.gettempdir()) / "gpu_e2e_quick.json")
    pin = device.type == "cuda"

    t0 = time.perf_counter()
    graph = powerlaw_graph(nodes, args.avg_degree, seed=args.seed)
    graph_s = time.perf_counter() - t0
    print(f"graph: {nodes:,} nodes, {graph.num_edges():,} edges in {graph_s:.1f} s", flush=True)
    t0 = time.perf_counter()
    features = random_features(nodes, dim, seed=args.seed, pin=pin)
    feat_s = time.perf_counter() - t0
    print(f"features: {features.nbytes / 1e9:.2f} GB {'pinned' if pin else 'pageable'} in "
          f"{feat_s:.1f} s", flush=True)
    rng = np.random.default_rng(args.seed)
    labels = torch.from_numpy(rng.integers(0, args.classes, nodes)).to(device)
    train = rng.choice(nodes, max(batch_size, int(nodes * train_frac)), replace=False)
    order = rng.permutation(train)
    num_batches = min(want_batches, len(order) // batch_size)
    batches = [order[i * batch_size : (i + 1) * batch_size] for i in range(num_batches)]
    warm = [rng.choice(nodes, batch_size, replace=False) for _ in range(WARMUP_BATCHES)]
    cache_rows = int(nodes * args.cache_fraction)

    t0 = time.perf_counter()
    contenders = [Contender(name, graph, features, args.fanouts, args.seed + 1, device,
                            cache_rows) for name in CONTENDERS]
    setup_s = time.perf_counter() - t0
    check_same_inputs(contenders, warm[0])
    init = make_model(dim, args.classes, args.seed, device)
    results = {}
    for c in contenders:
        print(f"{c.name}: {num_batches} batches ...", flush=True)
        r = run_contender(c, init, labels, batches, warm)
        results[c.name] = r
        print(f"  {r['seconds']:.2f} s, {r['batches_per_s']:.1f} batches/s, "
              f"{r['h2d_bytes_per_batch'] / 1e6:.1f} MB host->device per batch", flush=True)
    ref = np.array(results["cpu_gather"]["losses"])
    diffs = {name: float(np.max(np.abs(np.array(r["losses"]) - ref)))
             for name, r in results.items()}
    close = all(np.allclose(r["losses"], ref, rtol=LOSS_RTOL, atol=LOSS_ATOL)
                for r in results.values())
    det = {c.name: deterministic_losses(c, init, labels, batches[:DETERMINISTIC_BATCHES])
           for c in contenders}
    det_equal = all(v == det["cpu_gather"] for v in det.values())
    equal = det_equal
    t_cpu = results["cpu_gather"]["seconds"]
    speedups = {name: t_cpu / r["seconds"] for name, r in results.items()}
    targets = {
        "device_path_speedup_vs_cpu_gather>=3": {
            "target": TARGET_SPEEDUP, "measured": speedups["device_path"],
            "met": speedups["device_path"] >= TARGET_SPEEDUP},
        "device_path_cache_speedup_vs_cpu_gather>=3": {
            "target": TARGET_SPEEDUP, "measured": speedups["device_path_cache"],
            "met": speedups["device_path_cache"] >= TARGET_SPEEDUP},
        "losses_equal": {"target": f"bitwise over the first {DETERMINISTIC_BATCHES} "
                                   "batches with deterministic algorithms",
                         "measured": {k: float(np.max(np.abs(np.array(v)
                                                             - np.array(det["cpu_gather"]))))
                                      for k, v in det.items()},
                         "met": det_equal},
    }
    print(f"deterministic losses {'bitwise equal' if det_equal else 'DIFFER'} over "
          f"{len(det['cpu_gather'])} batches; timed losses "
          f"{'within' if close else 'OUTSIDE'} rtol {LOSS_RTOL} "
          f"(max |diff| {max(diffs.values()):.2e}); "
          + ", ".join(f"{k} {v:.2f}x" for k, v in speedups.items()), flush=True)
    for name, t in targets.items():
        print(f"  {'met' if t['met'] else 'MISSED'}: {name}", flush=True)
    gpu: dict = {"name": gpu_name}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        gpu.update(memory_bytes=props.total_memory, sm_count=props.multi_processor_count,
                   cuda_runtime=torch.version.cuda)
    summary = {
        "name": "gpu_e2e", "quick": quick, "device": str(device),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python bench/gpu_e2e.py " + shlex.join(argv or sys.argv[1:]),
        "config": {"nodes": nodes, "edges": graph.num_edges(), "avg_degree": args.avg_degree,
                   "dim": dim, "feature_bytes": features.nbytes, "classes": args.classes,
                   "train_nodes": len(train), "fanouts": args.fanouts,
                   "batch_size": batch_size, "batches": num_batches,
                   "warmup_batches": WARMUP_BATCHES, "cache_rows": cache_rows,
                   "cache_fraction": args.cache_fraction, "seed": args.seed,
                   "model": "GraphSAGE(dim, 64, classes, 2 layers, dropout 0), Adam lr 0.01",
                   "timer": "perf_counter around all batches, device synchronised on both "
                            "sides, after untimed warm-up batches"},
        "setup_s": {"graph": graph_s, "features": feat_s, "contenders": setup_s},
        "contenders": results, "speedup_vs_cpu_gather": speedups,
        "loss_max_abs_diff_vs_cpu_gather": diffs, "timed_losses_close": close,
        "deterministic_losses": det, "losses_equal": equal,
        "targets": targets, "wall_s": time.perf_counter() - started, "gpu": gpu,
        "machine": machine(), "graphsys": graphsys.__version__,
    }
    from graphsys._atomic import atomic_write_bytes

    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, (json.dumps(summary, indent=1) + "\n").encode())
    print(f"-> {out} ({summary['wall_s']:.1f} s)", flush=True)
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
