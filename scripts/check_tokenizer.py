#!/usr/bin/env python3
"""Cross-checks the C++ tokenizer (include/loaq/llm/tokenizer.hpp) against Hugging Face
`tokenizers` built from the same GGUF vocabulary and merges with the pipeline of the model's
tokenizer.json for the file's tokenizer.ggml.pre:
  smollm  Digits(individual_digits) then ByteLevel(add_prefix_space=False)            (SmolLM2)
  qwen2   NFC normalizer; Split(Qwen2's regex, isolated) then ByteLevel(add_prefix_space=False,
          use_regex=False)                                                     (Qwen2, Qwen2.5)

    python3 scripts/check_tokenizer.py --model M.gguf --exe BUILD/examples/llm_tools/loaq-tokenize \
        [--text FILE ...] [--stress N]

Default text: data/sotu/eval_1982_2021.txt. --stress N adds N characters of seeded random text
drawn from awkward classes (digits of several scripts, letters, marks, punctuation, every kind
of whitespace, contractions, special tokens). Prints the token counts and the first difference;
exit 1 on a mismatch. For qwen2 it also says whether each text is NFC-invariant: the C++ tokenizer
does not normalize, so it matches Hugging Face only on NFC text.
Exits 0 with a message when the `gguf` or `tokenizers` package is missing.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import unicodedata

try:
    from gguf import GGUFReader
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from tokenizers import AddedToken, Regex
except ImportError as e:
    print(f"check_tokenizer.py: skipped ({e}); pip install gguf tokenizers")
    sys.exit(0)


def field_strings(r, key):
    f = r.fields[key]
    return [bytes(f.parts[i]).decode("utf-8") for i in f.data]


# The Split pattern of Qwen2's tokenizer.json.
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def set_pipeline(tk, pre):
    """The normalizer and pre-tokenizer of the model's tokenizer.json for tokenizer.ggml.pre."""
    if pre == "smollm":
        tk.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ])
    elif pre == "qwen2":
        tk.normalizer = normalizers.NFC()
        tk.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    else:
        raise SystemExit(f"check_tokenizer.py: pre-tokenizer '{pre}' not supported (smollm, qwen2)")


def hf_tokenizer(path):
    r = GGUFReader(path)
    pre = bytes(r.fields["tokenizer.ggml.pre"].parts[-1]).decode()
    tokens = field_strings(r, "tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ")) for m in field_strings(r, "tokenizer.ggml.merges")]
    f = r.fields["tokenizer.ggml.token_type"]
    types = [int(f.parts[i][0]) for i in f.data]
    vocab = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)  # first id wins, as in the C++ tokenizer
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    set_pipeline(tk, pre)
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False)
                           for i, t in enumerate(types) if t in (3, 4)])
    return tk, pre


def stress_text(n, seed=1234):
    import random
    rng = random.Random(seed)
    pieces = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "'\u017f", "''", " '",
              "<|im_start|>", "<|endoftext|>", "<|im_end", "  ", "   ", "\n", "\n\n", "\t",
              " \n ", "\r\n", "\u00a0", "\u2003", "\u3000", "\u0085", "\u200b", "\ufeff", "2021",
              "1,000.5", "\u0663\u0664", "\u2163", "\u00bd", "\u00b2", "caf\u00e9", "e\u0301",
              "\u00df", "\u4e2d\u6587", "\u3053\u3093", "\ud55c", "\u0416\u0436", "\U0001F600",
              "\U0001F468\u200d\U0001F469", "\u2014", "\u2019", "...", "!?", "?\n\n", "$",
              "\u20ac", "x", "The", " the", " United", " States", "ABC", "abc123def", "a1b2"]
    out = []
    while sum(len(p) for p in out) < n:
        out.append(rng.choice(pieces))
    return "".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--exe", required=True, help="loaq-tokenize executable")
    ap.add_argument("--text", action="append", help="text file (repeatable)")
    ap.add_argument("--stress", type=int, default=0, help="also check N chars of random text")
    a = ap.parse_args()
    texts = a.text or [os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data",
                                    "sotu", "eval_1982_2021.txt")]
    tk, pre = hf_tokenizer(a.model)
    print(f"pre-tokenizer: {pre}", flush=True)
    failures = 0
    with tempfile.TemporaryDirectory() as d:
        if a.stress:
            text = stress_text(a.stress)
            if pre == "qwen2":
                # Its pieces include decomposed forms (e + U+0301) that the NFC normalizer would
                # compose before pre-tokenizing; the C++ tokenizer does not normalize (text must
                # be NFC already), so only NFC text can compare equal.
                text = unicodedata.normalize("NFC", text)
            path = os.path.join(d, "stress.txt")
            with open(path, "w", encoding="utf-8", newline="") as f:
                f.write(text)
            texts.append(path)
        for path in texts:
            failures += check(tk, pre, a, path, os.path.join(d, "ids.txt"))
    return 1 if failures else 0


def check(tk, pre, a, path, out):
    text = open(path, encoding="utf-8", newline="").read()
    ref = tk.encode(text).ids
    subprocess.run([a.exe, "--model", a.model, "--text", path, "--out", out], check=True)
    got = [int(x) for x in open(out).read().split()]
    print(f"{os.path.basename(path)} ({len(text.encode('utf-8'))} bytes): "
          f"tokens: tokenizers {len(ref)}, C++ {len(got)}", flush=True)
    if pre == "qwen2":
        nfc = unicodedata.normalize("NFC", text) == text
        print(f"  NFC-invariant: {'yes' if nfc else 'NO (the C++ tokenizer does not normalize)'}",
              flush=True)
    if got == ref:
        print("  token ids identical", flush=True)
        return 0
    n = next((i for i, (x, y) in enumerate(zip(ref, got)) if x != y), min(len(ref), len(got)))
    agree = sum(1 for x, y in zip(ref, got) if x == y)
    print(f"  token ids DIFFER: first difference at index {n}; {agree} positions agree")
    print("  tokenizers:", ref[max(0, n - 3):n + 5], repr(tk.decode(ref[max(0, n - 3):n + 5])))
    print("  C++       :", got[max(0, n - 3):n + 5], repr(tk.decode(got[max(0, n - 3):n + 5])))
    return 1


if __name__ == "__main__":
    sys.exit(main())
