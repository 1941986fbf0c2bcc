"""Times the same GPTQ solve from Python (loaq.gptq on a C-ordered float32 [m, n] NumPy weight,
as a PyTorch layer hands it over) and from a tiny C++ program (python/bench/gptq_cpp.cpp,
loaq::gptq on Eigen matrices) compiled with the extension's flags (-O3 -DNDEBUG -march=native
-fopenmp), on one layer (default 4096 × 4096, 4-bit, group 128), best of N each, alternating one solve each.

    build/venv/bin/python python/bench/bench_binding.py [--m 4096] [--n 4096] [--reps 3]

Set OMP_NUM_THREADS to pin the thread count (the same for both sides).
"""

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

import loaq

ROOT = pathlib.Path(__file__).resolve().parents[2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--m", type=int, default=4096)
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--bits", type=int, default=4, choices=[3, 4])
    ap.add_argument("--group", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--native", type=int, default=1)
    ap.add_argument("--order", default="C", choices=["C", "F"],
                    help="layout of the NumPy weight given to loaq.gptq (C: PyTorch's)")
    args = ap.parse_args()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="loaq_bench_"))

    exe = tmp / "gptq_cpp"
    flags = ["-O3", "-DNDEBUG", "-fopenmp", "-std=c++17"] + (["-march=native"] if args.native else [])
    cmd = ["g++", *flags, f"-I{ROOT / 'include'}", "-I/usr/include/eigen3",
           str(ROOT / "python" / "bench" / "gptq_cpp.cpp"), "-o", str(exe)]
    print("compiling:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)

    rng = np.random.default_rng(0)
    m, n = args.m, args.n
    W = (rng.standard_t(3, size=(m, n)) * 0.02).astype(np.float32)  # C order, torch's layout
    X = rng.standard_normal((args.tokens, n), dtype=np.float32)
    X[:, ::7] *= 5
    acc = loaq.CalibrationAccumulator(n)
    acc.add_batch(X)
    H = acc.hessian
    W.tofile(tmp / "W.bin")
    W = np.asfortranarray(W) if args.order == "F" else W
    H.tofile(tmp / "H.bin")  # symmetric: row- and column-major agree

    threads = os.environ.get("OMP_NUM_THREADS", "(OpenMP default)")
    print(f"layer {m}×{n} ({args.order}-ordered in Python), {args.bits}-bit, group {args.group}, "
          f"threads {threads}, "
          f"simd {loaq.build_info['simd']}", flush=True)
    # Alternate one C++ solve and one Python solve, so both see the same load on a shared machine.
    # Both are warm: the C++ process times its second solve, Python solves once before.
    loaq.gptq(W, H, bits=args.bits, group_size=args.group)
    cpp, py = [], []
    cpp_sum = py_sum = None
    for _ in range(args.rounds * args.reps):
        out = subprocess.run([str(exe), str(tmp / "W.bin"), str(tmp / "H.bin"), str(m), str(n),
                              str(args.bits), str(args.group), "2"],
                             check=True, capture_output=True, text=True).stdout.split()
        cpp.append(float(out[2]))  # the second, warm solve of that process (as Python's are)
        cpp_sum = int(out[3])
        q = None  # free the previous result first, as the C++ loop does
        t0 = time.perf_counter()
        q = loaq.gptq(W, H, bits=args.bits, group_size=args.group)
        py.append(time.perf_counter() - t0)
        py_sum = int(q.codes.sum(dtype=np.int64))
        print(f"  pair: C++ {cpp[-1]:.3f} s, Python {py[-1]:.3f} s", flush=True)
    bc, bp = min(cpp), min(py)
    print(f"C++    loaq::gptq  best {bc:.3f} s  (all: {', '.join(f'{t:.3f}' for t in cpp)})")
    print(f"Python loaq.gptq   best {bp:.3f} s  (all: {', '.join(f'{t:.3f}' for t in py)})")
    ratios = sorted(p / c for p, c in zip(py, cpp))
    print(f"Python / C++: best-of-N {bp / bc:.3f}, median of pairs {ratios[len(ratios) // 2]:.3f}"
          f"   codes identical: {cpp_sum == py_sum}")
    return 0 if cpp_sum == py_sum else 1


if __name__ == "__main__":
    sys.exit(main())
