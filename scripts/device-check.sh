#!/bin/bash
# The GPU check, run on the device machine in one call (scripts/device-pack.sh makes .devpack
# here first). In order of priority, each step with its own time limit, and a step is skipped
# when it could not finish within the whole call's budget (EGRET_CHECK_BUDGET seconds, default
# 540 of the device tool's 600):
#   devices      the Vulkan devices and what cooperative matrices each offers; nvidia-smi
#   bandwidth    the streaming-read GB/s of the card (bench/bandwidth.c): decode's yardstick
#   test_coopmat the tensor-core matmul against a double reference (shape choice, fallback)
#   test_op_work the bytes and flops the profile divides by
#   test_ops     every kernel against a double reference in both precisions, flash attention
#                included, with the Vulkan validation layer (EGRET_COOPMAT=0 there: Debian's
#                layer predates VK_KHR_cooperative_matrix and would flag its structures)
#   test_ops_batch  batched decode's kernels, with validation
#   bench_9b     egret bench --random-weights bench/configs/idefics-9b --json: image encode
#                b1/b16, prefill (1 image + 64 tokens) b1/b8, decode b1/b8, time to first token
#   bench_9b_q4  the same model's decode b1/b8 with q4 projections (issue 19: q4 at batch 1
#                >= 2.5x the fp16 tokens/s of bench_9b)
#   profile_demo EGRET_PROFILE=1 egret bench on the demo model: GB/s and GFLOP/s per shader
#   test_ops_int_dot  the int-dot kernels of q8/q4 products (docs/quantization.md), validated
#   ops_bench_big  the linear kernels at IDEFICS-9B's hidden sizes
#   ops_bench_q4_int_dot_1 ... q8 and q4 decode products with (1) and without (-1) them
# Everything lands in $OUT: <step>.txt (output), bench_9b.json, bench_9b_q4.json and
# bandwidth.json, summary.txt.
# EGRET_CHECK_SKIP_9B=1 skips bench_9b (a dry run of the script on a CPU device).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/egret-check}
BUDGET=${EGRET_CHECK_BUDGET:-540}
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$PWD/.devpack/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# Debian's validation layer, packed gzipped: unpacked next to its manifest
layers=$(mktemp -d)
if gzip -dc .devpack/libVkLayer_khronos_validation.so.gz >"$layers/libVkLayer_khronos_validation.so" 2>/dev/null; then
    cp .devpack/VkLayer_khronos_validation.json "$layers/"
    export VK_LAYER_PATH="$layers" LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$layers"
fi
# NVIDIA's driver where the device tool's README says it is mounted (its ICD may name the
# library without a path)
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -f "$icd" ] && export VK_DRIVER_FILES="$icd"
[ -d /usr/local/nvidia/lib64 ] && export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:/usr/local/nvidia/lib64"
export EGRET_TEST_DATA="$PWD/tests/data" EGRET_MODELS="$PWD/models"
bin=.devpack
step() { # name, seconds, command...: runs it for at most that long if the budget allows,
          # keeps its output, records its time and exit status (124: the time ran out)
    local name=$1 limit=$2 t0=$SECONDS rc
    shift 2
    if [ $((SECONDS + limit)) -gt "$BUDGET" ]; then
        echo "$name: skipped (would pass the ${BUDGET} s budget at ${SECONDS} s)" | tee -a "$OUT/summary.txt"
        return 0
    fi
    timeout "$limit" "$@" >"$OUT/$name.txt" 2>&1
    rc=$?
    echo "$name: exit $rc in $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
    return $rc
}
: >"$OUT/summary.txt"
cat "$bin/build.txt" >>"$OUT/summary.txt" 2>/dev/null
step devices 20 "$bin/egret" devices || exit 1
command -v nvidia-smi >/dev/null && nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
step bandwidth 40 sh -c "$bin/bandwidth --json >$OUT/bandwidth.json"
step test_coopmat 60 "$bin/test_coopmat"
step test_op_work 30 "$bin/test_op_work"
step test_ops 150 env EGRET_VALIDATION=1 EGRET_COOPMAT=0 "$bin/test_ops"
step test_ops_batch 45 env EGRET_VALIDATION=1 EGRET_COOPMAT=0 "$bin/test_ops_batch"
step test_ops_int_dot 40 env EGRET_VALIDATION=1 EGRET_COOPMAT=0 "$bin/test_ops_int_dot"
if [ "${EGRET_CHECK_SKIP_9B:-0}" != 1 ]; then
    # generating 17 GB of fp16 weights takes about two minutes of one CPU core
    step bench_9b 240 sh -c "$bin/egret bench --random-weights bench/configs/idefics-9b \
        --warmup 1 --reps 3 --json >$OUT/bench_9b.json"
    # quantizing at load runs on every core: about a minute for the 9B projections on 16
    step bench_9b_q4 200 sh -c "$bin/egret bench --random-weights bench/configs/idefics-9b \
        --quant q4 --only decode --warmup 1 --reps 3 --json >$OUT/bench_9b_q4.json"
fi
step profile_demo 40 env EGRET_PROFILE=1 "$bin/egret" bench --warmup 1 --reps 2
step ops_bench_big 60 "$bin/ops_bench" --fp16 --big --vs-default --samples 3
# q4 and q8 decode products with and without integer dot products (against the same dense ones)
for q in q4 q8; do
    for d in 1 -1; do
        step "ops_bench_${q}_int_dot_$d" 40 "$bin/ops_bench" --fp16 --big --only decode \
            --quant $q --int-dot $d --samples 3
    done
done
cat "$OUT/bandwidth.json" >>"$OUT/summary.txt" 2>/dev/null
tail -n 3 "$OUT"/test_*.txt | tee -a "$OUT/summary.txt"
