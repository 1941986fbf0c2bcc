// QuaRot-style rotation of a LLaMA-family model: orthogonal changes of basis that leave the
// full-precision network exactly equivalent but spread activation outliers over all channels, so
// per-token activation quantization (W4A4) loses far less.
//
//   1. Fold every RMSNorm γ into the linears that read it (q,k,v; gate,up; the LM head), so each
//      norm is a plain h/ρ(h), which commutes with any orthogonal Q: ρ(Qᵀh) = ρ(h).
//   2. Rotate the residual stream, h → Qᵀh: the embeddings E → E·Q, every input linear
//      W_in → W_in·Q, every output linear (o, down) W_out → Qᵀ·W_out (and its bias b → Qᵀb),
//      the LM head → head·Q. Tied embeddings are untied (the head carries the final norm's γ).
//   3. Online Hadamard on down_proj's input: the MLP computes down·Qᵀ·(Q a) (Config::down_rotation);
//      the activations down_proj quantizes are Q a.
//   4. Per-head Hadamard between v_proj and o_proj: each kv head's rows of v (and bias) → H·v_h,
//      each head's columns of o → o_h·Hᵀ. Attention mixes tokens, not channels, so the context
//      of every head is H·ctx_h and o undoes it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "../rotate/hadamard.hpp"
#include "../subblock/rmsnorm.hpp"
#include "decoder.hpp"

namespace loaq {
namespace llm {

struct RotationOptions {
  bool randomized = true;     // residual Hadamard with a seeded ±1 diagonal (QuaRot's choice)
  std::uint64_t seed = 0;     // of the diagonal (and of a random orthogonal fallback)
  bool online_down = true;    // step 3
  bool head_rotation = true;  // step 4
};

// A copy of `m` rotated as above: the same function in exact arithmetic (float rounding aside).
// Transforms whose order has no Hadamard construction fall back to a seeded random orthogonal
// matrix; their warnings are appended to `warnings` when it is given. The model must carry no
// run-time transforms yet (Config::act off, no down_rotation): std::invalid_argument otherwise.
inline Model rotate_model(const Model& m, const RotationOptions& o = {},
                          std::vector<std::string>* warnings = nullptr) {
  const Config& c = m.config;
  if (c.act.enabled() || c.down_rotation)
    throw std::invalid_argument("rotate_model: rotate the full-precision model before enabling "
                                "activation quantization or online rotations");
  auto note = [&](const OrthogonalTransform& t, const char* what) {
    if (warnings && !t.warning().empty()) warnings->push_back(std::string(what) + ": " + t.warning());
  };
  Model r = m;
  const OrthogonalTransform Q = OrthogonalTransform::hadamard(c.d_model, o.randomized, o.seed);
  note(Q, "residual stream");

  // 1 + 2: the LM head gets the final norm's γ, then every reader of the residual stream Q.
  r.output = m.lm_head() * m.output_norm.asDiagonal();  // unties tied embeddings
  r.output_norm.setOnes();
  Q.apply_right(r.output);
  Q.apply_right(r.embedding);
  for (DecoderLayer& L : r.layers) {
    fold_rmsnorm(L.attn_norm, {&L.q, &L.k, &L.v});
    fold_rmsnorm(L.ffn_norm, {&L.gate, &L.up});
    for (Linear k : {Linear::q, Linear::k, Linear::v, Linear::gate, Linear::up})
      Q.apply_right(L.weight(k));
    for (Linear k : {Linear::o, Linear::down}) {
      Q.apply_transpose(L.weight(k));
      if (L.bias[int(k)].size()) Q.apply_transpose(L.bias[int(k)]);
    }
  }

  // 3: down_proj reads Q_f·a.
  if (o.online_down) {
    auto Qf = std::make_shared<const OrthogonalTransform>(OrthogonalTransform::hadamard(c.d_ff));
    note(*Qf, "down_proj input");
    for (DecoderLayer& L : r.layers) Qf->apply_right_transpose(L.down);
    r.config.down_rotation = std::move(Qf);
  }

  // 4: v_h → H·v_h per kv head, o_h → o_h·Hᵀ per query head.
  if (o.head_rotation) {
    const OrthogonalTransform H = OrthogonalTransform::hadamard(c.head_dim);
    note(H, "attention heads");
    const int hd = c.head_dim;
    for (DecoderLayer& L : r.layers) {
      Eigen::VectorXf& bv = L.bias[int(Linear::v)];
      for (int h = 0; h < c.n_kv_heads; ++h) {
        auto rows = L.v.middleRows(h * hd, hd);
        H.apply(rows);
        if (bv.size()) {
          auto b = bv.segment(h * hd, hd);
          H.apply(b);
        }
      }
      for (int h = 0; h < c.n_heads; ++h) {
        auto cols = L.o.middleCols(h * hd, hd);
        H.apply_right_transpose(cols);
      }
    }
  }
  return r;
}

}  // namespace llm
}  // namespace loaq
