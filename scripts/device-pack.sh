#!/bin/bash
# Prepares what the GPU check (scripts/device-check.sh) needs on a machine that has none of
# Egret's libraries: a Release build in build-device/, then into .devpack/ (git-ignored) the binaries that
# check runs and every shared library they load except the C library's own, so that there they
# run with LD_LIBRARY_PATH=.devpack/lib. The device machine's image is not Debian; its C library
# is newer, which programs built against Debian 12's accept.
#
#   scripts/device-pack.sh          then, with the device tool, one call:
#   run(command="bash scripts/device-check.sh", carry=[".devpack"], timeout_s=590)
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build-device -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-device -j"$(nproc)" --target egret test_ops test_ops_batch ops_bench >/dev/null
rm -rf .devpack
mkdir -p .devpack/lib
bins=(build-device/egret build-device/test_ops build-device/test_ops_batch build-device/bench/ops_bench)
cp "${bins[@]}" .devpack/
# The libraries as ldd resolves them here, minus glibc (the device machine brings its own).
for b in "${bins[@]}"; do ldd "$b"; done | awk '$3 ~ /^\// {print $3}' | sort -u |
    grep -Ev '/(libc|libm|libpthread|libdl|librt|ld-linux[^/]*)\.so' |
    while read -r lib; do cp -L "$lib" .devpack/lib/; done
du -sh .devpack
