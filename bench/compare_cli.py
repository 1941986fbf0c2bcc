#!/usr/bin/python3
"""Two (or more) loaq-quantize builds on the same layers, runs alternated so that machine noise
falls on all of them alike: best and median wall time of each, and whether their output files are
byte-identical.

    /usr/bin/python3 bench/compare_cli.py --cli OLD --cli NEW [--reps 15] [--threads 2] LAYER.safetensors ...

A --cli may be a wrapper script (e.g. one that sets an environment variable and execs the CLI).
Extra solver flags go after --, e.g. `-- --method gptq --bits 4 --group 128` (the default).
"""
import argparse
import os
import statistics
import subprocess
import tempfile
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cli", action="append", required=True, help="a loaq-quantize (repeat)")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("layers", nargs="+")
    ap.add_argument("solver", nargs=argparse.REMAINDER)
    args, flags = ap.parse_known_args()
    flags = [f for f in flags if f != "--"] or ["--method", "gptq", "--bits", "4", "--group", "128"]
    with tempfile.TemporaryDirectory() as tmp:
        for layer in args.layers:
            times = {c: [] for c in args.cli}
            outputs = {}
            for _ in range(args.reps):
                for k, cli in enumerate(args.cli):
                    out = os.path.join(tmp, f"{k}.safetensors")
                    cmd = [cli, "--in", layer, "--out", out, "--threads", str(args.threads)] + flags
                    t0 = time.perf_counter()
                    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
                    times[cli].append(time.perf_counter() - t0)
                    with open(out, "rb") as f:
                        outputs[cli] = f.read()
            same = len(set(outputs.values())) == 1
            name = os.path.basename(layer)
            print(f"{name}: outputs {'byte-identical' if same else 'DIFFER'}")
            for cli, ts in times.items():
                print(f"  {cli}: best {1000 * min(ts):.1f} ms, median {1000 * statistics.median(ts):.1f} ms")


if __name__ == "__main__":
    main()
