#!/usr/bin/env bash
# A real client reads loaq's GGUF export: gguf-py's dequantization equals the solver's weights
# bit for bit, llama.cpp's perplexity on loaq's token ids agrees with loaq's forward on the same
# file within 0.5%, and llama.cpp's own quantizer, given loaq's F32 export, makes a Q4_0 file
# that loaq reads and whose perplexity is close to loaq's RTN in the same format.
# Skips (exit 77) without the SmolLM2 file or without a Python that has gguf and llama_cpp
# ($LOAQ_LLAMA_PYTHON, else the venv of scripts/llama_cpp_table.sh).
#
#   llama_cpp_test.sh LOAQ_PPL_TABLE LOAQ_TOKENIZE SOURCE_DIR
set -euo pipefail
table=$1 tokenize=$2 src=$3
py=${LOAQ_LLAMA_PYTHON:-${LOAQ_LLAMA_VENV:-$HOME/.cache/loaq/llama-venv}/bin/python}
model=${LOAQ_MODEL:-${LOAQ_CACHE:-$HOME/.cache/loaq}/SmolLM2-135M-Instruct.Q4_1.gguf}
if ! "$py" -c "import gguf, llama_cpp, numpy" 2>/dev/null; then
  echo "skipped: no Python with gguf and llama_cpp at $py (bash scripts/llama_cpp_table.sh installs them)"
  exit 77
fi
if [[ ! -f $model ]]; then echo "skipped: no model at $model (scripts/fetch_model.sh)"; exit 77; fi
check="$py $src/scripts/llama_cpp_check.py"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
w=4
"$tokenize" --model "$model" --text "$src/data/sotu/eval_1982_2021.txt" --no-special --out "$tmp/ids.txt" >/dev/null
ppl_of() { sed -nE "s/^$1 +[^ ]+ +ppl ([0-9.]+).*/\1/p"; }
close() {  # |a − b| / b ≤ tolerance
  "$py" -c "import sys; a, b, t = map(float, sys.argv[1:]); print(f'  {a} vs {b}: {abs(a - b) / b:.4%}'); sys.exit(abs(a - b) / b > t)" "$@"
}

echo "== loaq RTN in Q4_0: export, the solver's weights as F32, gguf-py's dequantization"
ours=$("$table" --model "$model" --methods rtn --gguf-type q4_0 --eval-windows $w --calib-windows 1 --threads 2 \
  --export-gguf "$tmp/rtn.gguf" --export-reference "$tmp/rtn.f32.gguf" | ppl_of rtn)
$check same-weights "$tmp/rtn.gguf" "$tmp/rtn.f32.gguf"
echo "== llama.cpp's perplexity on the same file and token ids, against loaq's forward"
llama=$($check perplexity "$tmp/rtn.gguf" --tokens "$tmp/ids.txt" --windows $w --threads 2 | sed -E 's/^llama.cpp perplexity ([0-9.]+).*/\1/')
close "$llama" "$ours" 0.005

echo "== llama.cpp's quantizer on loaq's F32 export: Q4_0 that loaq reads"
"$table" --model "$model" --methods fp --gguf-type f32 --eval-windows 1 --calib-windows 1 --export-gguf "$tmp/fp.gguf" >/dev/null
$check quantize "$tmp/fp.gguf" "$tmp/llama-q4_0.gguf" --type q4_0 --embedding-type q8_0
theirs=$("$table" --model "$tmp/llama-q4_0.gguf" --methods fp --eval-windows $w --calib-windows 1 --threads 2 | ppl_of fp)
# The same format and the same rounding rule up to ties and 1/d versus division: close, not equal.
close "$theirs" "$ours" 0.02
echo "llama.cpp check passed"
