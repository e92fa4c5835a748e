"""What each integrity check costs on a large synthetic graph, and when it runs.

Generates a synthetic dataset (default 10M nodes, 200M edges, 16-dim float32: small
features keep the disk use down; the checks that scale with features are given per
GB too), writes its features once more as a zarr array, then times every check the
loaders make, each as the library runs it, with a warm page cache (reads from a cold
disk add the disk's time to the passes that read whole files):

- at open: the manifest and its digest, file sizes and symlinks (``load_dataset``);
  zarr metadata checksum and chunk presence (``ZarrFeatures``);
- at first read: SHA-256 of indptr/indices/labels/splits against the manifest, the
  graph's ``validate`` pass, the trainer's label/split range check;
- per read: a zarr chunk's CRC-32C, a pack segment's CRC-32 (throughput over a
  256 MiB segment, the default bound), a pack's metadata SHA-256 at open (throughput,
  scaled to 8 bytes per packed row);
- on demand: ``graphsys verify`` (every checksum and range check).

The dataset is deleted afterwards unless ``--keep``. Results go to
``bench/results/integrity_checks.json``.

Example:
    python bench/integrity_checks.py                 # 10M nodes, 200M edges, 16-dim
    python bench/integrity_checks.py --quick         # 100k nodes, 2M edges
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import zlib
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine  # noqa: E402  (a sibling script, not a package)

RESULTS = Path(__file__).resolve().parent / "results"
SEGMENT_BYTES = 256 << 20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=None, help="default 10_000_000")
    parser.add_argument("--edges", type=int, default=None, help="default 200_000_000")
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="100k nodes, 2M edges")
    parser.add_argument("--repeat", type=int, default=3, help="runs per check (best kept)")
    parser.add_argument("--tmpdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--results", type=Path, default=None)
    args = parser.parse_args(argv)
    args.nodes = args.nodes or (100_000 if args.quick else 10_000_000)
    args.edges = args.edges or (2_000_000 if args.quick else 200_000_000)
    args.results = args.results or RESULTS / ("integrity_checks_quick.json" if args.quick
                                              else "integrity_checks.json")
    return args


def best_of(repeat: int, fn) -> float:
    """Fastest of ``repeat`` runs of ``fn()``, in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def write_zarr_features(root: Path, out: Path):
    """The raw dataset's features as a zarr array at ``out`` (the writer's layout)."""
    from graphsys.graph.writer import ZarrArraySink

    entry = json.loads((root / "manifest.json").read_text())["arrays"]["features"]
    rows = np.memmap(root / entry["path"], dtype=entry["dtype"], mode="r",
                     shape=tuple(entry["shape"]))
    dim = rows.shape[1]
    sink = ZarrArraySink(out, out.name, rows.dtype, rows.shape,
                         max(1, (1 << 20) // (dim * rows.dtype.itemsize)))
    step = max(1, (64 << 20) // (dim * rows.dtype.itemsize))
    for start in range(0, rows.shape[0], step):
        sink.append(rows[start : start + step])
    return sink.close()


def measure(root: Path, zarr_path: Path, repeat: int) -> dict:
    import google_crc32c

    from graphsys import load_dataset
    from graphsys.graph.csc import CSCGraph
    from graphsys.graph.dataset import CHECKED_AT_READ, ZarrFeatures, _memmap_tensor
    from graphsys.graph.manifest import Manifest
    from graphsys.graph.verify import verify_dataset
    from graphsys.graph.zarr_io import metadata_checksum, missing_chunks, open_array
    from graphsys.train.trainer import _check_node_data

    ds = load_dataset(root)
    m = ds.manifest
    arrays = {k: _memmap_tensor(root, k, m.arrays[k]) for k in CHECKED_AT_READ}
    for t in arrays.values():  # warm the page cache: the figures are CPU, not disk
        hashlib.sha256(t.numpy())
    nbytes = {k: int(m.arrays[k].nbytes) for k in m.arrays}
    checks: dict[str, dict] = {}

    def add(name: str, when: str, catches: str, seconds: float, bytes_: int = 0) -> None:
        checks[name] = {"when": when, "catches": catches, "seconds": round(seconds, 6),
                        "bytes": bytes_,
                        "gb_per_s": round(bytes_ / seconds / 1e9, 2) if bytes_ and seconds
                        else None}
        size = f"  {bytes_ / 1e6:9.1f} MB" if bytes_ else ""
        print(f"{name:34s} {seconds * 1e3:10.2f} ms{size}")

    add("manifest_digest", "open (load_dataset)",
        "an edited or damaged manifest.json (dtype, shape, checksum fields)",
        best_of(repeat, lambda: Manifest.read(root)), (root / "manifest.json").stat().st_size)
    add("load_dataset", "open",
        "manifest as above, plus missing/truncated files and symlinks out of the dataset",
        best_of(repeat, lambda: load_dataset(root)))
    graph_keys = ("indptr", "indices")
    add("graph_checksum", "first read of ds.graph",
        "any changed byte of indptr/indices (ids still in range included)",
        best_of(repeat, lambda: [hashlib.sha256(arrays[k].numpy()) for k in graph_keys]),
        sum(nbytes[k] for k in graph_keys))
    graph = CSCGraph(arrays["indptr"], arrays["indices"])
    add("graph_validate", "first read of ds.graph (and any hand-built graph, by the "
        "samplers)", "indptr not monotone, ids outside [0, N): what would crash a kernel",
        best_of(repeat, graph.validate), sum(nbytes[k] for k in graph_keys))
    node_keys = ("labels", "train_idx", "val_idx", "test_idx")
    add("labels_splits_checksum", "first read of ds.labels / ds.*_idx",
        "any changed byte of labels or splits (in-range values included)",
        best_of(repeat, lambda: [hashlib.sha256(arrays[k].numpy()) for k in node_keys]),
        sum(nbytes[k] for k in node_keys))
    splits = {k: arrays[k].numpy() for k in ("train_idx", "val_idx", "test_idx")}
    labels = arrays["labels"].long()
    add("labels_splits_range", "Trainer start",
        "labels outside [-1, C), split ids outside [0, N) or repeated (in-memory data too)",
        best_of(repeat, lambda: _check_node_data(ds, m.num_nodes, labels, splits)),
        sum(nbytes[k] for k in node_keys))

    zarr_entry = write_zarr_features(root, zarr_path)
    array = open_array(zarr_path)
    chunk_files = sorted(p for p in (zarr_path / "c").rglob("*") if p.is_file())
    add("zarr_metadata_checksum", "open (ZarrFeatures)", "a changed zarr.json",
        best_of(repeat, lambda: metadata_checksum(zarr_path)))
    add("zarr_chunk_presence", "open (ZarrFeatures)",
        f"missing or empty chunk files (a stat of each of {len(chunk_files)})",
        best_of(repeat, lambda: missing_chunks(zarr_path, array)))
    blobs = [p.read_bytes() for p in chunk_files]
    chunk_bytes = sum(len(b) for b in blobs)
    add("zarr_chunk_crc32c", "every chunk read",
        "any changed or truncated chunk byte (Blosc alone decodes most into wrong values)",
        best_of(repeat, lambda: [google_crc32c.value(b[:-4]) for b in blobs]), chunk_bytes)
    del blobs
    features = ZarrFeatures(zarr_path, zarr_entry)
    add("zarr_read_all_rows", "(context: decoding every chunk, CRC included)", "",
        best_of(1, lambda: features[:]), nbytes["features"])

    segment = np.random.default_rng(0).integers(0, 255, SEGMENT_BYTES, dtype=np.uint8)
    add("pack_segment_crc32", "every pack segment read (read-ahead thread)",
        "any changed byte of rows.bin", best_of(repeat, lambda: zlib.crc32(segment)),
        SEGMENT_BYTES)
    ids = np.arange(m.num_nodes, dtype=np.int64)  # ids.bin of a pack of every row once
    add("pack_metadata_sha256", "open (PackedStore)",
        "changed pack.json, ids.bin, hot.bin, batches.bin, segments.crc32",
        best_of(repeat, lambda: hashlib.sha256(ids)), ids.nbytes)
    del segment, ids

    total = sum(nbytes.values())
    add("verify", "on demand (graphsys verify)",
        "any changed byte of any array, raw feature values included; ranges",
        best_of(1, lambda: verify_dataset(root, progress=False).raise_if_failed()), total)
    return checks


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from graphsys.datasets.synthetic import SyntheticConfig, generate_synthetic

    base = Path(tempfile.mkdtemp(prefix="integrity-", dir=args.tmpdir))
    try:
        root = base / "syn"
        start = time.perf_counter()
        generate_synthetic(root, SyntheticConfig(num_nodes=args.nodes, num_edges=args.edges,
                                                 feat_dim=args.dim, seed=0), progress=False)
        generate_s = time.perf_counter() - start
        print(f"generated {args.nodes:,} nodes / {args.edges:,} edges in {generate_s:.1f} s")
        load_before = os.getloadavg()[0]
        checks = measure(root, base / "features.zarr", args.repeat)
        manifest = json.loads((root / "manifest.json").read_text())
        result = {
            "name": "integrity_checks",
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "graph": {"num_nodes": args.nodes, "num_edges": args.edges, "dim": args.dim,
                      "dtype": "float32", "array_bytes": {
                          k: int(np.prod(v["shape"])) * np.dtype(v["dtype"]).itemsize
                          for k, v in manifest["arrays"].items()}},
            "generate_s": round(generate_s, 1),
            "page_cache": "warm (CPU cost; a cold disk adds its read time to whole-file "
                          "passes)",
            "load_average_1min": {"before": round(load_before, 2),
                                  "after": round(os.getloadavg()[0], 2)},
            "checks": checks,
            "machine": machine(),
        }
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.results}")
    finally:
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
