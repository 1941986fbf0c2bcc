#!/usr/bin/python3
"""GPTQ as the authors' PyTorch code runs it, timed on the layers loaq_bench exported.

Written from the algorithm (docs: spec §1-§3), not copied: fasterquant's preamble (dead columns,
damping), the factor as cholesky -> cholesky_inverse -> cholesky(upper), the lazy-batch column
loop with one GEMM per block, and Quantizer.find_params / quantize (4-bit asymmetric, per-row
parameters refreshed every `group` columns from the block-start W).

    /usr/bin/python3 bench/reference_gptq.py [--threads N] [--reps R] [--cli CLI] [--exact]
                                             [--device cuda] LAYER.safetensors ...

Each file holds `weight` [m,n], `hessian` [n,n] (float32), loaq's result `loaq_weight` and, in
the metadata, loaq's best time for the same solve (`loaq_seconds`) and its settings. Prints
both times, the speedup, and how many codes agree. Needs Debian's python3-torch (CPU) with an
optimized BLAS (libopenblas0-pthread; it refuses to time the netlib reference BLAS); with
--device cuda, a CUDA build of torch (the layers loaq_cuda_bench exports, solved on the same GPU).
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + header_len])
    meta = header.pop("__metadata__", {})
    start = 8 + header_len
    dtypes = {"F32": np.float32, "F64": np.float64, "U8": np.uint8, "I32": np.int32}
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        data = np.frombuffer(raw, dtype=dtypes[info["dtype"]], count=(end - begin) //
                             np.dtype(dtypes[info["dtype"]]).itemsize, offset=start + begin)
        tensors[name] = torch.from_numpy(data.reshape(info["shape"]).copy())
    return tensors, meta


def find_params(x, maxq):
    """Per-row asymmetric min-max parameters (Quantizer.find_params, perchannel, no MSE)."""
    zero_t = torch.zeros(x.shape[0], device=x.device)
    xmin = torch.minimum(x.min(1).values, zero_t)
    xmax = torch.maximum(x.max(1).values, zero_t)
    empty = (xmin == 0) & (xmax == 0)
    xmin[empty] = -1
    xmax[empty] = 1
    scale = (xmax - xmin) / maxq
    zero = torch.round(-xmin / scale)
    return scale.unsqueeze(1), zero.unsqueeze(1)


def quantize(x, scale, zero, maxq):
    q = torch.clamp(torch.round(x / scale) + zero, 0, maxq)
    return scale * (q - zero)


def fasterquant(W, H, bits, group, blocksize, percdamp):
    """Returns the dequantized weight and the scale of every group (in order)."""
    W = W.clone()
    H = H.clone()
    m, n = W.shape
    maxq = 2 ** bits - 1
    scales = []
    if group <= 0:
        scale, zero = find_params(W, maxq)
        scales.append(scale)

    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    diag = torch.arange(n, device=H.device)
    H[diag, diag] += percdamp * torch.mean(torch.diag(H))
    L = torch.linalg.cholesky(H)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)

    Q = torch.zeros_like(W)
    for i1 in range(0, n, blocksize):
        i2 = min(i1 + blocksize, n)
        W1 = W[:, i1:i2].clone()
        E1 = torch.zeros_like(W1)
        U1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            if group > 0 and col % group == 0:
                # From W, not W1: a group starting mid-block sees the block-start columns.
                scale, zero = find_params(W[:, col:col + group], maxq)
                scales.append(scale)
            w = W1[:, i]
            q = quantize(w.unsqueeze(1), scale, zero, maxq).flatten()
            Q[:, col] = q
            e = (w - q) / U1[i, i]
            W1[:, i:] -= e.unsqueeze(1).matmul(U1[i, i:].unsqueeze(0))
            E1[:, i] = e
        W[:, i2:] -= E1.matmul(Hinv[i1:i2, i2:])
    return Q, scales


def blas_gflops(device):
    """float32 GEMM rate of torch's BLAS at 1024³, GFLOP/s (best of 3)."""
    a = torch.randn(1024, 1024, device=device)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        a.matmul(a)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * 1024 ** 3 / best / 1e9


def time_cli(cli, path, threads, bits, group, blocksize, percdamp, reps):
    """Best wall time of `loaq-quantize` on the layer, and its dequantized weight."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "q.safetensors")
        cmd = [cli, "--in", path, "--out", out, "--method", "gptq", "--bits", str(bits),
               "--group", str(group if group > 0 else -1), "--block", str(blocksize),
               "--damp", repr(percdamp), "--threads", str(threads)]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
            times.append(time.perf_counter() - t0)
        q, _ = read_safetensors(out)
    return min(times), q["weight"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: the threads loaq_bench used)")
    ap.add_argument("--reps", type=int, default=7, help="timed runs per layer (best)")
    ap.add_argument("--cli", default=None,
                    help="also time this loaq-quantize end to end (process start, reading the "
                         "layer, solve, writing the result) on the same layer and threads")
    ap.add_argument("--device", default="cpu", help="torch device of the solve (cpu or cuda)")
    ap.add_argument("--exact", action="store_true",
                    help="also run the reference in float64 (untimed) and count the codes each "
                         "float32 result shares with it: how far float32 itself decides them")
    ap.add_argument("--allow-slow-blas", action="store_true",
                    help="time torch even when its BLAS runs below 20 GFLOP/s")
    ap.add_argument("layers", nargs="+")
    args = ap.parse_args()

    device = torch.device(args.device)
    where = "the CPU" if device.type == "cpu" else torch.cuda.get_device_name(device)
    print(f"torch {torch.__version__}, float32 on {where}")
    # Debian's torch multiplies with whatever libblas.so.3 the alternatives system names; the
    # netlib reference BLAS is 10-20x slower than OpenBLAS and would flatter loaq.
    rate = blas_gflops(device)
    print(f"torch's GEMM: {rate:.1f} GFLOP/s at 1024^3")
    if device.type == "cpu" and rate < 20 and not args.allow_slow_blas:
        sys.exit("torch's BLAS is too slow to be a fair peer (the reference BLAS?): "
                 "apt-get install libopenblas0-pthread, or pass --allow-slow-blas")
    head = (f"{'layer':<22} {'threads':>7} {'loaq [s]':>9} {'torch [s]':>10} {'speedup':>8} "
            f"{'codes equal':>12}")
    if args.cli:
        head += f" {'CLI e2e [s]':>12} {'torch/CLI':>10} {'CLI codes':>10}"
    if args.exact:
        head += f" | {'= float64 reference:':>20} {'torch32':>8} {'loaq':>8}"
        head += f" {'CLI':>8}" if args.cli else ""
    print(head)
    for path in args.layers:
        t, meta = read_safetensors(path)
        threads = args.threads or int(meta.get("threads", "1"))
        bits, group = int(meta["bits"]), int(meta["group"])
        blocksize, percdamp = int(meta["blocksize"]), float(meta["percdamp"])
        W, H = t["weight"].to(device), t["hessian"].to(device)
        big = W.numel() > 4_000_000
        reps = min(2, args.reps) if big else args.reps  # as loaq_bench: best of 2 on 7B
        # torch's own threads beside OpenBLAS's (which follow OMP_NUM_THREADS) can fight over
        # the cores: with more than one thread the peer also runs with one torch thread, and its
        # better time counts.
        t_torch = float("inf")
        for torch_threads in sorted({threads, 1}, reverse=True):
            torch.set_num_threads(torch_threads)
            for _ in range(reps):
                t0 = time.perf_counter()
                Q, scales = fasterquant(W, H, bits, group, blocksize, percdamp)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t_torch = min(t_torch, time.perf_counter() - t0)  # best, as loaq_bench
        torch.set_num_threads(threads)
        t_loaq = float(meta["loaq_seconds"])
        # A code differs when the dequantized values differ by more than a quarter step.
        n = W.shape[1]
        g = group if group > 0 else n
        step = torch.cat([s.expand(-1, min(g, n - k * g)) for k, s in enumerate(scales)], 1)
        equal = ((Q - t["loaq_weight"].to(device)).abs() < 0.25 * step).double().mean().item()
        name = path.rsplit("/", 1)[-1].removesuffix(".safetensors")
        line = (f"{name:<22} {threads:>7} {t_loaq:>9.3f} {t_torch:>10.3f} "
                f"{t_torch / t_loaq:>7.1f}x {100 * equal:>11.3f}%")
        if args.cli:
            t_cli, Q_cli = time_cli(args.cli, path, threads, bits, group, blocksize, percdamp, reps)
            cli_equal = ((Q - Q_cli).abs() < 0.25 * step).double().mean().item()
            line += f" {t_cli:>12.3f} {t_torch / t_cli:>9.1f}x {100 * cli_equal:>9.3f}%"
        if args.exact:
            # The same algorithm in float64: where float32 results part from it, rounding in
            # float32 decided the code, and no float32 peer can be expected to agree there.
            Q64, _ = fasterquant(W.double(), H.double(), bits, group, blocksize, percdamp)
            share = lambda A: ((A.double() - Q64).abs() < 0.25 * step.double()).double().mean()
            line += f" | {'':>20} {100 * share(Q).item():>7.3f}% "
            line += f"{100 * share(t['loaq_weight'].to(device)).item():>7.3f}%"
            line += f" {100 * share(Q_cli.to(device)).item():>7.3f}%" if args.cli else ""
        print(line)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
