#!/usr/bin/env python3
"""Writes the awkward safetensors files the CLI test feeds loaq-quantize (standard library only)."""
import json
import random
import struct
import sys


def write(path, tensors):
    """tensors: name -> (dtype, shape, flat list of values)."""
    fmt = {"F32": "f", "F64": "d"}
    header, blobs, offset = {}, [], 0
    for name, (dtype, shape, values) in tensors.items():
        blob = struct.pack("<%d%s" % (len(values), fmt[dtype]), *values)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def gram(n, T, rng):
    X = [[rng.gauss(0, 1) for _ in range(T)] for _ in range(n)]
    return [2 * sum(a * b for a, b in zip(X[i], X[j])) for i in range(n) for j in range(n)]


def main(out):
    rng = random.Random(7)
    m, n = 6, 16
    W = [rng.gauss(0, 0.1) for _ in range(m * n)]
    H = gram(n, 64, rng)
    write(out + "/zero_tokens.st", {"weight": ("F32", [m, n], W), "inputs": ("F32", [0, n], [])})
    big_n = 100000  # a 400 KB file whose Hessian would need 80 GB
    write(out + "/huge_n.st", {"weight": ("F32", [1, big_n], [0.5] * big_n),
                               "inputs": ("F32", [1, big_n], [1.0] * big_n)})
    write(out + "/h_1e80.st", {"weight": ("F32", [m, n], W), "hessian": ("F64", [n, n], [h * 1e80 for h in H])})
    write(out + "/h_1e-100.st", {"weight": ("F32", [m, n], W), "hessian": ("F64", [n, n], [h * 1e-100 for h in H])})
    edge = list(W)
    for j in range(n):
        edge[2 * n + j] = 3e38 if j % 2 else -3e38
    write(out + "/w_3e38.st", {"weight": ("F32", [m, n], edge), "hessian": ("F64", [n, n], H)})
    big = list(W)
    for j in range(n):
        big[3 * n + j] = 1e30 * (1 + j / n)
    write(out + "/w_1e30.st", {"weight": ("F32", [m, n], big), "hessian": ("F64", [n, n], H)})
    # F64 weights beyond float's range: a float solve must see them as they are (the row is
    # rescaled, or refused by name), not as 0 or Inf after a conversion on reading.
    huge = list(W)
    for j in range(n):
        huge[n + j] = 1e300 * (1 + j / n)
    write(out + "/w64_1e300.st", {"weight": ("F64", [m, n], huge), "hessian": ("F64", [n, n], H)})
    tiny = list(W)
    for j in range(n):
        tiny[n + j] = 1e-40 * (1 + j / n)
    write(out + "/w64_1e-40.st", {"weight": ("F64", [m, n], tiny), "hessian": ("F64", [n, n], H)})
    asym = list(H)
    asym[3 * n + 9] += 0.5 * abs(H[3 * n + 3])
    write(out + "/asym.st", {"weight": ("F32", [m, n], W), "hessian": ("F64", [n, n], asym)})
    write(out + "/empty_weight.st", {"weight": ("F32", [0, n], []), "hessian": ("F64", [n, n], H)})
    # One Hessian stored as F32 and as F64 (values float holds exactly; column 5 dead): the CLI
    # reads an F32 Hessian without a double copy, and must give the same bits.
    H32 = [struct.unpack("<f", struct.pack("<f", h))[0] for h in H]
    for i in range(n):
        H32[5 * n + i] = H32[i * n + 5] = 0.0
    write(out + "/h32.st", {"weight": ("F32", [m, n], W), "hessian": ("F32", [n, n], H32)})
    write(out + "/h64.st", {"weight": ("F32", [m, n], W), "hessian": ("F64", [n, n], H32)})
    nan32 = list(H32)
    nan32[2 * n + 2] = float("nan")
    write(out + "/h32_nan.st", {"weight": ("F32", [m, n], W), "hessian": ("F32", [n, n], nan32)})
    asym32 = list(H32)
    asym32[3 * n + 9] += 0.5 * abs(H32[3 * n + 3])
    write(out + "/asym32.st", {"weight": ("F32", [m, n], W), "hessian": ("F32", [n, n], asym32)})


if __name__ == "__main__":
    main(sys.argv[1])
