#!/usr/bin/python3
"""Two (or more) loaq-quantize builds on the same layers, runs alternated so that machine noise
falls on all of them alike: best and median wall time of each (and of the solve alone, as each run's log reports it), and
whether their output files are byte-identical.

    /usr/bin/python3 bench/compare_cli.py --cli OLD --cli NEW [--reps 15] [--threads 2] LAYER.safetensors ...

A --cli may be a wrapper script (e.g. one that sets an environment variable and execs the CLI).
Extra solver flags go after --, e.g. `-- --method gptq --bits 4 --group 128` (the default).
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cli", action="append", required=True, help="a loaq-quantize (repeat)")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("layers", nargs="+")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)  # argparse would take them for layers
    args = ap.parse_args(argv[:cut])
    flags = argv[cut + 1:] or ["--method", "gptq", "--bits", "4", "--group", "128"]
    with tempfile.TemporaryDirectory() as tmp:
        for layer in args.layers:
            times = {c: [] for c in args.cli}
            solves = {c: [] for c in args.cli}
            outputs = {}
            for _ in range(args.reps):
                for k, cli in enumerate(args.cli):
                    out = os.path.join(tmp, f"{k}.safetensors")
                    cmd = [cli, "--in", layer, "--out", out, "--threads", str(args.threads)] + flags
                    t0 = time.perf_counter()
                    run = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
                    times[cli].append(time.perf_counter() - t0)
                    solve = re.search(r"\bsolve ([0-9.]+) s", run.stdout)
                    if solve:
                        solves[cli].append(float(solve.group(1)))
                    with open(out, "rb") as f:
                        outputs[cli] = f.read()
            same = len(set(outputs.values())) == 1
            name = os.path.basename(layer)
            print(f"{name}: outputs {'byte-identical' if same else 'DIFFER'}")
            for cli, ts in times.items():
                line = f"  {cli}: best {1000 * min(ts):.1f} ms, median {1000 * statistics.median(ts):.1f} ms"
                if solves[cli]:
                    ss = solves[cli]
                    line += f" (solve best {1000 * min(ss):.1f} ms, median {1000 * statistics.median(ss):.1f} ms)"
                print(line)


if __name__ == "__main__":
    main()
