#!/usr/bin/env bash
# loaq's GGUF exports against llama.cpp's own quantizer, every perplexity computed by llama.cpp
# (README "Deployable output: GGUF for llama.cpp").
#
#   bash scripts/llama_cpp_table.sh [--windows 32] [--calib-windows 32] [--threads 2] [--quick] [--reuse]
#
# 1. A venv with gguf, llama-cpp-python (builds llama.cpp from source once, ~15 min on 2 cores)
#    and numpy, cached in $LOAQ_LLAMA_VENV (default ~/.cache/loaq/llama-venv).
# 2. loaq-ppl-table writes the FP model as F32 GGUF, and GPTQ, LoaQ (and RTN) in Q4_0, Q4_1 and
#    Q8_0, each with an all-F32 copy of the solver's weights; gguf-py checks that its own
#    dequantization of every tensor equals those weights bit for bit.
# 3. llama.cpp quantizes the F32 file itself (llama_model_quantize, pure, embeddings kept Q8_0 as
#    in every loaq export), the RTN baseline in each format: plain, and with an importance matrix
#    (loaq-imatrix: mean x² per input channel on the same calibration windows), llama.cpp's
#    calibrated mode.
# 4. llama.cpp computes the perplexity of every file on the evaluation windows, fed loaq's token
#    ids; loaq's own forward on the same file is printed beside it.
# Files go to $LOAQ_GGUF_OUT (default build/gguf); the table to $LOAQ_GGUF_OUT/table.md.
set -euo pipefail
cd "$(dirname "$0")/.."

windows=32 calib=32 threads=2 quick=0 reuse=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --windows) windows=$2; shift 2 ;;
    --calib-windows) calib=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --quick) quick=1; shift ;;  # Q4_0 only, RTN and GPTQ: a smoke run
    --reuse) reuse=1; shift ;;  # keep quantized files already in the output folder
    *) echo "llama_cpp_table.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

venv=${LOAQ_LLAMA_VENV:-$HOME/.cache/loaq/llama-venv}
if ! "$venv/bin/python" -c "import gguf, llama_cpp, numpy" 2>/dev/null; then
  echo "== installing gguf and llama-cpp-python into $venv (builds llama.cpp once)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q numpy gguf
  CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAMA_CURL=OFF" \
    "$venv/bin/pip" install -q llama-cpp-python
fi
py="$venv/bin/python"
check="$py scripts/llama_cpp_check.py"

build=build/release
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER_LAUNCHER=ccache >/dev/null
cmake --build "$build" -j"$(nproc)" --target loaq-ppl-table loaq-tokenize loaq-imatrix >/dev/null
table_bin=$build/examples/ppl_table/loaq-ppl-table
model=$(bash scripts/fetch_model.sh)
out=${LOAQ_GGUF_OUT:-build/gguf}
mkdir -p "$out"
eval_text=data/sotu/eval_1982_2021.txt
"$build/examples/llm_tools/loaq-tokenize" --model "$model" --text "$eval_text" --no-special \
  --out "$out/eval_ids.txt" >/dev/null

# --paper-hparams: GPTQ/LoaQ exports with the published alpha = beta = 1, as in the recorded table.
common=(--model "$model" --eval-windows "$windows" --calib-windows "$calib" --threads "$threads" --paper-hparams)
fresh() { [[ $reuse == 0 || ! -f $1 ]]; }
if fresh "$out/fp-f32.gguf"; then
  echo "== FP model as F32 GGUF"
  "$table_bin" "${common[@]}" --methods fp --gguf-type f32 --export-gguf "$out/fp-f32.gguf" | grep -E "^fp |wrote"
fi
if fresh "$out/imatrix.gguf"; then
  echo "== importance matrix from the calibration windows"
  "$build/examples/llm_tools/loaq-imatrix" --model "$model" --calib-windows "$calib" --threads "$threads" --out "$out/imatrix.gguf"
fi

# export_loaq METHOD TYPE FILE [options]: one loaq export, checked by gguf-py against the solver's weights.
export_loaq() {
  local m=$1 type=$2 f=$3
  shift 3
  if fresh "$f"; then
    echo "== loaq $m $*: $type"
    "$table_bin" "${common[@]}" --methods "$m" --gguf-type "$type" "$@" --export-gguf "$f" \
      --export-reference "${f%.gguf}.f32.gguf" | grep -E "^$m |wrote"
    $check same-weights "$f" "${f%.gguf}.f32.gguf"
    rm -f "${f%.gguf}.f32.gguf"
  fi
  files+=("$f")
}

types=(q4_0 q4_1 q8_0)
[[ $quick == 1 ]] && types=(q4_0)
files=("$out/fp-f32.gguf")
for type in "${types[@]}"; do
  for imatrix in "" "$out/imatrix.gguf"; do
    f=$out/llama${imatrix:+-imatrix}-$type.gguf
    if fresh "$f"; then
      echo "== llama.cpp's quantizer: $type${imatrix:+ with the importance matrix}"
      $check quantize "$out/fp-f32.gguf" "$f" --type "$type" --embedding-type q8_0 --threads "$threads" ${imatrix:+--imatrix "$imatrix"}
    fi
    files+=("$f")
  done
  case $type in  # Q8_0 is the sanity row
    q4_0) methods=(rtn gptq gptaq qep loaq) ;;
    q4_1) methods=(rtn gptq loaq) ;;
    *) methods=(rtn gptq) ;;
  esac
  [[ $quick == 1 ]] && methods=(rtn gptq)
  for m in "${methods[@]}"; do export_loaq "$m" "$type" "$out/loaq-$m-$type.gguf"; done
  # LoaQ with the options chosen on held-out calibration text (README: act-order and MSE search).
  if [[ $type == q4_0 && $quick == 0 ]]; then
    export_loaq loaq q4_0 "$out/loaq-loaq-act-mse-q4_0.gguf" --act-order --mse
  fi
done

echo "== perplexity of every file: llama.cpp, and loaq's forward on the same file"
{
  echo "| file | size (bytes) | llama.cpp perplexity | loaq forward perplexity | difference |"
  echo "|---|---|---|---|---|"
  for f in "${files[@]}"; do
    lp=$($check perplexity "$f" --tokens "$out/eval_ids.txt" --windows "$windows" --threads "$threads" |
         sed -E 's/^llama.cpp perplexity ([0-9.]+).*/\1/')
    op=$("$table_bin" --model "$f" --methods fp --eval-windows "$windows" --calib-windows 1 --threads "$threads" |
         sed -nE 's/^fp +- +ppl ([0-9.]+).*/\1/p')
    size=$(stat -c %s "$f")
    diff=$("$py" -c "print(f'{abs($lp - $op) / $op * 100:.2f}%')")
    echo "| $(basename "$f") | $size | $lp | $op | $diff |"
  done
} | tee "$out/table.md"
