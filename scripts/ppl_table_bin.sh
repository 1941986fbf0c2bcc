#!/usr/bin/env bash
# Prints the path of the loaq-ppl-table the experiment scripts run: $LOAQ_PPL_TABLE when set,
# else the one in build/release, built after installing what is missing (messages on stderr).
#
#   bin=$(bash scripts/ppl_table_bin.sh BUILD_LOG [THREADS])
set -euo pipefail
cd "$(dirname "$0")/.."
log=${1:?usage: ppl_table_bin.sh BUILD_LOG [THREADS]} threads=${2:-$(nproc)}
if [ -n "${LOAQ_PPL_TABLE:-}" ]; then echo "$LOAQ_PPL_TABLE"; exit 0; fi
bash scripts/install_deps.sh >&2
launcher=(); command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
mkdir -p "$(dirname "$log")"
if ! { cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release "${launcher[@]}" &&
       cmake --build build/release -j "$threads" --target loaq-ppl-table; } >"$log" 2>&1; then
  tail -40 "$log" >&2
  echo "ppl_table_bin.sh: building loaq-ppl-table failed (full log: $log)" >&2
  exit 1
fi
echo "$PWD/build/release/examples/ppl_table/loaq-ppl-table"
