// Hessian preparation shared by every column solver: dead columns, act-order, damped factor.
#pragma once

#include <algorithm>
#include <numeric>
#include <string>
#include <type_traits>
#include <vector>

#include "../config.hpp"
#include "../linalg/inverse_factor.hpp"
#include "../status.hpp"

namespace loaq {

// GPTQ fasterquant's preamble on H: H_ii = 1 where H_ii == 0 (dead), perm = stable argsort of
// diag(H) descending (act-order), then U with (H_perm + λI)⁻¹ = 4^(−log4_scale)·UᵀU, in the
// solver's scalar.
template <class Scalar>
struct PreparedHessian {
  std::vector<Index> perm;   // solve order → original column
  std::vector<bool> dead;    // by original column
  Matrix<Scalar> upper;      // U, upper triangular, normalized (see log4_scale)
  Matrix<double> upper_double;  // FactorPrecision::Double with a float solver: U in double, so
                                // targets and GPTAQ's P are computed in double too
  // Plain GPTQ's left-looking form, set instead of `upper` when left_block = B > 0: with R = U⁻¹,
  // (H_perm + λI)·4^(−log4_scale) = R·Rᵀ, each block column b (B columns) holds U's diagonal
  // block U_bb = R_bb⁻¹ and above it R_pb·U_bb. The column loop needs nothing else of U, so R is
  // never inverted whole (n³/3 flops fewer: column_solver.hpp).
  Index left_block = 0;
  Matrix<Scalar> left_factor;
  int log4_scale = 0;
  double damping = 0;           // absolute λ added to diag(H)
  double relative_damping = 0;  // percdamp that succeeded
  int attempts = 0;             // factorizations tried (in the last precision tried)
  Index failed_pivot = -1;      // first failing Cholesky pivot (H's indexing), −1 if none
  bool double_fallback = false; // a float factor failed or was inaccurate; U came from double
  bool permuted() const {
    for (std::size_t j = 0; j < perm.size(); ++j)
      if (perm[j] != Index(j)) return true;
    return false;
  }
};

namespace internal {
// A float factor is kept when ‖A·A⁻¹v − v‖/‖v‖ stays below this (float's own limit on a damped
// GPTQ Hessian is κ·6e−8, about 1e−3 at κ = 1e4); otherwise the factor is redone in double.
constexpr double kFloatFactorTolerance = 1e-2;

// GPTQ fasterquant's preamble on diag(H) (shared with the CUDA backend): a dead column (H_ii = 0,
// no token reached it) gets H_ii = 1 in `diag`; the solve order is the stable argsort of the
// diagonal, descending, with act-order, the identity otherwise.
inline Report order_columns(std::vector<double>& diag, bool act_order, std::vector<bool>& dead,
                            std::vector<Index>& perm) {
  const std::size_t n = diag.size();
  dead.assign(n, false);
  std::size_t dead_count = 0;
  for (std::size_t i = 0; i < n; ++i)
    if (diag[i] == 0) {
      dead[i] = true;
      diag[i] = 1;
      ++dead_count;
    }
  if (n > 0 && dead_count == n)
    return Report::fail(Status::InvalidArgument,
                        "Hessian is all zero: no calibration tokens reached this layer");
  perm.resize(n);
  std::iota(perm.begin(), perm.end(), Index(0));
  if (act_order)
    std::stable_sort(perm.begin(), perm.end(), [&](Index a, Index b) {
      return diag[std::size_t(a)] > diag[std::size_t(b)];
    });
  return Report::success();
}

// The left-looking form of PreparedHessian from R (upper, R·Rᵀ = the damped H), in place: each
// block column's triangle R_bb becomes U_bb = R_bb⁻¹ and what lies above it R_pb·U_bb. Block
// columns are independent, one per task, so the bits do not depend on the threads. False if an
// entry is not finite (a pivot tiny enough for its inverse to overflow).
template <class S>
bool to_left_looking(Matrix<S>& R, Index B) {
  const Index n = R.rows(), blocks = (n + B - 1) / B;
  bool finite = true;
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1) reduction(&& : finite)
#endif
  for (Index b = blocks - 1; b >= 0; --b) {  // the tallest products first
    const Index c0 = b * B, w = std::min(B, n - c0);
    Matrix<S> U_bb = Matrix<S>::Identity(w, w);
    R.block(c0, c0, w, w).template triangularView<Eigen::Upper>().solveInPlace(U_bb);
    if (c0 > 0) {
      Matrix<S> above = R.block(0, c0, c0, w) * U_bb.template triangularView<Eigen::Upper>();
      R.block(0, c0, c0, w) = above;
    }
    R.block(c0, c0, w, w).template triangularView<Eigen::Upper>() = U_bb;
    finite = finite && all_finite(R.block(0, c0, c0 + w, w));
  }
  return finite;
}

// Products with R⁻ᵀ on the left-looking form F, in place on rows X (n columns): with
// Y = X·R⁻ᵀ and Z_b = Y_b·R_bbᵀ, Y·Rᵀ = X gives Z_b = X_b − Σ_{q>b} Z_q·M_bqᵀ (M_bq = R_bq·U_qq,
// F's block above the diagonal), right to left from the last block down to block `first`; then
// Y_b = Z_b·U_bbᵀ. The LoaQ/QEP drift and GPTAQ's correction both start from this pass.
template <class Rows, class S>
void left_factor_z_pass(Rows& X, const Matrix<S>& F, Index block, Index first) {
  const Index n = X.cols(), blocks = (n + block - 1) / block;
  for (Index b = blocks - 2; b >= first; --b) {
    const Index c0 = b * block, c1 = c0 + block;
    X.middleCols(c0, block).noalias() -=
        X.rightCols(n - c1) * F.block(c0, c1, block, n - c1).transpose();
  }
}

// m in scalar To: moved when it already is, else cast.
template <class To, class From>
Matrix<To> in_scalar(Matrix<From>&& m) {
  if constexpr (std::is_same<To, From>::value)
    return std::move(m);
  else
    return m.template cast<To>();
}

// f's factor and diagnostics into `out`, in the form out.left_block asks for. False if the
// left-looking form is not finite in f's scalar.
template <class S, class Scalar>
bool take_factor(InverseFactor<S>& f, PreparedHessian<Scalar>& out) {
  out.log4_scale = f.log4_scale();
  out.damping = f.damping();
  out.relative_damping = f.relative_damping();
  out.attempts = f.attempts();
  out.failed_pivot = f.failed_pivot();
  if (out.left_block == 0) {
    out.upper = in_scalar<Scalar>(f.take_upper());
    return true;
  }
  Matrix<S> R = f.take_upper();
  const bool finite = to_left_looking(R, out.left_block);
  out.left_factor = in_scalar<Scalar>(std::move(R));
  return finite;
}

// factor_prepared in one form: in the solver's scalar when it is float, redone in double when
// that fails or is inaccurate.
template <class Scalar, class Derived>
Report factor_in_form(const Eigen::MatrixBase<Derived>& H, const DampingPolicy& damping,
                      FactorPrecision precision, Index left_block, PreparedHessian<Scalar>& out) {
  out.left_block = left_block;
  const FactorForm form = left_block > 0 ? FactorForm::Cholesky : FactorForm::Inverse;
  if (!std::is_same<Scalar, double>::value && precision == FactorPrecision::Solver) {
    InverseFactor<Scalar> f;
    f.compute(H, damping, CheckedHessian{}, form);
    if (f.info() == Status::Success && f.residual(H) <= kFloatFactorTolerance &&
        take_factor(f, out))
      return Report::success();
    out.double_fallback = true;
  }
  InverseFactor<double> f;
  f.compute(H, damping, CheckedHessian{}, form);
  if (f.info() != Status::Success) return Report::fail(f.info(), f.message());
  if (!std::is_same<Scalar, double>::value && precision == FactorPrecision::Double &&
      left_block == 0)
    out.upper_double = f.upper();
  // A factor beyond the solver's range after the cast is caught by the column loop.
  take_factor(f, out);
  return Report::success();
}

// Factors a prepared H (checked, dead columns and solve order applied) into `out`: U, or the
// left-looking form for blocks of left_block > 0 columns. A left-looking form that does not fit
// the solver's scalar (a diagonal block whose inverse overflows, which U would share) is
// replaced by U, whose factorization raises the damping for exactly that case.
template <class Scalar, class Derived>
Report factor_prepared(const Eigen::MatrixBase<Derived>& H, const DampingPolicy& damping,
                       FactorPrecision precision, Index left_block, PreparedHessian<Scalar>& out) {
  if (left_block > 0) {
    Report r = factor_in_form(H, damping, precision, left_block, out);
    if (!r.ok() || all_finite(out.left_factor)) return r;
    out.left_factor = Matrix<Scalar>();
    out.double_fallback = false;
  }
  return factor_in_form(H, damping, precision, 0, out);
}

// prepare_hessian with the factor in the left-looking form for blocks of left_block columns
// (0: U, as prepare_hessian gives it).
template <class Scalar, class Derived>
Report prepare_hessian_as(const Eigen::MatrixBase<Derived>& H_in, bool act_order,
                          const DampingPolicy& damping, PreparedHessian<Scalar>& out,
                          FactorPrecision precision, Index left_block) {
  out = PreparedHessian<Scalar>{};
  if (H_in.rows() != H_in.cols())
    return Report::fail(Status::ShapeMismatch, "Hessian must be square");
  if (!all_finite(H_in))
    return Report::fail(Status::NonFiniteInput,
                        "Hessian holds NaN or Inf; check the calibration activations");
  if (Report r = check_symmetric(H_in); !r.ok()) return r;
  const Index n = H_in.rows();
  std::vector<double> diag(static_cast<std::size_t>(n));
  for (Index i = 0; i < n; ++i) diag[std::size_t(i)] = double(H_in(i, i));
  if (Report r = order_columns(diag, act_order, out.dead, out.perm); !r.ok()) return r;
  // The factor reads H where it lies unless the preamble changes it (a dead column's diagonal,
  // act-order's permutation): an n × n copy fewer in the common case. A copy keeps H's scalar,
  // which holds those changes exactly (1 on the diagonal, a permutation).
  using HMatrix = Matrix<typename Derived::Scalar>;
  const bool any_dead = std::find(out.dead.begin(), out.dead.end(), true) != out.dead.end();
  if (any_dead || act_order) {
    HMatrix H = H_in;
    for (Index i = 0; i < n; ++i) H(i, i) = typename Derived::Scalar(diag[std::size_t(i)]);
    if (act_order) H = H(out.perm, out.perm).eval();
    return factor_prepared(H, damping, precision, left_block, out);
  }
  if constexpr (bool(Derived::Flags & Eigen::DirectAccessBit))
    return factor_prepared(H_in, damping, precision, left_block, out);
  else
    return factor_prepared(HMatrix(H_in), damping, precision, left_block, out);
}
}  // namespace internal

template <class Scalar, class Derived>
Report prepare_hessian(const Eigen::MatrixBase<Derived>& H_in, bool act_order,
                       const DampingPolicy& damping, PreparedHessian<Scalar>& out,
                       FactorPrecision precision = FactorPrecision::Solver) {
  return internal::prepare_hessian_as(H_in, act_order, damping, out, precision, 0);
}

}  // namespace loaq
