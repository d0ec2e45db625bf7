#!/usr/bin/env bash
# Installs the Debian packages Egret needs to build and test. As root it runs apt-get itself;
# as another user it runs apt-get through sudo.
# Used by CI (.ci/run) and by the README's quickstart. clang with its runtime libraries
# (libclang-rt-14-dev: libFuzzer, ASan, UBSan) and llvm (llvm-symbolizer, for readable sanitizer
# stacks) are for scripts/fuzz.sh. python3-grpcio, python3-protobuf and openssl are for
# tests/test_grpc_python.py (and examples/python/). nginx is for tests/test_balancing.py (run as
# this user, not as a service), python3-yaml for tests/test_deploy_manifests.py. libmicrohttpd
# serves the metrics endpoint; prometheus (with promtool) is for tests/test_metrics.py.
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null; then
    echo "install-deps.sh: not root and no sudo: run it as root" >&2
    exit 1
  fi
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
  build-essential cmake pkg-config \
  libvulkan-dev vulkan-validationlayers mesa-vulkan-drivers vulkan-tools glslc \
  libstb-dev libpng-dev zlib1g-dev \
  libgrpc-dev protobuf-c-compiler libprotobuf-c-dev protobuf-compiler libssl-dev \
  libcjson-dev libpcre2-dev libmicrohttpd-dev prometheus \
  clang libclang-rt-14-dev llvm \
  python3 python3-numpy python3-grpcio python3-protobuf openssl \
  nginx python3-yaml \
  >/dev/null
