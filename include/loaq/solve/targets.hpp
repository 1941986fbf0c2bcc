// LoaQ-family closed-form targets over the GPTQ core (spec §5):
//   W* = W + α·W·C·Ĥ⁻¹ + β·G·Ĥ⁻¹,  then  Q = GPTQ(W*, Ĥ)
// with Ĥ⁻¹ = UᵀU from the factor the solver computes anyway (no extra O(n³) work).
// C = Σ a(b·x − a·x̂)x̂ᵀ and G = Σ a(b·r − a·r̂)x̂ᵀ must carry Ĥ's scaling (the accumulator
// guarantees it). Linear output (QEP/LLOA): G absent. α = β = 0 is GPTQ exactly.
#pragma once

#include <algorithm>
#include <utility>

#include "../tasks.hpp"
#include "column_solver.hpp"

namespace loaq {

struct TargetWeights {
  double alpha = 1.0;  // weight of the input-drift correction W·C·Ĥ⁻¹
  double beta = 1.0;   // weight of the residual-drift correction G·Ĥ⁻¹
};

namespace internal {
// W* in the compute scalar C (the solver's, or double with FactorPrecision::Double).
template <class C, class DW>
Matrix<C> closed_form_target_in(const Eigen::MatrixBase<DW>& W, const Matrix<double>* Cs,
                                const Matrix<double>* G, const Matrix<C>& U,
                                const std::vector<Index>& perm, bool permuted, int k,
                                const TargetWeights& weights) {
  const bool use_c = Cs && weights.alpha != 0, use_g = G && weights.beta != 0;
  Matrix<C> target = W.template cast<C>();
  if (!use_c && !use_g) return target;
  auto normalized = [k](const Matrix<double>& S) {  // exact: matches the normalized factor
    return S.unaryExpr([k](double x) { return scale_pow4(x, k); }).template cast<C>();
  };
  // B = α·W·C + β·G in solve order; then B·Ĥ⁻¹ = (B·Uᵀ)·U, two triangular products.
  Matrix<C> B = Matrix<C>::Zero(W.rows(), W.cols());
  if (use_c) B.noalias() += C(weights.alpha) * (target * normalized(*Cs));
  if (use_g) B += C(weights.beta) * normalized(*G);
  if (permuted) B = B(Eigen::all, perm).eval();
  // Blocks of B's rows as tasks over the threads (Eigen runs triangular products on one); each
  // block is summed exactly as the unsplit product (kTaskRows), so any thread count agrees.
  const Index P = kTaskRows;
  run_tasks({}, (B.rows() + P - 1) / P, [&](Index t) {
    auto rows = B.middleRows(t * P, std::min(P, B.rows() - t * P));
    const Matrix<C> BUt = rows * U.transpose().template triangularView<Eigen::Lower>();
    rows.noalias() = BUt * U.template triangularView<Eigen::Upper>();
  });
  for (Index j = 0; j < W.cols(); ++j) target.col(perm[std::size_t(j)]) += B.col(j);
  return target;
}
}  // namespace internal

// The continuous target W* (original column order) on a prepared Hessian, computed in the
// solver's scalar (in double when the Hessian was prepared with FactorPrecision::Double).
// G may be null. C and G are scaled by 4^−k (exact) to match the normalized factor.
template <class Scalar, class DW>
Matrix<Scalar> closed_form_target(const Eigen::MatrixBase<DW>& W, const Matrix<double>* C,
                                  const Matrix<double>* G, const PreparedHessian<Scalar>& prep,
                                  const TargetWeights& weights) {
  if (prep.upper_double.size())
    return internal::closed_form_target_in<double>(W, C, G, prep.upper_double, prep.perm,
                                                   prep.permuted(), prep.log4_scale, weights)
        .template cast<Scalar>();
  return internal::closed_form_target_in<Scalar>(W, C, G, prep.upper, prep.perm, prep.permuted(),
                                                 prep.log4_scale, weights);
}

// Quantizes toward the closed-form target. `target`, if given, receives W*. On failure `out`
// and `target` are empty.
template <class Grid, class DW, class DH>
Report solve_target(const Eigen::MatrixBase<DW>& W, const Eigen::MatrixBase<DH>& H,
                    const Matrix<double>* C, const Matrix<double>* G,
                    const TargetWeights& weights, const Grid& grid, const GptqOptions& options,
                    QuantizedWeight<typename Grid::Scalar>& out, SolveDiagnostics* diag = nullptr,
                    Matrix<typename Grid::Scalar>* target = nullptr) {
  out = QuantizedWeight<typename Grid::Scalar>{};
  if (target) target->resize(0, 0);
  const Index m = W.rows(), n = W.cols();
  if (H.rows() != n || H.cols() != n)
    return Report::fail(Status::ShapeMismatch,
                        "Hessian must be n × n with n = " + std::to_string(n) + " weight columns");
  if (C && (C->rows() != n || C->cols() != n))
    return Report::fail(Status::ShapeMismatch, "input cross term C must be n × n");
  if (G && (G->rows() != m || G->cols() != n))
    return Report::fail(Status::ShapeMismatch,
                        "residual cross term G must be m × n (" + std::to_string(m) + " × " +
                            std::to_string(n) + ")");
  if ((C && !internal::all_finite(*C)) || (G && !internal::all_finite(*G)))
    return Report::fail(Status::NonFiniteInput, "cross statistics hold NaN or Inf");
  if (!std::isfinite(weights.alpha) || !std::isfinite(weights.beta))
    return Report::fail(Status::InvalidArgument, "alpha and beta must be finite");
  if (auto r = internal::check_options(options, n); !r.ok()) return r;
  if (!internal::all_finite(W))
    return Report::fail(Status::NonFiniteInput, "weight holds NaN or Inf");
  PreparedHessian<typename Grid::Scalar> prep;
  // No correction term: the target is W and the solve GPTQ, bit for bit.
  const bool plain = !(C && weights.alpha != 0) && !(G && weights.beta != 0);
  if (auto r = plain ? internal::prepare_plain_gptq(H, options, prep)
                     : prepare_hessian(H, options.act_order, options.damping, prep, options.factor);
      !r.ok())
    return r;
  Matrix<typename Grid::Scalar> Wt =
      closed_form_target<typename Grid::Scalar>(W, C, G, prep, weights);
  if (!internal::all_finite(Wt))
    return Report::fail(Status::NonFiniteInput,
                        "target overflowed; the statistics are badly scaled or the Hessian is "
                        "nearly singular (raise percdamp)");
  if (target) *target = Wt;
  return internal::solve_columns(std::move(Wt), prep, grid, options, nullptr, out, diag);
}

}  // namespace loaq
