"""Our DGL-shaped example scripts under graphsys vs the same scripts under DGL 2.1.0.

Each script in ``examples/dgl/`` (GraphSAGE and GAT node classification) is run as
written, importing graphsys, and as its DGL twin: the same file with its three graphsys
import lines swapped for DGL's (``import dgl``, ``import dgl.nn as dglnn``,
``from dgl.dataloading import ...``) and ``load_data`` building a ``dgl.graph`` from the
same arrays (exported once to ``.npz``: edges, features, labels, split masks). Nothing
else changes: same model, loop, defaults, epochs, batch size and fanouts.

Every run is a fresh process started by ``bench/_dgl_script_runner.py`` (the same code
in both venvs), with the same threads (``torch.set_num_threads``, ``OMP_NUM_THREADS``,
``MKL_NUM_THREADS``, ``NUMBA_NUM_THREADS``). One untimed run of each contender first
(page cache, numba's on-disk kernel cache, DGL's and torch's first imports), then
``--rounds`` rounds in which the contenders take turns, the order rotating each round.
Three contenders: graphsys in its own venv (torch 2.13, what a user installs), the same
graphsys script in DGL's venv (torch 2.2.1: only the library differs), and DGL.
Reported per script and contender: the median and every round of ``main()`` seconds (the
training and evaluation the script does) and of the whole process' wall time (imports
and start-up too), test accuracy per round, and the ratios DGL / graphsys (> 1: graphsys
faster; target 1.3x on ``main()``). ``--profile N`` adds one extra cProfile run per
contender (its top ``N`` functions by own time), not timed.

Needs ``bench/.dgl-venv`` (``bash bench/dgl_env.sh``). Writes
``bench/results/dgl_scripts.json`` and ``dgl_scripts.png``.

    python bench/dgl_scripts.py                     # ~5 min on 2 cores
    python bench/dgl_scripts.py --rounds 1 --epochs 2 --out /tmp/d.json   # quick
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from _machine import machine  # noqa: E402

DGL_PYTHON = BENCH / ".dgl-venv" / "bin" / "python"
RESULTS = BENCH / "results"
RUNNER = BENCH / "_dgl_script_runner.py"
SCRIPTS = ("node_classification.py", "gat.py")
CONTENDERS = ("graphsys", "graphsys_dgl_torch", "dgl")
TARGET = 1.3
EPOCH_LINE = re.compile(r"Epoch (\d+) \|.*\| Time ([0-9.]+)s")

GRAPHSYS_IMPORTS = (
    "import graphsys as dgl\n"
    "import graphsys.nn as dglnn\n"
    "from graphsys.dataloading import "
)
DGL_IMPORTS = (
    "import dgl\n"
    "import dgl.nn as dglnn\n"
    "from dgl.dataloading import "
)
DGL_LOAD_DATA = '''def load_data(path: str):
    """The same arrays as the graphsys dataset, as a DGLGraph (bench/dgl_scripts.py)."""
    import numpy as np

    d = np.load(Path(path) / "graph.npz")
    g = dgl.graph((torch.from_numpy(d["src"]), torch.from_numpy(d["dst"])),
                  num_nodes=int(d["num_nodes"]))
    for name in ("feat", "label", "train_mask", "val_mask", "test_mask"):
        g.ndata[name] = torch.from_numpy(d[name])
    return g, int(d["num_classes"])
'''


def dgl_twin(source: str) -> str:
    """``source`` with graphsys's imports swapped for DGL's and ``load_data`` replaced."""
    if source.count(GRAPHSYS_IMPORTS) != 1:
        raise ValueError("the example no longer has the three graphsys import lines this "
                         "bench swaps; update GRAPHSYS_IMPORTS")
    source = source.replace(GRAPHSYS_IMPORTS, DGL_IMPORTS)
    tree = ast.parse(source)
    fn = next((n for n in tree.body if isinstance(n, ast.FunctionDef)
               and n.name == "load_data"), None)
    if fn is None:
        raise ValueError("the example has no top-level load_data to replace")
    lines = source.splitlines(keepends=True)
    return "".join(lines[: fn.lineno - 1]) + DGL_LOAD_DATA + "".join(lines[fn.end_lineno:])


def export_npz(dataset: Path, out: Path) -> dict:
    """The graphsys dataset's graph, features, labels and masks as one ``.npz``."""
    import graphsys

    ds = graphsys.load_dataset(dataset)
    g = ds[0]
    indptr = g.indptr.numpy()
    dst = np.repeat(np.arange(g.num_nodes()), np.diff(indptr))
    arrays = {"src": g.indices.numpy().astype(np.int64), "dst": dst.astype(np.int64),
              "num_nodes": np.int64(g.num_nodes())}
    for name in ("feat", "label", "train_mask", "val_mask", "test_mask"):
        arrays[name] = np.ascontiguousarray(np.asarray(g.ndata[name][:]))
    arrays["num_classes"] = np.int64(ds.num_classes)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "graph.npz", **arrays)
    return {"num_nodes": int(arrays["num_nodes"]), "num_edges": int(len(arrays["src"])),
            "feat_dim": int(arrays["feat"].shape[1])}


def run_once(python: Path, script: Path, threads: int, argv: list[str],
             profile: int = 0) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads), "NUMBA_NUM_THREADS": str(threads),
           "DGLBACKEND": "pytorch", "PYTHONWARNINGS": "ignore"}
    cmd = [str(python), str(RUNNER), "--script", str(script), "--threads", str(threads),
           "--profile", str(profile), "--", *argv]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{shlex.join(cmd)} failed ({proc.returncode}):\n"
                           f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    out = json.loads(lines[-1][len("RESULT "):])
    out["wall_s"] = wall
    # The scripts print "Epoch N | ... | Time T s" (DGL's format); epoch 0 pays the
    # first-use costs (numba's runtime, torch's first optimizer step), so it is left out.
    out["epoch_s"] = [float(t) for n, t in EPOCH_LINE.findall(proc.stdout) if int(n) > 0]
    return out


def summarise(runs: list[dict]) -> dict:
    main_s = [r["main_s"] for r in runs]
    wall = [r["wall_s"] for r in runs]
    acc = [r["result"]["test_acc"] for r in runs]
    epochs = [t for r in runs for t in r["epoch_s"]]
    return {"epoch_s_median": statistics.median(epochs) if epochs else None,
            "epochs_timed": len(epochs), "main_s": main_s, "wall_s": wall,
            "import_s": [r["import_s"] for r in runs],
            "test_acc": acc, "main_s_median": statistics.median(main_s),
            "wall_s_median": statistics.median(wall),
            "test_acc_mean": statistics.fmean(acc), "torch": runs[0]["torch"],
            "threads": runs[0]["threads"]}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scripts = list(result["scripts"])
    fig, ax = plt.subplots(figsize=(7, 3.8))
    x = np.arange(len(scripts))
    bars = (("graphsys", "tab:blue", "graphsys (torch 2.13)"),
            ("graphsys_dgl_torch", "tab:cyan", "graphsys (DGL's torch 2.2.1)"),
            ("dgl", "tab:orange", "DGL 2.1.0 (torch 2.2.1)"))
    for i, (name, colour, label) in enumerate(bars):
        med = [result["scripts"][s][name]["main_s_median"] for s in scripts]
        each = [result["scripts"][s][name]["main_s"] for s in scripts]
        ax.bar(x + (i - 1) * 0.27, med, 0.25, color=colour, label=label)
        for j, vals in enumerate(each):
            ax.scatter([x[j] + (i - 1) * 0.27] * len(vals), vals, color="black", s=8, zorder=3)
    for j, s in enumerate(scripts):
        r = result["scripts"][s]
        top = max(r[n]["main_s_median"] for n in CONTENDERS)
        ax.text(x[j], top * 1.04, f"DGL / graphsys {r['dgl_over_graphsys_main']:.2f}x, same "
                f"torch {r['dgl_over_graphsys_dgl_torch_main']:.2f}x", ha="center", fontsize=8)
    ax.set_xticks(x, [f"examples/dgl/{s}" for s in scripts])
    ax.set_ylabel("main() seconds (median; dots: rounds)")
    ax.set_title(f"Same script, imports swapped ({result['config']['threads']} threads, "
                 f"{result['config']['dataset_name']})", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_ylim(0, ax.get_ylim()[1] * 1.1)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.partial.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=None,
                        help="a graphsys dataset directory (default: Cora prepared from "
                             "../shared/data/planetoid into a temporary directory)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=None,
                        help="passed to every script (default: the scripts' own)")
    parser.add_argument("--profile", type=int, default=20,
                        help="top N functions of one extra cProfile run each (0: none)")
    parser.add_argument("--scripts", nargs="+", default=list(SCRIPTS), choices=SCRIPTS)
    parser.add_argument("--dgl-python", type=Path, default=DGL_PYTHON)
    parser.add_argument("--out", type=Path, default=RESULTS / "dgl_scripts.json")
    args = parser.parse_args(argv)
    if not args.dgl_python.exists():
        print(f"--dgl-python {args.dgl_python}: not found; run `bash bench/dgl_env.sh` "
              "first (it creates bench/.dgl-venv)", file=sys.stderr)
        return 2
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    started = time.perf_counter()
    load_start = list(os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="dgl_scripts_") as tmp:
        tmp = Path(tmp)
        dataset, name = args.dataset, None
        if dataset is None:
            from graphsys.datasets.planetoid import prepare_planetoid

            dataset, name = tmp / "cora", "cora"
            prepare_planetoid(ROOT.parent / "shared" / "data" / "planetoid", dataset, "cora")
        name = name or dataset.name
        npz_dir = tmp / "npz"
        shape = export_npz(dataset, npz_dir)
        extra = [] if args.epochs is None else ["--epochs", str(args.epochs)]
        contenders = {}
        for script in args.scripts:
            ours = ROOT / "examples" / "dgl" / script
            twin = tmp / f"dgl_{script}"
            twin.write_text(dgl_twin(ours.read_text()))
            ours_args = ["--dataset", str(dataset), *extra]
            contenders[script] = {
                "graphsys": (Path(sys.executable), ours, ours_args),
                # the same script on DGL's torch (and numpy): only the library differs
                "graphsys_dgl_torch": (args.dgl_python, ours, ours_args),
                "dgl": (args.dgl_python, twin, ["--dataset", str(npz_dir), *extra]),
            }
        runs: dict = {s: {who: [] for who in CONTENDERS} for s in args.scripts}
        for script, pair in contenders.items():  # untimed: caches, first imports
            for who, (py, path, av) in pair.items():
                print(f"warm-up {script} {who} ...", flush=True)
                run_once(py, path, args.threads, av)
        for rnd in range(args.rounds):
            shift = rnd % len(CONTENDERS)  # each contender in each position in turn
            order = CONTENDERS[shift:] + CONTENDERS[:shift]
            for script, pair in contenders.items():
                for who in order:
                    py, path, av = pair[who]
                    r = run_once(py, path, args.threads, av)
                    runs[script][who].append(r)
                    print(f"round {rnd} {script} {who}: main {r['main_s']:.2f} s, wall "
                          f"{r['wall_s']:.2f} s, test acc {r['result']['test_acc']:.4f}",
                          flush=True)
        profiles: dict = {}
        if args.profile:
            for script, pair in contenders.items():
                for who, (py, path, av) in pair.items():
                    r = run_once(py, path, args.threads, av, profile=args.profile)
                    profiles.setdefault(script, {})[who] = {"main_s": r["main_s"],
                                                            "top": r["profile"]}
    scripts: dict = {}
    for script in args.scripts:
        ours, theirs = summarise(runs[script]["graphsys"]), summarise(runs[script]["dgl"])
        same = summarise(runs[script]["graphsys_dgl_torch"])
        ratio = theirs["main_s_median"] / ours["main_s_median"]
        scripts[script] = {
            "graphsys": ours, "dgl": theirs, "graphsys_dgl_torch": same,
            "dgl_over_graphsys_dgl_torch_main": theirs["main_s_median"] / same["main_s_median"],
            "dgl_over_graphsys_dgl_torch_wall": theirs["wall_s_median"] / same["wall_s_median"],
            "dgl_over_graphsys_dgl_torch_epoch": (
                theirs["epoch_s_median"] / same["epoch_s_median"]
                if same["epoch_s_median"] else None),
            "dgl_over_graphsys_main": ratio,
            "dgl_over_graphsys_wall": theirs["wall_s_median"] / ours["wall_s_median"],
            "dgl_over_graphsys_epoch": (theirs["epoch_s_median"] / ours["epoch_s_median"]
                                        if ours["epoch_s_median"] else None),
            "dgl_over_graphsys_main_by_round": [d["main_s"] / g["main_s"] for g, d in
                                                zip(runs[script]["graphsys"],
                                                    runs[script]["dgl"], strict=True)],
            "target": TARGET, "met": ratio >= TARGET,
        }
    result = {
        "name": "dgl_scripts",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python bench/dgl_scripts.py " + shlex.join(argv or sys.argv[1:]),
        "config": {"dataset": str(args.dataset or "cora (prepared from ../shared/data)"),
                   "dataset_name": name, **shape, "rounds": args.rounds,
                   "threads": args.threads, "epochs": args.epochs or "the scripts' defaults",
                   "timer": "main(): perf_counter in the runner; wall: perf_counter around "
                            "the process; one untimed run of each first; contenders "
                            "take turns, order rotated each round"},
        "scripts": scripts, "profiles": profiles,
        "targets_met": {s: v["met"] for s, v in scripts.items()},
        "load_average_at_start": [round(v, 2) for v in load_start],
        "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
        "wall_s": time.perf_counter() - started, "machine": machine(),
    }
    from graphsys._atomic import atomic_write_bytes

    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out, (json.dumps(result, indent=1) + "\n").encode())
    plot(result, args.out.with_suffix(".png"))
    for s, v in scripts.items():
        epoch = v["dgl_over_graphsys_epoch"]
        print(f"{s}: graphsys {v['graphsys']['main_s_median']:.2f} s vs DGL "
              f"{v['dgl']['main_s_median']:.2f} s main() -> DGL / graphsys "
              f"{v['dgl_over_graphsys_main']:.2f}x ({'met' if v['met'] else 'MISSED'} "
              f"target {TARGET}x); wall {v['dgl_over_graphsys_wall']:.2f}x; epochs after "
              f"the first {'n/a' if epoch is None else f'{epoch:.2f}x'}; on DGL's torch: "
              f"main {v['dgl_over_graphsys_dgl_torch_main']:.2f}x, wall "
              f"{v['dgl_over_graphsys_dgl_torch_wall']:.2f}x; test acc "
              f"{v['graphsys']['test_acc_mean']:.4f} vs {v['dgl']['test_acc_mean']:.4f}",
              flush=True)
    print(f"-> {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
