"""Run one example script's ``main(argv)`` in this process and print its timing.

Used by ``bench/dgl_scripts.py`` in both venvs (graphsys's and DGL's), so both
contenders are started, threaded and timed by the same code. Prints one line
``RESULT {json}`` with the seconds spent importing the script (its imports: graphsys or
DGL) and in ``main``, and what ``main`` returned; ``--profile N`` adds the top ``N``
functions of a cProfile of ``main`` by own time.

    python bench/_dgl_script_runner.py --script S.py --threads 2 [--profile 15] -- ARGS
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import io
import json
import pstats
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--script", required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--profile", type=int, default=0)
    parser.add_argument("argv", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv

    import torch

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    spec = importlib.util.spec_from_file_location("example_under_bench", args.script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    import_s = time.perf_counter() - t0
    prof = cProfile.Profile() if args.profile else None
    t0 = time.perf_counter()
    if prof is not None:
        prof.enable()
    result = module.main(argv)
    if prof is not None:
        prof.disable()
    main_s = time.perf_counter() - t0
    out = {"import_s": import_s, "main_s": main_s, "result": result,
           "torch": torch.__version__, "threads": torch.get_num_threads()}
    if prof is not None:
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(args.profile)
        lines = [ln.rstrip() for ln in buf.getvalue().splitlines() if ln.strip()]
        start = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls")), 0)
        out["profile"] = lines[start: start + args.profile + 1]
    print("RESULT " + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
