#!/usr/bin/env python3
"""Checks loaq's GGUF exports with real clients: gguf-py (llama.cpp's own Python reader) and
llama.cpp itself through llama-cpp-python. Needs `pip install gguf llama-cpp-python numpy`
(scripts/llama_cpp_table.sh sets up a cached venv).

  same-weights QUANT.gguf REFERENCE.gguf
      gguf's dequantization of every tensor of QUANT equals REFERENCE's F32 values bit for bit
      (REFERENCE: loaq-ppl-table --export-reference, the solver's weights as floats).
  perplexity MODEL.gguf --tokens IDS.txt [--seq-len 256] [--windows 32] [--threads N]
      llama.cpp's logits on non-overlapping windows of the given token ids (no BOS added, as
      loaq's evaluation), ppl = exp(mean over windows of the window's mean next-token NLL).
  quantize IN.gguf OUT.gguf --type q4_0|q4_1|q8_0 [--embedding-type q8_0] [--imatrix F] [--threads N]
      llama.cpp's own quantizer (llama_model_quantize, pure: every linear in --type), with an
      importance matrix (loaq-imatrix: mean x² per input channel, one F32 vector per weight) if given.
"""
import argparse
import ctypes
import sys

import numpy as np

GGML_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q8_0": 8}
LLAMA_FTYPES = {"q4_0": 2, "q4_1": 3, "q8_0": 7}


def same_weights(args):
    import gguf

    quant, ref = gguf.GGUFReader(args.quant), gguf.GGUFReader(args.reference)
    ref_tensors = {t.name: t for t in ref.tensors}
    tensors = values = 0
    by_type = {}
    for t in quant.tensors:
        r = ref_tensors.get(t.name)
        if r is None:
            sys.exit(f"same-weights: {t.name} is missing from {args.reference}")
        if r.tensor_type != gguf.GGMLQuantizationType.F32:
            sys.exit(f"same-weights: {args.reference} holds {t.name} as {r.tensor_type.name}, not F32")
        got = np.ascontiguousarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32).ravel()
        want = np.ascontiguousarray(r.data, dtype=np.float32).ravel()
        if got.shape != want.shape or not np.array_equal(got.view(np.uint32), want.view(np.uint32)):
            diff = int(np.count_nonzero(got.view(np.uint32) != want.view(np.uint32))) if got.shape == want.shape else -1
            sys.exit(f"same-weights: {t.name} ({t.tensor_type.name}) differs from the reference in {diff} values")
        tensors += 1
        values += got.size
        by_type[t.tensor_type.name] = by_type.get(t.tensor_type.name, 0) + 1
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(by_type.items()))
    print(f"same-weights: {tensors} tensors ({kinds}), {values} values: gguf's dequantization equals "
          f"the solver's weights bit for bit")


def perplexity(args):
    from llama_cpp import Llama

    ids = [int(x) for x in open(args.tokens).read().split()]
    L = args.seq_len
    windows = [ids[b:b + L] for b in range(0, len(ids) - L + 1, L)]
    if args.windows >= 0:
        windows = windows[:args.windows]
    if not windows:
        sys.exit("perplexity: fewer tokens than one window")
    llm = Llama(model_path=args.model, n_ctx=L, n_batch=L, n_ubatch=L, logits_all=True,
                n_threads=args.threads, n_threads_batch=args.threads, verbose=False)
    nll = []
    for w in windows:
        llm.reset()
        llm.eval(w)
        logits = np.asarray(llm.scores[:L], dtype=np.float64)
        m = logits.max(axis=1, keepdims=True)
        lse = (m[:, 0] + np.log(np.exp(logits - m).sum(axis=1)))[:-1]
        nll.append(float(np.mean(lse - logits[np.arange(L - 1), w[1:]])))
    ppl = float(np.exp(np.mean(nll)))
    print(f"llama.cpp perplexity {ppl:.4f} on {len(windows)} windows x {L} tokens ({args.model})")


def quantize(args):
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = args.threads
    params.ftype = LLAMA_FTYPES[args.type]
    params.pure = True  # every linear in the one type (no k-quant mixture), as loaq's export
    if args.embedding_type:
        params.token_embedding_type = GGML_TYPES[args.embedding_type]
    keep = []  # the imatrix arrays must outlive the call
    if args.imatrix:
        import gguf

        entries = []
        for t in gguf.GGUFReader(args.imatrix).tensors:
            values = np.ascontiguousarray(t.data, dtype=np.float32)
            keep.append(values)
            entries.append((t.name.encode(), values))
        table = (llama_cpp.llama_model_imatrix_data * (len(entries) + 1))()
        for i, (name, values) in enumerate(entries):
            table[i].name = name
            table[i].data = values.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            table[i].size = values.size
        table[len(entries)].name = None  # terminator
        params.imatrix = table
        keep.append(table)
    rc = llama_cpp.llama_model_quantize(args.input.encode(), args.output.encode(), ctypes.byref(params))
    if rc != 0:
        sys.exit(f"quantize: llama_model_quantize returned {rc}")
    with_imatrix = f", importance matrix {args.imatrix}" if args.imatrix else ""
    print(f"llama.cpp quantized {args.input} -> {args.output} ({args.type}{with_imatrix})")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("same-weights")
    s.add_argument("quant")
    s.add_argument("reference")
    s.set_defaults(run=same_weights)
    s = sub.add_parser("perplexity")
    s.add_argument("model")
    s.add_argument("--tokens", required=True)
    s.add_argument("--seq-len", type=int, default=256)
    s.add_argument("--windows", type=int, default=32)
    s.add_argument("--threads", type=int, default=2)
    s.set_defaults(run=perplexity)
    s = sub.add_parser("quantize")
    s.add_argument("input")
    s.add_argument("output")
    s.add_argument("--type", choices=sorted(LLAMA_FTYPES), required=True)
    s.add_argument("--embedding-type", choices=sorted(GGML_TYPES))
    s.add_argument("--imatrix")
    s.add_argument("--threads", type=int, default=2)
    s.set_defaults(run=quantize)
    args = p.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
