#!/usr/bin/env bash
# loaq-ppl-table --select-hparams on the real SmolLM2 (tiny budget): every candidate of a method
# is scored on held-out calibration windows, exactly one is chosen and it has the lowest held-out
# perplexity, the evaluation text plays no part in the choice (another evaluation text gives the
# same selection table), the defaults are the selected values, LoaQ's residual objective gets rows
# of its own, and contradictory options are refused. Skips (exit 77) without the model.
#
#   select_hparams_test.sh LOAQ_PPL_TABLE SOURCE_DIR
set -euo pipefail
table=$1 src=$2
model=${LOAQ_MODEL:-${LOAQ_CACHE:-$HOME/.cache/loaq}/SmolLM2-135M-Instruct.Q4_1.gguf}
if [[ ! -f $model ]]; then echo "skipped: no model at $model (scripts/fetch_model.sh)"; exit 77; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
small=(--model "$model" --settings 4:128 --seq-len 32 --calib-windows 2 --heldout-windows 2 --eval-windows 2 --threads 2)

echo "== qep and loaq, two candidates each; qep again with another evaluation text"
grid=(--select-hparams --select-grid 0.25:0.25,1:1)
"$table" "${small[@]}" --methods qep,loaq "${grid[@]}" --table-out "$tmp/a.md" >"$tmp/a.log"
head -c 20000 "$src/data/sotu/calib_1790_1981.txt" >"$tmp/other_eval.txt"
"$table" "${small[@]}" --methods qep "${grid[@]}" --eval-text "$tmp/other_eval.txt" \
  --table-out "$tmp/b.md" >"$tmp/b.log"
sel() { sed -n '/^| method | setting | candidate/,$p' "$1" | grep "^| $2 "; }
sel "$tmp/a.md" "[a-z]*"
[[ $(sel "$tmp/a.md" qep | wc -l) == 2 ]] || fail "expected 2 qep candidates"
[[ $(sel "$tmp/a.md" loaq | wc -l) == 2 ]] || fail "expected 2 loaq candidates"
diff <(sel "$tmp/a.md" qep) <(sel "$tmp/b.md" qep) >/dev/null || fail "the evaluation text changed the selection"
for m in qep loaq; do
  rows=$(sel "$tmp/a.md" $m)
  [[ $(grep -c '| yes |' <<<"$rows") == 1 ]] || fail "$m: not exactly one chosen candidate"
  chosen=$(grep '| yes |' <<<"$rows" | awk -F'|' '{gsub(/ /, "", $5); print $5}')
  lowest=$(awk -F'|' '{gsub(/ /, "", $5); print $5}' <<<"$rows" | sort -g | head -1)
  [[ $chosen == "$lowest" ]] || fail "$m: chose held-out ppl $chosen, the lowest is $lowest"
  hp=$(grep '| yes |' <<<"$rows" | awk -F'|' '{sub(/^ +/, "", $4); sub(/ +$/, "", $4); print $4}')
  grep -qF "| $m ($hp) | " "$tmp/a.md" || fail "$m: the main table does not name the chosen $hp"
done

echo "== defaults: the selected values (gptaq alpha 0.5), --paper-hparams the published ones (0.25)"
"$table" "${small[@]}" --methods gptaq >"$tmp/d.log"
"$table" "${small[@]}" --methods gptaq --alpha 0.5 >"$tmp/e.log"
"$table" "${small[@]}" --methods gptaq --paper-hparams >"$tmp/p.log"
grep -qx "gptaq: alpha 0.5 (selected defaults)" "$tmp/d.log" || fail "default gptaq does not say alpha 0.5"
grep -qx "gptaq: alpha 0.25 (published defaults)" "$tmp/p.log" || fail "--paper-hparams gptaq does not say alpha 0.25"
grep -q "^gptaq (alpha 0.5) " "$tmp/d.log" || fail "the default gptaq row does not name its alpha"
grep -q "^gptaq (alpha 0.25) " "$tmp/p.log" || fail "the --paper-hparams gptaq row does not name its alpha"
ppl() { grep -o "^gptaq .*ppl [0-9.]*" "$1" | sed 's/.*ppl //'; }
[[ -n $(ppl "$tmp/d.log") && $(ppl "$tmp/d.log") == "$(ppl "$tmp/e.log")" ]] ||
  fail "default gptaq ($(ppl "$tmp/d.log")) is not --alpha 0.5 ($(ppl "$tmp/e.log"))"
[[ $(ppl "$tmp/d.log") != "$(ppl "$tmp/p.log")" ]] || fail "--paper-hparams changed nothing"
"$table" "${small[@]}" --methods qep,loaq --eval-windows 1 >"$tmp/q.log"
grep -qx "qep: alpha 0.5 (selected defaults)" "$tmp/q.log" || fail "default qep does not say alpha 0.5"
grep -qx "loaq: alpha 0.5, beta 0.25 (selected defaults)" "$tmp/q.log" || fail "default loaq is not alpha 0.5, beta 0.25"

echo "== LoaQ's residual objective is a row of its own, not merged into loaq's"
"$table" "${small[@]}" --methods loaq --loaq-objective residual --alpha 1 --beta 1 \
  --table-out "$tmp/r.md" >"$tmp/r.log"
grep -qF "| loaq-residual (alpha 1, beta 1) | " "$tmp/r.md" || fail "the residual row is not named loaq-residual"
! grep -q "^| loaq (" "$tmp/r.md" || fail "the residual objective's row is named like the normalized one"

echo "== refusals"
for bad in "--select-hparams --alpha 0.5" "--select-hparams --beta 0.5" "--select-hparams --heldout-windows 0" \
           "--select-hparams --heldout-windows 100000" "--select-grid 0.5" "--select-hparams --select-grid x" \
           "--select-hparams --select-grid 0.5:-1" "--select-hparams --paper-hparams" "--alpha -1" \
           "--beta nan"; do
  if "$table" "${small[@]}" --methods qep $bad >"$tmp/bad.log" 2>&1; then fail "accepted $bad"; fi
  grep -q "loaq-ppl-table: " "$tmp/bad.log" || fail "no message for $bad"
  echo "  refused $bad: $(grep 'loaq-ppl-table: ' "$tmp/bad.log" | head -1)"
done
echo "select_hparams_test: all checks passed"
