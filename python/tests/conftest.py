"""Shared helpers: a numpy-only safetensors reader and the repository's reference layers."""

import json
import os
import pathlib
import struct

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "tests" / "data" / "reference"

_DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I32": np.int32,
           "I64": np.int64, "U8": np.uint8}


def read_safetensors(path):
    """{name: array} of a .safetensors file (little-endian header length, JSON header, data)."""
    raw = pathlib.Path(path).read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + size])
    base = 8 + size
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        lo, hi = info["data_offsets"]
        out[name] = np.frombuffer(raw[base + lo:base + hi], dtype=_DTYPES[info["dtype"]]).reshape(
            info["shape"])
    return out


def reference_cases():
    return json.loads((REFERENCE / "cases.json").read_text())


def layer(seed, m=48, n=96, T=384, drift=0.1):
    """A small heavy-tailed layer with outlier input channels and drifted FP inputs."""
    rng = np.random.default_rng(seed)
    W = (rng.standard_t(3, size=(m, n)) * 0.05).astype(np.float32)
    mix = np.eye(n) + 0.3 * rng.standard_normal((n, n)) / np.sqrt(n)
    Xh = rng.standard_normal((T, n)) @ mix.T
    Xh[:, ::7] *= 5
    X = Xh + drift * rng.standard_normal((T, n))
    return W, Xh, X


@pytest.fixture
def small_layer():
    return layer(0)
