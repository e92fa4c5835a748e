"""Where the GPU targets are lost: diagnostics behind ``bench/kernels.py`` and
``bench/gpu_e2e.py``, in one short run (about a minute on an H200 machine).

The first GPU run (``bench/results/gpu_check_nvidia-h200.json``) missed UVA gather at
small rows (0.37x the pinned copy at 512 B), GPU sampling (1.5x the CPU sampler, not
10x) and the device cache (8 warnings per read, 0.30x the CPU path end to end). This
script measures the candidate causes side by side, each contender timed the same way
(CUDA events around the same repetitions, after warm-up):

* ``gather``: the UVA gather kernel from a pinned table allocated by ``cudaHostAlloc``
  (torch's ``pin_memory``) and from one registered in place over transparent huge
  pages (``madvise(MADV_HUGEPAGE)``, then ``cudaHostRegister``: fewer translations for
  random rows), with random and with sorted ids, and a variant kernel keeping four
  loads in flight per thread; against the pinned copy of the same bytes.
* ``launch``: host cost of one kernel launch through ``graphsys.cuda._runtime.launch``
  and of one small torch op (the floor for a sampler made of many small steps).
* ``sampling``: a cProfile of ``GPUNeighborSampler.sample`` (device graph), CUDA-event
  times of its two phases (kernels, relabel) per layer, and edges/s of both samplers
  at several batch sizes (how much is per-batch overhead).
* ``cache``: per read of a ``DeviceCache`` (LRU and static degree), the torch sync
  warnings with their graphsys call sites, the milliseconds, and a cProfile.

Usage: ``python bench/gpu_probe.py`` writes ``bench/results/gpu_probe_<gpu>.json``;
``--cpu-dry-run --out F`` runs tiny sizes through the CPU paths (checks the script).
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import io
import json
import mmap
import pstats
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))

from _machine import gpu_slug, machine  # noqa: E402
from _powerlaw import powerlaw_graph  # noqa: E402
from cache_syncs import batches as cache_batches  # noqa: E402
from cache_syncs import count_syncs  # noqa: E402
from kernels import REPS, WARMUP, Bench  # noqa: E402  (the one timer of the GPU benches)

from graphsys._atomic import atomic_write_bytes  # noqa: E402

ILP_SOURCE = r"""
// Four independent 16-byte loads in flight per thread before any store: flat (row,
// word) indexing, consecutive threads on consecutive words of a row.
extern "C" __global__ void copy_rows_16_ilp4(unsigned long long src_addr,
                                             unsigned long long ids_addr,
                                             unsigned long long dst_addr,
                                             long long n, long long words) {
    const uint4* __restrict__ src = (const uint4*)src_addr;
    const long long* __restrict__ ids = (const long long*)ids_addr;
    uint4* __restrict__ dst = (uint4*)dst_addr;
    const long long total = n * words;
    const long long stride = (long long)gridDim.x * blockDim.x;
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    for (; i + 3 * stride < total; i += 4 * stride) {
        uint4 v[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            const long long f = i + k * stride;
            v[k] = src[ids[f / words] * words + f % words];
        }
#pragma unroll
        for (int k = 0; k < 4; ++k) dst[i + k * stride] = v[k];
    }
    for (; i < total; i += stride) dst[i] = src[ids[i / words] * words + i % words];
}
"""


def profile_top(fn: Callable[[], object], n: int = 25) -> list[str]:
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(n)
    lines = [ln.rstrip() for ln in buf.getvalue().splitlines() if ln.strip()]
    start = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls")), 0)
    return lines[start: start + n + 1]


def anon_huge_kib() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("AnonHugePages:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def hugepage_table(nbytes: int, cuda: bool) -> tuple[torch.Tensor, dict]:
    """An anonymous mapping advised to use huge pages, touched, then registered."""
    from graphsys._pinned import pin_inplace

    before = anon_huge_kib()
    mm = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    advised = False
    if hasattr(mm, "madvise") and hasattr(mmap, "MADV_HUGEPAGE"):
        try:
            mm.madvise(mmap.MADV_HUGEPAGE)
            advised = True
        except OSError:
            pass
    table = torch.frombuffer(mm, dtype=torch.uint8)
    table.fill_(1)  # fault every page in (as huge pages where the kernel grants them)
    after = anon_huge_kib()
    if cuda:
        pin_inplace(table)
    info = {"madvised": advised, "anon_huge_kib_before": before, "anon_huge_kib_after": after,
            "pinned": bool(table.is_pinned()) if cuda else False,
            "thp_setting": _read("/sys/kernel/mm/transparent_hugepage/enabled")}
    table._probe_mmap = mm  # keep the mapping alive with the tensor
    return table, info


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def gather_probe(timer: Bench, device: torch.device, table_bytes: int,
                 gather_bytes: int) -> dict:
    from graphsys.cuda import _runtime, gather_rows

    cuda = device.type == "cuda"
    out: dict = {"table_bytes": table_bytes, "gather_bytes": gather_bytes, "rows": []}
    t0 = time.perf_counter()
    alloc = torch.empty(table_bytes, dtype=torch.uint8, pin_memory=cuda)
    alloc.fill_(1)
    out["cudahostalloc_setup_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    huge, info = hugepage_table(table_bytes, cuda)
    out["hugepage_setup_s"] = time.perf_counter() - t0
    out["hugepage"] = info
    ilp = _runtime.function(ILP_SOURCE, "copy_rows_16_ilp4", device=device) if cuda else None
    sms = torch.cuda.get_device_properties(device).multi_processor_count if cuda else 1
    g = torch.Generator().manual_seed(1)

    def one_row_size(row_bytes: int) -> dict:
        n = gather_bytes // row_bytes
        nbytes = n * row_bytes
        r: dict = {"row_bytes": row_bytes, "rows": n}
        ids_cpu = torch.randint(0, table_bytes // row_bytes, (n,), generator=g)
        ids = ids_cpu.to(device)
        ids_sorted = torch.sort(ids).values
        dst = torch.empty((n, row_bytes), dtype=torch.uint8, device=device)
        src_copy = torch.empty(nbytes, dtype=torch.uint8, pin_memory=cuda)
        flat_dst = dst.view(-1)
        words, blocks = row_bytes // 16, sms * 16  # the ILP kernel's shape
        r["pinned_copy_GBps"] = nbytes / timer.seconds(
            lambda: flat_dst.copy_(src_copy, non_blocking=True), on="gpu") / 1e9
        for name, flat in (("cudahostalloc", alloc), ("hugepage", huge)):
            table = flat.view(-1, row_bytes)
            got = gather_rows(table, ids, out=dst, check=False)
            assert torch.equal(got[:64].cpu(), table[ids_cpu[:64]]), f"{name} gather wrong"
            for order, which in (("random", ids), ("sorted", ids_sorted)):
                r[f"{name}_{order}_GBps"] = nbytes / timer.seconds(
                    lambda t=table, w=which: gather_rows(t, w, out=dst, check=False),
                    on="gpu") / 1e9
            if cuda:
                def run_ilp(t=table) -> None:
                    _runtime.launch(ilp, blocks, 256, device=device, args=(
                        _runtime.address(t), _runtime.address(ids), _runtime.address(dst),
                        np.int64(n), np.int64(words)))

                run_ilp()
                assert torch.equal(dst[:64].cpu(), table[ids_cpu[:64]]), "ilp gather wrong"
                r[f"{name}_random_ilp4_GBps"] = nbytes / timer.seconds(run_ilp,
                                                                       on="gpu") / 1e9
        for k in list(r):
            if k.endswith("_GBps") and k != "pinned_copy_GBps":
                r[k.replace("_GBps", "_over_copy")] = r[k] / r["pinned_copy_GBps"]
        return r

    for row_bytes in (128, 512, 1024, 4096):
        r = one_row_size(row_bytes)
        out["rows"].append(r)
        print("  gather", {k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()
                           if not k.endswith("_GBps")}, flush=True)
    return out


def launch_probe(device: torch.device) -> dict:
    from graphsys.cuda import _runtime
    from graphsys.cuda.gather import SOURCE

    if device.type != "cuda":
        return {"skipped": "cpu"}
    kernel = _runtime.function(SOURCE, "copy_rows_4", device=device)
    src = torch.zeros(1, 4, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    x = torch.zeros(16, device=device)
    reps = 2000

    def launches() -> None:
        for _ in range(reps):
            _runtime.launch(kernel, 1, 32, device=device, args=(
                _runtime.address(src), np.uint64(0), _runtime.address(dst), np.uint64(0),
                np.int64(1), np.int64(1), np.int32(1)))

    def torch_ops() -> None:
        for _ in range(reps):
            x.add_(1)

    res = {}
    for name, fn in (("graphsys_launch", launches), ("torch_add_", torch_ops)):
        fn()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        res[f"{name}_host_us"] = (time.perf_counter() - t0) / reps * 1e6
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(200):
        torch.cuda.synchronize()
    res["synchronize_idle_us"] = (time.perf_counter() - t0) / 200 * 1e6
    item = torch.zeros(1, device=device)
    t0 = time.perf_counter()
    for _ in range(200):
        int(item)
    res["item_us"] = (time.perf_counter() - t0) / 200 * 1e6
    print("  launch", {k: round(v, 1) for k, v in res.items()}, flush=True)
    return res


def sampling_probe(timer: Bench, device: torch.device, num_nodes: int) -> dict:
    from graphsys.cuda import GPUNeighborSampler
    from graphsys.cuda.sampling import relabel, sample_layer_gpu
    from graphsys.samplers import NeighborSampler

    cuda = device.type == "cuda"
    graph = powerlaw_graph(num_nodes, 15.0, seed=0)
    fanouts = [15, 10, 5]
    rng = np.random.default_rng(0)
    gpu = GPUNeighborSampler(fanouts, seed=1, graph_memory="device")
    cpu = NeighborSampler(fanouts, seed=1)
    res: dict = {"num_nodes": num_nodes, "num_edges": graph.num_edges(), "fanouts": fanouts}
    seeds = [rng.choice(num_nodes, 1024, replace=False) for _ in range(20)]
    for i, s in enumerate(seeds[:3]):
        gpu.sample(graph, s, key=100 + i)
    res["profile_gpu_sample_20x1024"] = profile_top(
        lambda: [gpu.sample(graph, s, key=i) for i, s in enumerate(seeds)]
        and (torch.cuda.synchronize() if cuda else None))
    # phases of one batch, layer by layer, on the arrays the sampler prepared
    if cuda:
        indptr, indices = gpu._arrays(graph, device)
        dst = torch.from_numpy(seeds[0]).to(device)
        phases = []
        for layer, fanout in enumerate(reversed(fanouts)):
            t_kernels = timer.seconds(
                lambda d=dst, f=fanout: sample_layer_gpu(indptr, indices, d, f, False, 7),
                on="gpu")
            counts, sources = sample_layer_gpu(indptr, indices, dst, fanout, False, 7)
            t_relabel = timer.seconds(lambda d=dst, s=sources: relabel(d, s), on="gpu")
            phases.append({"layer": layer, "dst": dst.numel(), "edges": sources.numel(),
                           "kernels_ms": t_kernels * 1e3, "relabel_ms": t_relabel * 1e3})
            dst = relabel(dst, sources)[0]
        res["phases"] = phases
        print("  sampling phases", phases, flush=True)
    scaling = []
    for batch in (1024, 4096, 16384):
        bs = [rng.choice(num_nodes, batch, replace=False) for _ in range(5)]
        row = {"batch_size": batch}
        for name, sampler in (("cpu", cpu), ("gpu", gpu)):
            sampler.sample(graph, bs[0], key=999)
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            made = [sampler.sample(graph, s, key=i) for i, s in enumerate(bs)]
            if cuda:
                torch.cuda.synchronize()
            secs = time.perf_counter() - t0
            edges = sum(int(b.indices.numel()) for mb in made for b in mb.blocks)
            row[f"{name}_ms_per_batch"] = secs / len(bs) * 1e3
            row[f"{name}_edges_per_s"] = edges / secs
        row["gpu_over_cpu"] = row["gpu_edges_per_s"] / row["cpu_edges_per_s"]
        scaling.append(row)
        print("  sampling", {k: round(v, 2) for k, v in row.items()}, flush=True)
    res["batch_scaling"] = scaling
    return res


def cache_probe(device: torch.device, rows: int, dim: int) -> dict:
    from graphsys.storage import DeviceCache, TensorStore, VictimBuffer, make_policy

    cuda = device.type == "cuda"
    table = torch.randn(rows, dim)
    if cuda:
        table = table.pin_memory()
    row_bytes = dim * 4
    degrees = torch.from_numpy(np.random.default_rng(3).zipf(2.0, rows).astype(np.int64))
    res = {"rows": rows, "dim": dim}
    work = cache_batches(rows, 40, rows // 10)
    for name in ("lru", "degree"):
        policy = make_policy(name, degrees=degrees) if name == "degree" else make_policy(name)
        victim = VictimBuffer(rows // 50, rows, dim, torch.float32) if name == "lru" else None
        cache = DeviceCache(TensorStore(table), rows // 10 * row_bytes, policy, device=device,
                            victim=victim)
        for ids in work[:20]:
            cache.read(ids)
        r: dict = {}
        if cuda:
            counts, sources = [], collections.Counter()
            for ids in work[20:25]:
                n, where = count_syncs(cache, ids)
                counts.append(n)
                sources.update(where)
            r["syncs_per_read"] = counts
            r["sync_sites"] = dict(sources.most_common())
        for where, to in (("host_ids", lambda t: t), ("device_ids", lambda t: t.to(device))):
            batch = [to(ids) for ids in work[25:35]]
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for ids in batch:
                cache.read(ids)
            if cuda:
                torch.cuda.synchronize()
            r[f"ms_per_read_{where}"] = (time.perf_counter() - t0) / len(batch) * 1e3
        r["profile_10_reads"] = profile_top(
            lambda c=cache: [c.read(ids) for ids in work[35:40]]
            and (torch.cuda.synchronize() if cuda else None))
        res[name] = r
        print(f"  cache {name}", {k: v for k, v in r.items() if k != "profile_10_reads"},
              flush=True)
    return res


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-dry-run", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available() and not args.cpu_dry_run
    if not cuda and not args.cpu_dry_run:
        print("bench/gpu_probe.py needs a CUDA GPU (or --cpu-dry-run --out FILE)",
              file=sys.stderr)
        return 2
    if args.cpu_dry_run and args.out is None:
        print("--cpu-dry-run needs --out (never bench/results)", file=sys.stderr)
        return 2
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    timer = Bench(device)
    small = not cuda
    result: dict = {"name": "gpu_probe", "device": str(device),
                    "gpu": torch.cuda.get_device_name(device) if cuda else None,
                    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "timer": f"CUDA events, {WARMUP} warm-up + {REPS} timed calls",
                    "machine": machine()}
    started = time.perf_counter()
    sections = {
        "launch": lambda: launch_probe(device),
        "gather": lambda: gather_probe(timer, device, (64 << 20) if small else (4 << 30),
                                       (8 << 20) if small else (256 << 20)),
        "sampling": lambda: sampling_probe(timer, device, 20_000 if small else 4_000_000),
        "cache": lambda: cache_probe(device, 20_000 if small else 1_000_000,
                                     16 if small else 128),
    }
    for name, fn in sections.items():
        t0 = time.perf_counter()
        print(f"== {name}", flush=True)
        try:
            result[name] = fn()
        except Exception:  # one failed probe must not cost the others their figures
            result[name] = {"error": traceback.format_exc()[-3000:]}
            print(result[name]["error"], flush=True)
        result.setdefault("section_s", {})[name] = time.perf_counter() - t0
    result["wall_s"] = time.perf_counter() - started
    out = args.out or ROOT / "results" / f"gpu_probe_{gpu_slug(result['gpu'])}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, (json.dumps(result, indent=1) + "\n").encode())
    print(f"-> {out} ({result['wall_s']:.1f} s)", flush=True)
    return 0 if not any(isinstance(v, dict) and "error" in v for v in result.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
