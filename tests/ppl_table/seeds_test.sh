#!/usr/bin/env bash
# scripts/seeds.sh on the real SmolLM2 with a tiny budget: one table per setting and seed, the
# seeds differ (each draws its own calibration windows) while the FP row does not, the summary
# aggregates them (runs = number of seeds) and checks the ordering, a rerun reuses the tables,
# and bad arguments are refused. Skips (exit 77) without the model or matplotlib.
#
#   seeds_test.sh LOAQ_PPL_TABLE SOURCE_DIR
set -euo pipefail
table=$1 src=$2
cache=${LOAQ_CACHE:-$HOME/.cache/loaq}
if [[ ! -f $cache/SmolLM2-135M-Instruct.Q4_1.gguf ]]; then echo "skipped: no model in $cache (scripts/fetch_model.sh)"; exit 77; fi
if ! /usr/bin/python3 -c "import matplotlib" 2>/dev/null; then echo "skipped: no matplotlib (apt-get install python3-matplotlib)"; exit 77; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
export LOAQ_PPL_TABLE=$table LOAQ_SEEDS_OUT=$tmp/out
tiny=(-- --calib-windows 2 --eval-windows 2 --seq-len 32)

bash "$src/scripts/seeds.sh" --seeds 0,1 --settings 4:128 --methods fp,rtn,gptq,qep --threads 2 "${tiny[@]}" >"$tmp/a.log"
cat "$tmp/a.log"
for s in 0 1; do [[ -s $tmp/out/w4_g128_seed$s.md ]] || fail "no table for seed $s"; done
[[ -s $tmp/out/ppl.png && -s $tmp/out/summary.md ]] || fail "no summary or plot"
col() { awk -F'|' -v m="$2" '$2 ~ "^ "m" " {gsub(/ /, "", $4); print $4}' "$1"; }  # perplexity of method $2
[[ $(col "$tmp/out/w4_g128_seed0.md" gptq) != "$(col "$tmp/out/w4_g128_seed1.md" gptq)" ]] ||
  fail "seeds 0 and 1 gave the same GPTQ perplexity: the seed did not reach the calibration windows"
[[ $(col "$tmp/out/w4_g128_seed0.md" fp) == "$(col "$tmp/out/w4_g128_seed1.md" fp)" ]] ||
  fail "the FP perplexity depends on the calibration seed"
grep -q "^| smollm2-135m | gptq | W4 g128 | 4.156 | 2 |" "$tmp/out/summary.md" || fail "summary: gptq is not 2 runs at 4 + 20/128 bits"
grep -q "^| smollm2-135m | W4 g128 | qep <= gptq | ./2 |" "$tmp/out/summary.md" || fail "summary: no seed-by-seed ordering"

bash "$src/scripts/seeds.sh" --seeds 0,1 --settings 4:128 --methods fp,rtn,gptq,qep --threads 2 "${tiny[@]}" >"$tmp/b.log"
[[ $(grep -c "(have it)" "$tmp/b.log") == 2 ]] || fail "a rerun did not reuse the finished tables"

for bad in "--seeds x" "--settings 3" "--frobnicate 1" "--seeds"; do
  if bash "$src/scripts/seeds.sh" $bad >"$tmp/bad.log" 2>&1; then fail "accepted $bad"; fi
  grep -q "seeds.sh: " "$tmp/bad.log" || fail "no message for $bad"
done
echo "seeds_test: all checks passed"
