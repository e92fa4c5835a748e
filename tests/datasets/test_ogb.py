"""The OGB raw-layout reader: round trips through load_dataset, and every bad input."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from graphsys import CSCGraph, DatasetExistsError, InputFormatError, load_dataset
from graphsys.datasets import ogb
from graphsys.datasets.ogb import prepare_ogb


def write_lines(path: Path, lines: list[str], *, compress: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = ("\n".join(lines) + "\n").encode()
    if compress:
        with gzip.open(path, "wb") as handle:
            handle.write(data)
    else:
        path.with_suffix("").write_bytes(data)  # edge.csv.gz -> edge.csv


def make_ogb(root: Path, *, num_nodes: int = 50, num_edges: int = 200, dim: int = 8,
             seed: int = 0, num_node_list: bool = True, schemes=("random",),
             compress: bool = True) -> dict:
    """Write a tiny OGB-layout dataset under ``root``; return what it holds."""
    rng = np.random.default_rng(seed)
    src = rng.integers(0, num_nodes, num_edges)
    dst = rng.integers(0, num_nodes, num_edges)
    features = rng.standard_normal((num_nodes, dim)).astype(np.float32)
    labels = rng.integers(0, 5, num_nodes).astype(np.int64)
    labels[::7] = -1
    labels[40:43] = -1  # a run of unlabelled nodes: "nan", "", ""
    raw = root / "raw"
    write_lines(raw / "edge.csv.gz", [f"{s},{d}" for s, d in zip(src, dst, strict=True)],
                compress=compress)
    # repr of the float64 of a float32 parses back to that float32 exactly.
    write_lines(raw / "node-feat.csv.gz",
                [",".join(repr(float(v)) for v in row) for row in features], compress=compress)
    # Unlabelled nodes are "nan" or empty (pandas' default), the first line among them;
    # some labels are written as floats, as OGB does.
    label_text = [("nan" if i % 3 == 1 else "") if y < 0 else (f"{y}.0" if i % 3 else str(y))
                  for i, y in enumerate(labels)]
    write_lines(raw / "node-label.csv.gz", label_text, compress=compress)
    if num_node_list:
        write_lines(raw / "num-node-list.csv.gz", [str(num_nodes)], compress=compress)
        write_lines(raw / "num-edge-list.csv.gz", [str(num_edges)], compress=compress)
    perm = rng.permutation(num_nodes)
    splits = {"train": perm[:25], "valid": perm[25:35], "test": perm[35:]}
    for scheme in schemes:
        for part, ids in splits.items():
            write_lines(root / "split" / scheme / f"{part}.csv.gz", [str(i) for i in ids],
                        compress=compress)
    return {"src": src, "dst": dst, "features": features, "labels": labels, **splits}


@pytest.fixture
def ogb_root(tmp_path: Path) -> tuple[Path, dict]:
    root = tmp_path / "ogbn_toy"
    return root, make_ogb(root)


def check_round_trip(out: Path, data: dict, *, symmetric: bool = False) -> None:
    ds = load_dataset(out)
    reference = CSCGraph.from_edges(data["src"], data["dst"], len(data["labels"]),
                                    symmetric=symmetric)
    np.testing.assert_array_equal(ds.graph.indptr.numpy(), reference.indptr.numpy())
    np.testing.assert_array_equal(ds.graph.indices.numpy(), reference.indices.numpy())
    features = ds.features if ds.manifest.feature_storage == "raw" else ds.features.to_tensor()
    np.testing.assert_array_equal(features.numpy(), data["features"])
    np.testing.assert_array_equal(ds.labels.numpy(), data["labels"])
    assert ds.num_classes == int(data["labels"].max()) + 1
    for part, key in (("train", "train_idx"), ("valid", "val_idx"), ("test", "test_idx")):
        np.testing.assert_array_equal(getattr(ds, key).numpy(), data[part])


def assert_nothing_written(out: Path) -> None:
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if ".partial" in p.name]


@pytest.mark.parametrize("storage", ["raw", "zarr"])
@pytest.mark.parametrize("chunk_lines", [7, 1_000_000])
def test_round_trip(ogb_root, tmp_path: Path, storage: str, chunk_lines: int):
    root, data = ogb_root
    manifest = prepare_ogb(root, tmp_path / "out", feature_storage=storage,
                           chunk_lines=chunk_lines, progress=False)
    assert manifest.name == "ogbn-toy"
    assert manifest.feature_storage == storage
    assert manifest.source == {"kind": "ogb", "raw_dir": os.path.abspath(root),
                               "split": "random", "undirected": False}
    check_round_trip(tmp_path / "out", data)


def test_undirected(ogb_root, tmp_path: Path):
    root, data = ogb_root
    manifest = prepare_ogb(root, tmp_path / "out", undirected=True, chunk_lines=7,
                           progress=False)
    assert manifest.num_edges == 2 * len(data["src"]) and manifest.source["undirected"]
    check_round_trip(tmp_path / "out", data, symmetric=True)


def test_lines_split_across_blocks(ogb_root, tmp_path: Path, monkeypatch):
    # Tiny decompression blocks: almost every line straddles two reads.
    monkeypatch.setattr(ogb, "_BLOCK_BYTES", 5)
    monkeypatch.setattr(ogb, "_SPILL_EDGES", 3)
    root, data = ogb_root
    prepare_ogb(root, tmp_path / "out", chunk_lines=4, progress=False)
    check_round_trip(tmp_path / "out", data)


def test_counts_nodes_without_num_node_list(tmp_path: Path):
    root = tmp_path / "ogbn_plain"
    data = make_ogb(root, num_node_list=False, compress=False)
    # Pointing at DIR/raw works as well as DIR; uncompressed .csv files are accepted.
    manifest = prepare_ogb(root / "raw", tmp_path / "out", name="plain", progress=False)
    assert (manifest.name, manifest.num_nodes) == ("plain", 50)
    check_round_trip(tmp_path / "out", data)


def test_tolerates_crlf_and_spaces(ogb_root, tmp_path: Path):
    # Not what OGB writes, but what an edited file may hold: the careful parser reads it.
    root, data = ogb_root
    for name in ("raw/edge.csv.gz", "raw/node-label.csv.gz", "raw/node-feat.csv.gz"):
        with gzip.open(root / name, "rb") as handle:
            text = handle.read()
        text = text.replace(b"\n", b"\r\n").replace(b",", b" , ", 3)
        with gzip.open(root / name, "wb") as handle:
            handle.write(text)
    prepare_ogb(root, tmp_path / "out", chunk_lines=9, progress=True)
    check_round_trip(tmp_path / "out", data)


def test_split_schemes(tmp_path: Path):
    root = tmp_path / "ogbn_two"
    data = make_ogb(root, schemes=("time", "random"))
    with pytest.raises(InputFormatError, match=r"\['random', 'time'\]"):
        prepare_ogb(root, tmp_path / "out", progress=False)
    with pytest.raises(InputFormatError, match="nope.*choose one of"):
        prepare_ogb(root, tmp_path / "out", split="nope", progress=False)
    assert_nothing_written(tmp_path / "out")
    manifest = prepare_ogb(root, tmp_path / "out", split="time", progress=False)
    assert manifest.source["split"] == "time"
    check_round_trip(tmp_path / "out", data)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _replace_line(path: Path, number: int, text: str) -> None:
    with gzip.open(path, "rt") as handle:
        lines = handle.read().splitlines()
    lines[number - 1] = text
    write_lines(path, lines)


# (what to break, the file the error must name, more text the message must hold)
BREAKAGES = {
    "edge id out of range": (lambda r: _replace_line(r / "raw/edge.csv.gz", 17, "3,50"),
                             "edge.csv.gz", "line 17"),
    "negative edge id": (lambda r: _replace_line(r / "raw/edge.csv.gz", 2, "-4,1"),
                         "edge.csv.gz", "line 2"),
    "three columns": (lambda r: _replace_line(r / "raw/edge.csv.gz", 9, "1,2,3"),
                      "edge.csv.gz", "line 9"),
    "empty field": (lambda r: _replace_line(r / "raw/edge.csv.gz", 5, "1,"),
                    "edge.csv.gz", "line 5"),
    "float edge id": (lambda r: _replace_line(r / "raw/edge.csv.gz", 6, "1,2.0"),
                      "edge.csv.gz", "line 6"),
    "non-numeric edge": (lambda r: _replace_line(r / "raw/edge.csv.gz", 30, "1,x"),
                         "edge.csv.gz", "line 30"),
    "ragged feature row": (lambda r: _replace_line(r / "raw/node-feat.csv.gz", 12, "1,2,3"),
                           "node-feat.csv.gz", "line 12"),
    "text in features": (lambda r: _replace_line(r / "raw/node-feat.csv.gz", 40,
                                                 ",".join(["a"] * 8)),
                         "node-feat.csv.gz", "line 40"),
    "NaN feature": (lambda r: _replace_line(r / "raw/node-feat.csv.gz", 21,
                                            ",".join(["0.5"] * 7 + ["nan"])),
                    "node-feat.csv.gz", "line 21 has a NaN or infinite feature"),
    "infinite feature": (lambda r: _replace_line(r / "raw/node-feat.csv.gz", 3,
                                                 ",".join(["inf"] + ["1"] * 7)),
                         "node-feat.csv.gz", "line 3"),
    "feature beyond float32": (lambda r: _replace_line(r / "raw/node-feat.csv.gz", 44,
                                                       ",".join(["1e39"] + ["1"] * 7)),
                               "node-feat.csv.gz", "line 44"),
    "fractional label": (lambda r: _replace_line(r / "raw/node-label.csv.gz", 5, "2.5"),
                         "node-label.csv.gz", "line 5"),
    "missing edge file": (lambda r: (r / "raw/edge.csv.gz").unlink(), "edge.csv.gz",
                          "split/<scheme>"),
    "missing labels": (lambda r: (r / "raw/node-label.csv.gz").unlink(), "node-label.csv.gz",
                       "missing"),
    "missing split": (lambda r: (r / "split/random/valid.csv.gz").unlink(), "valid.csv.gz",
                      "missing"),
    "truncated gzip": (lambda r: _truncate(r / "raw/edge.csv.gz"), "edge.csv.gz",
                       "corrupt or truncated"),
    "garbage gzip": (lambda r: (r / "raw/node-feat.csv.gz").write_bytes(b"\x1f\x8bjunk" * 9),
                     "node-feat.csv.gz", "corrupt"),
    "split id out of range": (lambda r: _replace_line(r / "split/random/test.csv.gz", 3, "99"),
                              "test.csv.gz", "line 3"),
    "too few labels": (lambda r: write_lines(r / "raw/node-label.csv.gz", ["1"] * 49),
                       "node-label.csv.gz", "49"),
    "edge count mismatch": (lambda r: write_lines(r / "raw/num-edge-list.csv.gz", ["201"]),
                            "num-edge-list.csv.gz", "201"),
}


@pytest.mark.parametrize("case", list(BREAKAGES))
def test_bad_input(ogb_root, tmp_path: Path, case: str):
    root, _ = ogb_root
    breakage, filename, detail = BREAKAGES[case]
    breakage(root)
    out = tmp_path / "outputs" / "out"
    with pytest.raises(InputFormatError) as info:
        prepare_ogb(root, out, chunk_lines=7, progress=False)
    assert filename in str(info.value) and detail in str(info.value), str(info.value)
    assert not out.exists()
    if out.parent.exists():
        assert list(out.parent.iterdir()) == []  # no .partial sibling


def test_output_exists(ogb_root, tmp_path: Path):
    root, data = ogb_root
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DatasetExistsError, match="already exists"):
        prepare_ogb(root, out, progress=False)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ogbn_toy", "out"]
    prepare_ogb(root, out, overwrite=True, progress=False)
    check_round_trip(out, data)


MEMORY_SCRIPT = textwrap.dedent("""
    import json, sys, psutil
    import graphsys.graph.build as build
    from graphsys.datasets import ogb
    # Small blocks, so that the fixed per-block working set is small next to the input.
    ogb._BLOCK_BYTES, ogb._SPILL_EDGES = 1 << 18, 1 << 15
    process = psutil.Process()
    def anonymous():  # resident memory not backed by files (memory maps are page cache)
        info = process.memory_info()
        return info.rss - info.shared
    base, peak = anonymous(), [0]
    def sampled(function):
        def wrapper(*args, **kwargs):
            peak[0] = max(peak[0], anonymous())
            return function(*args, **kwargs)
        return wrapper
    # Sample at every parsed block and every scattered chunk: where memory peaks.
    ogb._parse = sampled(ogb._parse)
    build._scatter = sampled(build._scatter)
    ogb.prepare_ogb(sys.argv[1], sys.argv[2], progress=False)
    print(json.dumps({"growth": max(peak[0], anonymous()) - base}))
""")


@pytest.mark.slow
def test_memory_bounded_by_output(tmp_path: Path):
    root = tmp_path / "ogbn_big"
    num_nodes, num_edges = 20_000, 1_000_000
    rng = np.random.default_rng(0)
    pairs = rng.integers(0, num_nodes, (num_edges, 2))
    text = "\n".join(f"{a},{b}" for a, b in pairs.tolist()) + "\n"
    (root / "raw").mkdir(parents=True)
    with gzip.open(root / "raw/edge.csv.gz", "wb", compresslevel=1) as handle:
        handle.write(text.encode())
    make_small = {"raw/node-feat.csv.gz": ["0.5,1.5"] * num_nodes,
                  "raw/node-label.csv.gz": ["1"] * num_nodes,
                  "split/s/train.csv.gz": ["0"], "split/s/valid.csv.gz": ["1"],
                  "split/s/test.csv.gz": ["2"]}
    for name, lines in make_small.items():
        write_lines(root / name, lines)
    result = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(root),
                             str(tmp_path / "out")], capture_output=True, text=True,
                            check=True)
    growth = json.loads(result.stdout)["growth"]
    # The edge text is ~11 MB (~16 MB as int64 pairs); streaming holds one 256 KiB block
    # and its parse, plus node-sized arrays, while indices live in a file mapping.
    assert growth < len(text) // 2, (growth, len(text))
