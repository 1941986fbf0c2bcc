#!/usr/bin/env python3
"""Writes tests/data/ggml_blocks.gguf: random blocks of every ggml block format loaq's GGUF
reader dequantizes, each beside the `gguf` PyPI package's own dequantization of it, so the C++
test (tests/io/gguf.cpp) checks the reader against llama.cpp's Python reference without needing
Python at test time. The file is written by gguf-py's GGUFWriter, a second client of the format.

    pip install gguf numpy && python3 scripts/gen_ggml_vectors.py [--out tests/data/ggml_blocks.gguf]

For type T the file holds tensor "T" (2 rows of 512 elements, raw blocks) and "T.expected" (F32,
gguf.quants.dequantize of the same bytes). Block bytes are uniform random except the fp16 scale
fields, which are finite values drawn per block: positive, negative, tiny (subnormal), zero and
large, so that every bit of every code and scale field is exercised.
"""
import argparse
import os

import numpy as np
from gguf import GGMLQuantizationType as T, GGUFWriter
from gguf.quants import dequantize

# type: (block bytes, elements per block, byte offsets of its fp16 fields)
FORMATS = {
    T.Q4_0: (18, 32, [0]),
    T.Q4_1: (20, 32, [0, 2]),
    T.Q5_0: (22, 32, [0]),
    T.Q5_1: (24, 32, [0, 2]),
    T.Q8_0: (34, 32, [0]),
    T.Q4_K: (144, 256, [0, 2]),
    T.Q5_K: (176, 256, [0, 2]),
    T.Q6_K: (210, 256, [208]),
}
ROWS, COLS = 2, 512


def random_blocks(rng, n_blocks, size, half_fields):
    blocks = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    specials = np.array([0.0, -0.0, 3e-7, -65504.0, 1.5e4], dtype=np.float16)
    for off in half_fields:
        values = (rng.standard_normal(n_blocks) * 0.05).astype(np.float16)
        values[: len(specials)] = specials[: min(len(specials), n_blocks)]
        rng.shuffle(values)
        blocks[:, off:off + 2] = values.view(np.uint8).reshape(n_blocks, 2)
    return blocks


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "data", "ggml_blocks.gguf"))
    ap.add_argument("--seed", type=int, default=20261126)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    w = GGUFWriter(a.out, arch="loaq-test")
    for qtype, (size, per_block, half_fields) in FORMATS.items():
        n_blocks = ROWS * COLS // per_block
        raw = random_blocks(rng, n_blocks, size, half_fields).reshape(ROWS, COLS // per_block * size)
        expected = dequantize(raw, qtype).astype(np.float32).reshape(ROWS, COLS)
        if not np.isfinite(expected).all():
            raise SystemExit(f"{qtype.name}: non-finite reference values; pick other scales")
        w.add_tensor(qtype.name, raw, raw_dtype=qtype)  # shape from the bytes: ROWS × COLS
        w.add_tensor(qtype.name + ".expected", expected)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {a.out} ({os.path.getsize(a.out)} bytes)")


if __name__ == "__main__":
    main()
