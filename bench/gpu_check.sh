#!/usr/bin/env bash
# The prepared GPU check (issue 9, item 11): ONE call of a GPU machine runs the CUDA parity tests and the GPU
# benches and writes every table under $OUT (default ./gpu_out), in at most 8 files: summary.md (each step's
# status and tables) and one log per step. Each step has its own time limit, and all of them fit in
# $GPU_CHECK_SECONDS (default 540 s = 9 minutes); a step that fails or runs out of time is recorded as such and
# the next one runs.
#
#   bash bench/gpu_check.sh                 # everything (on the GPU machine)
#   bash bench/gpu_check.sh --only field_quality   # one step (or a comma-separated list), e.g. FIELD_MINUTES=5;
#                                           # LIMIT_<step>=SECONDS changes a step's limit, GPU_CHECK_SECONDS the total
#   bash bench/gpu_check.sh --dry-run       # on any machine: print the plan, check every file, option, wheel and
#                                           # test it would use (collects the parity tests, runs nothing heavy)
#
# Steps: setup (versions; install missing packages from wheels in .whl/) -> build (gsplat and nerfacc compile
# their CUDA code on first use) -> parity (the tests that need CUDA: gsplat, nerfacc, nvdiffrast, tiny-cuda-nn
# against the torch references) -> step_time (headforge's Gaussian training step vs a bare gsplat loop) ->
# gaussian_quality (LPS head, 512 px, 7k steps; target >= 34 dB masked PSNR) -> field_quality (hash grid,
# 512 px, FIELD_MINUTES of training, default 1 to fit the call; the target figure is 5 minutes:
# FIELD_MINUTES=5 bash bench/gpu_check.sh --only field_quality in a second call).
#
# What travels (the machine has its own python3 with torch + CUDA and no network). Prepare once, from the repo
# root, on a machine with internet:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl gsplat nerfacc tyro docstring-parser typeguard trimesh xatlas fast-simplification
#   (gsplat and nerfacc are pure-Python wheels that compile their CUDA kernels on first use; their other needs,
#   ninja, numpy, jaxtyping, rich, torch, are in the machine's image. nvdiffrast and tiny-cuda-nn have no
#   wheels on PyPI: build them elsewhere into .whl/ to include their parity tests, else those tests skip.)
#   mkdir -p .gpu_data && cp -r ../shared/data/lps_head .gpu_data/ && echo /.gpu_data/ >> .git/info/exclude
# then call the device tool with: command "bash bench/gpu_check.sh", carry [".whl", ".gpu_data"], timeout_s 600.
# .whl/ is git-ignored; only wheels of packages missing on the machine are installed (into /tmp/hf-site), and
# headforge itself runs from the working tree (PYTHONPATH), not installed: the image's torch differs from the pin.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
OUT=${OUT:-$ROOT/gpu_out}
WORK=${HEADFORGE_GPU_WORK:-/tmp/hf-gpu-work}
TOTAL=${GPU_CHECK_SECONDS:-540}
FIELD_MINUTES=${FIELD_MINUTES:-1}
export HEADFORGE_LPS_HEAD=${HEADFORGE_LPS_HEAD:-$([ -d "$ROOT/.gpu_data/lps_head" ] && echo "$ROOT/.gpu_data/lps_head" || echo "$ROOT/../shared/data/lps_head")}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}  # H100/H200: compile for this chip only (faster)
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
export PYTHONUNBUFFERED=1
DRY=0
ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --only) ONLY=$2; shift ;;
    --only=*) ONLY=${1#--only=} ;;
    *) echo "gpu_check.sh: unknown option $1 (see the header of $0)" >&2; exit 2 ;;
  esac
  shift
done

PARITY_FILES="tests/test_gaussian_raster.py tests/test_volume_renderer.py tests/test_mesh_rasterizer.py tests/test_fields.py"
PARITY_K="gpu or cuda or gsplat or nerfacc or nvdiffrast or tcnn"
FIELD_SECONDS=$(awk -v m="$FIELD_MINUTES" 'BEGIN { printf "%d", m * 60 + 60 }')  # + capture, scoring
# name | limit in seconds | command (run from the repo root, output to $OUT/<name>.log)
STEPS=(
  "setup|30|setup_step"
  "build|130|$PY bench/gpu_check.py build"
  "parity|60|$PY -m pytest -q -rs -p no:cacheprovider -k '$PARITY_K' $PARITY_FILES"
  "step_time|60|$PY bench/gpu_check.py step-time --work $WORK --resolution 512 --steps 200"
  "gaussian_quality|130|$PY bench/bench_gaussian_quality.py --resolution 512 --steps 7000 --preset default --device cuda --out $WORK"
  "field_quality|$FIELD_SECONDS|$PY bench/bench_field_quality.py --resolution 512 --minutes $FIELD_MINUTES --encoding hashgrid --device cuda --quiet --out $WORK"
)
BENCH_OPTIONS=(
  "bench/gpu_check.py step-time|--work --resolution --steps"
  "bench/bench_gaussian_quality.py|--resolution --steps --preset --device --out"
  "bench/bench_field_quality.py|--resolution --minutes --encoding --device --quiet --out"
)

selected() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }
# LIMIT_<step>=SECONDS overrides a step's limit, e.g. LIMIT_gaussian_quality=500 with --only gaussian_quality
limit_of() { local var="LIMIT_$1"; echo "${!var:-$2}"; }

setup_step() {
  "$PY" --version
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || echo "nvidia-smi: not available"
  local missing=()
  if compgen -G ".whl/*.whl" >/dev/null; then
    for w in .whl/*.whl; do
      local name
      name=$(basename "$w" | cut -d- -f1)
      if "$PY" -m pip show -q "$name" >/dev/null 2>&1; then echo "present: $name ($(basename "$w") not installed)"
      else missing+=("$w"); fi
    done
  else
    echo "no .whl/ folder: nothing to install (see the header of bench/gpu_check.sh)"
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/hf-site \
      "${missing[@]}" || return 1
  fi
  "$PY" bench/gpu_check.py env
}

export PYTHONPATH="$ROOT:/tmp/hf-site${PYTHONPATH:+:$PYTHONPATH}"
if [ "$DRY" = 1 ]; then
  echo "gpu_check.sh --dry-run: OUT=$OUT WORK=$WORK budget ${TOTAL}s LPS head: $HEADFORGE_LPS_HEAD"
  status=0
  planned=0
  for step in "${STEPS[@]}"; do
    IFS='|' read -r name limit cmd <<<"$step"
    selected "$name" || continue
    limit=$(limit_of "$name" "$limit")
    planned=$((planned + limit))
    printf '  %-17s %4ss  %s\n' "$name" "$limit" "$cmd"
  done
  echo "  planned: ${planned}s of ${TOTAL}s"
  [ "$planned" -le "$TOTAL" ] || { echo "FAIL: the steps' limits exceed the budget"; status=1; }
  for f in bench/gpu_check.py bench/bench_gaussian_quality.py bench/bench_field_quality.py $PARITY_FILES; do
    [ -f "$f" ] || { echo "FAIL: missing $f"; status=1; }
  done
  for entry in "${BENCH_OPTIONS[@]}"; do
    IFS='|' read -r script options <<<"$entry"
    # shellcheck disable=SC2086
    help=$("$PY" $script --help 2>&1) || { echo "FAIL: $script --help"; echo "$help" | tail -5; status=1; continue; }
    for opt in $options; do
      grep -q -- "$opt" <<<"$help" || { echo "FAIL: $script has no option $opt"; status=1; }
    done
    echo "  options ok: $script $options"
  done
  [ -f "$HEADFORGE_LPS_HEAD/head.obj" ] && echo "  LPS head: found" || echo "  WARN: no LPS head at $HEADFORGE_LPS_HEAD (carry .gpu_data/lps_head)"
  if compgen -G ".whl/*.whl" >/dev/null; then ls .whl/*.whl | sed 's/^/  wheel: /'
  else echo "  WARN: no wheels in .whl/ (gsplat, nerfacc, ... must travel; see the header)"; fi
  # shellcheck disable=SC2086
  collected=$("$PY" -m pytest --collect-only -q -p no:cacheprovider -k "$PARITY_K" $PARITY_FILES 2>&1)
  n=$(grep -c '::' <<<"$collected")
  if [ "$n" -gt 0 ]; then echo "  parity tests collected: $n"; grep '::' <<<"$collected" | sed 's/^/    /'
  else echo "FAIL: no parity test collected"; echo "$collected" | tail -5; status=1; fi
  [ "$status" = 0 ] && echo "dry run ok" || echo "dry run FAILED"
  exit "$status"
fi

mkdir -p "$OUT" "$WORK"
SUMMARY=$OUT/summary.md
START=$(date +%s)
{
  echo "# headforge GPU check, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo
  echo "| step | status | seconds | limit |"
  echo "|---|---|---|---|"
} >"$SUMMARY"
TABLES=$(mktemp)
for step in "${STEPS[@]}"; do
  IFS='|' read -r name limit cmd <<<"$step"
  selected "$name" || continue
  limit=$(limit_of "$name" "$limit")
  left=$((TOTAL - ($(date +%s) - START)))
  [ "$limit" -gt "$left" ] && limit=$left
  if [ "$limit" -lt 5 ]; then
    echo "| $name | skipped: the budget is spent | 0 | 0 |" >>"$SUMMARY"
    continue
  fi
  log=$OUT/$name.log
  echo "== $name (limit ${limit}s): $cmd" | tee "$log"
  t0=$(date +%s)
  if [ "$cmd" = setup_step ]; then
    timeout --kill-after=5 "$limit" bash -c "$(declare -f setup_step); PY='$PY'; setup_step" >>"$log" 2>&1
  else
    timeout --kill-after=5 "$limit" bash -c "$cmd" >>"$log" 2>&1
  fi
  rc=$?
  secs=$(($(date +%s) - t0))
  case $rc in
    0) status=ok ;;
    124 | 137) status="TIMED OUT" ;;
    *) status="failed (exit $rc)" ;;
  esac
  echo "| $name | $status | $secs | $limit |" >>"$SUMMARY"
  echo "   -> $status in ${secs}s"
  {
    echo
    echo "## $name: $status"
    echo
    echo '```'
    grep -E '^\||[┃│┏┡└]|passed|failed|skipped|SKIPPED|[Ee]rror|ok in|FAILED|PSNR|s/step|"' "$log" | tail -40
    echo '```'
  } >>"$TABLES"
done
cat "$TABLES" >>"$SUMMARY"
rm -f "$TABLES"
echo "wrote $SUMMARY (and one log per step) in $(($(date +%s) - START))s"
cat "$SUMMARY"
