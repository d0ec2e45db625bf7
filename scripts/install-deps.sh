#!/usr/bin/env bash
# Installs the Debian packages Egret needs to build and test (run as root, or with sudo).
# Used by CI (.ci/run) and by the README's quickstart.
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
  build-essential cmake pkg-config \
  libvulkan-dev vulkan-validationlayers mesa-vulkan-drivers vulkan-tools glslc \
  libstb-dev libpng-dev zlib1g-dev \
  libgrpc-dev protobuf-c-compiler libprotobuf-c-dev protobuf-compiler \
  libcjson-dev \
  python3 python3-numpy \
  >/dev/null
