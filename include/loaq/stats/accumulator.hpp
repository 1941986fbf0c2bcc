// Streaming calibration statistics with the GPTQ reference's running scaling (spec §2):
//   S ← S·n/(n+b);  n ← n+b;  S ← S + (2/n)·Σ_t (batch term)
// for every statistic at once, so Ĥ, C and G always carry the same factor.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <functional>
#include <limits>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#include "../config.hpp"
#include "../status.hpp"
#include "../tasks.hpp"

namespace loaq {

namespace internal {

// A flag that threads may read while one of them sets it, and that copies with its value.
class SharedFlag {
 public:
  explicit SharedFlag(bool value) : value_(value) {}
  SharedFlag(const SharedFlag& other) : value_(other.get()) {}
  SharedFlag& operator=(const SharedFlag& other) {
    set(other.get());
    return *this;
  }
  bool get() const { return value_.load(std::memory_order_acquire); }
  void set(bool value) { value_.store(value, std::memory_order_release); }

 private:
  std::atomic<bool> value_;
};

// Everything a calibration batch must satisfy before any statistic changes (shared with the CUDA
// accumulator): shapes, token weights, sequences, no cross term started mid-stream, finite
// values, and products that the accumulator's scalar (float with float products) can hold. An
// empty batch passes.
template <class Acc>
Report check_calibration_batch(Index n, Index residual_rows, Index tokens, bool has_cross,
                               bool has_residual_cross, const Matrix<Acc>& xh,
                               const Matrix<Acc>* X, const Matrix<Acc>* Rhat, const Matrix<Acc>* R,
                               const Vector<Acc>* a, const Vector<Acc>* b, Index sequences,
                               bool float_products = false) {
  const Index T = xh.cols();
  if (xh.rows() != n)
    return Report::fail(Status::ShapeMismatch, "inputs have " + std::to_string(xh.rows()) +
                                                   " features, the accumulator expects " +
                                                   std::to_string(n));
  if (X && (X->rows() != n || X->cols() != T))
    return Report::fail(Status::ShapeMismatch,
                        "FP inputs must have the shape of the quantized-model inputs");
  if ((Rhat == nullptr) != (R == nullptr))
    return Report::fail(Status::InvalidArgument, "give both residual streams or neither");
  if (R && (R->cols() != T || Rhat->cols() != T || R->rows() != Rhat->rows() ||
            (residual_rows && R->rows() != residual_rows)))
    return Report::fail(Status::ShapeMismatch,
                        "residual streams must be m × T with the inputs' token count");
  if (a && (a->size() != T || b->size() != T))
    return Report::fail(Status::ShapeMismatch, "token weights must have one entry per token");
  if (sequences < 1)
    return Report::fail(Status::InvalidArgument, "a batch holds at least one sequence");
  if (X && tokens > 0 && !has_cross)
    return Report::fail(Status::InvalidArgument, "cannot start the cross term mid-stream");
  if (R && tokens > 0 && !has_residual_cross)
    return Report::fail(Status::InvalidArgument,
                        "cannot start the residual cross term mid-stream");
  // A term the stream tracks must see every batch, or it would miss the batch's rescaling.
  if (!X && has_cross)
    return Report::fail(Status::InvalidArgument,
                        "the stream tracks the cross term C: every batch needs the FP inputs x");
  if (!R && has_residual_cross)
    return Report::fail(Status::InvalidArgument,
                        "the stream tracks the residual cross term G: every batch needs r̂ and r");

  if (T == 0) return Report::success();
  if (!all_finite(xh) || (X && !all_finite(*X)) || (R && (!all_finite(*R) || !all_finite(*Rhat))) ||
      (a && (!all_finite(*a) || !all_finite(*b))))
    return Report::fail(Status::NonFiniteInput,
                        "calibration batch holds NaN or Inf; check the captured activations");

  // Sums of T products of entries up to `top` stay finite while T·top² is well below the
  // largest Acc; beyond that the statistics would overflow (checked before anything changes).
  double top = xh.cwiseAbs().maxCoeff();
  if (X) top = std::max(top, double(X->cwiseAbs().maxCoeff()));
  if (R) top = std::max({top, double(R->cwiseAbs().maxCoeff()), double(Rhat->cwiseAbs().maxCoeff())});
  if (a) top *= std::max(1.0, double(std::max(a->cwiseAbs().maxCoeff(), b->cwiseAbs().maxCoeff())));
  // Float products also lose everything below float's normal range: refuse a batch whose largest
  // (weighted) value squared has fewer than 24 bits above it.
  if (float_products) {
    double low = xh.cwiseAbs().maxCoeff();
    if (a) low *= double(a->cwiseAbs().maxCoeff());
    if (low > 0 && 2.0 * std::log2(low) < double(std::numeric_limits<float>::min_exponent + 24))
      return Report::fail(Status::OutOfRange,
                          "calibration values are at most " + std::to_string(low) +
                              ": their products underflow float; rescale the activations or turn "
                              "float products off");
  }
  const int max_exponent = float_products ? std::numeric_limits<float>::max_exponent
                                           : std::numeric_limits<Acc>::max_exponent;
  if (top > 0 && 2.0 * std::log2(top) + std::log2(double(T) + 1) + 4 >= double(max_exponent))
    return Report::fail(Status::OutOfRange,
                        "calibration values reach " + std::to_string(top) + ": their products overflow " +
                            (float_products ? "float; rescale the activations or turn float products off"
                                            : "the accumulator; rescale the activations or accumulate in double"));
  return Report::success();
}

}  // namespace internal

// Inputs are n × T (one column per token); residual streams are m × T.
// With per-token weights a_t (quantized side) and b_t (FP side):
//   Ĥ = Σ a² x̂x̂ᵀ,   C = Σ a (b·x − a·x̂) x̂ᵀ,   G = Σ a (b·r − a·r̂) x̂ᵀ
// a = b = 1 gives GPTQ's H, GPTAQ's dXXT and the residual cross term; the RMSNorm-aware
// objectives set a = ŝ, b = s (weighted) or a = 1, b = s/ŝ (output-matching factors).
template <class Acc = double>
class CalibrationAccumulator {
 public:
  using Mat = Matrix<Acc>;

  // n: input features; residual_rows: m for the residual cross term G (0 = not tracked).
  explicit CalibrationAccumulator(Index n = 0, Index residual_rows = 0)
      : hessian_(Mat::Zero(n, n)), residual_rows_(residual_rows) {}

  // Each batch's products (X̂X̂ᵀ and the C, G terms) computed in float and added to the Acc sums:
  // about half their cost where sgemm runs twice as fast as dgemm. A batch's sums then carry
  // float rounding (about 1e-7 relative, as the GPTQ reference's float32 Hessian has for all of
  // its sum); across batches they still add in Acc. Off by default; no effect when Acc is float.
  void set_float_products(bool on) { float_products_ = on; }
  bool float_products() const { return float_products_ && !std::is_same<Acc, float>::value; }

  // Who runs a batch's products: panels of Ĥ's rows and blocks of C's and G's rows, each one
  // serial kernel (tasks.hpp). The results are the same bits for every runner.
  void set_task_runner(TaskRunner runner) { runner_ = std::move(runner); }
  const TaskRunner& task_runner() const { return runner_; }

  Index features() const { return hessian_.rows(); }
  Index sequences() const { return sequences_; }
  Index tokens() const { return tokens_; }
  bool has_cross() const { return cross_.size() > 0; }
  bool has_residual_cross() const { return residual_cross_.size() > 0; }

  // Ĥ only (GPTQ add_batch). `sequences`: how many sequences the batch holds (the reference
  // averages over sequences, sums over tokens). A batch of zero tokens is a no-op; solving with
  // no tokens at all is an error the solvers report (the Hessian is all zero).
  template <class D>
  Report add_batch(const Eigen::MatrixBase<D>& Xhat, Index sequences = 1) {
    return add(Xhat, nullptr, nullptr, nullptr, nullptr, nullptr, sequences);
  }
  // Ĥ and C = Σ(x − x̂)x̂ᵀ.
  template <class D1, class D2>
  Report add_batch(const Eigen::MatrixBase<D1>& Xhat, const Eigen::MatrixBase<D2>& X,
                   Index sequences = 1) {
    const Mat x = X.template cast<Acc>();
    return add(Xhat, &x, nullptr, nullptr, nullptr, nullptr, sequences);
  }
  // Ĥ, C and G = Σ(r − r̂)x̂ᵀ.
  template <class D1, class D2, class D3, class D4>
  Report add_batch(const Eigen::MatrixBase<D1>& Xhat, const Eigen::MatrixBase<D2>& X,
                   const Eigen::MatrixBase<D3>& Rhat, const Eigen::MatrixBase<D4>& R,
                   Index sequences = 1) {
    const Mat x = X.template cast<Acc>(), rh = Rhat.template cast<Acc>(),
              r = R.template cast<Acc>();
    return add(Xhat, &x, &rh, &r, nullptr, nullptr, sequences);
  }
  // The general token-weighted form (see the class comment). Rhat/R may be null.
  template <class D1>
  Report add_weighted_batch(const Eigen::MatrixBase<D1>& Xhat, const Mat& X, const Mat* Rhat,
                            const Mat* R, const Vector<Acc>& a, const Vector<Acc>& b,
                            Index sequences = 1) {
    return add(Xhat, &X, Rhat, R, &a, &b, sequences);
  }
  // The weighted form without the input cross term: Ĥ and G = Σ a (b·r − a·r̂) x̂ᵀ only.
  template <class D1>
  Report add_weighted_residual_batch(const Eigen::MatrixBase<D1>& Xhat, const Mat& Rhat,
                                     const Mat& R, const Vector<Acc>& a, const Vector<Acc>& b,
                                     Index sequences = 1) {
    return add(Xhat, nullptr, &Rhat, &R, &a, &b, sequences);
  }

  // Ĥ (full symmetric matrix). The first call after a batch mirrors the lower triangle; threads
  // may call it at once (the model module solves q, k and v in parallel on one accumulator).
  const Mat& hessian() const {
    if (!symmetric_.get()) {
      static std::mutex mirroring;  // taken once per accumulator after its batches
      std::lock_guard<std::mutex> lock(mirroring);
      if (!symmetric_.get()) {
        hessian_.template triangularView<Eigen::StrictlyUpper>() = hessian_.transpose();
        symmetric_.set(true);
      }
    }
    return hessian_;
  }
  const Mat& cross() const { return cross_; }
  const Mat& residual_cross() const { return residual_cross_; }

 private:
  template <class D1>
  Report add(const Eigen::MatrixBase<D1>& Xhat_in, const Mat* X, const Mat* Rhat, const Mat* R,
             const Vector<Acc>* a, const Vector<Acc>* b, Index sequences) {
    const Index n = features(), T = Xhat_in.cols();
    // No copy when the batch is already a plain Acc matrix.
    Mat converted;
    const Mat* xh_ptr = &converted;
    if constexpr (std::is_same<D1, Mat>::value)
      xh_ptr = &Xhat_in.derived();
    else
      converted = Xhat_in.template cast<Acc>();
    const Mat& xh = *xh_ptr;
    if (auto r = internal::check_calibration_batch(n, residual_rows_, tokens_, has_cross(),
                                                   has_residual_cross(), xh, X, Rhat, R, a, b,
                                                   sequences, float_products());
        !r.ok())
      return r;
    if (T == 0) return Report::success();  // an empty batch adds nothing (not even sequences)

    if (X && !has_cross()) cross_ = Mat::Zero(n, n);
    if (R && !has_residual_cross()) residual_cross_ = Mat::Zero(R->rows(), n);

    // Running rescale exactly as GPTQ: S·n/(n+b), then + 2/(n+b)·Σ. Each task below rescales
    // the rows it adds to, then adds its product.
    const Acc keep = Acc(sequences_) / Acc(sequences_ + sequences);
    sequences_ += sequences;
    tokens_ += T;
    const Acc step = Acc(2) / Acc(sequences_);

    Mat weighted;
    if (a) weighted = xh * a->asDiagonal();
    const Mat& xa = a ? weighted : xh;  // a ⊙ x̂
    symmetric_.set(false);
    Mat dx, dr;  // b ⊙ x − a ⊙ x̂ and b ⊙ r − a ⊙ r̂
    if (X) dx = a ? Mat(*X * b->asDiagonal() - xa) : Mat(*X - xh);
    if (R) dr = a ? Mat(*R * b->asDiagonal() - *Rhat * a->asDiagonal()) : Mat(*R - *Rhat);

    // The products' operands in Acc, or all in float with float products (the tasks keep
    // references to them until they have run).
    auto run = [&](const auto& xa_s, const auto& dx_s, const auto& dr_s) {
      std::vector<Task> tasks;
      add_syrk_tasks(tasks, xa_s, keep, step);
      if (X) add_cross_tasks(tasks, cross_, dx_s, xa_s, keep, step);
      if (R) add_cross_tasks(tasks, residual_cross_, dr_s, xa_s, keep, step);
      std::stable_sort(tasks.begin(), tasks.end(),
                       [](const Task& l, const Task& r) { return l.flops > r.flops; });
      internal::run_tasks(runner_, Index(tasks.size()), [&](Index i) { tasks[std::size_t(i)].run(); });
    };
    if (float_products())
      run(Matrix<float>(xa.template cast<float>()), Matrix<float>(dx.template cast<float>()),
          Matrix<float>(dr.template cast<float>()));
    else
      run(xa, dx, dr);
    return Report::success();
  }

  // One piece of a batch's work: rescale some rows of one statistic and add their products.
  struct Task {
    double flops;
    std::function<void()> run;
  };

  // Lower triangle of Ĥ ← keep·Ĥ + step·X·Xᵀ (SYRK) in fixed panels of rows: the diagonal block
  // by a triangular rank update, the rest of the panel's rows by one GEMM. X in float (float
  // products): each panel's products in float, added to Ĥ in Acc. Only the lower triangle is
  // rescaled: hessian() rebuilds the upper one from it.
  template <class S>
  void add_syrk_tasks(std::vector<Task>& tasks, const Matrix<S>& X, Acc keep, Acc step) {
    const Index n = X.rows(), P = 256;
    for (Index r0 = 0; r0 < n; r0 += P) {
      const Index rows = std::min(P, n - r0);
      tasks.push_back({double(rows) * double(r0 + rows) * double(X.cols()), [this, &X, keep, step, r0, rows] {
        if (keep != Acc(1)) hessian_.block(r0, 0, rows, r0 + rows) *= keep;
        if constexpr (std::is_same<S, Acc>::value) {
          if (r0 > 0)
            hessian_.block(r0, 0, rows, r0).noalias() +=
                step * X.middleRows(r0, rows) * X.topRows(r0).transpose();
          hessian_.block(r0, r0, rows, rows).template selfadjointView<Eigen::Lower>().rankUpdate(
              X.middleRows(r0, rows), step);
        } else {
          Matrix<S> off;
          if (r0 > 0) {
            off.noalias() = X.middleRows(r0, rows) * X.topRows(r0).transpose();
            hessian_.block(r0, 0, rows, r0) += step * off.template cast<Acc>();
          }
          Matrix<S> diag = Matrix<S>::Zero(rows, rows);
          diag.template selfadjointView<Eigen::Lower>().rankUpdate(X.middleRows(r0, rows));
          hessian_.block(r0, r0, rows, rows).template triangularView<Eigen::Lower>() +=
              step * diag.template cast<Acc>();
        }
      }});
    }
  }

  // C or G ← keep·S + step·D·(a ⊙ x̂)ᵀ in blocks of rows. D, xa in float (float products): the
  // product in float, added in Acc.
  template <class S>
  void add_cross_tasks(std::vector<Task>& tasks, Mat& out, const Matrix<S>& D, const Matrix<S>& xa,
                       Acc keep, Acc step) const {
    const Index P = internal::kTaskRows;
    for (Index r0 = 0; r0 < D.rows(); r0 += P) {
      const Index rows = std::min(P, D.rows() - r0);
      tasks.push_back({2.0 * double(rows) * double(xa.rows()) * double(D.cols()),
                       [&out, &D, &xa, keep, step, r0, rows] {
        auto block = out.middleRows(r0, rows);
        if (keep != Acc(1)) block *= keep;
        if constexpr (std::is_same<S, Acc>::value) {
          block.noalias() += step * D.middleRows(r0, rows) * xa.transpose();
        } else {
          Matrix<S> p;
          p.noalias() = D.middleRows(r0, rows) * xa.transpose();
          block += step * p.template cast<Acc>();
        }
      }});
    }
  }

  mutable Mat hessian_;
  mutable internal::SharedFlag symmetric_{true};
  Mat cross_, residual_cross_;
  Index residual_rows_ = 0;
  Index sequences_ = 0, tokens_ = 0;
  bool float_products_ = false;
  TaskRunner runner_;
};

}  // namespace loaq
