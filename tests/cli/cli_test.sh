#!/usr/bin/env bash
# loaq-quantize end to end: every method runs, outputs are well-formed, bad input fails cleanly.
set -u
Q=$1; MAKE=$2; DATA=$3
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fails=0; passes=0
ok()   { passes=$((passes+1)); }
bad()  { echo "FAIL: $*"; fails=$((fails+1)); }
expect_ok() { if "$@" >"$tmp/log" 2>&1; then ok; else bad "$* -> $(cat "$tmp/log")"; fi; }
# expect_err PATTERN cmd...: non-zero exit, a message matching PATTERN, and no crash signal.
expect_err() {
  local pat=$1; shift
  "$@" >"$tmp/log" 2>&1; local rc=$?
  if [ $rc -eq 0 ] || [ $rc -ge 128 ]; then bad "expected a clean error (rc=$rc): $*"; return; fi
  if grep -qi -- "$pat" "$tmp/log"; then ok; else bad "message lacks '$pat': $(cat "$tmp/log")"; fi
}

"$MAKE" --out "$tmp/layer.st" --rows 64 --cols 96 --tokens 400 >/dev/null || { echo "FAIL: make-layer"; exit 1; }
for m in rtn gptq gptaq qep; do expect_ok "$Q" --in "$tmp/layer.st" --out "$tmp/$m.st" --method $m --bits 3 --group 32; done
for o in linear residual normalized; do
  expect_ok "$Q" --in "$tmp/layer.st" --out "$tmp/loaq_$o.st" --method loaq --objective $o --bits 3 --emit-target
done
expect_ok "$Q" --in "$tmp/layer.st" --out "$tmp/u.st" --method loaq --objective normalized --unweighted --rms-eps 1e-6
expect_ok "$Q" --in "$tmp/layer.st" --out "$tmp/d.st" --method gptq --scalar double --act-order --static-groups --group 32 --mse --sym
expect_ok "$Q" --in "$tmp/layer.st" --out "$tmp/n.st" --method gptq --grid nf4 --bits 4 --group 32
# The reference layer through the CLI (hessian input). The proxy error is opt-in (a GEMM).
expect_ok "$Q" --in "$DATA/reference/gptq_b4_row_asym.safetensors" --out "$tmp/ref.st"
grep -q "proxy_error" "$tmp/log" && bad "proxy_error printed without --report-errors" || ok
grep -q "^loss " "$tmp/log" && ok || bad "no loss printed"
expect_ok "$Q" --in "$DATA/reference/gptq_b4_row_asym.safetensors" --out "$tmp/ref.st" --report-errors
grep -q "proxy_error" "$tmp/log" && ok || bad "no proxy_error printed with --report-errors"
expect_ok "$Q" --in="$tmp/layer.st" --out="$tmp/eq.st" --bits=3 --group=32 --method=qep --alpha=0.5
# Each method is the one asked for: GPTQ's proxy error is below RTN's on the same layer.
proxy() { "$Q" --in "$tmp/layer.st" --out "$tmp/p.st" --bits 3 --group 32 --method "$1" --report-errors |
          awk '/^proxy_error/ {print $NF}'; }
p_rtn=$(proxy rtn); p_gptq=$(proxy gptq)
awk -v a="$p_gptq" -v b="$p_rtn" 'BEGIN { exit !(a > 0 && b > 1.1 * a) }' && ok ||
  bad "proxy error: rtn '$p_rtn' should exceed gptq '$p_gptq'"

# Bad input: clear messages, non-zero exit, never a crash.
expect_err "cannot open" "$Q" --in "$tmp/nope.st" --out "$tmp/x.st"
head -c 100 "$tmp/layer.st" > "$tmp/trunc.st"
expect_err "truncated" "$Q" --in "$tmp/trunc.st" --out "$tmp/x.st"
head -c 5 "$tmp/layer.st" > "$tmp/tiny.st"
expect_err "too short" "$Q" --in "$tmp/tiny.st" --out "$tmp/x.st"
expect_err "bits" "$Q" --in "$tmp/layer.st" --out "$tmp/x.st" --bits 9
expect_err "unknown option" "$Q" --in "$tmp/layer.st" --out "$tmp/x.st" --frobnicate
expect_err "needs a number" "$Q" --in "$tmp/layer.st" --out "$tmp/x.st" --damp abc
expect_err "needs .inputs" "$Q" --in "$DATA/reference/gptq_b4_row_asym.safetensors" --out "$tmp/x.st" --method gptaq
expect_err "inputs" "$Q" --in "$DATA/reference/gptq_b4_row_asym.safetensors" --out "$tmp/x.st" --method loaq
expect_err "group" "$Q" --in "$tmp/layer.st" --out "$tmp/x.st" --group 0
expect_err "does not exist" "$Q" --in "$tmp/layer.st" --out "$tmp/no/such/dir/x.st"

# Arguments are validated before any work, and nothing is silently ignored.
"$Q" >"$tmp/log" 2>&1; rc=$?
{ [ $rc -eq 2 ] && grep -q "usage:" "$tmp/log"; } && ok || bad "no arguments: rc=$rc, no usage"
expect_err "alpha must be >= 0" "$Q" --in "$tmp/layer.st" --out "$tmp/x.st" --method qep --alpha -1
expect_err "alpha applies" "$Q" --in "$tmp/layer.st" --out "$tmp/x.st" --method gptq --alpha 0.5
expect_err "beta applies" "$Q" --in "$tmp/layer.st" --out "$tmp/x.st" --method qep --beta 0.5
expect_err "objective applies" "$Q" --in "$tmp/layer.st" --out "$tmp/x.st" --method gptq --objective linear
expect_err "must be in" "$Q" --in "$tmp/layer.st" --out "$tmp/x.st" --group 1e10
expect_err "given twice" "$Q" --in "$tmp/layer.st" --out "$tmp/x.st" --bits 3 --bits 4
expect_err "finite" "$Q" --in "$tmp/layer.st" --out "$tmp/x.st" --damp inf
expect_err "same file" "$Q" --in "$tmp/layer.st" --out "$tmp/layer.st"
expect_err "same file" "$Q" --in "$tmp/layer.st" --out "$tmp/./layer.st"
[ -s "$tmp/layer.st" ] && ok || bad "input was touched"

# Awkward data: a clear error or a correct, finite result; never a crash, never NaN.
python3 "$(dirname "$0")/make_inputs.py" "$tmp" || bad "make_inputs.py failed"
timeout 20 "$Q" --in /dev/zero --out "$tmp/x.st" >"$tmp/log" 2>&1; rc=$?
{ [ $rc -eq 1 ] && grep -qi "safetensors\|header\|file" "$tmp/log"; } && ok ||
  bad "--in /dev/zero must fail fast with a message (rc=$rc): $(head -c 300 "$tmp/log")"
expect_err "0 tokens" "$Q" --in "$tmp/zero_tokens.st" --out "$tmp/x.st"
expect_err "needs about" "$Q" --in "$tmp/huge_n.st" --out "$tmp/x.st"
expect_err "not symmetric" "$Q" --in "$tmp/asym.st" --out "$tmp/x.st"
expect_err "at least one row" "$Q" --in "$tmp/empty_weight.st" --out "$tmp/x.st"
expect_err "NaN or Inf" "$Q" --in "$tmp/h32_nan.st" --out "$tmp/x.st"
expect_err "not symmetric" "$Q" --in "$tmp/asym32.st" --out "$tmp/x.st"
for opts in "" "--act-order" "--scalar double" "--act-order --group 4 --report-errors"; do
  "$Q" --in "$tmp/h32.st" --out "$tmp/o32.st" $opts >"$tmp/log32" 2>&1 &&
    "$Q" --in "$tmp/h64.st" --out "$tmp/o64.st" $opts >"$tmp/log64" 2>&1 &&
    cmp -s "$tmp/o32.st" "$tmp/o64.st" &&
    diff <(grep -v "solve\|total" "$tmp/log32") <(grep -v "solve\|total" "$tmp/log64") >/dev/null && ok ||
    bad "an F32 Hessian and its F64 copy give different results ($opts)"
done
finite() {  # every F32 value of the output file is finite
  python3 - "$1" <<'PY'
import json, math, struct, sys
b = open(sys.argv[1], "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n])
for k, v in h.items():
    if k != "__metadata__" and v["dtype"] == "F32":
        s, e = v["data_offsets"]; d = b[8 + n + s:8 + n + e]
        assert all(math.isfinite(x) for x in struct.unpack("<%df" % (len(d) // 4), d)), k
PY
}
for f in h_1e80 h_1e-100 w_1e30 w_3e38; do
  for m in rtn gptq; do
    "$Q" --in "$tmp/$f.st" --out "$tmp/o.st" --method $m >"$tmp/log" 2>&1; rc=$?
    if [ $rc -eq 0 ]; then
      finite "$tmp/o.st" && ok || bad "$f $m: non-finite output"
      grep -qiE "loss (nan|inf)" "$tmp/log" && bad "$f $m: loss not finite" || ok
    elif [ $rc -eq 1 ] && grep -q "row" "$tmp/log"; then ok
    else bad "$f $m: rc=$rc $(cat "$tmp/log")"; fi
  done
done
expect_err "row 1 reaches" "$Q" --in "$tmp/w64_1e300.st" --out "$tmp/x.st"
expect_err "beyond the F32 output" "$Q" --in "$tmp/w64_1e300.st" --out "$tmp/x.st" --scalar double
[ -e "$tmp/x.st" ] && bad "an output was written for a result F32 cannot hold" || ok
expect_ok "$Q" --in "$tmp/w64_1e-40.st" --out "$tmp/o.st"
finite "$tmp/o.st" && ok || bad "F64 1e-40 row: non-finite output"
expect_ok "$Q" --in "$tmp/h_1e80.st" --out "$tmp/o.st" --damp 1e80
finite "$tmp/o.st" && ok || bad "--damp 1e80: non-finite output"

echo "cli: $passes passed, $fails failed"
[ $fails -eq 0 ]
