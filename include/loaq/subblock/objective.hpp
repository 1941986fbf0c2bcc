// Sub-block objectives as types (spec §5, §6). A LLaMA-style sub-block is
//   h ← h + φ(RMSNorm(h)·W_inᵀ)·W_outᵀ
// Its input linears (q,k,v or gate,up) feed a nonlinearity and use LinearOutput; its output
// linear (o or down) is added to the residual stream and uses ResidualOutput or
// NormalizedOutput (matching after the next RMSNorm). Each objective knows which statistics it
// needs, accumulates them in streaming batches, and yields the Hessian and target of one linear.
#pragma once

#include <algorithm>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "../solve/targets.hpp"
#include "../stats/accumulator.hpp"
#include "rmsnorm.hpp"

namespace loaq {

// (a) LLOA / QEP: match W·x at the layer output, Y* = W x̂ + α W (x − x̂).
struct LinearOutput {
  double alpha = 1.0;  // QEP's own default is 0.5
};
// (b) SLOA: match the residual stream r + W x after the sub-block.
struct ResidualOutput {
  double alpha = 1.0, beta = 1.0;
};
// (c) NSOA: match after the next RMSNorm, per-token RMS frozen. weighted = true uses
// Ĥ_N = Σ ŝ² x̂x̂ᵀ; false keeps Ĥ and rescales the target by m_t = s_t/ŝ_t.
struct NormalizedOutput {
  double alpha = 1.0, beta = 1.0;
  double eps = 1e-5;  // the next RMSNorm's ε
  bool weighted = true;
};

// Input linears feed a nonlinearity (attention, SwiGLU): their objective is LinearOutput.
// Output linears are added to the residual stream: ResidualOutput or NormalizedOutput.
enum class LinearRole { Input, Output };

// The role of a LLaMA-style linear by its Hugging Face name (o_proj and down_proj write to the
// residual stream; q/k/v_proj and gate/up_proj read the normalized stream). Matches on the suffix,
// so "model.layers.3.mlp.down_proj" works too.
inline LinearRole llama_linear_role(const std::string& name) {
  for (const char* out : {"o_proj", "down_proj"}) {
    const std::string suffix(out);
    if (name.size() >= suffix.size() &&
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
      return LinearRole::Output;
  }
  return LinearRole::Input;
}

// Streaming statistics of one linear (or one group of linears sharing inputs) under an objective.
template <class Objective>
class ObjectiveStats;

template <>
class ObjectiveStats<LinearOutput> {
 public:
  ObjectiveStats(Index n, LinearOutput obj) : obj_(obj), acc_(n) {}
  // x̂, x: n × T inputs of the quantized and the FP model.
  template <class D1, class D2>
  Report add(const Eigen::MatrixBase<D1>& Xhat, const Eigen::MatrixBase<D2>& X, Index sequences = 1) {
    return acc_.add_batch(Xhat, X, sequences);
  }
  // The batches' products in float (CalibrationAccumulator::set_float_products).
  void set_float_products(bool on) { acc_.set_float_products(on); }
  // Who runs the batches' products (CalibrationAccumulator::set_task_runner).
  void set_task_runner(TaskRunner runner) { acc_.set_task_runner(std::move(runner)); }
  const CalibrationAccumulator<double>& stats() const { return acc_; }
  TargetWeights weights() const { return {obj_.alpha, 0.0}; }

 private:
  LinearOutput obj_;
  CalibrationAccumulator<double> acc_;
};

template <>
class ObjectiveStats<ResidualOutput> {
 public:
  ObjectiveStats(Index n, Index m, ResidualOutput obj) : obj_(obj), acc_(n, m) {}
  // r̂, r: m × T residual streams the layer's output is added to.
  template <class D1, class D2, class D3, class D4>
  Report add(const Eigen::MatrixBase<D1>& Xhat, const Eigen::MatrixBase<D2>& X,
             const Eigen::MatrixBase<D3>& Rhat, const Eigen::MatrixBase<D4>& R, Index sequences = 1) {
    return acc_.add_batch(Xhat, X, Rhat, R, sequences);
  }
  // The batches' products in float (CalibrationAccumulator::set_float_products).
  void set_float_products(bool on) { acc_.set_float_products(on); }
  // Who runs the batches' products (CalibrationAccumulator::set_task_runner).
  void set_task_runner(TaskRunner runner) { acc_.set_task_runner(std::move(runner)); }
  const CalibrationAccumulator<double>& stats() const { return acc_; }
  TargetWeights weights() const { return {obj_.alpha, obj_.beta}; }

 private:
  ResidualOutput obj_;
  CalibrationAccumulator<double> acc_;
};

template <>
class ObjectiveStats<NormalizedOutput> {
 public:
  // W: the layer's unquantized weight (m × n), used to freeze the per-token RMS.
  template <class DW>
  ObjectiveStats(const Eigen::MatrixBase<DW>& W, NormalizedOutput obj)
      : obj_(obj), W_(W.template cast<double>()), acc_(W.cols(), W.rows()) {}

  // s_t = 1/ρ(r_t + W x_t),  ŝ_t = 1/ρ(r̂_t + W x̂_t); weighted: a = ŝ, b = s;
  // output-matching factors: a = 1, b = s/ŝ.
  template <class D1, class D2, class D3, class D4>
  Report add(const Eigen::MatrixBase<D1>& Xhat, const Eigen::MatrixBase<D2>& X,
             const Eigen::MatrixBase<D3>& Rhat, const Eigen::MatrixBase<D4>& R, Index sequences = 1) {
    return add_batch(Xhat, X, Rhat, R, nullptr, sequences);
  }
  // The same batch from a caller that already has the FP output y = r + W·x (m × T, e.g. the FP
  // model's stream after the sub-block): W·x is not formed again, one m × n product per batch
  // fewer. y's rounding is the caller's (the model module passes its float stream with float
  // products, and forms W·x itself with double products).
  template <class D1, class D2, class D3, class D4, class D5>
  Report add(const Eigen::MatrixBase<D1>& Xhat, const Eigen::MatrixBase<D2>& X,
             const Eigen::MatrixBase<D3>& Rhat, const Eigen::MatrixBase<D4>& R,
             const Eigen::MatrixBase<D5>& Y, Index sequences = 1) {
    if (Y.rows() != W_.rows() || Y.cols() != Xhat.cols())
      return Report::fail(Status::ShapeMismatch, "normalized objective needs the FP output y as m × T");
    const Matrix<double> y = Y.template cast<double>();
    return add_batch(Xhat, X, Rhat, R, &y, sequences);
  }
  // Accumulate only what the closed-form target needs: Ĥ and B = α·W·C + β·G (m × n, held in
  // stats().residual_cross(); stats().cross() stays empty), one m × n product per batch from the
  // W·x the RMS factors need anyway, instead of C's n × n and G's m × n (a down projection with
  // n = 8m/3: about 40% fewer flops per batch). The solve is the same up to rounding; weights()
  // is then {α, 1}, B carrying α and β. Choose it before the first batch.
  Report set_target_only(bool on) {
    if (acc_.tokens() > 0 && on != target_only_)
      return Report::fail(Status::InvalidArgument,
                          "choose target-only statistics before the first batch");
    target_only_ = on;
    return Report::success();
  }
  bool target_only() const { return target_only_; }
  // The batches' products in float, W·x included (CalibrationAccumulator::set_float_products).
  void set_float_products(bool on) {
    acc_.set_float_products(on);
    W_float_ = on ? Matrix<float>(W_.cast<float>()) : Matrix<float>();
  }
  // Who runs the batches' products, W·x included (CalibrationAccumulator::set_task_runner).
  void set_task_runner(TaskRunner runner) { acc_.set_task_runner(std::move(runner)); }
  const CalibrationAccumulator<double>& stats() const { return acc_; }
  TargetWeights weights() const { return {obj_.alpha, target_only_ ? 1.0 : obj_.beta}; }

 private:
  template <class D1, class D2, class D3, class D4>
  Report add_batch(const Eigen::MatrixBase<D1>& Xhat, const Eigen::MatrixBase<D2>& X,
                   const Eigen::MatrixBase<D3>& Rhat, const Eigen::MatrixBase<D4>& R,
                   const Matrix<double>* fp_output, Index sequences) {
    if (Xhat.rows() != W_.cols() || X.rows() != W_.cols() || Rhat.rows() != W_.rows() ||
        R.rows() != W_.rows() || X.cols() != Xhat.cols() || R.cols() != Xhat.cols() ||
        Rhat.cols() != Xhat.cols())
      return Report::fail(Status::ShapeMismatch,
                          "normalized objective needs x̂, x as n × T and r̂, r as m × T");
    if (!(obj_.eps >= 0)) return Report::fail(Status::InvalidArgument, "RMSNorm ε must be ≥ 0");
    // With the FP output given and target-only statistics, x is not read at all.
    const bool needs_x = !(fp_output && target_only_);
    const Matrix<double> x = needs_x ? Matrix<double>(X.template cast<double>()) : Matrix<double>();
    const Matrix<double> xh = Xhat.template cast<double>();
    const Matrix<double> r = R.template cast<double>(), rh = Rhat.template cast<double>();
    using internal::all_finite;
    if (!all_finite(x) || !all_finite(xh) || !all_finite(r) || !all_finite(rh) ||
        (fp_output && !all_finite(*fp_output)) || (!needs_x && !all_finite(X.derived())))
      return Report::fail(Status::NonFiniteInput, "calibration batch holds NaN or Inf");
    // W·x̂, and W·x unless the caller gave y, in the products' scalar. With double products and
    // the full statistics, r + W·x is summed whole (the r rows first), as it always was.
    const Index m = W_.rows(), T = Xhat.cols();
    const bool with_wx = !fp_output, summed_whole = !fp_output && !acc_.float_products() && !target_only_;
    Matrix<double> y, yh;    // r + W·x and r̂ + W·x̂
    Matrix<double> wx, wxh;  // W·x and W·x̂ on their own
    if (acc_.float_products()) {
      const Matrix<float> xhf = Xhat.template cast<float>();
      const Matrix<float> xf = with_wx ? Matrix<float>(X.template cast<float>()) : Matrix<float>();
      Matrix<float> wxhf = Matrix<float>::Zero(m, T), wxf = Matrix<float>::Zero(m, with_wx ? T : 0);
      add_products(W_float_, {{&xhf, &wxhf}, {&xf, &wxf}});
      wxh = wxhf.cast<double>();
      wx = wxf.cast<double>();
    } else if (summed_whole) {
      y = r;
      yh = rh;
      add_products(W_, {{&xh, &yh}, {&x, &y}});
    } else {
      wxh = Matrix<double>::Zero(m, T);
      wx = Matrix<double>::Zero(m, with_wx ? T : 0);
      add_products(W_, {{&xh, &wxh}, {&x, &wx}});
    }
    if (!all_finite(wx) || !all_finite(wxh) || !all_finite(y) || !all_finite(yh))
      return Report::fail(Status::OutOfRange,
                          acc_.float_products()
                              ? "W·x overflows float; rescale the weight or the inputs, or turn "
                                "float products off"
                              : "W·x overflows double; rescale the weight or the inputs");
    if (!summed_whole) {
      if (fp_output) wx = *fp_output - r;
      y = fp_output ? *fp_output : Matrix<double>(r + wx);
      yh = rh + wxh;
    }
    const Vector<double> s = inverse_rms(y, obj_.eps), sh = inverse_rms(yh, obj_.eps);
    if (!all_finite(s) || !all_finite(sh))
      return Report::fail(Status::NonFiniteInput,
                          "a token's output is all zero with ε = 0; set the RMSNorm ε");
    // Token weights: a = ŝ, b = s (weighted), or a = 1, b = s/ŝ.
    const Vector<double> a = obj_.weighted ? sh : Vector<double>::Ones(s.size());
    const Vector<double> b = obj_.weighted ? s : Vector<double>(s.cwiseQuotient(sh));
    if (!target_only_) return acc_.add_weighted_batch(xh, x, &rh, &r, a, b, sequences);
    // Σ a (b·p − a·p̂) x̂ᵀ with p = α·W·x + β·r is α·W·C + β·G.
    const Matrix<double> p = obj_.alpha * wx + obj_.beta * r, ph = obj_.alpha * wxh + obj_.beta * rh;
    return acc_.add_weighted_residual_batch(xh, ph, p, a, b, sequences);
  }
  // ys += W·xs for each (x, y) pair with a non-empty y, in one set of tasks of a block of W's rows
  // each; a block is summed as the unsplit product would be (y's rows first, the product added).
  template <class S>
  void add_products(const Matrix<S>& W,
                    std::initializer_list<std::pair<const Matrix<S>*, Matrix<S>*>> pairs) const {
    std::vector<std::pair<const Matrix<S>*, Matrix<S>*>> jobs;
    for (const auto& job : pairs)
      if (job.second->size() > 0) jobs.push_back(job);
    const Index P = internal::kTaskRows, blocks = (W.rows() + P - 1) / P, K = Index(jobs.size());
    internal::run_tasks(acc_.task_runner(), blocks * K, [&](Index i) {
      const auto& [x, y] = jobs[std::size_t(i % K)];
      const Index r0 = (i / K) * P, rows = std::min(P, W.rows() - r0);
      y->middleRows(r0, rows).noalias() += W.middleRows(r0, rows) * *x;
    });
  }

  NormalizedOutput obj_;
  Matrix<double> W_;
  Matrix<float> W_float_;  // with float products
  CalibrationAccumulator<double> acc_;
  bool target_only_ = false;
};

// Quantizes W toward its objective's target with the accumulated statistics.
template <class Objective, class Grid, class DW>
Report solve_objective(const Eigen::MatrixBase<DW>& W, const ObjectiveStats<Objective>& st,
                       const Grid& grid, const GptqOptions& options,
                       QuantizedWeight<typename Grid::Scalar>& out,
                       SolveDiagnostics* diag = nullptr,
                       Matrix<typename Grid::Scalar>* target = nullptr) {
  const auto& acc = st.stats();
  if (acc.tokens() == 0)
    return Report::fail(Status::InvalidArgument, "no calibration batch was added");
  const Matrix<double>* C = acc.has_cross() ? &acc.cross() : nullptr;
  const Matrix<double>* G = acc.has_residual_cross() ? &acc.residual_cross() : nullptr;
  return solve_target(W, acc.hessian(), C, G, st.weights(), grid, options, out, diag, target);
}

}  // namespace loaq
