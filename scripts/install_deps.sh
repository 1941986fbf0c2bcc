#!/usr/bin/env bash
# Installs the Debian packages loaq needs (only the missing ones). Run as root on Debian 12.
set -euo pipefail
pkgs=(cmake g++ make ccache libeigen3-dev libxsimd-dev xtl-dev doctest-dev nlohmann-json3-dev
      python3-dev python3-venv python3-numpy python3-pytest)  # the last four: the Python package
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
