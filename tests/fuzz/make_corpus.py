#!/usr/bin/env python3
"""Writes the fuzzers' seed corpora: tiny valid safetensors and GGUF files covering every dtype,
value type and layout the readers support (a few hundred bytes each). Deterministic; run from
the repository root: python3 tests/fuzz/make_corpus.py"""
import json
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- safetensors: u64 header length, JSON header, data section.
def safetensors(tensors, metadata=None):
    header, data = {}, b""
    if metadata:
        header["__metadata__"] = metadata
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


f32 = lambda xs: struct.pack("<%df" % len(xs), *xs)
f16 = lambda xs: struct.pack("<%de" % len(xs), *xs)
bf16 = lambda xs: b"".join(struct.pack("<f", x)[2:] for x in xs)
vals = [1.0, -2.5, 3.25, 0.5, 1e-3, -7.0]

write("safetensors_fuzz", "empty.safetensors", safetensors({}))
write("safetensors_fuzz", "f32_matrix.safetensors", safetensors({"weight": ("F32", [2, 3], f32(vals))}))
write("safetensors_fuzz", "dtypes.safetensors", safetensors({
    "f16": ("F16", [2, 3], f16(vals)),
    "bf16": ("BF16", [3, 2], bf16(vals)),
    "f64": ("F64", [6], struct.pack("<6d", *vals)),
    "i32": ("I32", [3], struct.pack("<3i", 0, 1, 2)),
    "i64": ("I64", [1], struct.pack("<q", -1)),
    "i16": ("I16", [2], struct.pack("<2h", 1, -1)),
    "i8": ("I8", [2], struct.pack("<2b", 1, -1)),
    "u8": ("U8", [2, 2], bytes([0, 1, 2, 255])),
    "bool": ("BOOL", [2], bytes([0, 1])),
}))
write("safetensors_fuzz", "layer.safetensors", safetensors({
    "weight": ("F32", [4, 4], f32([float(i % 5) - 2 for i in range(16)])),
    "hessian": ("F16", [4, 4], f16([float(i == j) for i in range(4) for j in range(4)])),
    "inputs": ("BF16", [2, 4], bf16([0.5 * i for i in range(8)])),
}, metadata={"method": "gptq", "bits": "3"}))
write("safetensors_fuzz", "scalar_and_empty.safetensors", safetensors({
    "scalar": ("F32", [], f32([4.0])),
    "empty": ("F32", [0, 3], b""),
}))


# ---- GGUF v2/v3: magic, version, counts, key/values, tensor table, aligned data.
T = {"u8": 0, "i8": 1, "u16": 2, "i16": 3, "u32": 4, "i32": 5, "f32": 6, "bool": 7, "str": 8,
     "arr": 9, "u64": 10, "i64": 11, "f64": 12}
FMT = {"u8": "B", "i8": "b", "u16": "H", "i16": "h", "u32": "I", "i32": "i", "f32": "f",
       "bool": "?", "u64": "Q", "i64": "q", "f64": "d"}


def gstr(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gval(t, v):
    if t == "str":
        return gstr(v)
    if t == "arr":
        et, items = v
        return struct.pack("<IQ", T[et], len(items)) + b"".join(gval(et, x) for x in items)
    return struct.pack("<" + FMT[t], v)


def gguf(kvs, tensors, version=3, alignment=32):
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for key, t, v in kvs:
        out += gstr(key) + struct.pack("<I", T[t]) + gval(t, v)
    data = b""
    for name, dims, gtype, raw in tensors:
        data += b"\0" * (-len(data) % alignment)
        out += gstr(name) + struct.pack("<I", len(dims)) + struct.pack("<%dQ" % len(dims), *dims)
        out += struct.pack("<IQ", gtype, len(data))
        data += raw
    out += b"\0" * (-len(out) % alignment)
    return out + data


def q8_0(xs):  # 32 elements per block: f16 scale, 32 int8
    d = max(abs(x) for x in xs) / 127 or 1.0
    return struct.pack("<e", d) + struct.pack("<32b", *[round(x / d) for x in xs])


def q4_0(xs):  # f16 scale, 16 bytes: low nibble element j, high nibble element j + 16
    d = max(abs(x) for x in xs) / 8 or 1.0
    q = [min(15, max(0, round(x / d) + 8)) for x in xs]
    return struct.pack("<e", d) + bytes(q[j] | (q[j + 16] << 4) for j in range(16))


def q4_1(xs):  # f16 scale, f16 min, 16 bytes of nibbles
    lo, hi = min(xs), max(xs)
    d = (hi - lo) / 15 or 1.0
    q = [min(15, max(0, round((x - lo) / d))) for x in xs]
    return struct.pack("<ee", d, lo) + bytes(q[j] | (q[j + 16] << 4) for j in range(16))


ramp = [0.25 * (i - 16) for i in range(32)]
write("gguf_fuzz", "metadata.gguf", gguf([
    ("general.architecture", "str", "llama"),
    ("general.alignment", "u32", 32),
    ("u8", "u8", 7), ("i8", "i8", -7), ("u16", "u16", 700), ("i16", "i16", -700),
    ("i32", "i32", -70000), ("f32", "f32", 0.5), ("bool", "bool", True),
    ("u64", "u64", 1 << 40), ("i64", "i64", -(1 << 40)), ("f64", "f64", 1e-5),
    ("tokenizer.ggml.tokens", "arr", ("str", ["<s>", "a", "b", "ab"])),
    ("tokenizer.ggml.token_type", "arr", ("i32", [3, 1, 1, 1])),
    ("tokenizer.ggml.merges", "arr", ("str", ["a b"])),
    ("scores", "arr", ("f32", [0.0, -1.0, -2.0, -3.0])),
    ("nested", "arr", ("arr", [("u8", [1, 2]), ("str", ["x"])])),
], []))
write("gguf_fuzz", "tensors_float.gguf", gguf([("general.architecture", "str", "llama")], [
    ("f32", [3, 2], 0, f32(vals)),
    ("f16", [6], 1, f16(vals)),
    ("bf16", [2, 3], 30, bf16(vals)),
    ("f64", [2], 28, struct.pack("<2d", 1.5, -2.0)),
    ("i8", [2], 24, struct.pack("<2b", 1, -1)),
    ("i16", [2], 25, struct.pack("<2h", 1, -1)),
    ("i32", [2], 26, struct.pack("<2i", 1, -1)),
    ("i64", [1, 1], 27, struct.pack("<q", -5)),
]))
write("gguf_fuzz", "tensors_quant.gguf", gguf([], [
    ("q4_0", [32, 2], 2, q4_0(ramp) + q4_0(ramp[::-1])),
    ("q4_1", [32], 3, q4_1(ramp)),
    ("q8_0", [32, 1, 1], 8, q8_0(ramp)),
    ("q4_k", [256], 12, bytes(144)),  # a K-quant super-block
    ("q2_k", [256], 10, bytes(84)),  # listed type this reader cannot dequantize
]))
write("gguf_fuzz", "v2_align64.gguf", gguf([("general.alignment", "u32", 64)], [
    ("a", [4], 0, f32([1, 2, 3, 4])),
    ("b", [2, 2], 0, f32([5, 6, 7, 8])),
], version=2, alignment=64))
write("gguf_fuzz", "empty.gguf", gguf([], []))
