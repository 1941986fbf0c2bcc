#!/usr/bin/env bash
# Issue 15's GPU check in one run (a few minutes on an H100): the CUDA backend's tests, its bench
# on the SmolLM2 and LLaMA-7B shapes, and the GPTQ authors' PyTorch code on the same layers and
# the same GPU (bench/reference_gptq.py --device cuda), logs into OUT_DIR.
#
#   bash scripts/gpu_check.sh [OUT_DIR]
#
# Runs the binaries of ${LOAQ_GPU_BUILD:-build/release} (tests/loaq_cuda_tests and
# bench/loaq_cuda_bench, built wherever nvcc is: they need no GPU to compile) when they load
# here; else configures and builds them in build/gpu (needs Eigen 3.4, xsimd, doctest and
# nlohmann-json; LOAQ_DEPS_PREFIX names a prefix holding them, searched first).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/build/gpu_check}
mkdir -p "$out"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$out/device.txt"

build=${LOAQ_GPU_BUILD:-$root/build/release}
tests=$build/tests/loaq_cuda_tests
bench=$build/bench/loaq_cuda_bench
if ! [ -x "$tests" ] || ! [ -x "$bench" ] || ldd "$tests" "$bench" | grep -q "not found"; then
  echo "== building the CUDA tests and bench here"
  build=$root/build/gpu
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DLOAQ_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DLOAQ_BUILD_EXAMPLES=OFF -DCMAKE_PREFIX_PATH="${LOAQ_DEPS_PREFIX:-}" > "$out/build.log" 2>&1 &&
    cmake --build "$build" --target loaq_cuda_tests loaq_cuda_bench -j "$(nproc)" >> "$out/build.log" 2>&1 ||
    { tail -50 "$out/build.log"; exit 1; }
  tests=$build/tests/loaq_cuda_tests
  bench=$build/bench/loaq_cuda_bench
fi

echo "== CUDA tests"
LOAQ_TEST_DATA_DIR=$root/tests/data timeout 240 "$tests" 2>&1 | tee "$out/tests.log"
tests_rc=${PIPESTATUS[0]}
echo "tests exit code: $tests_rc"

echo "== CUDA bench (exported layers in /tmp/loaq_layers)"
mkdir -p /tmp/loaq_layers
timeout 240 "$bench" --export /tmp/loaq_layers 2>&1 | tee "$out/bench.log"
bench_rc=${PIPESTATUS[0]}

echo "== the GPTQ authors' PyTorch code on the same layers and GPU"
PYTHONUNBUFFERED=1 timeout 180 python3 "$root/bench/reference_gptq.py" --device cuda --reps 3 \
  /tmp/loaq_layers/*.safetensors 2>&1 | tee "$out/reference.log"
ref_rc=${PIPESTATUS[0]}

echo "== the README's CUDA snippet"
snippet=$build/tests/readme/readme_cuda_snippet_1
[ -x "$snippet" ] && timeout 60 "$snippet"

echo "== compute-sanitizer memcheck on the tests (${LOAQ_MEMCHECK_TESTS:=device matrices*,calibration statistics*})"
if command -v compute-sanitizer >/dev/null; then
  LOAQ_TEST_DATA_DIR=$root/tests/data timeout "${LOAQ_MEMCHECK_SECONDS:-150}" compute-sanitizer \
    --tool memcheck --leak-check no "$tests" -tc="$LOAQ_MEMCHECK_TESTS" > "$out/sanitizer.log" 2>&1
  echo "memcheck exit code: $?"; tail -5 "$out/sanitizer.log"
fi

echo "tests: $tests_rc, bench: $bench_rc, reference: $ref_rc" | tee "$out/summary.txt"
[ "$tests_rc" = 0 ] && [ "$bench_rc" = 0 ] && [ "$ref_rc" = 0 ]
