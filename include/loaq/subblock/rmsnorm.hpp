// RMSNorm helpers for LLaMA-style sub-blocks: Norm(y)_t = γ ⊙ y_t / ρ(y_t),
// ρ(y) = sqrt(mean(y²) + ε). Tokens are columns.
#pragma once

#include <cmath>

#include "../config.hpp"

namespace loaq {

// 1/ρ(y_t) for every token (column) of Y.
template <class D>
Vector<double> inverse_rms(const Eigen::MatrixBase<D>& Y, double eps) {
  const Matrix<double> y = Y.template cast<double>();  // evaluate once: Y may be a product
  const double d = double(y.rows());
  return ((y.colwise().squaredNorm().array() / d + eps).rsqrt()).transpose().matrix();
}

// RMSNorm(Y) with weight γ.
template <class D, class G>
Matrix<typename D::Scalar> rmsnorm(const Eigen::MatrixBase<D>& Y, const Eigen::MatrixBase<G>& gamma,
                                   double eps) {
  using S = typename D::Scalar;
  const Vector<double> s = inverse_rms(Y, eps);
  return (gamma.template cast<S>().asDiagonal() * Y) * s.template cast<S>().asDiagonal();
}

// Folds γ into the linears that read the norm's output: W ← W·diag(γ), γ ← 1. Exact:
// W·(γ ⊙ u) = (W·diag(γ))·u for every normalized token u.
template <class Scalar>
void fold_rmsnorm(Vector<Scalar>& gamma, std::initializer_list<Matrix<Scalar>*> readers) {
  for (Matrix<Scalar>* W : readers) *W = *W * gamma.asDiagonal();
  gamma.setOnes();
}

}  // namespace loaq
