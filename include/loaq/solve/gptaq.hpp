// GPTAQ (asymmetric calibration, Li et al. 2025), reference gptaq_utils.py semantics (spec §4).
// Objective min ‖W X − Q X̂‖² with H = 2/n Σ x̂x̂ᵀ and dXXT = 2/n Σ (x − x̂)x̂ᵀ.
#pragma once

#include "column_solver.hpp"

namespace loaq {

// P = α · triu₁(dXXT · Uᵀ) · U in solve order (dead columns of dXXT zeroed first, as the reference).
template <class Scalar, class D>
Matrix<Scalar> gptaq_correction(const Eigen::MatrixBase<D>& dXXT, const PreparedHessian& prep,
                                double alpha) {
  Matrix<double> d = dXXT.template cast<double>();
  for (std::size_t j = 0; j < prep.dead.size(); ++j)
    if (prep.dead[j]) d.col(Index(j)).setZero();
  if (prep.permuted()) d = d(prep.perm, prep.perm).eval();
  const Matrix<double>& U = prep.factor.upper();
  // Both products exploit triangularity: Uᵀ is lower, and only triu₁(d·Uᵀ) is kept.
  const Matrix<double> A = d * U.transpose().template triangularView<Eigen::Lower>();
  const Matrix<double> P = A.template triangularView<Eigen::StrictlyUpper>() * U;
  return (alpha * P).template cast<Scalar>();
}

// GPTQ plus the asymmetric correction; α = 0.25 is the reference default, α = 0 is GPTQ exactly.
template <class Grid, class DW, class DH, class DC>
Report gptaq(const Eigen::MatrixBase<DW>& W, const Eigen::MatrixBase<DH>& H,
             const Eigen::MatrixBase<DC>& dXXT, const Grid& grid, const GptqOptions& options,
             double alpha, QuantizedWeight<typename Grid::Scalar>& out,
             SolveDiagnostics* diag = nullptr) {
  const Index n = W.cols();
  if (H.rows() != n || H.cols() != n || dXXT.rows() != n || dXXT.cols() != n)
    return Report::fail(Status::ShapeMismatch, "Hessian and dXXT must be n × n with n = " +
                                                   std::to_string(n) + " weight columns");
  if (!dXXT.allFinite()) return Report::fail(Status::NonFiniteInput, "dXXT holds NaN or Inf");
  if (!std::isfinite(alpha)) return Report::fail(Status::InvalidArgument, "alpha must be finite");
  if (auto r = internal::check_options(options, n); !r.ok()) return r;
  if (!W.allFinite()) return Report::fail(Status::NonFiniteInput, "weight holds NaN or Inf");
  PreparedHessian prep;
  if (auto r = prepare_hessian(H, options.act_order, options.damping, prep); !r.ok()) return r;
  if (alpha == 0) return internal::solve_columns(W, prep, grid, options, nullptr, out, diag);
  const auto P = gptaq_correction<typename Grid::Scalar>(dXXT, prep, alpha);
  return internal::solve_columns(W, prep, grid, options, &P, out, diag);
}

}  // namespace loaq
