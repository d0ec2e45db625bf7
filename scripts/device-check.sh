#!/bin/bash
# The GPU check, run on the device machine in one call (see scripts/device-pack.sh, which makes
# .devpack here first). It lists the Vulkan devices, runs the op tests (every kernel against a
# double-precision reference, the GPU shapes included) and benchmarks IDEFICS-9B's shapes with
# generated fp16 weights (the H200 targets in docs/benchmarks.md); everything lands in $OUT.
# EGRET_CHECK_SKIP_9B=1 skips the benchmark (a dry run of the script on a CPU device).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/egret-check}
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$PWD/.devpack/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# NVIDIA's driver where the device tool's README says it is mounted (its ICD may name the
# library without a path)
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -f "$icd" ] && export VK_DRIVER_FILES="$icd"
[ -d /usr/local/nvidia/lib64 ] && export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:/usr/local/nvidia/lib64"
export EGRET_TEST_DATA="$PWD/tests/data" EGRET_MODELS="$PWD/models"
bin=.devpack
step() { # name, seconds, command...: runs it for at most that long, keeps its output,
          # records its time and exit status (124: the time ran out)
    local name=$1 limit=$2 t0=$SECONDS rc
    shift 2
    timeout "$limit" "$@" >"$OUT/$name.txt" 2>&1
    rc=$?
    echo "$name: exit $rc in $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
    return $rc
}
: >"$OUT/summary.txt"
# Each step's limit keeps the whole inside one 10-minute call.
step devices 30 "$bin/egret" devices || exit 1
step test_ops 90 "$bin/test_ops"
step test_ops_batch 60 "$bin/test_ops_batch"
if [ "${EGRET_CHECK_SKIP_9B:-0}" != 1 ]; then
    # The demo model first (seconds), then the 9B shapes (generating 17 GB of weights takes
    # about two minutes of one CPU core).
    step bench_demo 60 "$bin/egret" bench --json
    step bench_9b 270 "$bin/egret" bench --random-weights bench/configs/idefics-9b --warmup 1 \
        --reps 3 --json
    step ops_bench_big 60 "$bin/ops_bench" --fp16 --big --vs-default --samples 3
fi
tail -n 3 "$OUT"/test_ops*.txt | tee -a "$OUT/summary.txt"
