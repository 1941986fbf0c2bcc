// Exact per-row rescaling by powers of two for weights far from 1. Every solver is equivariant
// to a positive scale of one row (grid parameters scale with it, codes do not change), so a row
// whose magnitude would overflow or underflow the solver's scalar mid-solve is solved at
// magnitude ~1 and scaled back; rows already in the safe range are left untouched, so results
// for ordinary weights are bit-identical to an unscaled solve.
#pragma once

#include <cmath>
#include <limits>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "../config.hpp"
#include "../status.hpp"
#include "options.hpp"

namespace loaq {
namespace internal {

template <class Scalar>
class RowScaling {
 public:
  // Safe range of a row's max |w|: squares, errors and updates stay far from over/underflow.
  static constexpr int kSafeExponent = std::numeric_limits<Scalar>::max_exponent / 2 - 4;

  // Chooses the exponents; fails if a row cannot be represented in Scalar at all.
  template <class Derived>
  Report fit(const Eigen::MatrixBase<Derived>& W) {
    if (W.cols() == 0) return fit_rows(Eigen::VectorXd::Zero(W.rows()));
    return fit_rows(row_max_abs(W));
  }
  // The same for a row's largest |entry| in W and `also` together (a matrix with W's rows that
  // is solved alongside it: the left-looking target's drift).
  template <class Derived>
  Report fit(const Eigen::MatrixBase<Derived>& W, const Matrix<Scalar>& also) {
    if (also.cols() == 0) return fit(W);
    if (W.cols() == 0) return fit(also);
    return fit_rows(row_max_abs(W).cwiseMax(row_max_abs(also)));
  }
  bool any() const { return any_; }
  int exponent(Index r) const { return exponent_[std::size_t(r)]; }

  // W (in its original scale, any scalar) as Scalar with the chosen rows brought near 1.
  template <class Derived>
  Matrix<Scalar> scaled(const Eigen::MatrixBase<Derived>& W) const {
    if (!any_) return W.template cast<Scalar>();
    Matrix<Scalar> out(W.rows(), W.cols());
    for (Index r = 0; r < W.rows(); ++r)
      out.row(r) = W.row(r).template cast<double>().unaryExpr([&](double x) {
        return std::ldexp(x, -exponent(r));
      }).template cast<Scalar>();
    return out;
  }

  // The same for a matrix of the solver's scalar that the caller hands over: scaled in place,
  // no copy.
  Matrix<Scalar> scaled(Matrix<Scalar>&& W) const {
    if (any_)
      for (Index r = 0; r < W.rows(); ++r)
        if (exponent(r) != 0)
          W.row(r) = W.row(r).unaryExpr([e = -exponent(r)](Scalar x) { return std::ldexp(x, e); });
    Matrix<Scalar> out = std::move(W);
    return out;
  }

  // Weights and scales back to the original scale; zeros too when they are offsets in value
  // units (grid zero_is_offset), code-unit zeros do not change. Fails, naming the row, if a
  // result does not fit Scalar.
  Report restore(QuantizedWeight<Scalar>& q, bool zeros_are_offsets = false) const {
    if (any_)
      for (Index r = 0; r < q.weight.rows(); ++r) {
        const int e = exponent(r);
        if (e == 0) continue;
        q.weight.row(r) = q.weight.row(r).unaryExpr([e](Scalar x) { return std::ldexp(x, e); });
        q.scales.row(r) = q.scales.row(r).unaryExpr([e](Scalar x) { return std::ldexp(x, e); });
        if (zeros_are_offsets)
          q.zeros.row(r) = q.zeros.row(r).unaryExpr([e](Scalar x) { return std::ldexp(x, e); });
      }
    // Checked whole in storage order first; only a failure walks the rows to name one.
    if (internal::all_finite(q.weight) && internal::all_finite(q.scales)) return Report::success();
    for (Index r = 0; r < q.weight.rows(); ++r)
      if (!q.weight.row(r).allFinite() || !q.scales.row(r).allFinite())
        return Report::fail(Status::OutOfRange,
                            "the quantized weights of row " + std::to_string(r) +
                                " do not fit the " + scalar_name() +
                                " solver's range (grid points beyond its largest value); solve "
                                "in double or rescale the layer");
    return Report::success();
  }

 private:
  // Exponents from each row's largest |entry|.
  Report fit_rows(const Eigen::VectorXd& row_max) {
    const Index m = row_max.size();
    exponent_.assign(std::size_t(m), 0);
    any_ = false;
    for (Index r = 0; r < m; ++r) {
      const double top = row_max[r];
      if (top == 0) continue;
      if (top > double(std::numeric_limits<Scalar>::max()))
        return Report::fail(Status::OutOfRange, "weight row " + std::to_string(r) + " reaches " +
                                                    to_text(top) + ", beyond the " +
                                                    scalar_name() + " solver's range; solve in "
                                                    "double or rescale the layer");
      const int e = std::ilogb(top);
      if (e > kSafeExponent || e < -kSafeExponent) {
        exponent_[std::size_t(r)] = e;
        any_ = true;
      }
    }
    return Report::success();
  }

  // max |w| of every row, walking W in its storage order (a row-wise walk of a column-major
  // 4096 × 4096 matrix is a strided pass that costs more than the copy of W).
  template <class Derived>
  static Eigen::VectorXd row_max_abs(const Eigen::MatrixBase<Derived>& W) {
    Eigen::VectorXd top(W.rows());
    if (Derived::IsRowMajor) {
      for (Index r = 0; r < W.rows(); ++r) top[r] = double(W.row(r).cwiseAbs().maxCoeff());
      return top;
    }
    using S = typename Derived::Scalar;
    Eigen::Matrix<S, Eigen::Dynamic, 1> col_max = W.col(0).cwiseAbs();
    for (Index c = 1; c < W.cols(); ++c) col_max = col_max.cwiseMax(W.col(c).cwiseAbs());
    return col_max.template cast<double>();
  }

  static std::string to_text(double v) {
    std::ostringstream s;
    s << v;
    return s.str();
  }
  static const char* scalar_name() {
    return std::is_same<Scalar, float>::value ? "float" : "double";
  }
  std::vector<int> exponent_;
  bool any_ = false;
};

}  // namespace internal
}  // namespace loaq
