"""Out-of-core feature loading: memory-mapped vs tiered direct I/O vs DiskGNN packing.

One dataset whose features are several times the host-cache budget, one training
loader (GraphSAGE fanouts 15,10,5, batch 1024), one offline-sampled epoch. Every
contender then loads the features of the same batches, from cold storage:

- ``mmap``: the raw file memory-mapped and indexed per batch, as DGL/PyG scripts do.
  Its page cache is dropped before every batch (``posix_fadvise(DONTNEED)`` after
  unmapping): features larger than RAM cannot stay cached, and the process may hold
  no more than the budget. ``mmap-warm`` drops it once, then lets the page cache grow
  without bound (it ends up holding far more than the budget): context, not a
  contender within the budget.
- ``tiered``: graphsys host cache (the budget's worth of rows a presampled epoch reads
  most) in front of ``O_DIRECT`` reads of the raw file.
- ``packed``: graphsys DiskGNN pack of the epoch, with the same presample's hot rows in
  a host cache of the budget minus two segment buffers.

Reported per contender: feature-loading seconds over the batches measured and per epoch
(measured batches scaled to the epoch when ``--batches`` is less than an epoch), disk
bytes per byte of features delivered (read amplification; ``/proc/self/io`` for mmap,
the store's own count for the others) and the speed-up over ``mmap``. Then a few
training steps read features from RAM and from the pack, and their losses must be
identical. Writes ``bench/results/out_of_core.json`` and ``.png``.

Example:
    python bench/out_of_core.py                  # 10M nodes x 128 float32, 1 GB budget
    python bench/out_of_core.py --quick          # 200k nodes, a smoke run (~10 s)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine  # noqa: E402  (a sibling script, not a package)

import graphsys  # noqa: E402
from graphsys._sizes import format_size, parse_size  # noqa: E402
from graphsys.datasets.synthetic import SyntheticConfig, generate_synthetic  # noqa: E402
from graphsys.nn import build_model  # noqa: E402
from graphsys.samplers.offline import SamplingLog, offline_sample  # noqa: E402
from graphsys.storage import (  # noqa: E402
    DirectFileStore,
    HostCacheStore,
    MmapStore,
    PackedStore,
    TensorStore,
    TieredStore,
    hotness_order,
    pack_features,
)
from graphsys.train.feature_setup import split_budget  # noqa: E402

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"


def proc_read_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("read_bytes:"):
            return int(line.split()[1])
    raise RuntimeError("no read_bytes in /proc/self/io")


def drop_file_cache(path: Path) -> None:
    """Evict ``path``'s unmapped pages from the page cache (no root needed)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def dataset_path(args: argparse.Namespace) -> Path:
    if args.dataset is not None:
        return args.dataset
    return ROOT / ".data" / f"ooc-{args.nodes}-{args.edges}-d{args.dim}"


def ensure_dataset(path: Path, args: argparse.Namespace) -> graphsys.Dataset:
    if not (path / "manifest.json").is_file():
        print(f"generating {path} ({args.nodes:,} nodes, {args.edges:,} edges, "
              f"{args.dim} float32 features)", flush=True)
        generate_synthetic(path, SyntheticConfig(num_nodes=args.nodes, num_edges=args.edges,
                                                 feat_dim=args.dim, seed=0), progress=True)
    return graphsys.load_dataset(path)


def measure(name: str, store, log: SamplingLog, batches: int, *, before_batch=None,
            disk_from_proc: bool = False) -> dict:
    """Load the features of the first ``batches`` batches of ``log`` through ``store``."""
    seconds = 0.0
    disk = 0
    delivered = 0
    for b in range(batches):
        ids = torch.from_numpy(log.batch(b))
        current = before_batch(store) if before_batch is not None else store
        io_before = proc_read_bytes()
        start = time.perf_counter()
        if hasattr(current, "prepare"):
            current.prepare(0, b, ids)
        rows = current.read(ids)
        seconds += time.perf_counter() - start
        if disk_from_proc:
            disk += proc_read_bytes() - io_before
        delivered += rows.numel() * rows.element_size()
        del rows, current  # an mmap must be unmapped before its pages can be evicted
        print(f"  {name}: batch {b + 1}/{batches} {seconds:.1f}s", end="\r", flush=True)
    print()
    if not disk_from_proc:
        disk = store.stats.disk_bytes
    # Amplification over the rows that came from disk, not from the host cache.
    from_disk = delivered
    if hasattr(store, "stats") and "host" in store.stats.tiers:
        from_disk -= store.stats.tiers["host"].bytes
    return {"seconds": seconds, "batches": batches, "per_batch_s": seconds / batches,
            "disk_bytes": int(disk), "delivered_bytes": int(delivered),
            "read_amplification": disk / delivered if delivered else 0.0,
            "disk_row_bytes": int(from_disk),
            "amplification_of_disk_rows": disk / from_disk if from_disk else 0.0,
            "stats": store.stats.as_dict() if hasattr(store, "stats") else None}


def train_losses(loader: graphsys.DataLoader, steps: int, dim: int, classes: int) -> list[float]:
    """Losses of ``steps`` GraphSAGE steps from a fixed initialisation."""
    torch.manual_seed(0)
    model = build_model("sage", dim, 64, classes, num_layers=len(loader.sampler.fanouts),
                        dropout=0.5)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.005)
    loader.set_epoch(0)
    losses = []
    for step, (_inp, _out, blocks) in enumerate(loader):
        if step == steps:
            break
        loss = F.cross_entropy(model(blocks, blocks[0].srcdata["feat"]),
                               blocks[-1].dstdata["label"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["contenders"])
    epoch_s = [result["contenders"][n]["epoch_s"] for n in names]
    amp = [result["contenders"][n]["read_amplification"] for n in names]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    bars = ax1.bar(names, epoch_s, color=["#999", "#ccc", "#4a7", "#27c"][: len(names)])
    ax1.set_yscale("log")
    ax1.set_ylim(top=max(epoch_s) * 5)  # room for the labels above the bars
    ax1.set_ylabel("feature loading per epoch (s, log)")
    base = result["contenders"]["mmap"]["epoch_s"]
    for bar, s, a in zip(bars, epoch_s, amp, strict=True):
        ax1.annotate(f"{base / s:.1f}x\namp {a:.2f}", (bar.get_x() + bar.get_width() / 2, s),
                     ha="center", va="bottom", fontsize=8)
    c = result["config"]
    ax1.set_title(f"{c['nodes']:,} nodes, {format_size(c['feature_bytes'])} features, "
                  f"budget {format_size(c['budget'])}", fontsize=9)
    check = result["loss_check"]
    ax2.plot(check["memory"], label="in memory", lw=3, alpha=0.5)
    ax2.plot(check["packed"], "--", label="packed", color="k")
    ax2.set_xlabel("training step")
    ax2.set_ylabel("loss")
    ax2.set_title("same seed: identical losses" if check["identical"] else "LOSSES DIFFER",
                  fontsize=9)
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=None,
                        help="raw-feature dataset directory (default: generated in bench/.data)")
    parser.add_argument("--nodes", type=int, default=10_000_000)
    parser.add_argument("--edges", type=int, default=200_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--budget", default="1GB", help="host-cache budget")
    parser.add_argument("--fanouts", default="15,10,5")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--train-nodes", type=int, default=65536,
                        help="training seeds drawn from the train split (papers100M trains "
                             "on 1.1%% of its nodes)")
    parser.add_argument("--batches", type=int, default=16,
                        help="batches of the epoch every contender loads (0 = all)")
    parser.add_argument("--loss-steps", type=int, default=8)
    parser.add_argument("--skip-warm", action="store_true", help="skip the mmap-warm context run")
    parser.add_argument("--quick", action="store_true",
                        help="200k nodes, 2M edges, 24 MB budget, fanouts 5,5, batch 256")
    parser.add_argument("--out", type=Path, default=RESULTS / "out_of_core.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.nodes, args.edges, args.budget, args.train_nodes = 200_000, 2_000_000, "24MB", 8192
        args.fanouts, args.batch_size = "5,5", 256
        args.out = args.out.with_name("out_of_core_quick.json")
    budget = parse_size(args.budget)
    fanouts = [int(f) for f in args.fanouts.split(",")]

    path = dataset_path(args)
    ds = ensure_dataset(path, args)
    entry = ds.manifest.arrays["features"]
    feat_path = path / entry.path
    rows, dim = entry.shape
    feature_bytes = entry.nbytes
    print(f"{path}: {rows:,} nodes, features {format_size(feature_bytes)} = "
          f"{feature_bytes / budget:.1f}x the {format_size(budget)} budget", flush=True)

    train = np.asarray(ds.train_idx)
    seeds = np.sort(np.random.default_rng(0).choice(train, min(args.train_nodes, len(train)),
                                                    replace=False))
    loader = graphsys.DataLoader(ds.graph, seeds, graphsys.NeighborSampler(fanouts, seed=0),
                                 batch_size=args.batch_size, shuffle=True, seed=0)
    start = time.perf_counter()
    log = offline_sample(loader, [0], progress=True)
    sample_s = time.perf_counter() - start
    batches = log.num_batches if args.batches <= 0 else min(args.batches, log.num_batches)
    per_batch_rows = np.diff(log.offsets)
    print(f"offline sampling: {log.num_batches} batches in {sample_s:.1f}s, "
          f"{per_batch_rows.mean():,.0f} input rows per batch", flush=True)
    hot = hotness_order(np.bincount(log.input_nodes, minlength=rows))

    contenders: dict[str, dict] = {}
    # (a) memory-mapped, cold before every batch.
    def fresh_cold_mmap(_store):
        gc.collect()  # unmap the previous batch's map before evicting its pages
        drop_file_cache(feat_path)
        return MmapStore(feat_path, rows, dim, entry.dtype)

    print("(a) mmap, page cache dropped before every batch", flush=True)
    contenders["mmap"] = measure("mmap", None, log, batches, before_batch=fresh_cold_mmap,
                                 disk_from_proc=True)
    if not args.skip_warm:
        print("(a') mmap, page cache dropped once (not bounded by the budget)", flush=True)
        drop_file_cache(feat_path)
        warm = MmapStore(feat_path, rows, dim, entry.dtype)
        contenders["mmap-warm"] = measure("mmap-warm", warm, log, batches, disk_from_proc=True)
        del warm
        gc.collect()
        drop_file_cache(feat_path)

    # (b) tiered: host cache of the hottest rows, then O_DIRECT.
    print("(b) tiered: host cache + O_DIRECT", flush=True)
    direct = DirectFileStore(feat_path, rows, dim, entry.dtype)
    start = time.perf_counter()
    cache_b = HostCacheStore(direct, hot, budget)
    cache_b_s = time.perf_counter() - start
    direct.stats.reset()
    tiered = TieredStore([cache_b, direct])
    contenders["tiered"] = measure("tiered", tiered, log, batches)
    contenders["tiered"]["setup_s"] = cache_b_s
    contenders["tiered"]["host_cache_bytes"] = cache_b.nbytes
    del tiered, cache_b
    gc.collect()

    # (c) packed.
    print("(c) packed (DiskGNN)", flush=True)
    cache_budget, segment = split_budget(budget)
    start = time.perf_counter()
    cache_c = HostCacheStore(direct, hot, cache_budget)
    pack_dir = path / "packs" / "bench-out-of-core"
    index = pack_features(log, direct, pack_dir, segment_bytes=segment, host_cache=cache_c,
                          overwrite=True, restart=True)
    pack_s = time.perf_counter() - start
    drop_file_cache(pack_dir / "rows.bin")
    packed = PackedStore(pack_dir, host_cache=cache_c, fingerprint=log.fingerprint)
    contenders["packed"] = measure("packed", packed, log, batches)
    contenders["packed"].update(setup_s=pack_s, host_cache_bytes=cache_c.nbytes,
                                ram_bytes=packed.memory_bytes)
    packed.close()
    # The whole epoch too (cheap for the pack): no scaling, and no read-ahead past the
    # batches measured in the disk count.
    drop_file_cache(pack_dir / "rows.bin")
    packed = PackedStore(pack_dir, host_cache=cache_c, fingerprint=log.fingerprint)
    full = measure("packed, whole epoch", packed, log, log.num_batches)
    contenders["packed"]["whole_epoch"] = {k: full[k] for k in (
        "seconds", "batches", "disk_bytes", "delivered_bytes", "read_amplification",
        "disk_row_bytes", "amplification_of_disk_rows")}
    base = contenders["mmap"]
    for c in contenders.values():
        c["epoch_s"] = c["per_batch_s"] * log.num_batches
        c["speedup_vs_mmap"] = base["seconds"] / c["seconds"] if c["seconds"] else 0.0

    # Loss curve: the same steps from RAM and from the pack must agree exactly.
    print("loss check: training steps from RAM and from the pack", flush=True)
    steps = min(args.loss_steps, log.num_batches)
    # One compute thread: with two, reductions may split differently while the loader
    # thread competes for the cores, and the runs then differ in the last bits.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    labels = ds.labels
    memory = TensorStore(torch.from_numpy(np.fromfile(feat_path, dtype=entry.dtype)
                                          .reshape(rows, dim)))
    mem_loader = graphsys.DataLoader(ds.graph, seeds, graphsys.NeighborSampler(fanouts, seed=0),
                                     batch_size=args.batch_size, shuffle=True, seed=0,
                                     features=memory, labels=labels)
    mem_losses = train_losses(mem_loader, steps, dim, ds.num_classes)
    del memory, mem_loader
    gc.collect()
    packed_loader = graphsys.DataLoader(ds.graph, seeds, graphsys.NeighborSampler(fanouts, seed=0),
                                        batch_size=args.batch_size, shuffle=True, seed=0,
                                        features=packed, labels=labels)
    packed_losses = train_losses(packed_loader, steps, dim, ds.num_classes)
    torch.set_num_threads(threads)

    result = {
        "bench": "out_of_core",
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "config": {"dataset": str(path), "nodes": rows, "edges": ds.graph.num_edges(),
                   "dim": dim, "dtype": entry.dtype, "feature_bytes": feature_bytes,
                   "budget": budget, "budget_ratio": feature_bytes / budget,
                   "fanouts": fanouts, "batch_size": args.batch_size,
                   "train_nodes": len(seeds), "batches_per_epoch": log.num_batches,
                   "batches_measured": batches,
                   "mean_input_rows_per_batch": float(per_batch_rows.mean()),
                   "direct_io": direct.direct, "direct_max_gap": direct.max_gap * 4096,
                   "segment_bytes": segment, "loss_check_threads": 1},
        "offline_sampling_s": sample_s,
        "pack": {"seconds": pack_s, "segments": index.num_segments,
                 "rows_file_bytes": index.rows_file_bytes, "overhead": index.overhead,
                 "host_cached_rows": index.host_cached},
        "contenders": contenders,
        "loss_check": {"memory": mem_losses, "packed": packed_losses,
                       "identical": mem_losses == packed_losses},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    plot(result, args.out.with_suffix(".png"))
    print(f"\n{'contender':<11} {'s/epoch':>9} {'amplif.':>8} {'vs mmap':>8}")
    for name, c in contenders.items():
        print(f"{name:<11} {c['epoch_s']:>9.1f} {c['read_amplification']:>8.2f} "
              f"{c['speedup_vs_mmap']:>7.1f}x")
    whole = contenders["packed"]["whole_epoch"]
    print(f"packed, whole epoch: {whole['seconds']:.1f}s, amplification "
          f"{whole['read_amplification']:.2f} ({whole['amplification_of_disk_rows']:.3f} over "
          "the rows read from disk)")
    print(f"pack: {pack_s:.1f}s, overhead {index.overhead:.2f}x; losses identical: "
          f"{result['loss_check']['identical']}")
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    packed.close()
    direct.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
