"""DGL contender of bench/sampling.py; runs under bench/.dgl-venv's Python, not graphsys's.

Reads a graphsys dataset's CSC arrays straight from its raw ``.bin`` files (the manifest
names them), builds a DGL graph, warms DGL's CPU ``NeighborSampler`` up on the first
``--warmup`` seed batches, prints ``{"ready": ...}`` and then answers each line on stdin:

* ``round``: sample the remaining batches once, timing each ``sampler.sample(g, seeds)``
  call; print one JSON line with the timings and per-layer sizes.
* ``quit``: exit.

Every message is one JSON line on stdout, so the parent can interleave rounds of the
two contenders while the idle one sleeps on its pipe. Thread counts are set before
anything runs: ``OMP_NUM_THREADS`` (DGL's OpenMP kernels) comes from the parent's
environment, ``torch.set_num_threads`` here.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def read_csc(root: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """``(indptr, indices, num_nodes)`` memory-mapped from a graphsys dataset directory."""
    manifest = json.loads((root / "manifest.json").read_text())
    arrays = {}
    for key in ("indptr", "indices"):
        entry = manifest["arrays"][key]
        if entry.get("storage", "raw") != "raw":
            raise SystemExit(f"{key} is stored as {entry['storage']!r}; only raw is supported")
        dtype = np.dtype(entry["dtype"]).newbyteorder("<")
        arrays[key] = np.memmap(root / entry["path"], dtype=dtype, mode="r",
                                shape=tuple(entry["shape"]))
    return arrays["indptr"], arrays["indices"], int(manifest["num_nodes"])


def emit(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--seeds", type=Path, required=True, help=".npy [batches, batch_size]")
    parser.add_argument("--fanouts", required=True, help="comma-separated, input layer first")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--warmup", type=int, required=True)
    parser.add_argument("--idtype", choices=["int32", "int64"], default="int64")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import dgl

    fanouts = [int(f) for f in args.fanouts.split(",")]
    idtype = getattr(torch, args.idtype)
    start = time.perf_counter()
    indptr, indices, num_nodes = read_csc(args.data)
    # The CSC arrays must already have the graph's id type (DGL reinterprets, not casts,
    # them). np.array copies into RAM, so no page fault is timed. Empty edge ids: DGL
    # numbers the edges 0..E-1 in CSC order.
    np_idtype = np.dtype(args.idtype)
    if int(indptr[-1]) > np.iinfo(np_idtype).max:
        raise SystemExit(f"{int(indptr[-1])} edges do not fit DGL idtype {args.idtype}")
    g = dgl.graph(("csc", (torch.from_numpy(np.array(indptr, dtype=np_idtype)),
                           torch.from_numpy(np.array(indices, dtype=np_idtype)),
                           torch.empty(0, dtype=idtype))),
                  num_nodes=num_nodes, idtype=idtype)
    # Build only the in-CSC that sampling with edge_dir="in" reads, before timing.
    g = g.formats("csc")
    g.create_formats_()
    build_s = time.perf_counter() - start
    seeds = np.load(args.seeds)
    batches = [torch.from_numpy(row).to(idtype) for row in seeds]
    sampler = dgl.dataloading.NeighborSampler(fanouts)
    torch.manual_seed(0)
    dgl.seed(0)
    for row in batches[: args.warmup]:
        sampler.sample(g, row)
    emit({"ready": True, "build_s": build_s, "dgl": dgl.__version__,
          "torch": torch.__version__, "numpy": np.__version__,
          "torch_threads": torch.get_num_threads(), "idtype": args.idtype,
          "graph_formats": g.formats()})

    for line in sys.stdin:
        command = line.strip()
        if command == "quit":
            break
        if command != "round":
            emit({"error": f"unknown command {command!r}"})
            continue
        times: list[float] = []
        edges, src_nodes = [0] * len(fanouts), [0] * len(fanouts)
        for row in batches[args.warmup :]:
            t0 = time.perf_counter()
            _input_nodes, _output_nodes, blocks = sampler.sample(g, row)
            times.append(time.perf_counter() - t0)
            for i, block in enumerate(blocks):
                edges[i] += block.num_edges()
                src_nodes[i] += block.num_src_nodes()
        emit({"seconds": sum(times), "batch_seconds": times, "edges_per_layer": edges,
              "src_nodes_per_layer": src_nodes})


if __name__ == "__main__":
    main()
