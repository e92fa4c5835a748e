#!/usr/bin/env bash
# One command for a lent GPU machine (no internet): the GPU tests, bench/kernels.py and
# bench/gpu_e2e.py, then a summary bench/results/gpu_check_<gpu>.json. Every step runs
# even if an earlier one fails; the exit status is nonzero if any step failed. The
# whole run stays within GPU_CHECK_BUDGET seconds (default 450, under 8 minutes): each
# step's timeout is the lesser of its own cap and what is left of the budget.
#
#   bash scripts/gpu_check.sh                 # results in bench/results, copies in $OUT
#   PYTHON=/path/to/python bash scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python}
if [ -z "${PYTHON:-}" ] && ! command -v python > /dev/null; then PY=python3; fi
BUDGET=${GPU_CHECK_BUDGET:-450}
START=$(date +%s)
LOGS=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check_logs.XXXXXX")
STEPS="$LOGS/steps.tsv"
: > "$STEPS"
# graphsys from this checkout, not an installed copy (pip install -e needs the network
# for its build dependencies)
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
mkdir -p bench/results

# run_step NAME CAP_SECONDS CMD...: runs CMD under timeout, logs to $LOGS/NAME.log and
# appends "name rc wall_s timeout_s" to $STEPS.
run_step() {
  local name=$1 cap=$2
  shift 2
  local left=$(( BUDGET - ($(date +%s) - START) ))
  local limit=$(( cap < left ? cap : left ))
  local t0 rc
  t0=$(date +%s.%N)
  if (( limit < 15 )); then
    echo "== $name: not run, the ${BUDGET} s budget is spent" | tee "$LOGS/$name.log"
    rc=125
  else
    echo "== $name (timeout ${limit} s): $*"
    timeout -k 10 "$limit" "$@" 2>&1 | tee "$LOGS/$name.log"
    rc=${PIPESTATUS[0]}
  fi
  local wall
  wall=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  echo "== $name: exit $rc after ${wall} s"
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$wall" "$limit" >> "$STEPS"
}

versions() {
  nvidia-smi -L || echo "nvidia-smi -L failed"
  nvidia-smi --query-gpu=name,driver_version,memory.total,pcie.link.gen.current,pcie.link.width.current \
      --format=csv || true
  "$PY" - <<'EOF'
import importlib, platform, sys
print("python", platform.python_version(), sys.executable)
for name in ("numpy", "torch", "numba", "cupy", "scipy", "zarr", "numcodecs", "psutil",
             "tqdm", "pytest", "graphsys"):
    try:
        mod = importlib.import_module(name)
        extra = ""
        if name == "torch":
            extra = f" cuda {mod.version.cuda}, available {mod.cuda.is_available()}"
            if mod.cuda.is_available():
                extra += f", {mod.cuda.get_device_name()}"
        if name == "graphsys":
            extra = f" from {mod.__file__}"
        print(name, getattr(mod, "__version__", "?") + extra)
    except Exception as exc:
        print(name, "import failed:", type(exc).__name__, exc)
from graphsys.cuda import gpu_ready
print("graphsys.cuda.gpu_ready()", gpu_ready())
EOF
}

export PY
export -f versions
run_step versions 60 bash -c versions
# The GPU name's slug names the result files, as the benches name theirs.
SLUG=$("$PY" -c "
import sys; sys.path.insert(0, 'bench')
import torch; from _machine import gpu_slug
print(gpu_slug(torch.cuda.get_device_name()) if torch.cuda.is_available() else 'no-gpu')
" 2>/dev/null || echo unknown-gpu)
echo "GPU slug: $SLUG"
run_step pytest_gpu 150 "$PY" -m pytest -m gpu -q -p no:cacheprovider \
    --continue-on-collection-errors -rs tests \
    --junitxml="$LOGS/pytest_gpu.xml"
run_step kernels 100 "$PY" bench/kernels.py
run_step cache_syncs 45 "$PY" bench/cache_syncs.py
run_step gpu_e2e 150 "$PY" bench/gpu_e2e.py
# diagnostics for the targets above (gather variants, launch costs, sampling and cache
# profiles): last, so a short budget drops them before any target
run_step gpu_probe 120 "$PY" bench/gpu_probe.py

SUMMARY="bench/results/gpu_check_$SLUG.json"
STEPS="$STEPS" LOGS="$LOGS" SLUG="$SLUG" START="$START" SUMMARY="$SUMMARY" "$PY" - <<'EOF'
import json, os, time
import xml.etree.ElementTree as ET
from pathlib import Path

steps = {}
for line in Path(os.environ["STEPS"]).read_text().splitlines():
    name, rc, wall, limit = line.split("\t")
    steps[name] = {"exit_code": int(rc), "wall_s": float(wall), "timeout_s": int(limit),
                   "ok": rc == "0", "log": f"logs/{name}.log"}
pytest = {"junit": "logs/pytest_gpu.xml"}
try:
    root = ET.parse(Path(os.environ["LOGS"]) / "pytest_gpu.xml").getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    total = {k: sum(int(s.get(k, 0)) for s in suites)
             for k in ("tests", "failures", "errors", "skipped")}
    pytest.update(total, passed=total["tests"] - total["failures"] - total["errors"]
                  - total["skipped"], failed=total["failures"] + total["errors"])
except Exception as exc:  # pytest did not get as far as writing its report
    pytest["error"] = f"no junit report: {type(exc).__name__}: {exc}"
start = int(os.environ["START"])
slug = os.environ["SLUG"]
results = {}
for kind in ("kernels", "cache_syncs", "e2e", "probe"):
    path = Path("bench/results") / f"gpu_{kind}_{slug}.json"
    results[kind] = {"path": str(path), "exists": path.is_file(),
                     "fresh": path.is_file() and path.stat().st_mtime >= start}
    if results[kind]["fresh"]:
        data = json.loads(path.read_text())
        results[kind]["targets"] = {k: v.get("met") for k, v in data.get("targets", {}).items()}
        if "target_met" in data:  # cache_syncs: one target
            results[kind]["targets"] = {"syncs_per_read<=1": data["target_met"]}
summary = {"name": "gpu_check", "gpu_slug": slug,
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "total_wall_s": time.time() - start, "steps": steps, "pytest_gpu": pytest,
           "results": results}
# On a GPU machine every gpu test skipped means CuPy or the GPU was not usable: a failure.
summary["all_ok"] = all(s["ok"] for s in steps.values()) and pytest.get("passed", 0) > 0
out = Path(os.environ["SUMMARY"])
tmp = out.with_name(f".{out.name}.partial")
tmp.write_text(json.dumps(summary, indent=1) + "\n")
os.replace(tmp, out)
print(json.dumps({k: summary[k] for k in ("steps", "pytest_gpu", "all_ok")}, indent=1))
print(f"-> {out}")
raise SystemExit(0 if summary["all_ok"] else 3)
EOF
summary_rc=$?

if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT/logs"
  cp bench/results/gpu_*.json "$OUT/" 2>/dev/null || true
  cp "$LOGS"/* "$OUT/logs/" 2>/dev/null || true
  echo "copied results and logs to $OUT"
fi

failed=$(awk -F '\t' '$2 != 0 { print $1 }' "$STEPS" | tr '\n' ' ')
if [ -n "$failed" ] || [ "$summary_rc" != 0 ]; then
  echo "gpu_check: FAILED steps: ${failed:-none} (summary exit $summary_rc)"
  exit 1
fi
echo "gpu_check: all steps passed in $(( $(date +%s) - START )) s"
