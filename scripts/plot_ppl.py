#!/usr/bin/python3
"""Perplexity against bits per weight, for every method and model, from loaq-ppl-table tables.

    /usr/bin/python3 scripts/plot_ppl.py --out ppl.png \\
        --model SmolLM2-135M seed0.md seed1.md seed2.md [--model Qwen2.5-0.5B ...]

Each FILE is what `loaq-ppl-table --table-out FILE` wrote. Rows of one model with the same method
and setting in several files are runs over calibration seeds: the point is their mean, the error
bar their full range (min to max). A method's hyper-parameters in parentheses ("loaq (alpha 0.5,
beta 0.5)") are not part of its name, since each seed may select its own. Bits per weight count
the grid parameters: b + 16/g per weight for a symmetric grid (an fp16 scale per group of g) and
b + (16 + b)/g for an asymmetric one (and a b-bit zero), b for per-row parameters; the FP model
is drawn as a dashed line. Needs matplotlib (Debian: apt-get install python3-matplotlib).
Prints the aggregated table it drew, then the ordering the experiment claims (--chain, by default
LoaQ <= QEP <= GPTAQ <= GPTQ < RTN) checked pair by pair within each run: in how many runs (table
files holding both methods of a pair at that setting; a method a run lacks is skipped) each pair
holds, and its margin, the left method's perplexity over the right one's minus one (negative: it
holds), as mean and worst.
"""
import argparse
import math
import re
import statistics
import sys

SETTING = re.compile(r"^W(\d+)(?:A\d+)? g(-?\d+)( sym)?")


def read_table(path):
    """(method, setting, perplexity) of every row of the main table of one --table-out file."""
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise SystemExit(f"plot_ppl: cannot read {path}: {e}")
    if not lines or not lines[0].startswith("| method | setting | perplexity"):
        raise SystemExit(f"plot_ppl: {path} does not start with loaq-ppl-table's main table")
    for line in lines[2:]:
        if not line.startswith("|"):
            break  # the main table ends at the first line that is not a row
        cells = [c.strip() for c in line.strip("|").split("|")]
        method = re.sub(r"\s*\(.*\)$", "", cells[0])
        try:
            ppl = float(cells[2])
        except (ValueError, IndexError):
            raise SystemExit(f"plot_ppl: {path}: row '{line}' has no numeric perplexity")
        if not math.isfinite(ppl) or ppl <= 0:
            raise SystemExit(f"plot_ppl: {path}: perplexity {cells[2]} of '{cells[0]}' "
                             f"{cells[1]} is not a finite positive number (a diverged run?)")
        rows.append((method, cells[1], ppl))
    return rows


def bits_per_weight(setting):
    m = SETTING.match(setting)
    if not m:
        return None
    bits, group, sym = int(m.group(1)), int(m.group(2)), bool(m.group(3))
    if group <= 0:
        return float(bits)
    return bits + (16 if sym else 16 + bits) / group


def aggregate(tables):
    """{(method, setting): [ppl, ...]} over the tables of one model."""
    runs = {}
    for rows in tables:
        for method, setting, ppl in rows:
            runs.setdefault((method, setting), []).append(ppl)
    return runs


def ordering(tables, chain):
    """[(setting, left, right, strict, margins)]: within each table, the chain's methods that it
    holds at a setting are compared neighbour by neighbour (a method missing from the table is
    skipped); margins are left/right - 1 over the tables holding that pair. Only a pair whose
    right method ends the chain is strict."""
    found = {}
    for rows in tables:
        for setting in {s for m, s, _ in rows if s != "-"}:
            ppl = {m: p for m, s, p in rows if s == setting}
            present = [m for m in chain if m in ppl]
            for left, right in zip(present, present[1:]):
                found.setdefault((setting, left, right), []).append(ppl[left] / ppl[right] - 1)
    order = lambda k: (bits_per_weight(k[0]) or 0, k[0], chain.index(k[1]), chain.index(k[2]))
    return [(s, l, r, r == chain[-1], found[(s, l, r)]) for s, l, r in sorted(found, key=order)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", nargs="+", action="append", required=True,
                    metavar=("NAME", "FILE"), help="a model's name and its table files")
    ap.add_argument("--out", required=True, help="the image to write (.png, .svg, .pdf)")
    ap.add_argument("--chain", default="loaq,qep,gptaq,gptq,rtn",
                    help="the claimed ordering, best first (default: %(default)s); the last "
                         "pair is strict")
    args = ap.parse_args()
    chain = [m.strip() for m in args.chain.split(",") if m.strip()]
    if len(chain) < 2 or len(set(chain)) != len(chain):
        ap.error("--chain needs at least two methods, each once")
    models = []
    for group in args.model:
        if len(group) < 2:
            ap.error("--model needs a name and at least one table file")
        tables = [read_table(path) for path in group[1:]]
        models.append((group[0], aggregate(tables), ordering(tables, chain)))

    print("| model | method | setting | bits/weight | runs | mean perplexity | min | max |")
    print("|---|---|---|---|---|---|---|---|")
    for name, runs, _ in models:
        for (method, setting), ppl in sorted(runs.items()):
            bpw = bits_per_weight(setting)
            print(f"| {name} | {method} | {setting} | {'-' if bpw is None else f'{bpw:.3f}'} | "
                  f"{len(ppl)} | {statistics.mean(ppl):.3f} | {min(ppl):.3f} | {max(ppl):.3f} |")
    print()
    print("| model | setting | pair | holds in | mean margin | worst margin |")
    print("|---|---|---|---|---|---|")
    for name, _, pairs in models:
        for setting, left, right, strict, margins in pairs:
            holds = sum(1 for m in margins if (m < 0 if strict else m <= 0))
            print(f"| {name} | {setting} | {left} {'<' if strict else '<='} {right} | "
                  f"{holds}/{len(margins)} | {100 * statistics.mean(margins):+.1f}% | "
                  f"{100 * max(margins):+.1f}% |")

    try:
        import matplotlib
    except ImportError:
        sys.exit(f"plot_ppl.py: the tables are above; drawing {args.out} needs matplotlib "
                 "(apt-get install python3-matplotlib)")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    for ax, (name, runs, _) in zip(axes[0], models):
        methods = sorted({m for m, _ in runs if m != "fp"})
        for method in methods:
            points = sorted((bits_per_weight(s), ppl) for (m, s), ppl in runs.items()
                            if m == method and bits_per_weight(s) is not None)
            if not points:
                continue
            x = [p[0] for p in points]
            mean = [statistics.mean(p[1]) for p in points]
            low = [m - min(p[1]) for m, p in zip(mean, points)]
            high = [max(p[1]) - m for m, p in zip(mean, points)]
            ax.errorbar(x, mean, yerr=[low, high], marker="o", capsize=3, label=method)
        fp = [ppl for (m, _), ppl in runs.items() if m == "fp"]
        if fp:
            ax.axhline(statistics.mean(sum(fp, [])), color="gray", linestyle="--", label="fp")
        ax.set_yscale("log")
        ax.set_xlabel("bits per weight (grid parameters included)")
        ax.set_ylabel("perplexity (log scale)")
        ax.set_title(name)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
