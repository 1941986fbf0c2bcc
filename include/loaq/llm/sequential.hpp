// Sequential layer-by-layer PTQ of a LLaMA-family decoder (spec §6, GPTQ --true-sequential order):
// per decoder layer, run the FP layer on the FP stream (inputs of every linear and the FP
// residuals), then quantize [q,k,v] → [o] → [gate,up] → [down], advancing the quantized stream
// through the partially quantized layer before each group; then advance both streams.
//
// What a group of linears collects and how each linear is solved is a Method, a policy type
// (methods.hpp has GPTQ, GPTAQ, QEP and LoaQ). A Method M provides, for G = InputGroup (q,k,v and
// gate,up: read RMSNorm(h)) and G = OutputGroup (o and down: written into the residual stream):
//
//   S    m.stats(const G& g) const;                     // empty statistics for the group's input width
//   Report m.add(S& s, const Batch& b) const;           // one calibration window, in window order
//   template <class Grid>
//   Report m.solve(const S& s, const Eigen::MatrixXf& W, const Grid& grid,
//                  const GptqOptions& opt, QuantizedWeight<float>& out) const;  // one linear
//
// S may differ between the two groups (LoaQ: a linear-output objective in, a normalized one out).
// A new method or objective is a new type; the loop below does not change.
#pragma once

#include <algorithm>
#include <chrono>
#include <functional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "../loaq.hpp"
#include "decoder.hpp"
#include "detail/parallel.hpp"

namespace loaq {
namespace llm {

// What the pipeline tells a method about one group of linears that share an input.
struct GroupInfo {
  int layer = 0;
  const Eigen::MatrixXf* fp_weight = nullptr;  // FP weight of the group's first linear (m × n)
  float norm_eps = 1e-5f;                      // ε of the RMSNorm that reads the residual next
  bool float_products = false;                 // SequentialOptions::float_products
  TaskRunner tasks;                            // runs the statistics' products (the pipeline's threads)
  Eigen::Index inputs() const { return fp_weight->cols(); }   // n
  Eigen::Index outputs() const { return fp_weight->rows(); }  // m
};
// Where the group sits in its sub-block (loaq::llama_linear_role of its linears), as a type.
template <LinearRole R>
struct Group : GroupInfo {
  static constexpr LinearRole role = R;
};
using InputGroup = Group<LinearRole::Input>;    // q,k,v and gate,up
using OutputGroup = Group<LinearRole::Output>;  // o and down

// One calibration window for a group: x̂, x the linears' inputs in the quantized and the FP model
// (n × T); for an output group also r̂, r, the residual streams its output is added to (m × T),
// and, with float products, y = r + W·x, the FP stream after the sub-block as the FP model
// computed it (a method may use it instead of forming W·x; with double products it is null).
struct Batch {
  const Eigen::MatrixXf& x_hat;
  const Eigen::MatrixXf& x;
  const Eigen::MatrixXf* r_hat = nullptr;
  const Eigen::MatrixXf* r = nullptr;
  const Eigen::MatrixXf* y = nullptr;
};

struct Progress {
  int layer = 0, layers = 0;
  std::string stage;
  double elapsed_s = 0;
};

// Where the pipeline's wall-clock time went (seconds). With several threads the statistics of one
// window overlap the forward passes of the next ones; that overlap counts as statistics. The FP
// forward passes of the next layer run beside the solves and count as solve.
struct SequentialTimes {
  double forward_s = 0;  // both streams' forward passes
  double stats_s = 0;    // Method::add
  double solve_s = 0;    // Method::solve
};

struct SequentialOptions {
  GptqOptions solver;                               // block, group, act-order, damping, MSE
  std::function<void(const Progress&)> progress;    // called when a layer's group starts
  // Threads for coarse tasks: forward passes per window, solves per linear of a group, and the
  // row blocks of each window's statistics. Windows are added in order and every task is computed
  // as on one thread, so the result is the same for every count.
  int threads = 1;
  // Weight-activation quantization: the quantized model fake-quantizes every decoder linear's
  // input with this spec, in calibration (x̂ of every method is the quantized input of the
  // quantized stream; x, the FP stream's, stays unquantized) and in the returned model.
  ActivationQuantSpec activations;
  // Statistics with each window's products in float, summed in double over the windows
  // (CalibrationAccumulator::set_float_products): about half the statistics' time.
  bool float_products = false;
  // Sees every solved linear (codes, scales, zeros, x̂) before its weight is replaced, e.g. to
  // pack it for export (llm/gguf_export.hpp). Called from worker threads, one call per linear.
  std::function<void(int layer, Linear, const QuantizedWeight<float>&)> on_solved;
};

// Runs f(UniformGrid<float, bits>(sym)) for a bit width known at run time (2..8).
template <class F>
void with_uniform_grid(int bits, bool sym, F&& f) {
  switch (bits) {
    case 2: return f(UniformGrid<float, 2>(sym));
    case 3: return f(UniformGrid<float, 3>(sym));
    case 4: return f(UniformGrid<float, 4>(sym));
    case 5: return f(UniformGrid<float, 5>(sym));
    case 6: return f(UniformGrid<float, 6>(sym));
    case 7: return f(UniformGrid<float, 7>(sym));
    case 8: return f(UniformGrid<float, 8>(sym));
    default: throw std::invalid_argument("bits must be in 2..8");
  }
}

namespace detail {

inline void check(const Report& r, const std::string& where) {
  if (!r.ok()) throw std::runtime_error(where + ": " + to_string(r.status) + ": " + r.message);
}

class Stopwatch {
 public:
  explicit Stopwatch(double* sink) : sink_(sink), t0_(std::chrono::steady_clock::now()) {}
  ~Stopwatch() {
    if (sink_) *sink_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  }

 private:
  double* sink_;
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace detail

// RTN baseline: every decoder linear rounded to the grid, group by group, no calibration.
// `on_solved` as in SequentialOptions (called on this thread).
template <class Grid>
Model quantize_rtn(const Model& fp, const Grid& grid, int group_size, const ParamSearch& search = {},
                   const std::function<void(const Progress&)>& progress = {},
                   const std::function<void(int, Linear, const QuantizedWeight<float>&)>& on_solved = {}) {
  Model q = fp;
  const auto t0 = std::chrono::steady_clock::now();
  const int layers = int(fp.layers.size());
  for (int l = 0; l < layers; ++l) {
    for (Linear k : {Linear::q, Linear::k, Linear::v, Linear::o, Linear::gate, Linear::up, Linear::down}) {
      Eigen::MatrixXf& W = q.layers[std::size_t(l)].weight(k);
      QuantizedWeight<float> out;
      detail::check(rtn(W, grid, group_size, search, out), "rtn");
      if (on_solved) on_solved(l, k, out);
      W = out.weight;
    }
    if (progress)
      progress({l + 1, layers, "rtn",
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()});
  }
  return q;
}

// Returns a copy of `fp` with every decoder linear quantized by `method` on `grid` (the LM head
// and the embeddings stay in full precision). `calib`: calibration windows, one sequence each.
template <class Method, class Grid>
Model quantize_sequential(const Model& fp, const std::vector<std::vector<int>>& calib,
                          const Method& method, const Grid& grid, const SequentialOptions& options = {},
                          SequentialTimes* times = nullptr) {
  if (calib.empty()) throw std::invalid_argument("quantize_sequential: no calibration windows");
  SequentialTimes local;
  SequentialTimes& tm = times ? *times : local;
  const auto t0 = std::chrono::steady_clock::now();
  Model q = fp;
  q.config.act = options.activations;
  if (q.config.act.enabled())  // every linear input width: d_model (q,k,v,o,gate,up) and d_ff (down)
    for (int n : {fp.config.d_model, fp.config.d_ff}) detail::check(q.config.act.validate(n), "activations");
  const Config& cfg = fp.config;  // the FP stream's
  const Config& qcfg = q.config;  // the quantized stream's: activations quantized
  const int layers = int(fp.layers.size());
  const std::size_t W = calib.size();
  std::vector<Eigen::MatrixXf> h_fp(W), h_q(W);
  {
    detail::Stopwatch sw(&tm.forward_s);
    for (std::size_t w = 0; w < W; ++w) h_fp[w] = h_q[w] = fp.embed(calib[w]);
  }

  const int threads = std::max(1, options.threads);
  detail::TaskPool stats_pool(threads);
  auto seconds_since = [](std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
  };

  // The FP layer on the FP stream: every linear's input and both residual streams, per window.
  struct FpLayer {
    std::vector<AttnCapture> fa;
    std::vector<MlpCapture> fm;
    std::vector<Eigen::MatrixXf> mid, next;
  };
  auto fp_layer = [W] {
    return FpLayer{std::vector<AttnCapture>(W), std::vector<MlpCapture>(W),
                   std::vector<Eigen::MatrixXf>(W), std::vector<Eigen::MatrixXf>(W)};
  };
  // Window w of FP layer l, from the stream h that enters it.
  auto fp_window = [&](FpLayer& f, int l, const std::vector<Eigen::MatrixXf>& h, std::size_t w) {
    const DecoderLayer& L = fp.layers[std::size_t(l)];
    f.mid[w] = attention_block(cfg, L, h[w], &f.fa[w]);
    f.next[w] = mlp_block(cfg, L, f.mid[w], &f.fm[w]);
  };
  FpLayer cur = fp_layer();
  {
    detail::Stopwatch sw(&tm.forward_s);
    detail::parallel_for(W, threads, [&](std::size_t w) { fp_window(cur, 0, h_fp, w); });
  }

  for (int l = 0; l < layers; ++l) {
    const DecoderLayer& Lf = fp.layers[std::size_t(l)];
    DecoderLayer& Lq = q.layers[std::size_t(l)];
    std::vector<AttnCapture>& fa = cur.fa;
    std::vector<MlpCapture>& fm = cur.fm;
    std::vector<Eigen::MatrixXf>& mid_fp = cur.mid;
    std::vector<Eigen::MatrixXf> mid_q(W);
    // The next FP layer needs only this one's FP output, so its windows fill the threads while
    // this layer's linears are solved: a quarter of them beside each group's solves.
    const bool more = l + 1 < layers;
    FpLayer nxt = more ? fp_layer() : FpLayer{};
    int group = 0;
    auto next_fp_windows = [&] {
      std::vector<std::size_t> ws;
      if (more)
        for (std::size_t w = W * std::size_t(group) / 4; w < W * std::size_t(group + 1) / 4; ++w) ws.push_back(w);
      ++group;
      return ws;
    };

    // One group: `input(w)` runs window w's quantized stream as far as the group and returns the
    // linears' input x̂ (any thread); `add(st, w, x̂)` adds the window (calling thread, in order).
    // Then every linear of the group is solved, one task per linear. `kept`: where the inputs
    // go once added, for an output group whose result is then added to the stream (else freed).
    auto run_group = [&](auto tag, const char* stage, const Eigen::MatrixXf& W_fp, auto&& input,
                         auto&& add, std::initializer_list<Linear> linears,
                         std::vector<Eigen::MatrixXf>* kept = nullptr) {
      using G = decltype(tag);
      if (options.progress) options.progress({l + 1, layers, stage, seconds_since(t0)});
      G g;
      g.layer = l;
      g.fp_weight = &W_fp;
      g.norm_eps = cfg.rms_eps;
      g.float_products = options.float_products;
      g.tasks = stats_pool.runner();
      auto st = method.stats(g);
      std::vector<Eigen::MatrixXf> xh(W);
      double stats_s = 0;
      const auto t_loop = std::chrono::steady_clock::now();
      detail::ordered_pipeline(
          W, threads, [&](std::size_t w) { xh[w] = input(w); },
          [&](std::size_t w) {
            detail::Stopwatch sw(&stats_s);
            add(st, w, xh[w]);
            if (kept) (*kept)[w] = std::move(xh[w]);
            xh[w] = Eigen::MatrixXf();  // done with it
          });
      tm.stats_s += stats_s;
      tm.forward_s += seconds_since(t_loop) - stats_s;
      detail::Stopwatch sw(&tm.solve_s);
      const std::vector<Linear> ks(linears);
      const std::vector<std::size_t> ahead = next_fp_windows();
      detail::parallel_for(ks.size() + ahead.size(), threads, [&](std::size_t i) {
        if (i >= ks.size()) return fp_window(nxt, l + 1, cur.next, ahead[i - ks.size()]);
        Eigen::MatrixXf& Wq = Lq.weight(ks[i]);
        QuantizedWeight<float> out;
        detail::check(method.solve(st, static_cast<const Eigen::MatrixXf&>(Wq), grid, options.solver, out),
                      "layer " + std::to_string(l) + " " + linear_name(ks[i]));
        if (options.on_solved) options.on_solved(l, ks[i], out);
        Wq = out.weight;
      });
    };
    auto add_input = [&](auto& st, const Eigen::MatrixXf& xh, const Eigen::MatrixXf& x) {
      detail::check(method.add(st, Batch{xh, x}), "statistics");
    };
    // Output linears also see the residual streams their result is added to (with the bias), and
    // with float products the FP stream y after the sub-block.
    auto add_output = [&](auto& st, const Eigen::MatrixXf& xh, const Eigen::MatrixXf& x,
                          const Eigen::MatrixXf& rh, const Eigen::MatrixXf& r, const Eigen::MatrixXf& y,
                          const Eigen::VectorXf& bq, const Eigen::VectorXf& bf) {
      const Eigen::MatrixXf* fp_output = options.float_products ? &y : nullptr;
      if (!bq.size() && !bf.size())
        return detail::check(method.add(st, Batch{xh, x, &rh, &r, fp_output}), "statistics");
      Eigen::MatrixXf rh_b = rh, r_b = r;
      if (bq.size()) rh_b.colwise() += bq;
      if (bf.size()) r_b.colwise() += bf;
      detail::check(method.add(st, Batch{xh, x, &rh_b, &r_b, fp_output}), "statistics");
    };

    // Each FP capture is freed once its window is added. The inputs of o and down are kept, so
    // that the quantized stream advances by one product each (the result is the same as
    // re-running the block: q,k,v, resp. gate,up are already quantized when they are captured).
    std::vector<Eigen::MatrixXf> x_o(W), x_down(W);
    run_group(
        InputGroup{}, "q,k,v", Lf.q,
        [&](std::size_t w) { return norm_input(qcfg, h_q[w], Lq.attn_norm); },
        [&](auto& st, std::size_t w, const Eigen::MatrixXf& xh) {
          add_input(st, xh, fa[w].x_qkv);
          fa[w].x_qkv = Eigen::MatrixXf();
        },
        {Linear::q, Linear::k, Linear::v});
    run_group(
        OutputGroup{}, "o", Lf.o, [&](std::size_t w) { return attention_context(qcfg, Lq, h_q[w]); },
        [&](auto& st, std::size_t w, const Eigen::MatrixXf& xh) {  // residual: the block input
          add_output(st, xh, fa[w].x_o, h_q[w], h_fp[w], mid_fp[w], Lq.bias_of(Linear::o),
                     Lf.bias_of(Linear::o));
          fa[w].x_o = Eigen::MatrixXf();
        },
        {Linear::o}, &x_o);
    {
      detail::Stopwatch sw(&tm.forward_s);
      detail::parallel_for(W, threads, [&](std::size_t w) {
        mid_q[w] = residual_add(h_q[w], Lq.o, Lq.bias_of(Linear::o), x_o[w]);
        x_o[w] = Eigen::MatrixXf();
      });
    }
    run_group(
        InputGroup{}, "gate,up", Lf.gate,
        [&](std::size_t w) { return norm_input(qcfg, mid_q[w], Lq.ffn_norm); },
        [&](auto& st, std::size_t w, const Eigen::MatrixXf& xh) {
          add_input(st, xh, fm[w].x_gate_up);
          fm[w].x_gate_up = Eigen::MatrixXf();
        },
        {Linear::gate, Linear::up});
    run_group(
        OutputGroup{}, "down", Lf.down, [&](std::size_t w) { return mlp_hidden(qcfg, Lq, mid_q[w]); },
        [&](auto& st, std::size_t w, const Eigen::MatrixXf& xh) {  // residual: mid-block
          add_output(st, xh, fm[w].x_down, mid_q[w], mid_fp[w], cur.next[w], Lq.bias_of(Linear::down),
                     Lf.bias_of(Linear::down));
          fm[w].x_down = Eigen::MatrixXf();
          mid_fp[w] = Eigen::MatrixXf();
        },
        {Linear::down}, &x_down);

    detail::Stopwatch sw(&tm.forward_s);
    detail::parallel_for(W, threads, [&](std::size_t w) {
      h_q[w] = residual_add(mid_q[w], Lq.down, Lq.bias_of(Linear::down), x_down[w]);
      x_down[w] = Eigen::MatrixXf();
    });
    h_fp = std::move(cur.next);
    cur = std::move(nxt);
  }
  return q;
}

}  // namespace llm
}  // namespace loaq
