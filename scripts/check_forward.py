#!/usr/bin/env python3
"""Cross-checks the C++ forward pass (include/loaq/llm/decoder.hpp) with an independent numpy
forward in float64 over the `gguf` package's reader and dequantizer.

The numpy side keeps the file's q/k row order and uses llama.cpp's RoPE for the architecture:
"normal" (rotating adjacent pairs) for llama files, whose q/k rows the C++ side un-permutes to
Hugging Face order and rotates with rotate_half, so agreement also checks the un-permutation;
NEOX (pairs i, i + hd/2) for qwen2 files, which also have q/k/v biases and their own head.

    python3 scripts/check_forward.py --model M.gguf \
        --exe BUILD/examples/llm_tools/loaq-dump-logits [--text FILE] [--tokens 64]

Prints the max abs logit difference and both mean next-token nlls; exit 1 if the logits differ
by more than --tol (default 1e-2). Exits 0 with a message when numpy or gguf is missing.
"""
import argparse
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    from gguf import GGUFReader
    from gguf.quants import dequantize
except ImportError as e:
    print(f"check_forward.py: skipped ({e}); pip install gguf numpy")
    sys.exit(0)


def scalar(r, key):
    f = r.fields[key]
    return f.parts[f.data[0]][0].item()


def load(path):
    r = GGUFReader(path)
    w = {t.name: dequantize(t.data, t.tensor_type).astype(np.float64) for t in r.tensors}
    arch = bytes(r.fields["general.architecture"].parts[-1]).decode()
    if arch not in ("llama", "qwen2"):
        raise SystemExit(f"check_forward.py: architecture '{arch}' is not llama or qwen2")
    cfg = dict(
        arch=arch,
        n_layers=scalar(r, f"{arch}.block_count"),
        n_heads=scalar(r, f"{arch}.attention.head_count"),
        n_kv=scalar(r, f"{arch}.attention.head_count_kv"),
        theta=scalar(r, f"{arch}.rope.freq_base"),
        eps=scalar(r, f"{arch}.attention.layer_norm_rms_epsilon"),
    )
    return cfg, w


def rms_norm(x, g, eps):  # x: T × d
    return x / np.sqrt((x * x).mean(axis=1, keepdims=True) + eps) * g


def rope_angles(T, hd, theta):  # T × 1 × hd/2
    ang = np.arange(T)[:, None] * (theta ** (-np.arange(0, hd, 2) / hd))[None, :]
    return np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]


def rope_adjacent(x, n_heads, theta):  # x: T × (n_heads·hd); pairs (2i, 2i+1) as llama.cpp
    T, n = x.shape
    c, s = rope_angles(T, n // n_heads, theta)
    x = x.reshape(T, n_heads, n // n_heads // 2, 2)
    a, b = x[..., 0], x[..., 1]
    return np.stack([a * c - b * s, b * c + a * s], axis=-1).reshape(T, n)


def rope_neox(x, n_heads, theta):  # pairs (i, i + hd/2): llama.cpp's NEOX mode (qwen2 files)
    T, n = x.shape
    hd = n // n_heads
    c, s = rope_angles(T, hd, theta)
    x = x.reshape(T, n_heads, 2, hd // 2)
    a, b = x[:, :, 0], x[:, :, 1]
    return np.concatenate([a * c - b * s, b * c + a * s], axis=-1).reshape(T, n)


def forward(cfg, w, ids):
    T = len(ids)
    h = w["token_embd.weight"][ids]  # T × d
    nh, nkv = cfg["n_heads"], cfg["n_kv"]
    hd = h.shape[1] // nh
    mask = np.triu(np.full((T, T), -np.inf), 1)
    rope = rope_adjacent if cfg["arch"] == "llama" else rope_neox

    def linear(x, name):  # x Wᵀ (+ b where the file has a bias)
        y = x @ w[name + ".weight"].T
        return y + w[name + ".bias"] if name + ".bias" in w else y

    for i in range(cfg["n_layers"]):
        p = f"blk.{i}."
        x = rms_norm(h, w[p + "attn_norm.weight"], cfg["eps"])
        q = rope(linear(x, p + "attn_q"), nh, cfg["theta"]).reshape(T, nh, hd)
        k = rope(linear(x, p + "attn_k"), nkv, cfg["theta"]).reshape(T, nkv, hd)
        v = linear(x, p + "attn_v").reshape(T, nkv, hd)
        ctx = np.empty((T, nh, hd))
        for j in range(nh):
            kv = j // (nh // nkv)
            sc = q[:, j] @ k[:, kv].T / np.sqrt(hd) + mask
            sc = np.exp(sc - sc.max(axis=1, keepdims=True))
            ctx[:, j] = (sc / sc.sum(axis=1, keepdims=True)) @ v[:, kv]
        h = h + linear(ctx.reshape(T, -1), p + "attn_output")
        x = rms_norm(h, w[p + "ffn_norm.weight"], cfg["eps"])
        g = linear(x, p + "ffn_gate")
        h = h + linear(g / (1 + np.exp(-g)) * linear(x, p + "ffn_up"), p + "ffn_down")
    head = w.get("output.weight", w["token_embd.weight"])
    return rms_norm(h, w["output_norm.weight"], cfg["eps"]) @ head.T  # T × V


def mean_nll(logits, ids):
    z = logits[:-1]
    m = z.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]
    return float((lse - z[np.arange(len(ids) - 1), ids[1:]]).mean())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--exe", required=True, help="loaq-dump-logits executable")
    ap.add_argument("--text", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                   "..", "data", "sotu", "eval_1982_2021.txt"))
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--tol", type=float, default=1e-2)
    a = ap.parse_args()

    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "logits.bin")
        subprocess.run([a.exe, "--model", a.model, "--text", a.text, "--tokens", str(a.tokens),
                        "--out", out], check=True)
        raw = open(out, "rb").read()
    T, V = np.frombuffer(raw, "<i4", 2)
    ids = np.frombuffer(raw, "<i4", T, 8).astype(np.int64)
    got = np.frombuffer(raw, "<f4", T * V, 8 + 4 * T).reshape(T, V).astype(np.float64)

    cfg, w = load(a.model)
    ref = forward(cfg, w, ids)
    diff = np.abs(ref - got)
    print(f"{T} tokens, vocab {V}: max |logit diff| {diff.max():.3e} "
          f"(mean {diff.mean():.3e}, logit range [{ref.min():.2f}, {ref.max():.2f}])")
    print(f"mean next-token nll: numpy float64 {mean_nll(ref, ids):.6f}, C++ float {mean_nll(got, ids):.6f}")
    same_argmax = (ref.argmax(axis=1) == got.argmax(axis=1)).mean()
    print(f"argmax agreement: {same_argmax * 100:.1f}%")
    return 0 if diff.max() <= a.tol else 1


if __name__ == "__main__":
    sys.exit(main())
