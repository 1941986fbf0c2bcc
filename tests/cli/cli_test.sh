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
# The reference layer through the CLI (hessian input).
expect_ok "$Q" --in "$DATA/reference/gptq_b4_row_asym.safetensors" --out "$tmp/ref.st"
grep -q "proxy_error" "$tmp/log" && ok || bad "no proxy_error printed"

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
expect_err "cannot open for writing" "$Q" --in "$tmp/layer.st" --out "$tmp/no/such/dir/x.st"

echo "cli: $passes passed, $fails failed"
[ $fails -eq 0 ]
