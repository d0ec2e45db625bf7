#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/fuzz_*.c) with clang in build-fuzz and runs each one for
# SECONDS_PER_TARGET seconds (default 60) over its seed corpus and past findings.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]      e.g. scripts/fuzz.sh 600 fuzz_image
#
# New coverage goes to build-fuzz/fuzz-corpus/<target>/ (kept between runs, not in git). A finding
# (crash, leak, UB, timeout, out-of-memory) is written to fuzz/regressions/<target>/, where the
# ctest test fuzz_replay_<target> replays it in every build: fix the library, keep the file. Exits
# non-zero when any target found something. Env: EGRET_FUZZ_BUILD (build folder), EGRET_FUZZ_JOBS
# (compile jobs, default: all cores), EGRET_FUZZ_PARALLEL (targets run at once, default: all
# cores).
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${1:-60}
shift || true
BUILD=${EGRET_FUZZ_BUILD:-build-fuzz}
JOBS=${EGRET_FUZZ_JOBS:-$(nproc)}
if [ $# -gt 0 ]; then
  TARGETS=("$@")
else
  TARGETS=()
  for src in fuzz/fuzz_*.c; do TARGETS+=("$(basename "$src" .c)"); done
fi

# Longest input per target: above the largest seed, small enough to keep executions fast.
max_len() {
  case "$1" in
    fuzz_image) echo 16384 ;;          # seeds up to 3 KB; room for multi-chunk PNGs / JPEG scans
    fuzz_tokenizer) echo 2048 ;;       # a prompt's worth of text, or 1023 ids
    fuzz_tokenizer_json) echo 32768 ;; # the test tokenizer.json is 20 KB
    fuzz_request) echo 4096 ;;         # requests with many small parts, stops, examples
    *) echo 8192 ;;                    # config.json, templates, safetensors headers
  esac
}
dict() {
  case "$1" in
    fuzz_image) echo fuzz/dict/image.dict ;;
    fuzz_tokenizer | fuzz_request) ;;
    *) echo fuzz/dict/json.dict ;;
  esac
}

start=$(date +%s)
CC=clang cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEGRET_FUZZ=ON >/dev/null
cmake --build "$BUILD" -j"$JOBS" --target "${TARGETS[@]}" >/dev/null
echo "fuzz: built ${TARGETS[*]} in $(($(date +%s) - start)) s"

# Findings are reported, not recovered from: UB aborts, leaks are checked at the end of each run.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"

# One target's run; its summary line goes to $BUILD/$t.result, a finding's log tail with it.
run_target() {
  local t=$1 work="$BUILD/fuzz-corpus/$1" found="fuzz/regressions/$1" d t0 status execs cov
  mkdir -p "$work" "$found"
  d=$(dict "$t")
  t0=$(date +%s)
  # -timeout: one input may take this long (the largest image the default limits allow, 50
  # Mpixel, decodes in a few seconds under ASan); -rss_limit_mb: the limits allow ~400 MB of
  # pixel memory, ASan adds its shadow.
  if "$BUILD/fuzz/$t" -max_total_time="$SECS" -max_len="$(max_len "$t")" -timeout=60 \
      -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix="$found/" ${d:+-dict="$d"} \
      "$work" "fuzz/corpus/$t" "$found" >"$BUILD/$t.log" 2>&1; then
    status=ok
  else
    status="FINDING (see $BUILD/$t.log; reproducer in $found/)"
    tail -n 60 "$BUILD/$t.log" >"$BUILD/$t.result"
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$BUILD/$t.log" | tail -n 1)
  cov=$(grep -o 'cov: [0-9]*' "$BUILD/$t.log" | tail -n 1 || true)
  echo "fuzz: $t ${SECS}s: ${execs:-?} execs, ${cov:-cov: ?}, $(ls "$work" | wc -l) corpus files," \
    "$(($(date +%s) - t0)) s: $status" >>"$BUILD/$t.result"
}

# libFuzzer runs one process on one core: as many targets at once as there are cores
# (EGRET_FUZZ_PARALLEL), each still for SECONDS_PER_TARGET.
PARALLEL=${EGRET_FUZZ_PARALLEL:-$(nproc)}
running=0
for t in "${TARGETS[@]}"; do
  rm -f "$BUILD/$t.result"
  if [ "$running" -ge "$PARALLEL" ]; then
    wait -n || true
    running=$((running - 1))
  fi
  run_target "$t" &
  running=$((running + 1))
done
wait
failed=()
for t in "${TARGETS[@]}"; do
  cat "$BUILD/$t.result"
  grep -q ': FINDING' "$BUILD/$t.result" && failed+=("$t")
done

echo "fuzz: total $(($(date +%s) - start)) s"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: findings in ${failed[*]}" >&2
  exit 1
fi
