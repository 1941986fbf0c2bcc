// Equivalent per-input-channel scaling of a LLaMA-family model, and two ways to choose the scales:
// AWQ's per-group grid search and FAQ's future-aware aggregate (spec §8). Both return a
// full-precision model that computes the same function as their input; any method of
// methods.hpp (or quantize_rtn) then quantizes it.
//
// Scaling a group of linears that share an input x by s > 0: every linear W ← W·diag(s), and
// whatever produces x divides by s, so W·diag(s)·(x/s) = W·x exactly. Four groups per layer:
//
//   qkv      q,k,v  ← W·diag(s)   attention RMSNorm γ ← γ/s          (s: d_model)
//   o        o      ← W·diag(s)   v rows (and bias) ← diag(1/s)·v     (s: d_model; no GQA only)
//   gate_up  gate,up← W·diag(s)   MLP RMSNorm γ ← γ/s                 (s: d_model)
//   down     down   ← W·diag(s)   up rows (and bias) ← diag(1/s)·up   (s: d_ff)
//
// The RMSNorm divides h by ρ(h), which does not depend on γ, so dividing γ is exact; a rotated
// model (rotation.hpp: γ folded to ones) is scaled the same way. v → o is exact only when every
// context channel is one v row (n_heads == n_kv_heads): with grouped-query attention one v row
// feeds several heads' channels, which AWQ skips too. up → down needs down to read up's rows as
// they are, so it is unavailable with an online rotation of down's input (Config::down_rotation).
// With activation quantization on, no scaling is equivalent: scale the FP model first.
//
// AWQ (mit-han-lab/llm-awq, auto_scale.py; read for facts, not copied): per group, a = mean_t |x|
// per input channel; for ratio in {0, 1/20, ..., 19/20}, s = max(a^ratio, 1e-4)/sqrt(max·min),
// the group's linears are fake-quantized as Q(W·diag(s))·diag(1/s), the group's module (attention
// sub-block for q,k,v; o_proj; the MLP for gate,up; down_proj) runs on the calibration inputs and
// the ratio with the smallest output MSE is applied exactly. As AWQ's run_awq does, statistics
// and searches use the full-precision stream (previous layers scaled, which is the same function,
// never quantized): quantization happens only inside the search. AWQ's weight clipping
// (auto_clip) is not part of this step.
//
// FAQ (Lv et al., "Enhancing Post-Training Quantization via Future Activation Awareness",
// arXiv 2602.02538). The paper's, from its abstract only (its body was not available): scales set
// from current-layer activations suffer from quantization bias and calibration noise; use the
// activations of future layers, softly aggregated over a window ("window-wise preview"), to find
// the important channels, with a pre-searched configuration instead of a greedy per-layer search.
// Ours (a reconstruction, spec §8): the AWQ form s = ŝ^r/sqrt(max·min) with
//   ŝ_p = Σ_{k=0..K'} ω_k ā_{p+k},   ω_k = decay^k / Σ_{j≤K'} decay^j,   K' = min(K, P−1−p),
// over the P = 2·layers sub-block inputs of the residual stream in order (p = 2l: attention input
// of layer l, p = 2l+1: its MLP input; all in the d_model channels of the stream, so channel c
// means the same thing at every p); ā_p = a_p / mean_c a_p(c) so that each point contributes its
// shape, not its γ's magnitude. K, decay and r are fixed (FaqOptions' defaults and where they came
// from), no per-layer search. The inner groups read channels that exist only inside their
// sub-block (attention context, MLP hidden), so they have no future statistic: they use their own
// a with the same fixed r (the K = 0 rule). With GQA the o group is skipped, as in AWQ.
#pragma once

#include <Eigen/Core>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "../loaq.hpp"
#include "decoder.hpp"
#include "detail/parallel.hpp"

namespace loaq {
namespace llm {

// A group of linears sharing one input, with the producer that absorbs 1/s.
enum class ScaleGroup { qkv, o, gate_up, down };
inline const char* scale_group_name(ScaleGroup g) {
  static const char* names[] = {"q,k,v", "o", "gate,up", "down"};
  return names[int(g)];
}
inline constexpr ScaleGroup kScaleGroups[] = {ScaleGroup::qkv, ScaleGroup::o, ScaleGroup::gate_up,
                                              ScaleGroup::down};

// The linears that read the group's input.
inline std::vector<Linear> scaled_linears(ScaleGroup g) {
  switch (g) {
    case ScaleGroup::qkv: return {Linear::q, Linear::k, Linear::v};
    case ScaleGroup::o: return {Linear::o};
    case ScaleGroup::gate_up: return {Linear::gate, Linear::up};
    case ScaleGroup::down: return {Linear::down};
  }
  return {};
}

// Whether scaling the group is an exact equivalence for a model with this configuration.
inline bool can_scale(const Config& c, ScaleGroup g) {
  if (c.act.enabled()) return false;
  if (g == ScaleGroup::o) return c.n_heads == c.n_kv_heads;
  if (g == ScaleGroup::down) return !c.down_rotation;
  return true;
}

// W ← W·diag(s) for the group's linears, producer ← producer/s (table above). Throws
// std::invalid_argument when the group cannot be scaled (can_scale) or s is not a positive finite
// vector of the group's input width.
inline void scale_group(const Config& c, DecoderLayer& L, ScaleGroup g, const Eigen::VectorXf& s) {
  if (!can_scale(c, g))
    throw std::invalid_argument(std::string("scale_group: scaling ") + scale_group_name(g) +
                                " is not exact for this model (grouped-query attention, an online "
                                "rotation, or activation quantization)");
  const Eigen::Index n = L.weight(scaled_linears(g).front()).cols();
  if (s.size() != n || !s.allFinite() || !(s.array() > 0.f).all())
    throw std::invalid_argument(std::string("scale_group: ") + scale_group_name(g) +
                                " needs " + std::to_string(n) + " positive finite scales");
  for (Linear k : scaled_linears(g)) L.weight(k) = L.weight(k) * s.asDiagonal();
  auto divide_rows = [&](Linear producer) {
    L.weight(producer) = s.cwiseInverse().asDiagonal() * L.weight(producer);
    Eigen::VectorXf& b = L.bias[int(producer)];
    if (b.size()) b = b.cwiseQuotient(s);
  };
  switch (g) {
    case ScaleGroup::qkv: L.attn_norm = L.attn_norm.cwiseQuotient(s); break;
    case ScaleGroup::o: divide_rows(Linear::v); break;
    case ScaleGroup::gate_up: L.ffn_norm = L.ffn_norm.cwiseQuotient(s); break;
    case ScaleGroup::down: divide_rows(Linear::up); break;
  }
}

// s = max(a^ratio, 1e-4) / sqrt(max(s)·min(s)) (AWQ's form). Throws std::invalid_argument for a
// negative or non-finite statistic.
inline Eigen::VectorXf power_scales(const Eigen::VectorXf& a, double ratio) {
  if (a.size() == 0 || !a.allFinite() || (a.array() < 0.f).any())
    throw std::invalid_argument("power_scales: activation statistics must be finite and non-negative");
  Eigen::VectorXf s(a.size());
  for (Eigen::Index i = 0; i < a.size(); ++i)
    s(i) = float(std::max(std::pow(double(a(i)), ratio), 1e-4));
  s /= std::sqrt(s.maxCoeff() * s.minCoeff());
  return s;
}

// Per-channel mean |x| over every token (column) of every window. Throws std::runtime_error for a
// non-finite activation.
inline Eigen::VectorXf mean_abs(const std::vector<const Eigen::MatrixXf*>& xs) {
  if (xs.empty()) throw std::invalid_argument("mean_abs: no inputs");
  Eigen::VectorXd sum = Eigen::VectorXd::Zero(xs.front()->rows());
  double tokens = 0;
  for (const Eigen::MatrixXf* x : xs) {
    if (!x->allFinite()) throw std::runtime_error("scaling: non-finite activation in the calibration data");
    sum += x->cast<double>().cwiseAbs().rowwise().sum();
    tokens += double(x->cols());
  }
  return (sum / tokens).cast<float>();
}

// One FP layer run on every calibration window: what the scaling searches read.
struct LayerCalibration {
  std::vector<Eigen::MatrixXf> h;     // attention sub-block inputs (residual stream), d × T
  std::vector<Eigen::MatrixXf> mid;   // its outputs = MLP sub-block inputs
  std::vector<Eigen::MatrixXf> next;  // MLP outputs = the next layer's h
  std::vector<AttnCapture> attn;      // x_qkv, x_o
  std::vector<MlpCapture> mlp;        // x_gate_up, x_down

  // The group's input in every window.
  std::vector<const Eigen::MatrixXf*> inputs(ScaleGroup g) const {
    std::vector<const Eigen::MatrixXf*> xs;
    for (std::size_t w = 0; w < h.size(); ++w) {
      switch (g) {
        case ScaleGroup::qkv: xs.push_back(&attn[w].x_qkv); break;
        case ScaleGroup::o: xs.push_back(&attn[w].x_o); break;
        case ScaleGroup::gate_up: xs.push_back(&mlp[w].x_gate_up); break;
        case ScaleGroup::down: xs.push_back(&mlp[w].x_down); break;
      }
    }
    return xs;
  }
};

// Runs layer L on the residual-stream inputs `h` (one per window, moved in), one window per task.
inline LayerCalibration calibrate_layer(const Config& c, const DecoderLayer& L,
                                        std::vector<Eigen::MatrixXf> h, int threads = 1) {
  LayerCalibration k;
  const std::size_t W = h.size();
  k.h = std::move(h);
  k.mid.resize(W);
  k.next.resize(W);
  k.attn.resize(W);
  k.mlp.resize(W);
  detail::parallel_for(W, threads, [&](std::size_t w) {
    k.mid[w] = attention_block(c, L, k.h[w], &k.attn[w]);
    k.next[w] = mlp_block(c, L, k.mid[w], &k.mlp[w]);
  });
  return k;
}

// Mean squared difference between the group's module output with its linears fake-quantized as
// Q(W·diag(s))·diag(1/s) (RTN on `grid`, `group_size` columns per group) and the FP output, over
// every window of `k` (AWQ's loss). Modules: the attention sub-block (q,k,v), o_proj (o), the MLP
// (gate,up), down_proj (down).
template <class Grid>
double scaled_rtn_error(const Config& c, const DecoderLayer& L, ScaleGroup g, const LayerCalibration& k,
                        const Eigen::VectorXf& s, const Grid& grid, int group_size,
                        const ParamSearch& search = {}, int threads = 1) {
  DecoderLayer Lq = L;
  for (Linear lin : scaled_linears(g)) {
    QuantizedWeight<float> out;
    const Report r = rtn(L.weight(lin) * s.asDiagonal(), grid, group_size, search, out);
    if (!r.ok()) throw std::runtime_error(std::string("scaling: rtn of ") + linear_name(lin) + ": " + r.message);
    Lq.weight(lin) = out.weight * s.cwiseInverse().asDiagonal();
  }
  const std::size_t W = k.h.size();
  std::vector<double> sq(W);
  std::vector<double> count(W);
  detail::parallel_for(W, threads, [&](std::size_t w) {
    Eigen::MatrixXf d;
    switch (g) {
      case ScaleGroup::qkv: d = attention_block(c, Lq, k.h[w]) - k.mid[w]; break;
      case ScaleGroup::o: d = (Lq.o - L.o) * k.attn[w].x_o; break;
      case ScaleGroup::gate_up: d = mlp_block(c, Lq, k.mid[w]) - k.next[w]; break;
      case ScaleGroup::down: d = (Lq.down - L.down) * k.mlp[w].x_down; break;
    }
    sq[w] = d.cast<double>().squaredNorm();
    count[w] = double(d.size());
  });
  double total = 0, n = 0;
  for (std::size_t w = 0; w < W; ++w) total += sq[w], n += count[w];  // window order
  return total / n;
}

struct AwqOptions {
  int grid_points = 20;  // ratios 0, 1/n, ..., (n−1)/n
  ParamSearch search;    // RTN's parameters inside the search (AWQ: min-max)
  int threads = 1;       // windows in parallel; the result does not depend on it
};

// What the search chose for one group.
struct ScaleChoice {
  int layer = 0;
  ScaleGroup group = ScaleGroup::qkv;
  double ratio = 0;          // chosen exponent
  double error = 0;          // scaled_rtn_error at the chosen ratio
  double error_at_zero = 0;  // at ratio 0 (s = 1: plain RTN)
};

// AWQ: a copy of `fp` with every scalable group scaled by its searched s (header comment); the
// same function as `fp` in full precision. `grid` and `group_size` should be the final solver's.
// `choices` receives one entry per scaled group. Throws std::invalid_argument for bad arguments,
// std::runtime_error for non-finite activations.
template <class Grid>
Model awq_scale(const Model& fp, const std::vector<std::vector<int>>& calib, const Grid& grid,
                int group_size, const AwqOptions& o = {}, std::vector<ScaleChoice>* choices = nullptr) {
  if (calib.empty()) throw std::invalid_argument("awq_scale: no calibration windows");
  if (o.grid_points < 1) throw std::invalid_argument("awq_scale: grid_points must be at least 1");
  if (fp.config.act.enabled())
    throw std::invalid_argument("awq_scale: scale the full-precision model before enabling activation quantization");
  Model m = fp;
  std::vector<Eigen::MatrixXf> h(calib.size());
  for (std::size_t w = 0; w < calib.size(); ++w) {
    fp.check_length(calib[w].size());
    h[w] = fp.embed(calib[w]);
  }
  for (std::size_t l = 0; l < m.layers.size(); ++l) {
    DecoderLayer& L = m.layers[l];
    LayerCalibration k = calibrate_layer(m.config, L, std::move(h), o.threads);
    std::vector<std::pair<ScaleGroup, Eigen::VectorXf>> chosen;
    for (ScaleGroup g : kScaleGroups) {  // every search on the unscaled layer, as AWQ
      if (!can_scale(m.config, g)) continue;
      const Eigen::VectorXf a = mean_abs(k.inputs(g));
      ScaleChoice best;
      best.layer = int(l);
      best.group = g;
      Eigen::VectorXf best_s;
      for (int i = 0; i < o.grid_points; ++i) {
        const double ratio = double(i) / o.grid_points;
        const Eigen::VectorXf s = power_scales(a, ratio);
        const double e = scaled_rtn_error(m.config, L, g, k, s, grid, group_size, o.search, o.threads);
        if (i == 0) best.error_at_zero = e;
        if (i == 0 || e < best.error) {
          best.ratio = ratio;
          best.error = e;
          best_s = s;
        }
      }
      if (!std::isfinite(best.error)) throw std::runtime_error("awq_scale: non-finite output error");
      chosen.emplace_back(g, best_s);
      if (choices) choices->push_back(best);
    }
    for (const auto& [g, s] : chosen) scale_group(m.config, L, g, s);
    h = std::move(k.next);  // the scaled layer computes the same function
  }
  return m;
}

// FAQ's fixed configuration. Defaults: see the comment on the values.
struct FaqOptions {
  // Pre-searched once, on calibration data only: SmolLM2-135M-Instruct (Q4_1 GGUF), FAQ+RTN W3
  // sym g128, statistics from 16 random 256-token windows of data/sotu/calib_1790_1981.txt, scored
  // by the perplexity of its last 8 windows (held out); RTN alone 243.5. Command:
  //   loaq-faq-presearch --threads 1 --stats-windows 16 --heldout-windows 8
  //                      --windows 0,1,2,4,8 --ratios 0.1,0.25,0.5 --decays 0.5,0.8
  // Best: K = 2, decay 0.5, r = 0.25 (152.4); K = 0 (the current layer only) at best 171.1
  // (r = 0.1); every r = 0.5 was worse than RTN (482-851). 8 held-out windows: differences of a
  // few percent between neighbours are noise.
  int window = 2;        // K: the current and the next K sub-block inputs
  double decay = 0.5;    // ω_k ∝ decay^k
  double ratio = 0.25;   // r in s = ŝ^r
  int threads = 1;       // windows in parallel; the result does not depend on it
};

// Per-channel statistics of every sub-block input of the FP model.
struct FaqStatistics {
  std::vector<Eigen::VectorXf> stream;  // a_p, p = 2l (attention input), 2l + 1 (MLP input); d_model
  std::vector<Eigen::VectorXf> o;       // per layer: o_proj's input (attention context)
  std::vector<Eigen::VectorXf> down;    // per layer: down_proj's input (MLP hidden), d_ff
};

// One FP forward pass over the calibration windows, recording mean |x| of every linear input.
inline FaqStatistics faq_statistics(const Model& fp, const std::vector<std::vector<int>>& calib,
                                    int threads = 1) {
  if (calib.empty()) throw std::invalid_argument("faq_statistics: no calibration windows");
  FaqStatistics st;
  std::vector<Eigen::MatrixXf> h(calib.size());
  for (std::size_t w = 0; w < calib.size(); ++w) {
    fp.check_length(calib[w].size());
    h[w] = fp.embed(calib[w]);
  }
  for (const DecoderLayer& L : fp.layers) {
    LayerCalibration k = calibrate_layer(fp.config, L, std::move(h), threads);
    st.stream.push_back(mean_abs(k.inputs(ScaleGroup::qkv)));
    st.stream.push_back(mean_abs(k.inputs(ScaleGroup::gate_up)));
    st.o.push_back(mean_abs(k.inputs(ScaleGroup::o)));
    st.down.push_back(mean_abs(k.inputs(ScaleGroup::down)));
    h = std::move(k.next);
  }
  return st;
}

// ŝ_p = Σ_{k=0..K'} ω_k ā_{p+k}, ω_k = decay^k/Σ_{j≤K'} decay^j, K' = min(K, P−1−p),
// ā = a/mean(a) (a zero statistic stays zero).
inline Eigen::VectorXf faq_aggregate(const std::vector<Eigen::VectorXf>& a, std::size_t p, int window,
                                     double decay) {
  if (p >= a.size() || window < 0 || !(decay > 0) || !std::isfinite(decay))
    throw std::invalid_argument("faq_aggregate: need p < P, K ≥ 0 and a positive decay");
  const std::size_t last = std::min(a.size() - 1, p + std::size_t(window));
  Eigen::VectorXd sum = Eigen::VectorXd::Zero(a[p].size());
  double weights = 0, w = 1;
  for (std::size_t q = p; q <= last; ++q, w *= decay) {
    if (a[q].size() != a[p].size() || !a[q].allFinite())
      throw std::invalid_argument("faq_aggregate: statistics of different widths or non-finite");
    const double mean = a[q].cast<double>().mean();
    if (mean > 0) sum += (w / mean) * a[q].cast<double>();
    weights += w;
  }
  return (sum / weights).cast<float>();
}

// FAQ: a copy of `fp` with every scalable group scaled by s = power_scales(ŝ, r) (header comment);
// the same function as `fp` in full precision.
inline Model faq_scale(const Model& fp, const FaqStatistics& st, const FaqOptions& o = {}) {
  const std::size_t layers = fp.layers.size();
  if (st.stream.size() != 2 * layers || st.o.size() != layers || st.down.size() != layers)
    throw std::invalid_argument("faq_scale: statistics are not from this model");
  if (fp.config.act.enabled())
    throw std::invalid_argument("faq_scale: scale the full-precision model before enabling activation quantization");
  Model m = fp;
  for (std::size_t l = 0; l < layers; ++l) {
    DecoderLayer& L = m.layers[l];
    auto apply = [&](ScaleGroup g, const Eigen::VectorXf& s_hat) {
      if (can_scale(m.config, g)) scale_group(m.config, L, g, power_scales(s_hat, o.ratio));
    };
    apply(ScaleGroup::qkv, faq_aggregate(st.stream, 2 * l, o.window, o.decay));
    apply(ScaleGroup::o, st.o[l]);
    apply(ScaleGroup::gate_up, faq_aggregate(st.stream, 2 * l + 1, o.window, o.decay));
    apply(ScaleGroup::down, st.down[l]);
  }
  return m;
}
inline Model faq_scale(const Model& fp, const std::vector<std::vector<int>>& calib, const FaqOptions& o = {}) {
  return faq_scale(fp, faq_statistics(fp, calib, o.threads), o);
}

}  // namespace llm
}  // namespace loaq
