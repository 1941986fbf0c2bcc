#!/usr/bin/env bash
# Rebuilds data/sotu/{calib_1790_1981,eval_1982_2021}.txt from a folder of State of the Union
# speeches named <year>_<president>_<party>.txt (one speech per file, e.g. the @stdlib
# datasets-sotu collection). Speeches are concatenated in file-name order (year first), separated
# by one blank line; trailing newlines of each file are dropped so the result does not depend on
# how the files end. Speeches up to 1981 are the calibration text, 1982 and later the test text.
#
#   scripts/make_sotu.sh SRC_DIR [OUT_DIR]      (OUT_DIR defaults to data/sotu of this repo)
set -euo pipefail
export LC_ALL=C  # byte-order sorting of file names, independent of the user's locale

SRC=${1:?usage: make_sotu.sh SRC_DIR [OUT_DIR]}
OUT=${2:-$(cd "$(dirname "$0")/.." && pwd)/data/sotu}
[[ -d "$SRC" ]] || { echo "make_sotu.sh: $SRC is not a folder" >&2; exit 1; }
mkdir -p "$OUT"

emit() {  # emit FIRST_YEAR LAST_YEAR OUTFILE
  local first=$1 last=$2 out=$3 n=0 f year
  : > "$out.tmp"
  for f in "$SRC"/[0-9][0-9][0-9][0-9]_*.txt; do
    [[ -e "$f" ]] || continue
    year=$(basename "$f"); year=${year%%_*}
    (( 10#$year >= first && 10#$year <= last )) || continue
    (( n > 0 )) && printf '\n\n' >> "$out.tmp"
    printf '%s' "$(cat "$f")" >> "$out.tmp"   # $(...) strips the trailing newlines
    n=$((n + 1))
  done
  (( n > 0 )) || { rm -f "$out.tmp"; echo "make_sotu.sh: no speeches $first-$last in $SRC" >&2; exit 1; }
  printf '\n' >> "$out.tmp"
  mv "$out.tmp" "$out"
  echo "$out: $n speeches, $(wc -w < "$out") words, $(wc -c < "$out") bytes" >&2
}

emit 1790 1981 "$OUT/calib_1790_1981.txt"
emit 1982 2021 "$OUT/eval_1982_2021.txt"
