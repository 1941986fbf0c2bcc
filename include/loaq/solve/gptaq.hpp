// GPTAQ (asymmetric calibration, Li et al. 2025), reference gptaq_utils.py semantics (spec §4).
// Objective min ‖W X − Q X̂‖² with H = 2/n Σ x̂x̂ᵀ and dXXT = 2/n Σ (x − x̂)x̂ᵀ.
#pragma once

#include <algorithm>

#include "../tasks.hpp"
#include "column_solver.hpp"

namespace loaq {

namespace internal {

// Rows per task of strictly_upper_product: fixed, and each task is serial Eigen kernels, so the
// result is bit-identical for any thread count.
constexpr Index kCorrectionPanel = 128;

// triu₁(d·Uᵀ)·U for upper-triangular U, in panels of rows. Rows [s, s + h) of both products read
// only the trailing n − s columns (U[k, l] ≠ 0 needs l ≥ k, and triu₁ keeps k > i ≥ s) and the
// result is zero left of its diagonal: per panel two triangular products of order n − s, n³/3
// flops each in all, against n³ each for the full-width products. Panels are independent tasks.
template <class C>
Matrix<C> strictly_upper_product(const Matrix<C>& d, const Matrix<C>& U) {
  const Index n = d.rows(), tasks = (n + kCorrectionPanel - 1) / kCorrectionPanel;
  Matrix<C> P = Matrix<C>::Zero(n, n);
  run_tasks({}, tasks, [&](Index t) {  // task 0 is the widest panel
    const Index s = t * kCorrectionPanel, h = std::min(kCorrectionPanel, n - s), w = n - s;
    const auto Us = U.bottomRightCorner(w, w);
    Matrix<C> A = d.block(s, s, h, w) * Us.transpose().template triangularView<Eigen::Lower>();
    A.leftCols(h).template triangularView<Eigen::Lower>().setZero();  // keep k > i only
    P.block(s, s, h, w).noalias() = A * Us.template triangularView<Eigen::Upper>();
  });
  return P;
}

// dXXT as the correction reads it: scaled by 4^−k like the factor, dead columns zeroed (as the
// reference does), in solve order.
template <class C, class D, class Prep>
Matrix<C> correction_input(const Eigen::MatrixBase<D>& dXXT, const Prep& prep) {
  Matrix<C> d = scaled_pow4_as<C>(dXXT, prep.log4_scale);
  for (std::size_t j = 0; j < prep.dead.size(); ++j)
    if (prep.dead[j]) d.col(Index(j)).setZero();
  if (prep.permuted()) d = d(prep.perm, prep.perm).eval();
  return d;
}

// The left-looking loop's form of P = T·U, T = triu₁(d·Uᵀ) (column_solver.hpp). The reference
// corrects a later block by Q_p·P_pb (its block update reads the quantized columns) and inside a
// block by W̄·P_bb (W̄: the columns just before they were quantized). On R what has reached block
// b when it starts, −E_p·U_pb + Q_p·P_pb, equals (W − Q + (W̄ − Q)·P_dd)_p·M_pb + Q_p·T_pb·U_bb
// (P_dd: P's diagonal blocks; the Q·P parts of E_p and of P_pb cancel). So block column b holds
// T_pb·U_bb above T_bb·U_bb = P_bb. T needs d·R⁻ᵀ above the diagonal only (left_factor_z_pass
// over each block's rows from its own block on: n³/3 flops), and U is never formed.
template <class C>
Matrix<C> left_correction(Matrix<C> d, const Matrix<C>& F, Index block, double alpha) {
  const Index n = d.rows(), blocks = (n + block - 1) / block;
  run_tasks({}, blocks, [&](Index r) {  // rows of block r: T's, block r's columns onwards
    const Index s = r * block, h = std::min(block, n - s);
    auto rows = d.middleRows(s, h);
    left_factor_z_pass(rows, F, block, r);  // Z_b = d_b − Σ_{q>b} Z_q·M_bqᵀ
    for (Index b = r; b < blocks; ++b) {  // (d·R⁻ᵀ)_b = Z_b·U_bbᵀ
      const Index c0 = b * block, w = std::min(block, n - c0);
      const Matrix<C> Z_b = rows.middleCols(c0, w);
      rows.middleCols(c0, w).noalias() =
          Z_b * F.block(c0, c0, w, w).template triangularView<Eigen::Upper>().transpose();
    }
    rows.leftCols(s).setZero();  // keep k > i only
    rows.middleCols(s, h).template triangularView<Eigen::Lower>().setZero();
  });
  run_tasks({}, blocks, [&](Index b) {  // block column b: T_{≤b,b}·U_bb (below it T is zero)
    const Index c0 = b * block, w = std::min(block, n - c0);
    const Matrix<C> T_b = d.block(0, c0, c0 + w, w);
    d.block(0, c0, c0 + w, w).noalias() =
        T_b * F.block(c0, c0, w, w).template triangularView<Eigen::Upper>();
  });
  d *= C(alpha);
  return d;
}

template <class C, class D, class Prep>
Matrix<C> gptaq_correction_in(const Eigen::MatrixBase<D>& dXXT, const Matrix<C>& U,
                              const Prep& prep, double alpha) {
  Matrix<C> P = strictly_upper_product(correction_input<C>(dXXT, prep), U);
  P *= C(alpha);
  return P;
}
}  // namespace internal

// P = α · triu₁(dXXT · Uᵀ) · U in solve order (dead columns of dXXT zeroed first, as the
// reference; strictly_upper_product skips both triangles' zeros), in the solver's scalar (double
// with FactorPrecision::Double). With the normalized factor, Ĥ⁻¹ = 4^−k·UᵀU, so dXXT is scaled by
// 4^−k first (exact): P does not depend on the scale of the statistics.
template <class Scalar, class D>
Matrix<Scalar> gptaq_correction(const Eigen::MatrixBase<D>& dXXT,
                                const PreparedHessian<Scalar>& prep, double alpha) {
  if (prep.upper_double.size())
    return internal::gptaq_correction_in<double>(dXXT, prep.upper_double, prep, alpha)
        .template cast<Scalar>();
  return internal::gptaq_correction_in<Scalar>(dXXT, prep.upper, prep, alpha);
}

namespace internal {

// W is an Eigen expression (read, then copied) or an rvalue Matrix<Scalar> (solved in place).
template <class Grid, class WArg, class DH, class DC>
Report gptaq_solve(WArg&& W, const Eigen::MatrixBase<DH>& H, const Eigen::MatrixBase<DC>& dXXT,
                   const Grid& grid, const GptqOptions& options, double alpha,
                   QuantizedWeight<typename Grid::Scalar>& out, SolveDiagnostics* diag) {
  using Scalar = typename Grid::Scalar;
  out = QuantizedWeight<Scalar>{};
  const Index n = W.cols();
  if (H.rows() != n || H.cols() != n || dXXT.rows() != n || dXXT.cols() != n)
    return Report::fail(Status::ShapeMismatch, "Hessian and dXXT must be n × n with n = " +
                                                   std::to_string(n) + " weight columns");
  if (!internal::all_finite(dXXT))
    return Report::fail(Status::NonFiniteInput, "dXXT holds NaN or Inf");
  if (!std::isfinite(alpha)) return Report::fail(Status::InvalidArgument, "alpha must be finite");
  if (auto r = check_options(options, n); !r.ok()) return r;
  if (!internal::all_finite(W))
    return Report::fail(Status::NonFiniteInput, "weight holds NaN or Inf");
  PreparedHessian<Scalar> prep;
  if (alpha == 0) {  // GPTQ exactly, bit for bit
    if (auto r = prepare_plain_gptq(H, options, prep); !r.ok()) return r;
    return solve_columns(std::forward<WArg>(W), prep, grid, options, nullptr, out, diag);
  }
  // Left-looking where plain GPTQ would be (column_solver.hpp): no U, no trailing updates.
  if (auto r = prepare_hessian_as(H, options.act_order, options.damping, prep, options.factor,
                                  left_block_for(options));
      !r.ok())
    return r;
  const Matrix<Scalar> P =
      prep.left_block > 0  // (a left-looking form beyond the scalar's range fell back to U)
          ? left_correction(correction_input<Scalar>(dXXT, prep), prep.left_factor,
                            prep.left_block, alpha)
          : gptaq_correction(dXXT, prep, alpha);
  if (!internal::all_finite(P))
    return Report::fail(Status::OutOfRange,
                        "GPTAQ's correction overflowed: dXXT is far larger than the Hessian (are "
                        "both from the same calibration tokens and scaling?)");
  return solve_columns(std::forward<WArg>(W), prep, grid, options, &P, out, diag);
}

}  // namespace internal

// GPTQ plus the asymmetric correction; α = 0.25 is the reference default, α = 0 is GPTQ exactly.
// On failure `out` is empty.
template <class Grid, class DW, class DH, class DC>
Report gptaq(const Eigen::MatrixBase<DW>& W, const Eigen::MatrixBase<DH>& H,
             const Eigen::MatrixBase<DC>& dXXT, const Grid& grid, const GptqOptions& options,
             double alpha, QuantizedWeight<typename Grid::Scalar>& out,
             SolveDiagnostics* diag = nullptr) {
  return internal::gptaq_solve(W, H, dXXT, grid, options, alpha, out, diag);
}

// The same, solving in the storage of a weight the caller hands over (`gptaq(std::move(W), …)`):
// one m × n copy fewer. W is left valid but unspecified; the result is identical.
template <class Grid, class DH, class DC>
Report gptaq(Matrix<typename Grid::Scalar>&& W, const Eigen::MatrixBase<DH>& H,
             const Eigen::MatrixBase<DC>& dXXT, const Grid& grid, const GptqOptions& options,
             double alpha, QuantizedWeight<typename Grid::Scalar>& out,
             SolveDiagnostics* diag = nullptr) {
  return internal::gptaq_solve(std::move(W), H, dXXT, grid, options, alpha, out, diag);
}

}  // namespace loaq
