#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan, ccache) and runs each for a bounded time.
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     default: 20 s, every target
# Each target starts from its seed corpus tests/fuzz/corpus/<target>/, copied to a scratch
# folder (build/fuzz/run/<target>/) so the repository's corpus stays as it is; set
# LOAQ_FUZZ_MERGE=1 to merge new coverage-increasing inputs back into the repository's corpus.
# Crash inputs are kept in build/fuzz/findings/<target>/. Exit status is non-zero on any finding.
# LOAQ_FUZZ_KEEP=1 continues from the scratch corpus of an earlier run instead of the seeds.
# LOAQ_FUZZ_BUILD picks the build folder (default build/fuzz), so a long run can go on while
# the targets are rebuilt elsewhere.
# Environment: JOBS (build parallelism, default nproc), FUZZ_JOBS (parallel fuzzing processes per
# target, default 1), LOAQ_FUZZ_FLAGS (extra libFuzzer flags).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
seconds=${1:-20}
shift || true
jobs=${JOBS:-$(nproc)}
build=${LOAQ_FUZZ_BUILD:-build/fuzz}

command -v clang++ >/dev/null || { echo "fuzz.sh: clang++ not found (bash scripts/install_deps.sh)"; exit 2; }
launcher=(); command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
# Build type "Fuzz" adds no flags of its own: the targets set -O1 -g and keep assertions on.
cmake -S . -B "$build" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=Fuzz -DLOAQ_FUZZ=ON \
  -DLOAQ_BUILD_EXAMPLES=OFF -DLOAQ_BUILD_BENCH=OFF -DLOAQ_INSTALL=OFF "${launcher[@]}" >/dev/null
all=$(sed -n 's/^[[:space:]]*loaq_add_fuzzer(\([A-Za-z0-9_]*\).*/\1/p' tests/fuzz/CMakeLists.txt)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || read -r -a targets <<<"$(echo $all)"
cmake --build "$build" -j "$jobs" --target "${targets[@]}"

status=0
for t in "${targets[@]}"; do
  bin=$build/tests/fuzz/$t
  seeds=tests/fuzz/corpus/$t
  work=$build/run/$t
  findings=$build/findings/$t
  if [ "${LOAQ_FUZZ_KEEP:-0}" != 1 ] || [ ! -d "$work" ]; then
    rm -rf "$work"; mkdir -p "$work"
    [ -d "$seeds" ] && cp -r "$seeds/." "$work/"
  fi
  mkdir -p "$findings"
  dict=(); [ -f "tests/fuzz/$t.dict" ] && dict=(-dict="tests/fuzz/$t.dict")
  echo "== $t: ${seconds}s from $(ls "$work" | wc -l) seeds"
  log=$build/run/$t.log
  set +e
  ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$bin" "$work" "${dict[@]}" -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=2048 \
    -timeout=10 -print_final_stats=1 -artifact_prefix="$findings/" \
    ${FUZZ_JOBS:+-jobs=$FUZZ_JOBS -workers=$FUZZ_JOBS} ${LOAQ_FUZZ_FLAGS:-} >"$log" 2>&1
  rc=$?
  set -e
  grep -E '^stat::(number_of_executed_units|peak_rss_mb|new_units_added)' "$log" || true
  grep -E '^#[0-9]+.*(DONE|cov:)' "$log" | tail -n 1 || true
  echo "corpus: $(ls "$work" | wc -l) inputs"
  if [ $rc -ne 0 ] || ls "$findings" | grep -q .; then
    echo "!! $t: finding (exit $rc); inputs in $findings/, log $log"
    grep -E 'ERROR|SUMMARY|terminate|what\(\)' "$log" | head -n 20 || true
    status=1
  fi
  if [ "${LOAQ_FUZZ_MERGE:-0}" = 1 ]; then
    mkdir -p "$seeds"
    "$bin" -merge=1 "$seeds" "$work" >/dev/null 2>&1 || true
  fi
done
exit $status
