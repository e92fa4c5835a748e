"""Host synchronisations per ``DeviceCache.read`` on a GPU (target: at most one).

A device cache of 10% of a 1M x 128 float32 table, a pinned victim buffer and a
pinned-tensor fallback, read with the batches a GraphSAGE loader asks for (hot rows
plus a random tail, as sampled input nodes look). ``torch.cuda.set_sync_debug_mode``
warns on every synchronising call; the warnings of each read are counted, after a
warm-up that fills the cache. Each warning's source line is recorded, so a missed
target names the calls still to remove.

Usage: ``python bench/cache_syncs.py`` (CUDA) writes
``bench/results/gpu_cache_syncs_<gpu>.json``; ``--cpu-dry-run --out F`` runs the
same reads on CPU (no sync counting there) to check the script itself.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import traceback
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))

from _machine import gpu_slug, machine  # noqa: E402

from graphsys._atomic import atomic_write_bytes  # noqa: E402
from graphsys.storage import DeviceCache, TensorStore, VictimBuffer, make_policy  # noqa: E402

TARGET_SYNCS_PER_READ = 1


def batches(num_rows: int, n: int, size: int, seed: int = 0) -> list[torch.Tensor]:
    rng = np.random.default_rng(seed)
    hot = rng.choice(num_rows, num_rows // 20, replace=False)
    return [torch.from_numpy(np.unique(np.concatenate([
        hot[rng.integers(0, hot.size, size // 2)], rng.integers(0, num_rows, size // 2)])))
        for _ in range(n)]


def count_syncs(cache: DeviceCache, ids: torch.Tensor) -> tuple[int, list[str]]:
    """Synchronising calls during one read, and the graphsys lines that made them."""
    where: list[str] = []

    def record(message, category, filename, lineno, file=None, line=None):
        # Only torch's sync-debug warnings count: other warnings raised during a read
        # (CuPy's DeprecationWarnings, say) are not synchronisations.
        if "synchroniz" not in str(message):
            return
        frames = [f for f in traceback.extract_stack() if "graphsys" in f.filename
                  and "warnings" not in f.filename]
        # the innermost graphsys line and its two callers: which call, and from where
        where.append(" < ".join(f"{Path(f.filename).name}:{f.lineno}" for f in
                                reversed(frames[-3:])) if frames
                     else f"{Path(filename).name}:{lineno}")

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            cache.read(ids)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return len(where), where


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--batch-rows", type=int, default=100_000)
    parser.add_argument("--reads", type=int, default=20)
    parser.add_argument("--cpu-dry-run", action="store_true",
                        help="tiny sizes on CPU, no counting (checks the script)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    gpu = torch.cuda.is_available()
    if not gpu and not args.cpu_dry_run:
        print("bench/cache_syncs.py needs a CUDA GPU (or --cpu-dry-run --out FILE)",
              file=sys.stderr)
        return 2
    if args.cpu_dry_run:
        if args.out is None:
            print("--cpu-dry-run needs --out (never bench/results)", file=sys.stderr)
            return 2
        args.rows, args.dim, args.batch_rows, args.reads = 5000, 16, 800, 6
    device = torch.device("cuda" if gpu and not args.cpu_dry_run else "cpu")
    table = torch.randn(args.rows, args.dim)
    if device.type == "cuda":
        table = table.pin_memory()
    row_bytes = args.dim * 4
    victim = VictimBuffer(args.rows // 50, args.rows, args.dim, torch.float32)
    cache = DeviceCache(TensorStore(table), args.rows // 10 * row_bytes, make_policy("lru"),
                        device=device, victim=victim)
    work = batches(args.rows, 2 * args.reads, args.batch_rows)
    for ids in work[: args.reads]:  # warm-up: fill the slots and the victim ring
        cache.read(ids)
    per_read, sources = [], collections.Counter()
    for ids in work[args.reads :]:
        got = cache.read(ids)
        if not torch.equal(got.cpu(), table[ids]):
            print("cache returned wrong rows", file=sys.stderr)
            return 1
        if device.type == "cuda":
            n, where = count_syncs(cache, ids)
            per_read.append(n)
            sources.update(where)
    result = {
        "bench": "cache_syncs", "device": str(device),
        "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
        "machine": machine(),
        "config": {"rows": args.rows, "dim": args.dim, "batch_rows": args.batch_rows,
                   "reads": args.reads, "cache_rows": cache.capacity,
                   "victim_rows": victim.capacity},
        "syncs_per_read": per_read,
        "max_syncs_per_read": max(per_read) if per_read else None,
        "sync_sources": dict(sources.most_common()),
        "target_syncs_per_read": TARGET_SYNCS_PER_READ,
        "target_met": bool(per_read) and max(per_read) <= TARGET_SYNCS_PER_READ,
        "counters": cache.counters.as_dict(),
    }
    out = args.out or ROOT / "results" / f"gpu_cache_syncs_{gpu_slug(torch.cuda.get_device_name())}.json"
    atomic_write_bytes(out, json.dumps(result, indent=2).encode())
    print(f"syncs per read: max {result['max_syncs_per_read']} (target "
          f"{TARGET_SYNCS_PER_READ}); sources {result['sync_sources']}; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
