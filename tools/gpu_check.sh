#!/usr/bin/env bash
# The GPU check in one command, for a lent GPU machine (one H100 or H200, no package registry):
#
#     tools/gpu_check.sh OUT_DIR [tests|bench|all]          (from the repository root; default: all)
#
# 1. env.txt: the GPU, driver, python, torch / CUDA / Triton versions, nvcc and the CUDA toolkit used.
# 2. Builds the extension with this machine's own torch (pip install --no-build-isolation --no-deps
#    -e .; never `make`, which would install torch) for this GPU's architecture only -> build.log.
# 3. Checks that the `cuda` and `triton` backends are available.
# 4. tests: every `gpu`-marked test, a per-test timeout and a whole-run deadline -> pytest.log,
#    junit.xml. About 6 minutes with the build.
# 5. bench: python -m jsla_fast.bench --device cuda --backends cuda,triton,reference,compile, batch
#    1 and 40, fp16 then fp32 with torch.compile's default mode, then fp16 with max-autotune if the
#    deadline leaves time -> bench.log, bench_fp16.json, bench_fp32.json, bench_fp16_max-autotune.json.
#    About 4 minutes with the build.
# OUT_DIR gets those 8 files and nothing else; the last lines printed are a summary table.
#
# Exit status: 0 everything ran and passed; 2 bad arguments; 3 no torch or no CUDA GPU; 4 no usable
# CUDA toolkit; 5 build failed; 6 a GPU backend is unavailable; 7 tests failed; 8 a bench run failed.
# Environment (all optional): PYTHON (default python3, the one holding torch), CUDA_HOME (default:
# searched), JSLA_FAST_CUDA_ARCHS (default: this GPU's compute capability), MAX_JOBS (default: the
# core count), GPU_CHECK_DEADLINE_S (whole run; default tests 360, bench 240, all 570),
# GPU_CHECK_TEST_TIMEOUT_S (per test, default 150), GPU_CHECK_WORKERS (pytest-xdist workers,
# default 4), GPU_CHECK_REBUILD=1 (build even when the built extension is newer than its sources).
set -uo pipefail

usage() {
  cat >&2 <<'EOF'
usage: tools/gpu_check.sh OUT_DIR [tests|bench|all]
  OUT_DIR  folder for env.txt, build.log, pytest.log, junit.xml, bench.log, bench_*.json (created)
  tests    build, then every `gpu`-marked test (~6 min)
  bench    build, then the GPU bench, fp16 and fp32, batch 1 and 40 (~4 min)
  all      both (the default; ~9.5 min)
Run it from the repository root on a machine with a CUDA GPU (see docs/PERFORMANCE.md, "Reproduce").
EOF
}
die() { local code=$1; shift; printf 'gpu_check: %s\n' "$*" >&2; exit "$code"; }

case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  "") usage; die 2 "missing OUT_DIR (the folder for the logs and results)" ;;
  -*) usage; die 2 "unknown option '$1' (the first argument is OUT_DIR)" ;;
esac
[ $# -le 2 ] || { usage; die 2 "too many arguments (${*:3}): give OUT_DIR and at most one part"; }
OUT=$1
PART=${2:-all}
case "$PART" in
  tests|bench|all) ;;
  *) usage; die 2 "unknown part '$PART': choose tests, bench or all" ;;
esac

for var in GPU_CHECK_DEADLINE_S GPU_CHECK_TEST_TIMEOUT_S GPU_CHECK_WORKERS MAX_JOBS; do
  [[ "${!var:-0}" =~ ^[0-9]+$ ]] || { usage; die 2 "$var=${!var}: give a whole number (seconds, workers, jobs)"; }
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[ -f "$ROOT/setup.py" ] && [ -d "$ROOT/jsla_fast" ] || die 2 "$ROOT is not a jsla_fast checkout"
mkdir -p "$OUT" || die 2 "cannot create OUT_DIR '$OUT'"
OUT=$(cd "$OUT" && pwd)
cd "$ROOT" || exit 2
rm -f "$OUT"/env.txt "$OUT"/build.log "$OUT"/pytest.log "$OUT"/junit.xml "$OUT"/bench.log "$OUT"/bench_*.json

PY=${PYTHON:-python3}
case "$PART" in tests) BUDGET=360 ;; bench) BUDGET=240 ;; *) BUDGET=570 ;; esac
BUDGET=${GPU_CHECK_DEADLINE_S:-$BUDGET}
DEADLINE=$((SECONDS + BUDGET))
left() { echo $((DEADLINE - SECONDS - $1)); }  # seconds to the deadline, minus a reserve
span() { local t; t=$(left "$1"); [ "$t" -ge "$2" ] || t=$2; echo "$t"; }  # left, at least $2
export PYTHONUNBUFFERED=1 PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1
unset TRITON_INTERPRET  # a GPU run compiles the Triton kernels; the interpreter is for CPU tests

SUMMARY=()  # "step|result|seconds" lines of the final table
note() { SUMMARY+=("$1|$2|$3"); }
summary() {
  echo
  echo "== gpu_check $PART: $OUT (deadline ${BUDGET}s, ran ${SECONDS}s) =="
  printf '%-23s | %-7s | %s\n' step seconds result
  local row step result secs
  for row in "${SUMMARY[@]}"; do
    IFS='|' read -r step result secs <<<"$row"
    printf '%-23s | %7s | %s\n' "$step" "$secs" "$result"
  done
}
fail() { local code=$1; shift; note "$STEP" "FAILED: $*" $((SECONDS - STEP_T)); summary; die "$code" "$*"; }

# -- 1. environment ------------------------------------------------------------------------------
STEP=env STEP_T=0
# One probe of torch: its version, its CUDA version ("-": a CPU build), the GPU ("-": none); empty
# output: no torch.
PROBE=$("$PY" -c 'import torch; print(torch.__version__, torch.version.cuda or "-",
  torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")' 2>/dev/null)
TORCH_VER="" TORCH_CUDA=- GPU=-
[ -z "$PROBE" ] || read -r TORCH_VER TORCH_CUDA GPU <<<"$PROBE"
[ "$TORCH_CUDA" = - ] && TORCH_CUDA=""
# The python's own bin/ first: its ninja (without one torch compiles one file at a time) and tools
PYBIN=$("$PY" -c 'import os, sys; print(os.path.dirname(sys.executable))' 2>/dev/null) && PATH="$PYBIN:$PATH"
# The toolkit: a directory with bin/nvcc and include/ (a wrapper nvcc on PATH has no headers beside
# it) whose CUDA major version is torch's (torch's extension builder refuses a major mismatch).
nvcc_release() { "$1/bin/nvcc" --version 2>/dev/null | sed -n 's/.*release \([0-9]*\.[0-9]*\).*/\1/p' | head -1; }
CANDIDATES=()
[ -n "${CUDA_HOME:-}" ] && CANDIDATES+=("$CUDA_HOME")
CANDIDATES+=(/usr/local/cuda)
NVCC_ON_PATH=$(command -v nvcc 2>/dev/null || true)
[ -n "$NVCC_ON_PATH" ] && CANDIDATES+=("$(dirname "$(dirname "$(readlink -f "$NVCC_ON_PATH")")")")
CANDIDATES+=($("$PY" -c 'import glob, site  # pip-installed toolkits (nvidia/cu13, nvidia/cuda_nvcc)
for d in site.getsitepackages(): print(*sorted(glob.glob(d + "/nvidia/cu[0-9]*") + glob.glob(d + "/nvidia/cuda_nvcc")))
' 2>/dev/null))
CANDIDATES+=(/usr/local/cuda-*)
CUDA_FOUND="" CUDA_REL="" CUDA_NOTES=""
for d in "${CANDIDATES[@]}"; do
  [ -d "$d" ] || continue
  if [ ! -x "$d/bin/nvcc" ] || [ ! -f "$d/include/cuda_runtime_api.h" ]; then
    CUDA_NOTES+="  $d: no bin/nvcc or no include/cuda_runtime_api.h"$'\n'; continue
  fi
  rel=$(nvcc_release "$d")
  CUDA_NOTES+="  $d: nvcc $rel"$'\n'
  if [ -z "$CUDA_FOUND" ] && { [ -z "$TORCH_CUDA" ] || [ "${rel%%.*}" = "${TORCH_CUDA%%.*}" ]; }; then
    CUDA_FOUND=$d CUDA_REL=$rel
  fi
done
{
  echo "date: $(date -u +%FT%TZ)  host: $(hostname)  cores: $(nproc)  part: $PART"
  echo "commit: $(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo 'unknown (no .git here)')"
  echo "uname: $(uname -srm)"
  if command -v nvidia-smi >/dev/null; then
    echo "--- nvidia-smi -L"; nvidia-smi -L 2>&1
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv 2>&1
  else echo "--- nvidia-smi: not on PATH"; fi
  echo "--- python: $(command -v "$PY") ($("$PY" --version 2>&1))"
  "$PY" - <<'EOF' 2>&1
from importlib import metadata
try:
    import torch
except Exception as e:
    print(f"torch: does not import ({e})")
    raise SystemExit
print(f"torch {torch.__version__}, torch.version.cuda {torch.version.cuda}, "
      f"cuda available: {torch.cuda.is_available()}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"device 0: {torch.cuda.get_device_name(0)}, capability {p.major}.{p.minor}, "
          f"{p.multi_processor_count} SMs, L2 {p.L2_cache_size / 2**20:.0f} MiB, {p.total_memory / 2**30:.1f} GiB")
for name in ("triton", "setuptools", "wheel", "pytest", "pytest-xdist", "pytest-timeout", "numpy"):
    try:
        print(f"{name} {metadata.version(name)}")
    except metadata.PackageNotFoundError:
        print(f"{name}: not installed")
EOF
  echo "ninja: $(command -v ninja || echo 'not on PATH: the build compiles one file at a time') $(ninja --version 2>/dev/null)"
  echo "--- nvcc on PATH: ${NVCC_ON_PATH:-none}${NVCC_ON_PATH:+ ($("$NVCC_ON_PATH" --version 2>&1 | tail -1))}"
  echo "--- CUDA toolkit candidates (torch CUDA ${TORCH_CUDA:-none}):"; printf '%s' "$CUDA_NOTES"
  echo "CUDA_HOME used: ${CUDA_FOUND:-none}${CUDA_REL:+ (nvcc $CUDA_REL)}"
  echo "gcc: $(gcc --version 2>/dev/null | head -1)"
} >"$OUT/env.txt" 2>&1
if [ -z "$TORCH_VER" ]; then
  fail 3 "$PY cannot import torch: run this with the python that holds the machine's CUDA torch" \
    "(PYTHON=...); see $OUT/env.txt"
fi
if [ "$GPU" = - ] || [ -z "$GPU" ]; then
  fail 3 "no CUDA GPU is visible to torch $TORCH_VER: run this on the lent GPU machine (see $OUT/env.txt)"
fi
if [ -z "$CUDA_FOUND" ]; then
  fail 4 "no CUDA toolkit with bin/nvcc, include/cuda_runtime_api.h and torch's CUDA major version" \
    "(torch $TORCH_VER: CUDA $TORCH_CUDA); candidates:"$'\n'"$CUDA_NOTES""set CUDA_HOME to a CUDA" \
    "${TORCH_CUDA%%.*}.x toolkit: torch's extension builder refuses a CUDA major-version mismatch"
fi
if [ -n "${CUDA_HOME:-}" ] && [ "$CUDA_HOME" != "$CUDA_FOUND" ]; then
  echo "gpu_check: CUDA_HOME=$CUDA_HOME is not a usable CUDA $TORCH_CUDA toolkit; using $CUDA_FOUND" \
    | tee -a "$OUT/env.txt"
fi
export CUDA_HOME=$CUDA_FOUND PATH="$CUDA_FOUND/bin:$PATH"
note env "$GPU; torch $TORCH_VER (CUDA $TORCH_CUDA); nvcc $CUDA_REL at $CUDA_HOME" "$SECONDS"

# -- 2. build ------------------------------------------------------------------------------------
STEP=build STEP_T=$SECONDS
ARCHS=${JSLA_FAST_CUDA_ARCHS:-$("$PY" -c 'import torch; print("%d%d" % torch.cuda.get_device_capability(0))')}
SO=$("$PY" -c 'import sysconfig; print("jsla_fast/_C" + sysconfig.get_config_var("EXT_SUFFIX"))')
installed_here() {  # the editable install of this checkout (imported from elsewhere) is the one python sees
  [ "$(cd / && "$PY" -c 'import os, jsla_fast; print(os.path.dirname(os.path.abspath(jsla_fast.__file__)))' \
       2>/dev/null)" = "$ROOT/jsla_fast" ]
}
if [ -z "${GPU_CHECK_REBUILD:-}" ] && [ -f "$SO" ] && [ -z "$(find csrc setup.py -newer "$SO" -type f | head -1)" ] \
   && installed_here; then  # a rerun on the same machine: the build is up to date
  echo "build: $SO is newer than csrc/ and setup.py, installed from here: not rebuilt (GPU_CHECK_REBUILD=1 forces it)" \
    >"$OUT/build.log"
  note build "up to date ($SO)" 0
else
  echo "building for sm_$ARCHS with $CUDA_HOME, MAX_JOBS=${MAX_JOBS:-$(nproc)}" | tee "$OUT/build.log"
  JSLA_FAST_CUDA_ARCHS=$ARCHS MAX_JOBS=${MAX_JOBS:-$(nproc)} timeout -k 10 "$(span 30 60)" \
    "$PY" -m pip install -v --no-build-isolation --no-deps -e . >>"$OUT/build.log" 2>&1
  rc=$?
  if [ $rc -ne 0 ]; then
    tail -n 40 "$OUT/build.log" >&2
    [ $rc -eq 124 ] && fail 5 "the build passed the deadline (${BUDGET}s; log: $OUT/build.log)"
    fail 5 "pip install -e . failed (rc $rc; the tail of $OUT/build.log is above): fix setup.py / csrc and rerun"
  fi
  note build "ok, sm_$ARCHS" $((SECONDS - STEP_T))
fi

# -- 3. backends ---------------------------------------------------------------------------------
STEP=backends STEP_T=$SECONDS
if ! REASONS=$("$PY" - <<'EOF' 2>&1
import sys
from jsla_fast.ops.dispatch import why_unavailable
bad = 0
for name in ("cuda", "triton"):
    reason = why_unavailable(name, "cuda")
    print(f"{name}: {'available' if reason is None else reason}")
    bad += reason is not None
sys.exit(bad)
EOF
); then
  echo "$REASONS" | tee -a "$OUT/env.txt" >&2
  fail 6 "a GPU backend is unavailable (above); see $OUT/build.log"
fi
echo "$REASONS" >>"$OUT/env.txt"
note backends "cuda and triton available" $((SECONDS - STEP_T))

STATUS=0
# -- 4. tests ------------------------------------------------------------------------------------
if [ "$PART" != bench ]; then
  STEP=tests STEP_T=$SECONDS
  RESERVE=$([ "$PART" = all ] && echo 230 || echo 15)  # `all` keeps ~4 min for the bench
  "$PY" -c 'import pytest_timeout' 2>/dev/null || fail 7 "pytest-timeout is missing (pip install -e '.[test]')"
  # One GPU, several pytest-xdist workers: the Triton and inductor compiles, on the CPU, overlap.
  # With workers, --timeout-method thread: a hung kernel blocks in C, where a signal never lands;
  # the thread method ends that worker (xdist starts another) and its test is reported failed.
  # Without xdist the thread method would end the whole run, so signal.
  WORKERS=(--timeout-method signal)
  if "$PY" -c 'import xdist' 2>/dev/null && [ "${GPU_CHECK_WORKERS:-4}" -gt 1 ]; then
    WORKERS=(-n "${GPU_CHECK_WORKERS:-4}" --timeout-method thread)
  fi
  # SIGINT at the deadline: pytest then still writes its summary and the junit XML of what ran
  timeout -s INT -k 30 "$(span "$RESERVE" 60)" "$PY" -m pytest tests -m gpu -p no:cacheprovider -q -rfEs --durations 15 \
    --continue-on-collection-errors --junitxml "$OUT/junit.xml" -o junit_family=xunit2 \
    --timeout "${GPU_CHECK_TEST_TIMEOUT_S:-150}" "${WORKERS[@]}" >"$OUT/pytest.log" 2>&1
  rc=$?
  COUNTS=$("$PY" - "$OUT/junit.xml" <<'EOF' 2>/dev/null
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else list(root)
n = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
print(f"{n['tests'] - n['failures'] - n['errors'] - n['skipped']} passed, {n['failures']} failed, "
      f"{n['errors']} errors, {n['skipped']} skipped")
print(1 if n["failures"] or n["errors"] or n["skipped"] or not n["tests"] else 0)
EOF
)
  VERDICT=$(echo "$COUNTS" | tail -1); COUNTS=$(echo "$COUNTS" | head -1)
  echo "--- pytest (rc $rc): ${COUNTS:-no junit.xml}; the short summary:"
  sed -n '/short test summary/,$p' "$OUT/pytest.log" | head -n 40
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    STATUS=7; note tests "FAILED: passed the deadline (${BUDGET}s); ${COUNTS:-no junit.xml}" $((SECONDS - STEP_T))
  elif [ $rc -eq 5 ]; then
    STATUS=7; note tests "FAILED: no gpu test collected" $((SECONDS - STEP_T))
  elif [ $rc -ne 0 ] || [ "$VERDICT" != 0 ]; then
    # a skip fails too: on an H100/H200 every gpu test must run, a skip hides a missing feature
    STATUS=7; note tests "FAILED (rc $rc): ${COUNTS:-no junit.xml}" $((SECONDS - STEP_T))
  else
    note tests "ok: $COUNTS" $((SECONDS - STEP_T))
  fi
fi

# -- 5. bench ------------------------------------------------------------------------------------
bench() {  # bench NAME DTYPE MODE: one run into bench_NAME.json, its log appended to bench.log
  local name=$1 dtype=$2 mode=$3 t=$SECONDS budget
  budget=$(left 15)
  if [ "$budget" -lt 45 ]; then note "bench $name" "not run: ${budget}s left before the deadline" 0; return 1; fi
  echo "=== bench $name: --dtype $dtype --compile-mode $mode (at most ${budget}s)" >>"$OUT/bench.log"
  local from; from=$(($(wc -l <"$OUT/bench.log") + 1))
  timeout -k 10 "$budget" "$PY" -m jsla_fast.bench --device cuda --backends cuda,triton,reference,compile \
    --batch 1,40 --dtype "$dtype" --compile-mode "$mode" --json "$OUT/bench_$name.json" >>"$OUT/bench.log" 2>&1
  local rc=$?
  if [ $rc -eq 0 ]; then
    note "bench $name" "ok: bench_$name.json" $((SECONDS - t))
  elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    note "bench $name" "stopped at the deadline (rows measured so far are in bench_$name.json, complete: false)" \
      $((SECONDS - t))
    return 1
  else
    echo "--- bench $name failed (rc $rc); the end of its log:" >&2
    tail -n +"$from" "$OUT/bench.log" | tail -n 15 >&2
    STATUS=8; note "bench $name" "FAILED (rc $rc): see bench.log" $((SECONDS - t)); return 1
  fi
}
if [ "$PART" != tests ]; then
  : >"$OUT/bench.log"
  bench fp16 float16 default  # first: the headline rows (e2e B=1 fp16 CUDA graph against eager and compile)
  bench fp32 float32 default
  if [ "$(left 15)" -ge 150 ]; then bench fp16_max-autotune float16 max-autotune
  else note "bench fp16_max-autotune" "not run: $(left 15)s left, max-autotune wants ~150s" 0; fi
  "$PY" - "$OUT" <<'EOF' 2>&1
import json, pathlib, sys
for path in sorted(pathlib.Path(sys.argv[1]).glob("bench_*.json")):
    r = json.loads(path.read_text())
    print(f"--- {path.name}: {r['device']}, torch {r['torch']}, complete: {r.get('complete')}; ceilings "
          f"{r['peak_gflops'] / 1e3:.0f} TFLOP/s, {r['peak_gbps'] / 1e3:.2f} TB/s; this run measured "
          f"{r.get('measured_bf16_gflops', 0) / 1e3:.0f} TFLOP/s bf16, {r.get('measured_copy_gbps', 0) / 1e3:.2f} TB/s")
    groups = {}  # one line per op shape or e2e batch: each backend's median, speedup (and roofline %)
    for row in r["results"]:
        key = (row["name"], "x".join(map(str, row["shape"])))
        ms = row["median_ms"]
        cell = f"{row['backend']}{'/' + row['runtime'] if row.get('runtime', 'eager') != 'eager' else ''} " \
               f"{f'{ms * 1e3:.1f} us' if ms < 1 else f'{ms:.3f} ms'} {row.get('speedup') or 0:.2f}x"
        if "roofline_pct" in row and row["backend"] != "reference":
            cell += f" {row['roofline_pct']:.0f}%"
        groups.setdefault(key, []).append(cell)
    for (name, shape), cells in groups.items():
        print(f"  {name} {shape}: " + " | ".join(cells))
EOF
fi

summary
[ $STATUS -eq 0 ] || printf 'gpu_check: FAILED (exit %d): see the table above and the logs in %s\n' "$STATUS" "$OUT" >&2
exit $STATUS
