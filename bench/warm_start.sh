#!/usr/bin/env bash
# Warm start, measured (docs/service.md "Warm start"): one `egret serve` per run, started with
# Mesa's shader cache in a fresh folder (so lavapipe compiles everything, as after an install or
# a driver update) or in a kept one, and the pipeline cache cold (fresh folder) or warm (kept);
# then 10 captions of 10 different images, one at a time. Prints per run: start to SERVING (the
# "serving" line on stderr), and the time to first token of requests 1 and 10, and the median of
# requests 2 to 10, from the server's request log.
#
#   bench/warm_start.sh [build/egret] [extra egret serve options, e.g. --no-warmup]
#
# Runs: mesa-cold+pc-cold, mesa-warm+pc-warm, mesa-cold+pc-warm. Timing only: no pass/fail.
# Needs bc (Debian package bc).
set -euo pipefail
EGRET=${1:-build/egret}
shift || true
EXTRA=("$@")
WORK=$(mktemp -d /tmp/egret-warm-start-XXXXXX)
trap 'rm -rf "$WORK"' EXIT
"$EGRET" draw --out "$WORK/images" --count 10 --seed 7 >/dev/null
mkdir -p "$WORK/mesa" "$WORK/pc"

run() { # $1: label, $2: mesa cache dir, $3: pipeline cache dir
  local sock="$WORK/egret.sock" log="$WORK/$1.log"
  local t0
  t0=$(date +%s.%N)
  MESA_SHADER_CACHE_DIR="$2" "$EGRET" serve --listen "unix:$sock" --pipeline-cache "$3" \
    "${EXTRA[@]}" 2>"$log" &
  local pid=$!
  until grep -qs "^egret: serving" "$log"; do
    kill -0 "$pid" 2>/dev/null || { cat "$log"; exit 1; }
    sleep 0.02
  done
  local t1
  t1=$(date +%s.%N)
  for i in $(seq -w 1 10); do
    "$EGRET" caption --server "unix:$sock" "$WORK/images/scene-0$i.png" >/dev/null 2>&1
  done
  kill -TERM "$pid"
  wait "$pid" || true
  local ttfts first tenth median
  ttfts=$(grep -o "^egret: request [0-9]* Generate .*ttft=[0-9.]*" "$log" | grep -o "ttft=[0-9.]*" |
    cut -d= -f2)
  first=$(echo "$ttfts" | sed -n 1p)
  tenth=$(echo "$ttfts" | sed -n 10p)
  median=$(echo "$ttfts" | sed -n 2,10p | sort -n | sed -n 5p) # of requests 2..10
  printf '%-18s start-to-SERVING %6.2f s  ttft #1 %6.3f s  #10 %6.3f s  median #2-#10 %6.3f s  #1/#10 %5.1f  %s\n' \
    "$1" "$(echo "$t1 - $t0" | bc)" "$first" "$tenth" "$median" \
    "$(echo "scale=2; $first / $tenth" | bc)" "$(grep -o 'warm-up: .*' "$log" || echo 'no warm-up')"
}

run "mesa-cold pc-cold" "$WORK/mesa-fresh-1" "$WORK/pc"
run "mesa-warm pc-warm" "$WORK/mesa-fresh-1" "$WORK/pc"
run "mesa-cold pc-warm" "$WORK/mesa-fresh-2" "$WORK/pc"
