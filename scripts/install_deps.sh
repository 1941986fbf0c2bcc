#!/usr/bin/env bash
# Installs the Debian packages loaq needs (only the missing ones). Run as root on Debian 12.
set -euo pipefail
# clang + libclang-rt-14-dev: the libFuzzer targets (scripts/fuzz.sh; libclang_rt.fuzzer).
# python3-*: the Python package (scripts/test_python.sh); python3-matplotlib: scripts/plot_ppl.py.
pkgs=(cmake g++ make ccache libeigen3-dev libxsimd-dev xtl-dev doctest-dev nlohmann-json3-dev
      clang libclang-rt-14-dev python3-dev python3-venv python3-numpy python3-pytest
      python3-matplotlib)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
