"""Fuzzing the loaders (issue 15): single-byte flips and truncations over every file of a
small raw dataset, a small zarr dataset and a small pack.

For a fixed seed, each case damages one file, opens the dataset or pack, reads what a
training run reads (graph, labels, splits, every feature row through a store, every
pack segment and batch), then runs ``verify``. The cases run in worker subprocesses
(this file run as a script), so a segfault kills a worker, not pytest, and the test
names the case it died on. Each case is classified:

- ``open/read``: a graphsys error (``GraphsysError`` family) at open or read;
- ``verify``: only ``verify`` saw it; allowed for raw feature value bytes alone;
- ``none``: not caught; allowed only when the damaged file's parsed content equals
  the original (JSON whitespace);
- ``foreign``: an exception of another type (a numpy/zarr/json/OSError traceback).

Run by hand: ``python tests/test_fuzz_loaders.py`` prints the outcome table.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

SEED = 15
REPO = Path(__file__).resolve().parents[1]
#: Workers run in parallel (the cases are dealt round-robin among them).
WORKERS = 2
#: Flips per file: JSON files get more (most of their bytes are structure).
FLIPS_BINARY, FLIPS_JSON = 7, 20
LOADER = SimpleNamespace(fanouts=(2, 2), batch_size=16, seed=0)
EPOCHS = (0, 1)


# -- the inputs -----------------------------------------------------------------------

def build_inputs(base: Path) -> dict[str, Path]:
    """A raw dataset, the same with zarr features (8 chunks), and a pack of the raw one."""
    import numpy as np

    from graphsys import DatasetWriter, load_dataset
    from graphsys.datasets.synthetic import SyntheticConfig, generate_synthetic
    from graphsys.samplers.offline import offline_sample
    from graphsys.storage.open import disk_source
    from graphsys.storage.packing import pack_features
    from graphsys.train.feature_setup import hot_cache, train_loader

    raw = base / "raw"
    generate_synthetic(raw, SyntheticConfig(num_nodes=400, num_edges=3000, feat_dim=8,
                                            num_classes=4, seed=SEED), progress=False)
    ds = load_dataset(raw)
    zarr = base / "zarr"
    with DatasetWriter(zarr, name="fuzz-zarr") as writer:
        writer.write_graph(ds.graph)
        writer.write_array("features", np.asarray(ds.features), storage="zarr", chunk_rows=50)
        for key in ("labels", "train_idx", "val_idx", "test_idx"):
            writer.write_array(key, np.asarray(getattr(ds, key)))
        writer.finish(num_classes=ds.num_classes)
    loader = train_loader(ds.graph, np.asarray(ds.train_idx), LOADER)
    log = offline_sample(loader, EPOCHS)
    counts = np.bincount(log.input_nodes, minlength=ds.graph.num_nodes())
    source = disk_source(ds)
    pack_features(log, source, base / "pack", segment_bytes=8192,
                  host_cache=hot_cache(source, counts, 40 * 32),
                  source_id=ds.manifest.arrays["features"].sha256, progress=False)
    return {"raw": raw, "zarr": zarr, "pack": base / "pack"}


def make_cases(inputs: dict[str, Path]) -> list[dict]:
    """Flips (random offsets, the first bytes always among them) and truncations."""
    rng = random.Random(SEED)
    cases = []
    for kind, root in inputs.items():
        for file in sorted(p for p in root.rglob("*") if p.is_file()):
            rel = file.relative_to(root).as_posix()
            size = file.stat().st_size
            for length in sorted({0, size // 2, size - 1}):
                cases.append({"kind": kind, "file": rel, "op": "truncate", "at": length})
            flips = FLIPS_JSON if file.name.endswith(".json") else FLIPS_BINARY
            offsets = {rng.randrange(min(size, 16))}  # a header byte
            while len(offsets) < min(size, flips):
                offsets.add(rng.randrange(size))
            for at in sorted(offsets):
                cases.append({"kind": kind, "file": rel, "op": "flip", "at": at,
                              "xor": rng.randrange(1, 256)})
    for i, case in enumerate(cases):
        case["id"] = f"{i}:{case['kind']}/{case['file']}:{case['op']}@{case['at']}"
    return cases


# -- the worker -----------------------------------------------------------------------

def _damage(path: Path, case: dict) -> bytes:
    original = path.read_bytes()
    if case["op"] == "truncate":
        damaged = original[: case["at"]]
    else:
        damaged = bytearray(original)
        damaged[case["at"]] ^= case["xor"]
        damaged = bytes(damaged)
    path.write_bytes(damaged)
    return original


def _same_content(original: bytes, damaged: bytes, name: str) -> bool:
    """Whether damage provably left the content as it was (JSON that parses equal)."""
    if original == damaged:
        return True
    if not name.endswith(".json"):
        return False
    try:
        return json.loads(damaged) == json.loads(original)
    except ValueError:
        return False


class _Reader:
    """What a training run reads, per input kind; built once per worker."""

    def __init__(self, inputs: dict[str, Path]) -> None:
        import numpy as np

        from graphsys import load_dataset
        from graphsys.samplers.offline import offline_sample
        from graphsys.storage.open import disk_source
        from graphsys.train.feature_setup import train_loader

        self.inputs = inputs
        ds = load_dataset(inputs["raw"])
        self.features = np.asarray(ds.features).copy()
        loader = train_loader(ds.graph, np.asarray(ds.train_idx), LOADER)
        self.log = offline_sample(loader, EPOCHS)
        self.pack_source_id = ds.manifest.arrays["features"].sha256
        self.pack_source = disk_source(ds)  # the raw dataset is never damaged in pack cases

    def dataset(self, root: Path) -> None:
        import torch

        from graphsys import load_dataset
        from graphsys.storage.open import open_features

        ds = load_dataset(root)
        ds.graph.ensure_valid()
        for key in ("labels", "train_idx", "val_idx", "test_idx"):
            getattr(ds, key).sum()
        kinds = ("zarr",) if ds.manifest.feature_storage == "zarr" else ("mmap", "direct")
        for kind in kinds:
            store = open_features(ds, kind, threads=2)
            try:
                store.read(torch.arange(store.num_rows))
            finally:
                getattr(store, "close", lambda: None)()

    def pack(self, root: Path) -> None:
        import numpy as np

        from graphsys.storage.packed import PackedStore

        store = PackedStore(root, source=self.pack_source, fingerprint=self.log.fingerprint,
                            source_id=self.pack_source_id)
        try:
            position = 0
            for epoch in self.log.epochs:
                for index in range(self.log.batches_per_epoch):
                    nodes = self.log.batch(position)
                    store.prepare(epoch, index, nodes)
                    rows = store.read(nodes).numpy()
                    # Not a check the library makes: tells silent wrong rows from right.
                    if not np.array_equal(rows, self.features[nodes]):
                        raise AssertionError(f"batch {position} served wrong rows")
                    position += 1
        finally:
            store.close()


def run_worker(inputs_file: Path, cases_file: Path, results_file: Path) -> None:
    """Run each case, appending ``begin`` and then the outcome to ``results_file``."""
    import faulthandler

    from graphsys.errors import GraphsysError
    from graphsys.graph.verify import verify_dataset

    faulthandler.enable()
    inputs = {k: Path(v) for k, v in json.loads(inputs_file.read_text()).items()}
    cases = json.loads(cases_file.read_text())
    reader = _Reader(inputs)
    with open(results_file, "a") as out:
        def emit(record: dict) -> None:
            out.write(json.dumps(record) + "\n")
            out.flush()

        for case in cases:
            emit({"begin": case["id"]})
            root = inputs[case["kind"]]
            path = root / case["file"]
            original = _damage(path, case)
            damaged = path.read_bytes()
            record = {"id": case["id"], "kind": case["kind"], "file": case["file"],
                      "same": _same_content(original, damaged, path.name)}
            try:
                try:
                    (reader.pack if case["kind"] == "pack" else reader.dataset)(root)
                except GraphsysError as exc:
                    record.update(outcome="open/read", error=f"{type(exc).__name__}: {exc}")
                except Exception as exc:  # noqa: BLE001 - what the fuzzer looks for
                    record.update(outcome="foreign", error=f"{type(exc).__name__}: {exc}")
                else:
                    if case["kind"] == "pack":
                        record["outcome"] = "none"
                    else:
                        try:
                            report = verify_dataset(root, progress=False)
                            record["outcome"] = "none" if report.ok else "verify"
                            record["error"] = "; ".join(report.problems)
                        except GraphsysError as exc:
                            record.update(outcome="verify", error=str(exc))
                        except Exception as exc:  # noqa: BLE001
                            record.update(outcome="foreign",
                                          error=f"verify: {type(exc).__name__}: {exc}")
            finally:
                path.write_bytes(original)
            emit(record)


# -- judging --------------------------------------------------------------------------

def defect(record: dict) -> str | None:
    """Why an outcome is not allowed, or None."""
    outcome, same = record["outcome"], record["same"]
    if outcome == "open/read":
        return None
    if outcome == "foreign":
        return f"raised a non-graphsys error: {record['error'][:300]}"
    raw_values = record["kind"] == "raw" and record["file"] == "features.bin"
    if outcome == "verify" and (raw_values or same):
        return None
    if outcome == "none" and same:
        return None
    return f"caught only by verify ({record.get('error', '')[:200]})" if outcome == "verify" \
        else "not caught at all"


def run_fuzz(base: Path) -> tuple[list[dict], list[str], float]:
    """Build inputs, run every case in the workers; return results, crashes, seconds."""
    start = time.perf_counter()
    inputs = build_inputs(base)
    cases = make_cases(inputs)
    (base / "inputs.json").write_text(json.dumps({k: str(v) for k, v in inputs.items()}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    procs = []
    for w in range(WORKERS):
        work = base / f"w{w}"
        # Each worker damages its own copy of the inputs, in place, restoring after.
        own = {k: work / k for k in inputs}
        for k, v in inputs.items():
            shutil.copytree(v, own[k])
        (work / "inputs.json").write_text(json.dumps({k: str(v) for k, v in own.items()}))
        (work / "cases.json").write_text(json.dumps(cases[w::WORKERS]))
        procs.append(subprocess.Popen(
            [sys.executable, __file__, "--worker", str(work / "inputs.json"),
             str(work / "cases.json"), str(work / "results.jsonl")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    results, crashes = [], []
    for w, proc in enumerate(procs):
        output, _ = proc.communicate(timeout=600)
        lines = [json.loads(line) for line in
                 (base / f"w{w}" / "results.jsonl").read_text().splitlines()]
        done = [r for r in lines if "outcome" in r]
        results.extend(done)
        if proc.returncode != 0:
            begun = [r["begin"] for r in lines if "begin" in r]
            last = begun[-1] if len(begun) > len(done) else "(none: died between cases)"
            how = f"was killed by signal {-proc.returncode}" if proc.returncode < 0 \
                else f"exited with {proc.returncode}"
            crashes.append(f"worker {w} {how} on case {last}:\n{output[-3000:]}")
    if not crashes and len(results) != len(cases):
        crashes.append(f"{len(results)} results for {len(cases)} cases")
    return results, crashes, time.perf_counter() - start


def summary(results: list[dict]) -> str:
    from collections import Counter

    table = Counter((r["kind"], r["outcome"]) for r in results)
    return ", ".join(f"{k}/{o}: {n}" for (k, o), n in sorted(table.items()))


def test_fuzzed_files_are_caught_and_never_crash(tmp_path: Path) -> None:
    results, crashes, seconds = run_fuzz(tmp_path)
    assert not crashes, "\n".join(crashes)
    defects = [f"{r['id']}: {why}" for r in results if (why := defect(r))]
    assert len(results) >= 200
    assert not defects, f"{len(defects)} defect(s):\n" + "\n".join(defects)
    print(f"{len(results)} cases in {seconds:.1f}s: {summary(results)}")


# -- training on damaged copies ---------------------------------------------------------

@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> Path:
    from graphsys.datasets.synthetic import SyntheticConfig, generate_synthetic

    out = tmp_path_factory.mktemp("fuzz-train") / "syn"
    generate_synthetic(out, SyntheticConfig(num_nodes=300, num_edges=2000, feat_dim=8,
                                            num_classes=4, seed=SEED), progress=False)
    return out


@pytest.mark.parametrize("file,at", [("manifest.json", 0.5), ("indices.bin", 0.3),
                                     ("labels.bin", 0.7)])
def test_train_on_a_damaged_copy_exits_2_with_one_line(small_dataset, tmp_path, file,
                                                       at) -> None:
    root = tmp_path / "copy"
    shutil.copytree(small_dataset, root)
    data = bytearray((root / file).read_bytes())
    data[int(len(data) * at)] ^= 0x5A
    (root / file).write_bytes(bytes(data))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "graphsys", "train", str(root), "--epochs",
                             "1", "--eval-every", "0", "--fanouts", "3,3", "--no-progress"],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, lines
    assert str(root) in lines[0], lines


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        run_worker(*map(Path, sys.argv[2:5]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            results, crashes, seconds = run_fuzz(Path(tmp))
        print("\n".join(crashes))
        for r in results:
            if why := defect(r):
                print(f"DEFECT {r['id']}: {why}")
        print(f"{len(results)} cases in {seconds:.1f}s: {summary(results)}")
