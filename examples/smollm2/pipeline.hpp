// Sequential layer-by-layer PTQ of a LLaMA-style model (spec §6, GPTQ --true-sequential order):
// per decoder layer, run the FP layer on the FP stream (inputs of every linear and the FP
// residuals), then quantize [q,k,v] → [o] → [gate,up] → [down], re-running the partially
// quantized layer on the quantized stream before each group; then advance both streams.
#pragma once

#include <chrono>
#include <functional>
#include <stdexcept>
#include <string>
#include <variant>

#include <loaq/loaq.hpp>

#include "model.hpp"

namespace smollm2 {

enum class Method { fp, rtn, gptq, gptaq, qep, loaq };

inline const char* method_name(Method m) {
  static const char* names[] = {"fp", "rtn", "gptq", "gptaq", "qep", "loaq"};
  return names[int(m)];
}
inline Method parse_method(const std::string& s) {
  for (Method m : {Method::fp, Method::rtn, Method::gptq, Method::gptaq, Method::qep, Method::loaq})
    if (s == method_name(m)) return m;
  throw std::invalid_argument("unknown method '" + s + "' (fp, rtn, gptq, gptaq, qep, loaq)");
}

struct QuantConfig {
  Method method = Method::gptq;
  int bits = 4;
  int group = 128;               // −1: per row
  bool sym = false, act_order = false, static_groups = false, mse = false;
  double percdamp = 0.01;
  int block = 128;
  double alpha = -1;             // < 0: the method's default (GPTAQ 0.25, QEP 0.5, LoaQ 1)
  double beta = 1;               // LoaQ residual-drift weight
  bool loaq_normalized = true;   // LoaQ output linears: NSOA (true) or SLOA (false)

  double effective_alpha() const {
    if (alpha >= 0) return alpha;
    return method == Method::gptaq ? 0.25 : method == Method::qep ? 0.5 : 1.0;
  }
  std::string label() const {
    std::string s = "W" + std::to_string(bits) + (group > 0 ? " g" + std::to_string(group) : " per-row");
    if (sym) s += " sym";
    if (act_order) s += " act";
    return s;
  }
};

// One calibration statistic for a group of linears that share their input.
using GroupStats = std::variant<loaq::CalibrationAccumulator<double>,
                                loaq::ObjectiveStats<loaq::LinearOutput>,
                                loaq::ObjectiveStats<loaq::ResidualOutput>,
                                loaq::ObjectiveStats<loaq::NormalizedOutput>>;

namespace detail {

template <class F>
void with_grid(const QuantConfig& c, F&& f) {
  switch (c.bits) {
    case 2: return f(loaq::UniformGrid<float, 2>(c.sym));
    case 3: return f(loaq::UniformGrid<float, 3>(c.sym));
    case 4: return f(loaq::UniformGrid<float, 4>(c.sym));
    case 5: return f(loaq::UniformGrid<float, 5>(c.sym));
    case 6: return f(loaq::UniformGrid<float, 6>(c.sym));
    case 7: return f(loaq::UniformGrid<float, 7>(c.sym));
    case 8: return f(loaq::UniformGrid<float, 8>(c.sym));
    default: throw std::invalid_argument("bits must be in 2..8");
  }
}

// Statistics each method needs for a group: plain Ĥ (GPTQ), Ĥ and C (GPTAQ), or an objective.
inline GroupStats make_stats(const QuantConfig& c, loaq::LinearRole role, const Eigen::MatrixXf& W_fp,
                             float rms_eps) {
  const Eigen::Index n = W_fp.cols();
  const double a = c.effective_alpha();
  switch (c.method) {
    case Method::gptq: return loaq::CalibrationAccumulator<double>(n);
    case Method::gptaq: return loaq::CalibrationAccumulator<double>(n);
    case Method::qep: return loaq::ObjectiveStats<loaq::LinearOutput>(n, {a});
    default:
      if (role == loaq::LinearRole::Input) return loaq::ObjectiveStats<loaq::LinearOutput>(n, {a});
      if (c.loaq_normalized)
        return loaq::ObjectiveStats<loaq::NormalizedOutput>(W_fp, {a, c.beta, double(rms_eps), true});
      return loaq::ObjectiveStats<loaq::ResidualOutput>(n, W_fp.rows(), {a, c.beta});
  }
}

inline void check(const loaq::Report& r, const std::string& where) {
  if (!r.ok())
    throw std::runtime_error(where + ": " + loaq::to_string(r.status) + ": " + r.message);
}

// Adds one window. x̂/x: the linears' inputs; r̂/r: the residual stream (output linears only).
inline void add_window(GroupStats& st, const Eigen::MatrixXf& xh, const Eigen::MatrixXf& x,
                       const Eigen::MatrixXf* rh, const Eigen::MatrixXf* r, bool gptaq) {
  std::visit(
      [&](auto& s) {
        using S = std::decay_t<decltype(s)>;
        if constexpr (std::is_same_v<S, loaq::CalibrationAccumulator<double>>)
          check(gptaq ? s.add_batch(xh, x) : s.add_batch(xh), "statistics");
        else if constexpr (std::is_same_v<S, loaq::ObjectiveStats<loaq::LinearOutput>>)
          check(s.add(xh, x), "statistics");
        else
          check(s.add(xh, x, *rh, *r), "statistics");
      },
      st);
}

// Quantizes W in place with the group's statistics.
inline void quantize_linear(Eigen::MatrixXf& W, const GroupStats& st, const QuantConfig& c,
                            const std::string& name) {
  loaq::GptqOptions opt;
  opt.block_size = c.block;
  opt.group_size = c.group;
  opt.act_order = c.act_order;
  opt.static_groups = c.static_groups;
  opt.search.mse = c.mse;
  opt.damping.percdamp = c.percdamp;
  with_grid(c, [&](const auto& grid) {
    loaq::QuantizedWeight<float> out;
    std::visit(
        [&](const auto& s) {
          using S = std::decay_t<decltype(s)>;
          if constexpr (std::is_same_v<S, loaq::CalibrationAccumulator<double>>) {
            if (c.method == Method::gptaq)
              check(loaq::gptaq(W, s.hessian(), s.cross(), grid, opt, c.effective_alpha(), out), name);
            else
              check(loaq::gptq(W, s.hessian(), grid, opt, out), name);
          } else {
            check(loaq::solve_objective(W, s, grid, opt, out), name);
          }
        },
        st);
    W = out.weight;
  });
}

inline void quantize_rtn(Eigen::MatrixXf& W, const QuantConfig& c) {
  with_grid(c, [&](const auto& grid) {
    loaq::QuantizedWeight<float> out;
    loaq::ParamSearch search;
    search.mse = c.mse;
    check(loaq::rtn(W, grid, c.group, search, out), "rtn");
    W = out.weight;
  });
}

}  // namespace detail

struct Progress {
  int layer = 0, layers = 0;
  std::string stage;
  double elapsed_s = 0;
};

// Returns a copy of `fp` with every decoder linear quantized by `c.method` (the LM head and the
// embeddings stay in full precision). `calib`: calibration windows, one sequence each.
inline Model quantize_model(const Model& fp, const std::vector<std::vector<int>>& calib,
                            const QuantConfig& c, const std::function<void(const Progress&)>& progress = {}) {
  using detail::add_window;
  using detail::make_stats;
  using detail::quantize_linear;
  Model q = fp;
  if (c.method == Method::fp) return q;
  const auto t0 = std::chrono::steady_clock::now();
  const Config& cfg = fp.config;
  const int layers = int(fp.layers.size());
  auto report = [&](int l, const std::string& stage) {
    if (progress)
      progress({l + 1, layers, stage,
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()});
  };
  if (c.method == Method::rtn) {
    for (int l = 0; l < layers; ++l) {
      for (Linear k : {Linear::q, Linear::k, Linear::v, Linear::o, Linear::gate, Linear::up, Linear::down})
        detail::quantize_rtn(q.layers[std::size_t(l)].weight(k), c);
      report(l, "rtn");
    }
    return q;
  }
  if (calib.empty()) throw std::invalid_argument("quantize_model: no calibration windows");
  const std::size_t W = calib.size();
  std::vector<Eigen::MatrixXf> h_fp(W), h_q(W);
  for (std::size_t w = 0; w < W; ++w) h_fp[w] = h_q[w] = fp.embed(calib[w]);
  const bool gptaq = c.method == Method::gptaq;

  for (int l = 0; l < layers; ++l) {
    const DecoderLayer& Lf = fp.layers[std::size_t(l)];
    DecoderLayer& Lq = q.layers[std::size_t(l)];
    // FP layer on the FP stream: every linear's input and both residual streams.
    std::vector<AttnCapture> fa(W);
    std::vector<MlpCapture> fm(W);
    std::vector<Eigen::MatrixXf> mid_fp(W), next_fp(W), mid_q(W);
    for (std::size_t w = 0; w < W; ++w) {
      mid_fp[w] = attention_block(cfg, Lf, h_fp[w], &fa[w]);
      next_fp[w] = mlp_block(cfg, Lf, mid_fp[w], &fm[w]);
    }

    // One group: collect its statistics window by window, then quantize its linears.
    auto run_group = [&](const char* stage, const Eigen::MatrixXf& W_fp,
                         const std::function<void(std::size_t, GroupStats&)>& add,
                         std::initializer_list<Linear> linears) {
      report(l, stage);
      const loaq::LinearRole role = loaq::llama_linear_role(linear_name(*linears.begin()));
      GroupStats st = make_stats(c, role, W_fp, cfg.rms_eps);
      for (std::size_t w = 0; w < W; ++w) add(w, st);
      for (Linear k : linears)
        quantize_linear(Lq.weight(k), st, c, "layer " + std::to_string(l) + " " + linear_name(k));
    };
    run_group("q,k,v", Lf.q, [&](std::size_t w, GroupStats& st) {
      add_window(st, rms_norm(h_q[w], Lq.attn_norm, cfg.rms_eps), fa[w].x_qkv, nullptr, nullptr, gptaq);
    }, {Linear::q, Linear::k, Linear::v});
    run_group("o", Lf.o, [&](std::size_t w, GroupStats& st) {
      AttnCapture a;
      attention_block(cfg, Lq, h_q[w], &a);
      add_window(st, a.x_o, fa[w].x_o, &h_q[w], &h_fp[w], gptaq);  // residual: the block input
    }, {Linear::o});
    run_group("gate,up", Lf.gate, [&](std::size_t w, GroupStats& st) {
      mid_q[w] = attention_block(cfg, Lq, h_q[w]);
      add_window(st, rms_norm(mid_q[w], Lq.ffn_norm, cfg.rms_eps), fm[w].x_gate_up, nullptr, nullptr, gptaq);
    }, {Linear::gate, Linear::up});
    run_group("down", Lf.down, [&](std::size_t w, GroupStats& st) {
      MlpCapture m;
      mlp_block(cfg, Lq, mid_q[w], &m);
      add_window(st, m.x_down, fm[w].x_down, &mid_q[w], &mid_fp[w], gptaq);  // residual: mid-block
    }, {Linear::down});

    for (std::size_t w = 0; w < W; ++w) h_q[w] = mlp_block(cfg, Lq, mid_q[w]);
    h_fp = std::move(next_fp);
  }
  return q;
}

}  // namespace smollm2
