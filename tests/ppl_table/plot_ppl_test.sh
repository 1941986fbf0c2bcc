#!/usr/bin/env bash
# scripts/plot_ppl.py on two seeds' tables of one model and one table of another: the points are
# the seeds' mean with their range, bits per weight count the grid parameters, hyper-parameters
# in parentheses do not split a method, the claimed ordering is checked pair by pair within each
# seed's table, the image is written, and a file that is not a --table-out table is refused. Skips (exit 77) without matplotlib.
#
#   plot_ppl_test.sh SOURCE_DIR
set -euo pipefail
src=$1
py=/usr/bin/python3
if ! "$py" -c "import matplotlib" 2>/dev/null; then echo "skipped: no matplotlib (apt-get install python3-matplotlib)"; exit 77; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
table() {  # FILE, then rows "method|setting|ppl"
  local f=$1; shift
  { echo "| method | setting | perplexity | quantization time (s) |"; echo "|---|---|---|---|"
    for r in "$@"; do IFS='|' read -r m s p <<<"$r"; echo "| $m | $s | $p | 1.0 |"; done
    echo; echo "time split with 2 thread(s), s:"; echo "| method | setting | forward |"; echo "| gptq | W3 g128 | 9 |"; } >"$f"
}
table "$tmp/s0.md" "fp|-|30" "gptq|W3 g128|60" "loaq (alpha 0.5, beta 0.5)|W3 g128|40" "qep|W3 g128|45" "gptq|W4 g128 sym|35" "rtn|W2 g-1|900"
table "$tmp/s1.md" "fp|-|30" "gptq|W3 g128|64" "loaq (alpha 1, beta 1)|W3 g128|50" "qep (alpha 0.25)|W3 g128|48" "gptq|W4 g128 sym|37" "rtn|W2 g-1|1000"
table "$tmp/q.md" "fp|-|12" "gptq|W3 g64|20"
"$py" "$src/scripts/plot_ppl.py" --out "$tmp/p.png" --model A "$tmp/s0.md" "$tmp/s1.md" --model B "$tmp/q.md" >"$tmp/out.md"
cat "$tmp/out.md"
row() { grep -F "| $1 | $2 | $3 |" "$tmp/out.md" || fail "no row for $1 $2 $3"; }
[[ $(row A gptq "W3 g128") == "| A | gptq | W3 g128 | 3.148 | 2 | 62.000 | 60.000 | 64.000 |" ]] || fail "gptq W3: mean/range or 3 + 19/128 bits"
[[ $(row A loaq "W3 g128") == "| A | loaq | W3 g128 | 3.148 | 2 | 45.000 | 40.000 | 50.000 |" ]] || fail "loaq: the seeds' hyper-parameters split the method"
[[ $(row A gptq "W4 g128 sym") == *"| 4.125 | 2 | 36.000 |"* ]] || fail "symmetric: 4 + 16/128 bits"
[[ $(row A rtn "W2 g-1") == *"| 2.000 | 2 | 950.000 | 900.000 | 1000.000 |"* ]] || fail "per-row: 2 bits"
[[ $(row B gptq "W3 g64") == *"| 3.297 | 1 | 20.000 |"* ]] || fail "second model: 3 + 19/64 bits"
grep -q "forward" "$tmp/out.md" && fail "read past the main table"
# Pairs are compared within a seed's table: LoaQ 40 vs QEP 45 (-11.1%), 50 vs 48 (+4.2%).
[[ $(grep -F "| A | W3 g128 | loaq <= qep |" "$tmp/out.md") == "| A | W3 g128 | loaq <= qep | 1/2 | -3.5% | +4.2% |" ]] ||
  fail "loaq <= qep: holds in 1 of 2 seeds, worst margin +4.2%"
# GPTAQ is in no table, so QEP meets GPTQ directly; W4 holds GPTQ alone and W2 RTN alone: no pairs.
[[ $(grep -F "| A | W3 g128 | qep <= gptq |" "$tmp/out.md") == "| A | W3 g128 | qep <= gptq | 2/2 | -25.0% | -25.0% |" ]] ||
  fail "a method missing from every table is not skipped"
[[ $(grep -c "<" "$tmp/out.md") == 2 ]] || fail "a pair without both methods in one table was reported"
"$py" "$src/scripts/plot_ppl.py" --out "$tmp/p.png" --chain loaq,qep,gptq --model A "$tmp/s0.md" "$tmp/s1.md" >"$tmp/chain.md"
[[ $(grep -F "| A | W3 g128 | qep < gptq |" "$tmp/chain.md") == "| A | W3 g128 | qep < gptq | 2/2 | -25.0% | -25.0% |" ]] ||
  fail "--chain: the last pair is strict and holds in both seeds"
[[ $(head -c 8 "$tmp/p.png" | od -An -tx1 | tr -d ' \n') == 89504e470d0a1a0a ]] || fail "no PNG written"
if "$py" "$src/scripts/plot_ppl.py" --out "$tmp/d.png" --chain loaq,qep,loaq --model A "$tmp/s0.md" >"$tmp/bad.log" 2>&1; then fail "accepted a chain naming a method twice"; fi
grep -q "each once" "$tmp/bad.log" || fail "no message for a repeated chain method"
echo "not a table" >"$tmp/bad.md"
if "$py" "$src/scripts/plot_ppl.py" --out "$tmp/x.png" --model A "$tmp/bad.md" >"$tmp/bad.log" 2>&1; then fail "accepted a file that is not a table"; fi
grep -q "plot_ppl: .*bad.md" "$tmp/bad.log" || fail "no message naming the bad file"
[[ -e $tmp/x.png ]] && fail "wrote an image from a bad file"
table "$tmp/nan.md" "gptq|W2 g64|nan"
if "$py" "$src/scripts/plot_ppl.py" --out "$tmp/y.png" --model A "$tmp/nan.md" >"$tmp/bad.log" 2>&1; then fail "accepted a NaN perplexity"; fi
grep -q "not a finite positive number" "$tmp/bad.log" || fail "no message for a NaN perplexity"
if "$py" "$src/scripts/plot_ppl.py" --out "$tmp/y.png" --model A "$tmp/missing.md" >"$tmp/bad.log" 2>&1; then fail "accepted a missing file"; fi
grep -q "cannot read .*missing.md" "$tmp/bad.log" || fail "no message for a missing file"
[[ -e $tmp/y.png ]] && fail "wrote an image from bad input"
echo "plot_ppl_test: all checks passed"
