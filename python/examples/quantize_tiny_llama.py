"""Embedding loaq in a PyTorch quantizer: a small LLaMA-style model (RMSNorm, RoPE attention,
SwiGLU MLP, byte-level vocabulary) is trained for a few hundred steps on the State of the Union
speeches 1790–1981 (data/sotu/), then quantized layer by layer, GPTQ's true-sequential order
[q,k,v] → [o] → [gate,up] → [down], with forward hooks that capture each linear's inputs (and
the residual stream its output is added to) and feed them to loaq. The FP model and the model
being quantized run side by side, so GPTAQ and LoaQ see both x̂ (quantized-model input) and x (FP
input). Prints perplexity on the speeches 1982–2021 for FP, RTN, GPTQ, GPTAQ and LoaQ.

    build/venv/bin/python python/examples/quantize_tiny_llama.py            # ~1-2 min, 2 cores
    ... --settings 4:32,3:32,2:32 --methods rtn,gptq,gptaq,qep,loaq --steps 400

Runs on Debian's python3-torch (1.13) and NumPy; loaq from `pip install .`.
"""

import argparse
import copy
import math
import pathlib
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import loaq

ROOT = pathlib.Path(__file__).resolve().parents[2]


# ---- the model -------------------------------------------------------------------------------

class Config:
    vocab = 256      # bytes
    dim = 128
    layers = 4
    heads = 4
    hidden = 352     # SwiGLU width
    seq = 128
    eps = 1e-5


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope(x, pos):  # x: (batch, heads, seq, head_dim)
    d = x.shape[-1]
    freq = 1.0 / (10000 ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
    ang = pos[:, None].float() * freq[None, :]                       # (seq, d/2)
    cos, sin = ang.cos(), ang.sin()
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.heads = c.heads
        self.q_proj = nn.Linear(c.dim, c.dim, bias=False)
        self.k_proj = nn.Linear(c.dim, c.dim, bias=False)
        self.v_proj = nn.Linear(c.dim, c.dim, bias=False)
        self.o_proj = nn.Linear(c.dim, c.dim, bias=False)

    def forward(self, x):  # (batch, seq, dim)
        b, s, d = x.shape
        split = lambda t: t.view(b, s, self.heads, d // self.heads).transpose(1, 2)
        pos = torch.arange(s)
        q, k, v = rope(split(self.q_proj(x)), pos), rope(split(self.k_proj(x)), pos), split(self.v_proj(x))
        att = (q @ k.transpose(-1, -2)) / math.sqrt(d // self.heads)
        att = att.masked_fill(torch.triu(torch.ones(s, s, dtype=torch.bool), 1), float("-inf"))
        y = (att.softmax(-1) @ v).transpose(1, 2).reshape(b, s, d)
        return self.o_proj(y)


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gate_proj = nn.Linear(c.dim, c.hidden, bias=False)
        self.up_proj = nn.Linear(c.dim, c.hidden, bias=False)
        self.down_proj = nn.Linear(c.hidden, c.dim, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.input_layernorm = RMSNorm(c.dim, c.eps)
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c.dim, c.eps)
        self.mlp = MLP(c)

    def forward(self, h):
        h = h + self.self_attn(self.input_layernorm(h))
        return h + self.mlp(self.post_attention_layernorm(h))


class TinyLlama(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab, c.dim)
        self.layers = nn.ModuleList(Block(c) for _ in range(c.layers))
        self.norm = RMSNorm(c.dim, c.eps)
        self.lm_head = nn.Linear(c.dim, c.vocab, bias=False)

    def forward(self, tokens):
        h = self.embed_tokens(tokens)
        for layer in self.layers:
            h = layer(h)
        return self.lm_head(self.norm(h))


# ---- data ------------------------------------------------------------------------------------

def load_bytes(name):
    return torch.from_numpy(np.frombuffer((ROOT / "data" / "sotu" / name).read_bytes(), np.uint8)
                            .astype(np.int64))


def random_windows(data, count, seq, gen):
    starts = torch.randint(0, len(data) - seq - 1, (count,), generator=gen)
    return torch.stack([data[s:s + seq + 1] for s in starts.tolist()])


def perplexity(model, windows):
    """exp(mean over windows of the mean next-token cross-entropy), as the GPTQ reference."""
    with torch.no_grad():
        losses = [F.cross_entropy(model(w[None, :-1])[0], w[1:]) for w in windows]
    return math.exp(torch.stack(losses).mean().item())


def train(model, data, steps, batch, seq, seed):
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    for _ in range(steps):
        w = random_windows(data, batch, seq, gen)
        loss = F.cross_entropy(model(w[:, :-1]).reshape(-1, Config.vocab), w[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return loss.item()


# ---- layer-wise quantization with forward hooks ----------------------------------------------

# GPTQ's true-sequential groups; the first linear of a group sees the group's (shared) input.
GROUPS = [("self_attn", ["q_proj", "k_proj", "v_proj"]), ("self_attn", ["o_proj"]),
          ("mlp", ["gate_proj", "up_proj"]), ("mlp", ["down_proj"])]


class _Stop(Exception):
    pass


def capture(block, parent, names, h):
    """Runs `block` on h until the group's input is seen: returns the group's input x [B, S, n]
    and, for output linears (o, down), the residual stream r [B, S, dim] they are added to."""
    got = {}
    lin = getattr(getattr(block, parent), names[0])

    def grab_input(_module, inputs):
        got["x"] = inputs[0].detach()
        raise _Stop

    def grab_mid(_module, inputs):  # input of the second norm = h + attn(...)
        got["r_mid"] = inputs[0].detach()

    hooks = [lin.register_forward_pre_hook(grab_input),
             block.post_attention_layernorm.register_forward_pre_hook(grab_mid)]
    try:
        block(h)
    except _Stop:
        pass
    finally:
        for k in hooks:
            k.remove()
    residual = None
    if loaq.llama_linear_role(names[0]) == "output":
        residual = h if names[0] == "o_proj" else got["r_mid"]
    return got["x"], residual


def quantize(fp_model, calib, method, bits, group, alpha, beta):
    """A quantized copy of fp_model; `calib` [N, seq] token windows."""
    qmodel = copy.deepcopy(fp_model)
    opts = dict(bits=bits, group_size=group)
    with torch.no_grad():
        if method == "rtn":
            for name, mod in qmodel.named_modules():
                if isinstance(mod, nn.Linear) and "lm_head" not in name:
                    mod.weight.copy_(torch.from_numpy(loaq.rtn(mod.weight, **opts).weight))
            return qmodel
        h_fp = fp_model.embed_tokens(calib)
        h_q = h_fp.clone()
        for fp_block, q_block in zip(fp_model.layers, qmodel.layers):
            for parent, names in GROUPS:
                x_hat, r_hat = capture(q_block, parent, names, h_q)   # quantized-model stream
                x, r = capture(fp_block, parent, names, h_fp)        # FP stream
                n = x.shape[-1]
                role = loaq.llama_linear_role(names[0])
                if method == "gptq":
                    stats = loaq.CalibrationAccumulator(n)
                    stats.add_batch(x_hat)        # torch tensors [B, S, n]: B sequences
                elif method == "gptaq":
                    stats = loaq.CalibrationAccumulator(n)
                    stats.add_batch(x_hat, x)
                elif method == "qep" or role == "input":
                    stats = loaq.ObjectiveStats(
                        loaq.LinearOutput(alpha=0.5 if method == "qep" else alpha), n=n)
                    stats.add(x_hat, x)
                for name in names:
                    lin = getattr(getattr(q_block, parent), name)
                    if method == "gptq":
                        res = loaq.gptq(lin.weight, stats, **opts)
                    elif method == "gptaq":
                        res = loaq.gptaq(lin.weight, stats, **opts)
                    elif method == "qep" or role == "input":
                        res = loaq.solve_objective(lin.weight, stats, **opts)
                    else:  # LoaQ on o / down: match after the next RMSNorm
                        st = loaq.ObjectiveStats(
                            loaq.NormalizedOutput(alpha=alpha, beta=beta, eps=Config.eps),
                            weight=lin.weight)
                        st.add(x_hat, x, r_hat, r)
                        res = loaq.solve_objective(lin.weight, st, **opts)
                    lin.weight.copy_(torch.from_numpy(res.weight))
            h_q = q_block(h_q)
            h_fp = fp_block(h_fp)
    return qmodel


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--settings", default="4:32,3:32,2:32", help="bits:group,... (group -1: per row)")
    ap.add_argument("--methods", default="rtn,gptq,gptaq,loaq")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--calib-windows", type=int, default=64)
    ap.add_argument("--eval-windows", type=int, default=64)
    ap.add_argument("--alpha", type=float, default=1.0, help="LoaQ α (input drift)")
    ap.add_argument("--beta", type=float, default=1.0, help="LoaQ β (residual drift)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    c = Config
    t0 = time.time()
    model = TinyLlama(c)
    calib_text, eval_text = load_bytes("calib_1790_1981.txt"), load_bytes("eval_1982_2021.txt")
    # The trained model is cached (build/), so a second run goes straight to quantization.
    cache = ROOT / "build" / f"tiny_llama_s{args.seed}_t{args.steps}_b{args.batch}.pt"
    if cache.exists():
        model.load_state_dict(torch.load(cache))
        trained = f"loaded the trained model from {cache.relative_to(ROOT)}"
    else:
        last = train(model, calib_text, args.steps, args.batch, c.seq, args.seed)
        cache.parent.mkdir(exist_ok=True)
        torch.save(model.state_dict(), cache)
        trained = (f"trained {args.steps} steps of {args.batch}×{c.seq} tokens in "
                   f"{time.time() - t0:.0f} s (last loss {last:.3f})")
    model.eval()
    gen = torch.Generator().manual_seed(args.seed + 1)
    calib = random_windows(calib_text, args.calib_windows, c.seq, gen)[:, :-1]
    step = (len(eval_text) - 1) // args.eval_windows
    evals = torch.stack([eval_text[i * step:i * step + c.seq + 1] for i in range(args.eval_windows)])
    print(f"{trained}; loaq {loaq.__version__} {loaq.build_info}")
    print(f"model: {c.layers} layers, dim {c.dim}, hidden {c.hidden}, byte vocabulary; calibration "
          f"{args.calib_windows}×{c.seq} tokens, evaluation {args.eval_windows}×{c.seq} tokens")
    print()
    print("| method | setting | perplexity | quantization time (s) |")
    print("|---|---|---|---|")
    print(f"| fp | - | {perplexity(model, evals):.3f} | - |")
    for setting in args.settings.split(","):
        bits, group = (int(v) for v in setting.split(":"))
        label = f"W{bits} " + ("per-row" if group == -1 else f"g{group}")
        for method in args.methods.split(","):
            t = time.time()
            q = quantize(model, calib, method, bits, group, args.alpha, args.beta)
            dt = time.time() - t
            name = method if method != "loaq" else f"loaq (α={args.alpha:g}, β={args.beta:g})"
            print(f"| {name} | {label} | {perplexity(q, evals):.3f} | {dt:.2f} |", flush=True)


if __name__ == "__main__":
    main()
