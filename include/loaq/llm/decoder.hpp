// LLaMA-family decoder in float, loaded from a GGUF file, written so that a quantization pipeline
// can run it layer by layer and sub-block by sub-block and swap any linear's weight. A model
// family is data (a Config read from GGUF metadata), not a type: SmolLM2 and Qwen2.5 are two
// configurations.
//
// Layout: hidden states are d×T (one column per token, one sequence, causal attention).
// Weights are Eigen::MatrixXf in PyTorch layout (out × in), y = W x (+ b when the file has one).
//
// Rotary embedding: llama.cpp's converter permutes the rows of q/k inside each head for the
// "llama" architecture so that its "normal" RoPE can rotate adjacent pairs (x[2i], x[2i+1]). The
// loader undoes that permutation, so q and k here have Hugging Face's row order and RoPE is HF's
// rotate_half (pairs (i, i+d/2)). Scores are identical either way; HF order makes weights
// comparable with HF checkpoints. "qwen2" files are not permuted and load as they are.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "../grid/activation.hpp"
#include "../io/gguf.hpp"
#include "../rotate/hadamard.hpp"

namespace loaq {
namespace llm {

// What the forward pass needs to know about one model (llama.cpp's GGUF keys in brackets).
struct Config {
  std::string architecture = "llama";  // general.architecture
  int n_layers = 0;        // block_count
  int d_model = 0;         // embedding_length
  int n_heads = 0;         // attention.head_count
  int n_kv_heads = 0;      // attention.head_count_kv (grouped-query attention when < n_heads)
  int head_dim = 0;        // d_model / n_heads
  int d_ff = 0;            // feed_forward_length
  int vocab_size = 0;      // rows of token_embd.weight
  int context_length = 0;  // context_length
  float rope_theta = 10000.f;  // rope.freq_base
  float rms_eps = 1e-5f;       // attention.layer_norm_rms_epsilon, used by every RMSNorm
  bool rope_rows_permuted = true;  // q/k rows in llama.cpp's interleaved order in the file

  // Run-time transforms (never read from a file): set by rotate_model (rotation.hpp) and by
  // weight-activation quantization.
  // Every decoder linear's input is fake-quantized per token (bits 16 = off); the LM head's is not.
  ActivationQuantSpec act;
  // Online rotation of down_proj's input: the MLP computes down·(Q a) with down holding W·Qᵀ, so
  // the activations it quantizes are rotated (QuaRot's online Hadamard). Null = none.
  std::shared_ptr<const OrthogonalTransform> down_rotation;

  // From the "<arch>.*" keys (llama.cpp names). Throws loaq::io::format_error if inconsistent.
  static Config from_gguf(const loaq::io::GgufReader& g) {
    using loaq::io::format_error;
    const std::string a = g.get_string("general.architecture");
    // "llama" covers LLaMA, SmolLM2 and Mistral-style files; its converter permutes q/k rows for
    // llama.cpp's adjacent-pair RoPE. "qwen2" files keep Hugging Face's row order (llama.cpp runs
    // them with NEOX RoPE, which is rotate_half) and add q/k/v biases, which load() reads
    // wherever a file has them.
    if (a != "llama" && a != "qwen2")
      throw format_error("model: architecture '" + a + "' is not supported (llama, qwen2)");
    Config c;
    c.architecture = a;
    c.rope_rows_permuted = a == "llama";
    auto dim = [&](const std::string& key, std::uint64_t def, bool required) {
      const std::uint64_t v = required ? g.get_uint(a + key) : g.get_uint(a + key, def);
      if (v == 0 || v > (1u << 20)) throw format_error(a + key + " = " + std::to_string(v) + " is out of range");
      return int(v);
    };
    c.n_layers = dim(".block_count", 0, true);
    c.d_model = dim(".embedding_length", 0, true);
    c.d_ff = dim(".feed_forward_length", 0, true);
    c.n_heads = dim(".attention.head_count", 0, true);
    c.n_kv_heads = dim(".attention.head_count_kv", std::uint64_t(c.n_heads), false);
    c.context_length = dim(".context_length", 2048, false);
    c.rope_theta = float(g.get_double(a + ".rope.freq_base", 10000.0));
    c.rms_eps = float(g.get_double(a + ".attention.layer_norm_rms_epsilon", 1e-5));
    if (c.d_model % c.n_heads != 0 || c.n_heads % c.n_kv_heads != 0)
      throw format_error("model: " + std::to_string(c.n_heads) + " heads / " +
                         std::to_string(c.n_kv_heads) + " kv heads do not divide width " +
                         std::to_string(c.d_model));
    c.head_dim = c.d_model / c.n_heads;
    if (c.head_dim % 2 != 0) throw format_error("model: head dimension must be even for RoPE");
    if (g.get_uint(a + ".rope.dimension_count", std::uint64_t(c.head_dim)) != std::uint64_t(c.head_dim))
      throw format_error("model: partial rotary embeddings are not supported");
    if (g.get_string(a + ".rope.scaling.type", "none") != "none")
      throw format_error("model: RoPE scaling is not supported");
    if (!(c.rope_theta > 0.f) || !(c.rms_eps > 0.f))
      throw format_error("model: rope.freq_base and layer_norm_rms_epsilon must be positive");
    const loaq::io::GgufTensor& e = g.tensor("token_embd.weight");
    if (e.dims.size() != 2 || e.dims[1] == 0 || e.dims[1] > (1u << 24))
      throw format_error("model: token_embd.weight has a bad shape");
    c.vocab_size = int(e.dims[1]);
    return c;
  }
};

// The seven linears of one decoder layer, in quantization order.
enum class Linear { q, k, v, o, gate, up, down };
inline const char* linear_name(Linear l) {
  static const char* names[] = {"q_proj", "k_proj", "v_proj", "o_proj",
                                "gate_proj", "up_proj", "down_proj"};
  return names[int(l)];
}

// One decoder layer's weights (d = d_model, kv = n_kv_heads·head_dim, f = d_ff).
struct DecoderLayer {
  Eigen::VectorXf attn_norm;  // (d) RMSNorm γ before attention
  Eigen::MatrixXf q;          // (d, d)
  Eigen::MatrixXf k;          // (kv, d)
  Eigen::MatrixXf v;          // (kv, d)
  Eigen::MatrixXf o;          // (d, d)
  Eigen::VectorXf ffn_norm;   // (d) RMSNorm γ before the MLP
  Eigen::MatrixXf gate;       // (f, d)
  Eigen::MatrixXf up;         // (f, d)
  Eigen::MatrixXf down;       // (d, f)
  // Biases, one per linear in Linear order; empty = none (LLaMA has none, Qwen2 has q, k, v).
  Eigen::VectorXf bias[7];

  Eigen::MatrixXf& weight(Linear l) {
    Eigen::MatrixXf* w[] = {&q, &k, &v, &o, &gate, &up, &down};
    return *w[int(l)];
  }
  const Eigen::MatrixXf& weight(Linear l) const { return const_cast<DecoderLayer*>(this)->weight(l); }
  const Eigen::VectorXf& bias_of(Linear l) const { return bias[int(l)]; }
};

// y = W x (+ b): one linear on d×T inputs.
inline Eigen::MatrixXf linear(const Eigen::MatrixXf& W, const Eigen::VectorXf& b,
                              const Eigen::MatrixXf& x) {
  Eigen::MatrixXf y = W * x;
  if (b.size()) y.colwise() += b;
  return y;
}

// What a sub-block saw, for collecting calibration statistics. Null pointer = nothing recorded.
// Each is what the linear reads, after the run-time transforms of Config (rotation, quantization).
struct AttnCapture {
  Eigen::MatrixXf x_qkv;  // RMSNorm(h): the input of q/k/v_proj, d_model × T
  Eigen::MatrixXf x_o;    // attention context: the input of o_proj, (heads·head_dim) × T
};
struct MlpCapture {
  Eigen::MatrixXf x_gate_up;  // RMSNorm(h): the input of gate/up_proj, d_model × T
  Eigen::MatrixXf x_down;     // silu(gate)·up: the input of down_proj, d_ff × T
};

// RMSNorm per token (column): γ ⊙ h / sqrt(mean(h²) + ε).
inline Eigen::MatrixXf rms_norm(const Eigen::MatrixXf& h, const Eigen::VectorXf& gamma, float eps) {
  const Eigen::RowVectorXf inv =
      ((h.array().square().colwise().sum() / float(h.rows())) + eps).rsqrt().matrix();
  return gamma.asDiagonal() * (h * inv.asDiagonal());
}

// What a decoder linear reads: x itself, or x fake-quantized per token when the model quantizes
// activations. Throws std::runtime_error when x cannot be quantized (a non-finite activation).
inline Eigen::MatrixXf linear_input(const Config& cfg, Eigen::MatrixXf x) {
  if (cfg.act.enabled()) {
    const Report r = fake_quantize_activations(x, cfg.act);
    if (!r.ok()) throw std::runtime_error("activation quantization: " + r.message);
  }
  return x;
}
// The input of q/k/v_proj (attention) or gate/up_proj (MLP): RMSNorm(h), as the linears read it.
inline Eigen::MatrixXf norm_input(const Config& cfg, const Eigen::MatrixXf& h, const Eigen::VectorXf& gamma) {
  return linear_input(cfg, rms_norm(h, gamma, cfg.rms_eps));
}
// The input of down_proj from the MLP's hidden activation silu(gate)·up: rotated online, then
// quantized.
inline Eigen::MatrixXf down_input(const Config& cfg, Eigen::MatrixXf a) {
  if (cfg.down_rotation) cfg.down_rotation->apply(a);
  return linear_input(cfg, std::move(a));
}

// HF rotate_half RoPE on every head of x ((n_heads·head_dim) × T), positions pos0, pos0+1, ...
inline void apply_rope(Eigen::MatrixXf& x, int n_heads, int head_dim, float theta, int pos0 = 0) {
  const int half = head_dim / 2;
  for (Eigen::Index t = 0; t < x.cols(); ++t) {
    const double pos = double(pos0 + t);
    for (int i = 0; i < half; ++i) {
      const double angle = pos * std::pow(double(theta), -2.0 * i / head_dim);
      const float c = float(std::cos(angle)), s = float(std::sin(angle));
      for (int h = 0; h < n_heads; ++h) {
        float& a = x(h * head_dim + i, t);
        float& b = x(h * head_dim + i + half, t);
        const float a0 = a, b0 = b;
        a = a0 * c - b0 * s;
        b = b0 * c + a0 * s;
      }
    }
  }
}

// Queries are taken in blocks of this many tokens, and a block's scores are formed only for the
// keys up to its last query: a 2048-token window forms 56% of the T×T scores (and of the V·S
// product) instead of all of them. Windows up to one block long are computed as one block.
inline constexpr Eigen::Index kAttentionQueryBlock = 256;

// Causal softmax attention with grouped kv heads: context (n_heads·head_dim) × T.
inline Eigen::MatrixXf causal_attention(const Config& cfg, const Eigen::MatrixXf& Q,
                                        const Eigen::MatrixXf& K, const Eigen::MatrixXf& V) {
  const int hd = cfg.head_dim, group = cfg.n_heads / cfg.n_kv_heads;
  const Eigen::Index T = Q.cols(), B = std::min(T, kAttentionQueryBlock);
  const float scale = 1.f / std::sqrt(float(hd));
  Eigen::MatrixXf ctx(Q.rows(), T);
  Eigen::MatrixXf S(T, B);
  for (int h = 0; h < cfg.n_heads; ++h) {
    const int kv = h / group;
    for (Eigen::Index t0 = 0; t0 < T; t0 += B) {
      const Eigen::Index queries = std::min(B, T - t0), keys = t0 + queries;
      // S(s, j): score of key s for query t0 + j; each column is one query's distribution.
      auto s = S.topLeftCorner(keys, queries);
      s.noalias() = K.block(kv * hd, 0, hd, keys).transpose() * Q.block(h * hd, t0, hd, queries);
      for (Eigen::Index j = 0; j < queries; ++j) {
        const Eigen::Index seen = t0 + j + 1;  // keys 0..t0+j
        auto col = s.col(j).head(seen);
        col *= scale;
        col = (col.array() - col.maxCoeff()).exp().matrix();
        col /= col.sum();
        s.col(j).tail(keys - seen).setZero();
      }
      ctx.block(h * hd, t0, hd, queries).noalias() = V.block(kv * hd, 0, hd, keys) * s;
    }
  }
  return ctx;
}

// h + W x (+ b): an output linear (o_proj, down_proj) added to the residual stream it writes.
inline Eigen::MatrixXf residual_add(const Eigen::MatrixXf& h, const Eigen::MatrixXf& W,
                                    const Eigen::VectorXf& b, const Eigen::MatrixXf& x) {
  Eigen::MatrixXf out = h + W * x;  // one expression: Eigen adds the product into h
  if (b.size()) out.colwise() += b;
  return out;
}

// The input of o_proj: attention(RMSNorm(h)) as o_proj reads it; `x_qkv` (if given) receives
// the input of q/k/v_proj.
inline Eigen::MatrixXf attention_context(const Config& cfg, const DecoderLayer& L,
                                         const Eigen::MatrixXf& h, Eigen::MatrixXf* x_qkv = nullptr) {
  const Eigen::MatrixXf x = norm_input(cfg, h, L.attn_norm);
  Eigen::MatrixXf Q = linear(L.q, L.bias_of(Linear::q), x), K = linear(L.k, L.bias_of(Linear::k), x);
  const Eigen::MatrixXf V = linear(L.v, L.bias_of(Linear::v), x);
  apply_rope(Q, cfg.n_heads, cfg.head_dim, cfg.rope_theta);
  apply_rope(K, cfg.n_kv_heads, cfg.head_dim, cfg.rope_theta);
  if (x_qkv) *x_qkv = x;
  return linear_input(cfg, causal_attention(cfg, Q, K, V));
}

// h + o_proj(attention(RMSNorm(h))).
inline Eigen::MatrixXf attention_block(const Config& cfg, const DecoderLayer& L,
                                       const Eigen::MatrixXf& h, AttnCapture* cap = nullptr) {
  Eigen::MatrixXf x_qkv;
  Eigen::MatrixXf ctx = attention_context(cfg, L, h, cap ? &x_qkv : nullptr);
  Eigen::MatrixXf out = residual_add(h, L.o, L.bias_of(Linear::o), ctx);
  if (cap) {
    cap->x_qkv = std::move(x_qkv);
    cap->x_o = std::move(ctx);
  }
  return out;
}

// The input of down_proj: silu(gate_proj(x)) ⊙ up_proj(x), x = RMSNorm(h), as down_proj reads
// it (linear_input and down_input add the run-time transforms); `x_gate_up` (if given)
// receives x.
inline Eigen::MatrixXf mlp_hidden(const Config& cfg, const DecoderLayer& L, const Eigen::MatrixXf& h,
                                  Eigen::MatrixXf* x_gate_up = nullptr) {
  const Eigen::MatrixXf x = norm_input(cfg, h, L.ffn_norm);
  const Eigen::ArrayXXf g = linear(L.gate, L.bias_of(Linear::gate), x).array();
  if (x_gate_up) *x_gate_up = x;
  return down_input(
      cfg, ((g / (1.f + (-g).exp())) * linear(L.up, L.bias_of(Linear::up), x).array()).matrix());
}

// h + down_proj(silu(gate_proj(x)) ⊙ up_proj(x)), x = RMSNorm(h).
inline Eigen::MatrixXf mlp_block(const Config& cfg, const DecoderLayer& L, const Eigen::MatrixXf& h,
                                 MlpCapture* cap = nullptr) {
  Eigen::MatrixXf x_gate_up;
  Eigen::MatrixXf a = mlp_hidden(cfg, L, h, cap ? &x_gate_up : nullptr);
  Eigen::MatrixXf out = residual_add(h, L.down, L.bias_of(Linear::down), a);
  if (cap) {
    cap->x_gate_up = std::move(x_gate_up);
    cap->x_down = std::move(a);
  }
  return out;
}

inline Eigen::MatrixXf decoder_layer(const Config& cfg, const DecoderLayer& L,
                                     const Eigen::MatrixXf& h, AttnCapture* attn = nullptr,
                                     MlpCapture* mlp = nullptr) {
  return mlp_block(cfg, L, attention_block(cfg, L, h, attn), mlp);
}

// A whole decoder-only model: embeddings, layers, final norm and LM head.
struct Model {
  Config config;
  Eigen::MatrixXf embedding;    // (vocab, d) row i = token i
  std::vector<DecoderLayer> layers;
  Eigen::VectorXf output_norm;  // (d) final RMSNorm γ
  Eigen::MatrixXf output;       // (vocab, d) LM head; empty = tied to the embedding

  static Model load(const std::string& path) { return load(loaq::io::GgufReader(path)); }
  // Throws loaq::io::format_error for a missing or misshapen tensor, and for one holding NaN or
  // Inf (a lying scale in a block format decodes to that), naming it.
  static Model load(const loaq::io::GgufReader& g) {
    Model m;
    const Config& c = m.config = Config::from_gguf(g);
    const int d = c.d_model;
    m.embedding = g.matrix("token_embd.weight", c.vocab_size, d);
    if (g.find_tensor("output.weight")) m.output = g.matrix("output.weight", c.vocab_size, d);
    m.output_norm = g.vector("output_norm.weight", d);
    load_layers(g, m);
    auto check = [&](const std::string& name, const auto& value) {
      if (!value.allFinite())
        throw loaq::io::format_error("model: tensor '" + name + "' holds NaN or Inf");
    };
    check("token_embd.weight", m.embedding);
    check("output.weight", m.output);
    check("output_norm.weight", m.output_norm);
    for (int i = 0; i < c.n_layers; ++i) {
      const DecoderLayer& L = m.layers[std::size_t(i)];
      const std::string p = "blk." + std::to_string(i) + ".";
      check(p + "attn_norm.weight", L.attn_norm);
      check(p + "ffn_norm.weight", L.ffn_norm);
      for (int k = 0; k < 7; ++k) {
        check(p + linear_name(Linear(k)) + " weight", L.weight(Linear(k)));
        check(p + linear_name(Linear(k)) + " bias", L.bias[k]);
      }
    }
    return m;
  }

 private:
  static void load_layers(const loaq::io::GgufReader& g, Model& m) {
    const Config& c = m.config;
    const int d = c.d_model, kv = c.n_kv_heads * c.head_dim;
    m.layers.resize(std::size_t(c.n_layers));
    for (int i = 0; i < c.n_layers; ++i) {
      const std::string p = "blk." + std::to_string(i) + ".";
      DecoderLayer& L = m.layers[std::size_t(i)];
      L.attn_norm = g.vector(p + "attn_norm.weight", d);
      L.ffn_norm = g.vector(p + "ffn_norm.weight", d);
      L.q = g.matrix(p + "attn_q.weight", d, d);
      L.k = g.matrix(p + "attn_k.weight", kv, d);
      L.v = g.matrix(p + "attn_v.weight", kv, d);
      L.o = g.matrix(p + "attn_output.weight", d, d);
      L.gate = g.matrix(p + "ffn_gate.weight", c.d_ff, d);
      L.up = g.matrix(p + "ffn_up.weight", c.d_ff, d);
      L.down = g.matrix(p + "ffn_down.weight", d, c.d_ff);
      static const char* files[] = {"attn_q", "attn_k", "attn_v", "attn_output",
                                    "ffn_gate", "ffn_up", "ffn_down"};
      for (int k = 0; k < 7; ++k)
        if (g.find_tensor(p + files[k] + ".bias"))
          L.bias[k] = g.vector(p + files[k] + ".bias", L.weight(Linear(k)).rows());
      if (c.rope_rows_permuted) {
        L.q = unpermute_rope_rows(L.q, c.n_heads, c.head_dim);
        L.k = unpermute_rope_rows(L.k, c.n_kv_heads, c.head_dim);
        for (Linear qk : {Linear::q, Linear::k})
          if (L.bias[int(qk)].size())
            L.bias[int(qk)] = unpermute_rope_rows(L.bias[int(qk)], qk == Linear::q ? c.n_heads : c.n_kv_heads,
                                                  c.head_dim);
      }
    }
  }

 public:
  // Inverse of llama.cpp's convert permutation: file row h·hd + 2j + a holds HF row
  // h·hd + a·hd/2 + j (a ∈ {0, 1}, j < hd/2).
  static Eigen::MatrixXf unpermute_rope_rows(const Eigen::MatrixXf& W, int n_heads, int head_dim) {
    Eigen::MatrixXf out(W.rows(), W.cols());
    const int half = head_dim / 2;
    for (int h = 0; h < n_heads; ++h)
      for (int j = 0; j < half; ++j)
        for (int a = 0; a < 2; ++a)
          out.row(h * head_dim + a * half + j) = W.row(h * head_dim + 2 * j + a);
    return out;
  }

  const Eigen::MatrixXf& lm_head() const { return output.size() ? output : embedding; }

  // Token ids to hidden states d_model × T. Throws std::out_of_range for a bad id.
  Eigen::MatrixXf embed(const std::vector<int>& tokens) const {
    Eigen::MatrixXf h(config.d_model, Eigen::Index(tokens.size()));
    for (std::size_t t = 0; t < tokens.size(); ++t) {
      if (tokens[t] < 0 || tokens[t] >= config.vocab_size)
        throw std::out_of_range("model: token id " + std::to_string(tokens[t]) +
                                " outside the vocabulary");
      h.col(Eigen::Index(t)) = embedding.row(tokens[t]).transpose();
    }
    return h;
  }

  // Final RMSNorm and LM head: logits vocab × T.
  Eigen::MatrixXf logits(const Eigen::MatrixXf& h) const {
    return lm_head() * rms_norm(h, output_norm, config.rms_eps);
  }

  // Logits of every position of one causal sequence: vocab × T.
  Eigen::MatrixXf forward(const std::vector<int>& tokens) const {
    check_length(tokens.size());
    Eigen::MatrixXf h = embed(tokens);
    for (const DecoderLayer& L : layers) h = decoder_layer(config, L, h);
    return logits(h);
  }

  void check_length(std::size_t T) const {
    if (T == 0 || T > std::size_t(config.context_length))
      throw std::invalid_argument("model: sequence length " + std::to_string(T) +
                                  " outside 1.." + std::to_string(config.context_length));
  }
};

}  // namespace llm
}  // namespace loaq
