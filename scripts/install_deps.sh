#!/usr/bin/env bash
# Installs the Debian packages loaq needs (only the missing ones). Run as root on Debian 12.
set -euo pipefail
# clang + libclang-rt-14-dev: the libFuzzer targets (scripts/fuzz.sh; libclang_rt.fuzzer).
pkgs=(cmake g++ make ccache libeigen3-dev libxsimd-dev xtl-dev doctest-dev nlohmann-json3-dev
      clang libclang-rt-14-dev)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
