#!/usr/bin/env bash
# loaq-ppl-table's rounding options on the real SmolLM2 (tiny budget). It pins Eigen's product
# blocking (loaq::pin_eigen_blocking), so its results do not depend on the caches of the CPU it
# runs on; --blocking-l1 changes only the rounding order of long sums: the default equals an
# explicit --blocking-l1 32, another L1 size moves GPTQ's perplexity (rounding reaches the
# result) but not FP's beyond its printed digits. The statistics' products are in float by
# default (summed in double over windows); --stats-products double changes GPTQ's result, and each
# run says which it used. Bad values are refused.
# Skips (exit 77) without the model.
#
#   rounding_test.sh LOAQ_PPL_TABLE
set -euo pipefail
table=$1
model=${LOAQ_MODEL:-${LOAQ_CACHE:-$HOME/.cache/loaq}/SmolLM2-135M-Instruct.Q4_1.gguf}
if [[ ! -f $model ]]; then echo "skipped: no model at $model (scripts/fetch_model.sh)"; exit 77; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
small=(--model "$model" --methods fp,gptq --settings 3:128 --seq-len 64 --calib-windows 4 --eval-windows 4 --threads 2)
ppl() { grep "^| $2 | " "$1" | head -1 | awk -F'|' '{gsub(/ /, "", $4); print $4}'; }

"$table" "${small[@]}" --table-out "$tmp/default.md" >"$tmp/default.log"
"$table" "${small[@]}" --blocking-l1 32 --table-out "$tmp/l32.md" >"$tmp/l32.log"
"$table" "${small[@]}" --blocking-l1 48 --table-out "$tmp/l48.md" >"$tmp/l48.log"
"$table" "${small[@]}" --stats-products float --table-out "$tmp/float.md" >"$tmp/float.log"
"$table" "${small[@]}" --stats-products double --table-out "$tmp/double.md" >"$tmp/double.log"
for f in default l32 l48 float double; do echo "$f: fp $(ppl "$tmp/$f.md" fp), gptq $(ppl "$tmp/$f.md" gptq)"; done
[[ $(ppl "$tmp/default.md" gptq) == "$(ppl "$tmp/l32.md" gptq)" ]] || fail "the default is not --blocking-l1 32"
[[ $(ppl "$tmp/default.md" gptq) != "$(ppl "$tmp/l48.md" gptq)" ]] || fail "--blocking-l1 48 changed nothing"
[[ $(ppl "$tmp/default.md" fp) == "$(ppl "$tmp/l48.md" fp)" ]] || fail "FP moved beyond rounding"
grep -q "^rounding: .*48 KiB" "$tmp/l48.log" || fail "a non-default blocking is not announced"
! grep -q "^rounding:" "$tmp/default.log" || fail "the default run announces a blocking"
[[ $(ppl "$tmp/default.md" gptq) == "$(ppl "$tmp/float.md" gptq)" ]] || fail "the default is not --stats-products float"
[[ $(ppl "$tmp/default.md" gptq) != "$(ppl "$tmp/double.md" gptq)" ]] || fail "--stats-products double changed nothing"
[[ $(ppl "$tmp/default.md" fp) == "$(ppl "$tmp/double.md" fp)" ]] || fail "--stats-products moved FP"
grep -q "^statistics: .*in float.*--stats-products float" "$tmp/default.log" || fail "the default run does not say float products"
grep -q "^statistics: .*in double.*--stats-products double" "$tmp/double.log" || fail "double products are not announced"
if "$table" "${small[@]}" --stats-products half >"$tmp/bad.log" 2>&1; then fail "--stats-products half accepted"; fi
grep -q "stats-products is double or float" "$tmp/bad.log" || fail "--stats-products half: no message"

for bad in 0 4 2048 x; do
  if "$table" "${small[@]}" --blocking-l1 "$bad" >"$tmp/bad.log" 2>&1; then fail "--blocking-l1 $bad accepted"; fi
  grep -q "blocking-l1\|integer" "$tmp/bad.log" || fail "--blocking-l1 $bad: no message"
done
echo "rounding: ok"
