#!/usr/bin/env bash
# One command for the whole benchmark: build, time every stage, then the same GPTQ solves in
# the PyTorch reference (bench/reference_gptq.py) on the same layers and thread count.
#
#   bench/run.sh [quick|full] [THREADS] [float|double|both]
#
# quick: SmolLM2 shapes (a minute or two); full: adds the LLaMA-7B shapes (tens of minutes).
# THREADS defaults to 1. Environment: LOAQ_BENCH_BUILD (build folder, default build-bench),
# LOAQ_USE_LAPACK=ON to factor with OpenBLAS potrf+trtri instead of Eigen, LOAQ_BENCH_SHAPE=NAME
# to run one shape only (e.g. llama7b_4096x4096, or any ROWSxCOLS such as 896x4864),
# LOAQ_BENCH_ONLY=stages (loaq_bench --only).
# Needs cmake, Eigen 3.4, xsimd 8, nlohmann-json; for the side-by-side Debian's python3-torch and
# libopenblas0-pthread (torch's GEMMs go through libblas.so.3);
# for the OpenBLAS columns libopenblas-dev and liblapacke-dev.
set -euo pipefail

mode=${1:-quick}
threads=${2:-1}
scalar=${3:-both}
case "$mode" in quick|full) ;; *) echo "usage: $0 [quick|full] [threads] [float|double|both]" >&2; exit 2 ;; esac

src=$(cd "$(dirname "$0")/.." && pwd)
build=${LOAQ_BENCH_BUILD:-$src/build-bench}
layers="$build/reference_layers"
mkdir -p "$build"

cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DLOAQ_BUILD_TESTS=OFF \
  -DLOAQ_BUILD_EXAMPLES=ON -DLOAQ_BUILD_BENCH=ON -DLOAQ_USE_LAPACK="${LOAQ_USE_LAPACK:-OFF}" \
  > "$build/cmake.log" 2>&1 || { cat "$build/cmake.log"; exit 1; }
cmake --build "$build" --target loaq_bench loaq-quantize -j "${LOAQ_BUILD_JOBS:-1}" \
  > "$build/build.log" 2>&1 || { cat "$build/build.log"; exit 1; }
cli="$build/examples/quantize_layer/loaq-quantize"

rm -rf "$layers" && mkdir -p "$layers"
extra=()
[ -n "${LOAQ_BENCH_SHAPE:-}" ] && extra+=(--shape "$LOAQ_BENCH_SHAPE")
[ -n "${LOAQ_BENCH_ONLY:-}" ] && extra+=(--only "$LOAQ_BENCH_ONLY")
"$build/bench/loaq_bench" "--$mode" --threads "$threads" --scalar "$scalar" --export "$layers" "${extra[@]}"

echo
echo "== GPTQ: loaq's solve and the loaq-quantize CLI end to end vs the PyTorch reference"
echo "   (float32, same layers, $threads thread(s); CLI time includes reading and writing files) =="
if [ "$scalar" = double ]; then
  echo "skipped: the side-by-side compares the float solves"
elif ! compgen -G "$layers/*.safetensors" >/dev/null; then
  echo "skipped: no layer was exported (LOAQ_BENCH_ONLY without a GPTQ stage)"
elif /usr/bin/python3 -c "import torch" 2>/dev/null; then
  # --exact: the reference once more in float64 (untimed), to show how many codes float32
  # rounding decides, in torch's result as in loaq's.
  OMP_NUM_THREADS=$threads /usr/bin/python3 "$src/bench/reference_gptq.py" --threads "$threads" \
    --exact --cli "$cli" "$layers"/*.safetensors
else
  echo "skipped: /usr/bin/python3 has no torch (apt-get install python3-torch libopenblas0-pthread)"
fi
