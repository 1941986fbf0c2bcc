// LoaQ-family closed-form targets over the GPTQ core (spec §5):
//   W* = W + α·W·C·Ĥ⁻¹ + β·G·Ĥ⁻¹,  then  Q = GPTQ(W*, Ĥ)
// with Ĥ⁻¹ from the factor the solver computes anyway (no extra O(n³) work): UᵀU, or in the
// solver's scalar the left-looking form, where W* is never formed (left_target_drift).
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
// The drift B = α·W·C + β·G, normalized like the factor (C and G scaled by 4^−k, exactly) and in
// solve order, in the compute scalar C; empty when neither term is used.
template <class C, class DW>
Matrix<C> target_drift(const Eigen::MatrixBase<DW>& W, const Matrix<double>* Cs,
                       const Matrix<double>* G, const std::vector<Index>& perm, bool permuted,
                       int k, const TargetWeights& weights) {
  const bool use_c = Cs && weights.alpha != 0, use_g = G && weights.beta != 0;
  if (!use_c && !use_g) return Matrix<C>();
  Matrix<C> B = Matrix<C>::Zero(W.rows(), W.cols());
  if (use_c) B.noalias() += C(weights.alpha) * (W.template cast<C>() * scaled_pow4_as<C>(*Cs, k));
  if (use_g) B += C(weights.beta) * scaled_pow4_as<C>(*G, k);
  if (permuted) B = B(Eigen::all, perm).eval();
  return B;
}

// W* in the compute scalar C (the solver's, or double with FactorPrecision::Double) from U.
template <class C, class DW>
Matrix<C> closed_form_target_in(const Eigen::MatrixBase<DW>& W, const Matrix<double>* Cs,
                                const Matrix<double>* G, const Matrix<C>& U,
                                const std::vector<Index>& perm, bool permuted, int k,
                                const TargetWeights& weights) {
  Matrix<C> target = W.template cast<C>();
  Matrix<C> B = target_drift<C>(W, Cs, G, perm, permuted, k, weights);
  if (B.size() == 0) return target;
  // B·Ĥ⁻¹ = (B·Uᵀ)·U, two triangular products, in blocks of B's rows as tasks over the threads
  // (Eigen runs triangular products on one); each block is summed exactly as the unsplit product
  // (kTaskRows), so any thread count agrees.
  const Index P = kTaskRows;
  run_tasks({}, (B.rows() + P - 1) / P, [&](Index t) {
    auto rows = B.middleRows(t * P, std::min(P, B.rows() - t * P));
    const Matrix<C> BUt = rows * U.transpose().template triangularView<Eigen::Lower>();
    rows.noalias() = BUt * U.template triangularView<Eigen::Upper>();
  });
  for (Index j = 0; j < W.cols(); ++j) target.col(perm[std::size_t(j)]) += B.col(j);
  return target;
}

// On the left-looking form F (blocks of `block` columns: U_bb on the diagonal, M_pb = R_pb·U_bb
// above it; R·Rᵀ = the normalized damped Ĥ), B·Ĥ⁻¹ = B·R⁻ᵀ·R⁻¹ never needs U whole:
//   Y = B·R⁻ᵀ, block b from the last:  Y_b = Z_b·U_bbᵀ  with  Z_b = B_b − Σ_{q>b} Z_q·M_bqᵀ
//   X = Y·R⁻¹, block b from the first: X_b = Y_b·U_bb − X_p·M_pb  (p: the columns before b)
// The left-looking loop starts block b of GPTQ(W + X) from W_b + X_b + (W + X − Q)_p·M_pb, whose
// X terms are X_b + X_p·M_pb = Y_b·U_bb =: D_b, the drift: the loop needs D alone
// (column_solver.hpp), so the solve costs one pass over B (m·n² flops) where U's route costs two
// and the n³/3 of the inverse. D replaces B, in row panels as tasks (summed as the unsplit
// products: any thread count agrees).
template <class C>
void left_target_drift(Matrix<C>& B, const Matrix<C>& F, Index block) {
  const Index n = B.cols(), P = kTaskRows, blocks = (n + block - 1) / block;
  std::vector<Matrix<C>> UtU(static_cast<std::size_t>(blocks));  // D_b = Z_b·(U_bbᵀ·U_bb): one GEMM
  run_tasks({}, blocks, [&](Index b) {
    const Index c0 = b * block, w = std::min(block, n - c0);
    const auto U_bb = F.block(c0, c0, w, w).template triangularView<Eigen::Upper>();
    Matrix<C> U = U_bb;
    UtU[std::size_t(b)] = U.transpose() * U;
  });
  run_tasks({}, (B.rows() + P - 1) / P, [&](Index t) {
    auto rows = B.middleRows(t * P, std::min(P, B.rows() - t * P));
    left_factor_z_pass(rows, F, block, 0);  // Z; the last block's Z_b is B_b
    for (Index b = 0; b < blocks; ++b) {  // D
      const Index c0 = b * block, w = std::min(block, n - c0);
      const Matrix<C> Z_b = rows.middleCols(c0, w);
      rows.middleCols(c0, w).noalias() = Z_b * UtU[std::size_t(b)];
    }
  });
}

// X = B·Ĥ⁻¹ from the drift D (left_target_drift's result), the second pass above: only for a
// caller who asks for W* itself, or a grouping that fits parameters on all of it.
template <class C>
Matrix<C> left_target_correction(const Matrix<C>& D, const Matrix<C>& F, Index block) {
  const Index n = D.cols(), P = kTaskRows;
  Matrix<C> X = D;
  run_tasks({}, (D.rows() + P - 1) / P, [&](Index t) {
    const Index r0 = t * P, h = std::min(P, D.rows() - r0);
    for (Index c0 = block; c0 < n; c0 += block) {
      const Index w = std::min(block, n - c0);
      X.block(r0, c0, h, w).noalias() -= X.block(r0, 0, h, c0) * F.block(0, c0, c0, w);
    }
  });
  return X;
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
  using Scalar = typename Grid::Scalar;
  PreparedHessian<Scalar> prep;
  // No correction term: the target is W and the solve GPTQ, bit for bit.
  const bool plain = !(C && weights.alpha != 0) && !(G && weights.beta != 0);
  auto solved = [&](Report r) {  // on failure `target` is empty too
    if (!r.ok() && target) target->resize(0, 0);
    return r;
  };
  if (plain) {
    if (auto r = internal::prepare_plain_gptq(H, options, prep); !r.ok()) return r;
    if (target) *target = W.template cast<Scalar>();
    return solved(internal::solve_columns(W, prep, grid, options, nullptr, out, diag));
  }
  // Left-looking where plain GPTQ would be, unless a column is dead: the loop zeroes a dead
  // column of W, and only U's route zeroes the target's column as well.
  const bool any_dead = (H.diagonal().array() == typename DH::Scalar(0)).any();
  if (auto r = internal::prepare_hessian_as(H, options.act_order, options.damping, prep,
                                            options.factor,
                                            any_dead ? 0 : internal::left_block_for(options));
      !r.ok())
    return r;
  const Report overflowed = Report::fail(
      Status::NonFiniteInput,
      "target overflowed; the statistics are badly scaled or the Hessian is nearly singular "
      "(raise percdamp)");
  if (prep.left_block > 0) {  // (a left-looking form beyond the scalar's range fell back to U)
    Matrix<Scalar> D = internal::target_drift<Scalar>(W, C, G, prep.perm, prep.permuted(),
                                                      prep.log4_scale, weights);
    internal::left_target_drift(D, prep.left_factor, prep.left_block);
    if (!internal::all_finite(D)) return overflowed;
    // Per-row and static group parameters come from all of W* before the loop starts, so it is
    // formed for them, and for a caller who asks for it; dynamic groups need D alone.
    const bool dynamic = options.group_size > 0 && !options.static_groups;
    if (!target && dynamic)
      return internal::solve_columns(W, prep, grid, options, nullptr, out, diag, &D);
    const Matrix<Scalar> X = internal::left_target_correction(D, prep.left_factor, prep.left_block);
    Matrix<Scalar> Wt = W.template cast<Scalar>();
    for (Index j = 0; j < n; ++j) Wt.col(prep.perm[std::size_t(j)]) += X.col(j);
    if (!internal::all_finite(Wt)) return overflowed;
    if (target) *target = Wt;
    if (dynamic)
      return solved(internal::solve_columns(W, prep, grid, options, nullptr, out, diag, &D));
    return solved(internal::solve_columns(std::move(Wt), prep, grid, options, nullptr, out, diag));
  }
  Matrix<Scalar> Wt = closed_form_target<Scalar>(W, C, G, prep, weights);
  if (!internal::all_finite(Wt)) return overflowed;
  if (target) *target = Wt;
  return solved(internal::solve_columns(std::move(Wt), prep, grid, options, nullptr, out, diag));
}

}  // namespace loaq
