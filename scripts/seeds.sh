#!/usr/bin/env bash
# Every method at several settings over several calibration seeds: one loaq-ppl-table run (and
# table) per setting and seed, then the summary of scripts/plot_ppl.py: mean and range over the
# seeds per method and setting, the claimed ordering LoaQ <= QEP <= GPTAQ <= GPTQ < RTN checked
# seed by seed, and the plot. The README's seed tables come from this script.
#
#   bash scripts/seeds.sh [--fetch NAME] [--seeds 0,1,2] [--settings 3:128,4:128,2:64]
#                         [--methods fp,rtn,gptq,gptaq,qep,loaq] [--threads N] [-- ARGS...]
#
# NAME is a scripts/fetch_model.sh name (smollm2-135m by default); ARGS go to every
# loaq-ppl-table run (--paper-hparams, --calib-windows 128 --seq-len 2048, ...). Hyper-parameters
# are loaq-ppl-table's defaults, chosen on held-out calibration text, unless ARGS say otherwise.
# Outputs go to $LOAQ_SEEDS_OUT (default build/seeds/NAME): wB_gG_seedS.log and .md per run,
# summary.md and ppl.png. Resumable: a run whose table exists is skipped, so an interrupted study
# goes on where it stopped. LOAQ_PPL_TABLE names a prebuilt loaq-ppl-table to use.
set -euo pipefail
cd "$(dirname "$0")/.."
name=smollm2-135m seeds=0,1,2 settings=3:128,4:128,2:64 methods=fp,rtn,gptq,gptaq,qep,loaq
threads=$(nproc)
extra=()
while [ $# -gt 0 ]; do
  case $1 in
    --fetch|--seeds|--settings|--methods|--threads)
      [ $# -ge 2 ] || { echo "seeds.sh: $1 needs a value" >&2; exit 2; } ;;&
    --fetch) name=$2; shift 2 ;;
    --seeds) seeds=$2; shift 2 ;;
    --settings) settings=$2; shift 2 ;;
    --methods) methods=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "seeds.sh: unknown argument $1 (see the comment at the top)" >&2; exit 2 ;;
  esac
done
[[ $seeds =~ ^[0-9]+(,[0-9]+)*$ ]] || { echo "seeds.sh: --seeds takes numbers like 0,1,2" >&2; exit 2; }
[[ $settings =~ ^[0-9]+:-?[0-9]+(,[0-9]+:-?[0-9]+)*$ ]] ||
  { echo "seeds.sh: --settings takes BITS:GROUP,... like 3:128,2:64" >&2; exit 2; }

out=${LOAQ_SEEDS_OUT:-build/seeds/$name}
mkdir -p "$out"
model=$(bash scripts/fetch_model.sh "$name")
ppl=$(bash scripts/ppl_table_bin.sh "$out/build.log" "$threads")

tables=()
for setting in ${settings//,/ }; do
  for seed in ${seeds//,/ }; do
    run=w${setting%%:*}_g${setting##*:}_seed$seed
    tables+=("$out/$run.md")
    if [ -s "$out/$run.md" ]; then echo "== $run (have it)"; continue; fi
    echo "== $run"
    # The table appears only when the run finished, so a rerun never reads a partial one.
    "$ppl" --model "$model" --settings "$setting" --seed "$seed" --methods "$methods" \
      --threads "$threads" --table-out "$out/$run.md.tmp" "${extra[@]}" >"$out/$run.log" 2>&1 ||
      { tail -20 "$out/$run.log" >&2; echo "seeds.sh: $run failed (log: $out/$run.log)" >&2; exit 1; }
    mv "$out/$run.md.tmp" "$out/$run.md"
    grep -E ' ppl [0-9]' "$out/$run.log" | sed 's/^/   /'
  done
done

/usr/bin/python3 scripts/plot_ppl.py --out "$out/ppl.png" --model "$name" "${tables[@]}" >"$out/summary.md"
cat "$out/summary.md"
echo "seeds.sh: tables, summary.md and ppl.png in $out"
