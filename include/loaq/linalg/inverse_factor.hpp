// The upper Cholesky factor U of the damped inverse Hessian, (H + λI)⁻¹ = UᵀU, with escalating
// damping on failure. Eigen LLT-style: compute() / info(), never throws, never touches its input.
#pragma once

#include <Eigen/Cholesky>
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "../config.hpp"
#include "../status.hpp"

#ifdef LOAQ_USE_LAPACK
#include <lapacke.h>
#endif

namespace loaq {
namespace internal {

template <class Scalar>
using StridedRef = Eigen::Ref<Matrix<Scalar>, 0, Eigen::OuterStride<>>;

// Below this size the recursion hands over to Eigen's blocked Cholesky.
constexpr Index kRecursionLeaf = 256;
// Rows (or columns) per task of the threaded kernels below in double (factor_task_bounds), and in
// both scalars of multiply_lower's row panels (only the inverse U, not the Cholesky, uses it).
constexpr Index kFactorPanel = 256;

// What a task of the threaded kernels below covers: rows that each cost the same (a triangular
// solve's), or columns of an n × n lower triangle, where column j costs n − j (a rank update's).
enum class FactorWork { EqualRows, LowerTriangleColumns };

// Task t of a threaded kernel covers [bounds[t], bounds[t + 1]): a function of the shape and the
// scalar only, and every task is one serial Eigen kernel, so the factor is bit-identical for any
// thread count. (Eigen threads only its GEMM, not triangular solves, products or rank updates.)
// - double: 256 rows (or columns) per task, the split behind every result published from the
//   double factor (the experiment factors in double).
// - float: from 32 rows on, an even number of tasks (two threads finish together), about one
//   per 256 rows, each the same work, bounds on multiples of 16 (a whole AVX-512 float packet).
//   Fixed 256-row tasks left the float factor at n = 576 on one thread: its 288-row solve split
//   as 256 + 32, its rank updates of 144 and 288 columns as one task or as 256 + 32 columns (the
//   first holding almost all the triangle). Timings: bench/README.md, session 40.
template <class Scalar>
std::vector<Index> factor_task_bounds(Index n, FactorWork work) {
  std::vector<Index> bounds{0};
  if (!std::is_same<Scalar, float>::value) {
    for (Index b = kFactorPanel; b < n; b += kFactorPanel) bounds.push_back(b);
  } else if (n >= 32) {
    const Index tasks = ((n + kFactorPanel - 1) / kFactorPanel + 1) / 2 * 2;  // even, ≥ 2
    for (Index t = 1; t < tasks; ++t) {
      const double share = double(t) / double(tasks);  // of the work before bound t
      const double at = work == FactorWork::EqualRows ? share * double(n)
                                                      : double(n) * (1 - std::sqrt(1 - share));
      const Index b = Index(std::lround(at / 16)) * 16;
      if (b > bounds.back() && b < n) bounds.push_back(b);
    }
  }
  if (n > 0) bounds.push_back(n);
  return bounds;
}

// X ← X·L⁻ᵀ for lower-triangular L (TRSM): the rows of X are independent.
template <class Scalar>
void solve_right_lower_transposed(const StridedRef<Scalar>& L, StridedRef<Scalar> X) {
  const auto bounds = factor_task_bounds<Scalar>(X.rows(), FactorWork::EqualRows);
  const Index tasks = Index(bounds.size()) - 1;
#ifdef _OPENMP
#pragma omp parallel for schedule(static)
#endif
  for (Index t = 0; t < tasks; ++t) {
    auto panel = X.middleRows(bounds[t], bounds[t + 1] - bounds[t]);
    L.adjoint().template triangularView<Eigen::Upper>().template solveInPlace<Eigen::OnTheRight>(
        panel);
  }
}

// The lower triangle of C ← C − A·Aᵀ (SYRK) in column blocks: a block's diagonal part is a rank
// update, the rest of its columns below it one GEMM. Blocks may differ in cost, so they are
// handed out dynamically.
template <class Scalar>
void rank_update_lower(StridedRef<Scalar> C, const StridedRef<Scalar>& A) {
  const Index n = C.rows();
  const auto bounds = factor_task_bounds<Scalar>(n, FactorWork::LowerTriangleColumns);
  const Index tasks = Index(bounds.size()) - 1;
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1)
#endif
  for (Index t = 0; t < tasks; ++t) {
    const Index j0 = bounds[t], w = bounds[t + 1] - j0, below = n - j0 - w;
    C.block(j0, j0, w, w).template selfadjointView<Eigen::Lower>().rankUpdate(A.middleRows(j0, w),
                                                                              Scalar(-1));
    if (below > 0)
      C.block(j0 + w, j0, below, w).noalias() -=
          A.middleRows(j0 + w, below) * A.middleRows(j0, w).adjoint();
  }
}

// Y ← L·B for lower-triangular L (TRMM) in row panels: rows [r0, r1) of L·B are the dense
// L(r0:r1, 0:r0)·B(0:r0) plus the triangular L(r0:r1, r0:r1)·B(r0:r1).
template <class Scalar>
void multiply_lower(const StridedRef<Scalar>& L, const StridedRef<Scalar>& B, Matrix<Scalar>& Y) {
  const Index n = L.rows(), tasks = (n + kFactorPanel - 1) / kFactorPanel;
  Y.resize(n, B.cols());
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1)
#endif
  for (Index t = tasks - 1; t >= 0; --t) {  // the longest rows first
    const Index r0 = t * kFactorPanel, h = std::min(kFactorPanel, n - r0);
    auto y = Y.middleRows(r0, h);
    y.noalias() = L.block(r0, r0, h, h).template triangularView<Eigen::Lower>() *
                  B.middleRows(r0, h);
    if (r0 > 0) y.noalias() += L.block(r0, 0, h, r0) * B.topRows(r0);
  }
}

// Recursive halving: the trailing update is one large SYRK (k = n/2) instead of Eigen's rank-128
// steps. Returns −1 on success, else the first pivot that is not positive.
template <class Scalar>
Index cholesky_lower_recursive(StridedRef<Scalar> A) {
  const Index n = A.rows();
  if (n <= kRecursionLeaf) return Eigen::internal::llt_inplace<Scalar, Eigen::Lower>::blocked(A);
  const Index n1 = (n / 2 + 15) / 16 * 16, n2 = n - n1;
  StridedRef<Scalar> A11 = A.topLeftCorner(n1, n1), A21 = A.bottomLeftCorner(n2, n1),
                     A22 = A.bottomRightCorner(n2, n2);
  if (const Index p = cholesky_lower_recursive<Scalar>(A11); p >= 0) return p;
  solve_right_lower_transposed<Scalar>(A11, A21);  // L21 = A21·L11⁻ᵀ
  rank_update_lower<Scalar>(A22, A21);
  const Index p = cholesky_lower_recursive<Scalar>(A22);
  return p >= 0 ? p + n1 : -1;
}

// L⁻¹ in place, blocked from the bottom-right: with the trailing block already inverted,
// L21 ← −L22⁻¹·L21·L11⁻¹, then L11 ← L11⁻¹. Scratch of n × nb only (a recursive split into
// halves needs n²/4 and was no faster here, nor was a split into two in-place TRSMs). A large
// float factor takes 128 columns per step, which halves how often the trailing triangle is read
// (bench/README.md: the whole float factor at n = 4096 on two threads, 269–273 → 257–263 ms).
// Below that size it gained nothing measurable, and double never did: those keep 64, and with it
// the bits of every result published from them (the experiment factors in double; the SmolLM2
// and tiny-model layers are smaller).
template <class Scalar>
void invert_lower_blocked(StridedRef<Scalar> A) {
  const Index n = A.rows();
  const Index nb = std::is_same<Scalar, float>::value && n > 2048 ? 128 : 64;
  Matrix<Scalar> tmp, diag_inv;
  for (Index j = ((n - 1) / nb) * nb; j >= 0; j -= nb) {
    const Index jb = std::min(nb, n - j), rest = n - j - jb;
    auto L11 = A.block(j, j, jb, jb);
    if (rest > 0) {
      StridedRef<Scalar> L21 = A.block(j + jb, j, rest, jb);
      multiply_lower<Scalar>(A.block(j + jb, j + jb, rest, rest), L21, tmp);
      L11.template triangularView<Eigen::Lower>().template solveInPlace<Eigen::OnTheRight>(tmp);
      L21 = -tmp;
    }
    diag_inv.setIdentity(jb, jb);
    L11.template triangularView<Eigen::Lower>().solveInPlace(diag_inv);
    L11.template triangularView<Eigen::Lower>() = diag_inv;
  }
}

// A = J·H·J·s in A's lower triangle (J the exchange matrix), zeros above; s = h0²·h1², powers
// of two, applied in double as four exact multiplications so that no rounding depends on the
// order. Column by column on every thread: A(i, j) = H(n−1−i, n−1−j) reads H's upper triangle.
template <class Scalar, class Derived>
void reversed_scaled_lower(const Eigen::MatrixBase<Derived>& H, double h0, double h1,
                           Matrix<Scalar>& A) {
  const Index n = H.rows();
  A.resize(n, n);
  const auto scale = [h0, h1](double x) { return x * h0 * h0 * h1 * h1; };
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 64)
#endif
  for (Index j = 0; j < n; ++j) {
    A.col(j).head(j).setZero();
    A.col(j).tail(n - j) = H.col(n - 1 - j).head(n - j).reverse().template cast<double>()
                               .unaryExpr(scale).template cast<Scalar>();
  }
}

// The upper triangular J·L·J in place, from L in A's lower triangle (what lies above it is
// ignored): columns j and n−1−j trade places reversed, one pair per task. False if an entry of
// the result is not finite.
template <class Scalar>
bool reverse_lower_to_upper(Matrix<Scalar>& A) {
  const Index n = A.rows();
  bool finite = true;
#ifdef _OPENMP
#pragma omp parallel reduction(&& : finite)
#endif
  {
    Vector<Scalar> old_left(n);
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 32)
#endif
    for (Index j = 0; j < (n + 1) / 2; ++j) {
      const Index k = n - 1 - j;  // (J·L·J)(:, j) is L(k.., k) reversed, and column k is L(j.., j)'s
      old_left.head(k + 1) = A.col(j).tail(k + 1);
      if (k > j) {
        A.col(j).head(j + 1) = A.col(k).tail(j + 1).reverse();
        A.col(j).tail(n - 1 - j).setZero();
        finite = finite && all_finite(A.col(j).head(j + 1));
      }
      A.col(k).head(k + 1) = old_left.head(k + 1).reverse();
      A.col(k).tail(n - 1 - k).setZero();
      finite = finite && all_finite(A.col(k).head(k + 1));
    }
  }
  return finite;
}

// Lower Cholesky factor in place (A = LLᵀ, only the lower triangle is read and written).
// Returns −1 on success, else the first pivot that is not positive.
template <class Scalar>
Index cholesky_lower_inplace(Matrix<Scalar>& A) {
#ifdef LOAQ_USE_LAPACK
  const lapack_int n = lapack_int(A.rows());
  lapack_int info;
  if constexpr (std::is_same<Scalar, float>::value)
    info = LAPACKE_spotrf(LAPACK_COL_MAJOR, 'L', n, A.data(), n);
  else
    info = LAPACKE_dpotrf(LAPACK_COL_MAJOR, 'L', n, A.data(), n);
  return info > 0 ? Index(info - 1) : info < 0 ? Index(0) : Index(-1);
#else
  return cholesky_lower_recursive<Scalar>(A);
#endif
}

// L⁻¹ in place for a nonsingular lower-triangular L (trtri): n³/3 flops, a third of solving
// against the identity, almost all of it in triangular × dense products.
template <class Scalar>
void invert_lower_inplace(Matrix<Scalar>& A) {
#ifdef LOAQ_USE_LAPACK
  const lapack_int n = lapack_int(A.rows());
  if constexpr (std::is_same<Scalar, float>::value)
    LAPACKE_strtri(LAPACK_COL_MAJOR, 'L', 'N', n, A.data(), n);
  else
    LAPACKE_dtrtri(LAPACK_COL_MAJOR, 'L', 'N', n, A.data(), n);
#else
  invert_lower_blocked<Scalar>(A);
#endif
}

}  // namespace internal

// λ = percdamp · mean(diag H) (GPTQ). On failure retry with percdamp × growth, up to
// max_attempts factorizations in all.
struct DampingPolicy {
  double percdamp = 0.01;
  double growth = 10.0;
  int max_attempts = 4;
};

// Which scalar the solvers factor in. Solver: the solver's own scalar (float solves factor in
// float, as the GPTQ reference does) with an automatic double fallback when the float factor
// fails or its accuracy check fails; Double: the factor, the LoaQ targets and GPTAQ's P in
// double (the most precise path; float solves then differ from double ones only in the loop).
enum class FactorPrecision { Solver, Double };

namespace internal {

// What InverseFactor::compute leaves in upper(): U with (H + λI)⁻¹ = 4^−k·UᵀU (Inverse, what
// every solver built on Ĥ⁻¹ needs), or R with (H + λI)·4^−k = R·Rᵀ, R = U⁻¹ upper triangular
// (Cholesky: the plain GPTQ loop runs on it left-looking and needs no inverse, n³/3 flops fewer).
enum class FactorForm { Inverse, Cholesky };

// k with 4^k within a factor 4 of v > 0: scaling by 4^−k is exact and keeps √ exact too.
inline int log4_near(double v) {
  int e = 0;
  std::frexp(v, &e);
  return e >= 0 ? e / 2 : -((1 - e) / 2);  // floor(e/2): shifts by exactly j when v does by 4^j
}

// x·4^−k in two exact steps (2^−k each), so |k| up to ~1000 never overflows the multiplier.
inline double scale_pow4(double x, int k) {
  const double half = std::ldexp(1.0, -k);
  return x * half * half;
}

// S·4^−k entrywise in scalar To, each entry as scale_pow4 gives it (2^−k formed once: an ldexp
// per entry costs more than the products it feeds).
template <class To, class Derived>
Matrix<To> scaled_pow4_as(const Eigen::MatrixBase<Derived>& S, int k) {
  const double half = std::ldexp(1.0, -k);
  return (S.template cast<double>().array() * half * half).matrix().template cast<To>();
}

// mean(v) in double without overflow for entries near the double range (1 for an empty v).
template <class Derived>
double mean_in_range(const Eigen::MatrixBase<Derived>& v) {
  const Index n = v.size();
  if (n == 0) return 1.0;
  double sum = 0;
  for (Index i = 0; i < n; ++i) sum += double(v(i));
  if (std::isfinite(sum)) return sum / double(n);
  double mean = 0;
  for (Index i = 0; i < n; ++i) mean += double(v(i)) / double(n);
  return mean;
}
template <class Derived>
double mean_diagonal(const Eigen::MatrixBase<Derived>& H) {
  return mean_in_range(H.diagonal());
}

// Symmetric to rounding: |H_ij − H_ji| ≤ tol·√(|H_ii|·|H_jj|), the Cauchy–Schwarz bound of a
// Gram matrix's entries (a zero diagonal entry means a zero row: exact equality). A float GEMM's
// XXᵀ differs from its transpose by far less than tol = 1e−3 of that bound.
template <class Derived>
Report check_symmetric(const Eigen::MatrixBase<Derived>& H, double tol = 1e-3) {
  const Index n = H.rows();
  Eigen::VectorXd root(n);
  for (Index i = 0; i < n; ++i) root[i] = std::sqrt(std::abs(double(H(i, i))));
  constexpr Index kTile = 64;  // tiles keep both H(i, j) and H(j, i) in cache
  // The first pair (i > j) that fails in columns [j0, j0 + kTile), walked tile by tile.
  auto first_failure = [&](Index j0, Index& fi, Index& fj) {
    for (Index i0 = j0; i0 < n; i0 += kTile)
      for (Index j = j0; j < std::min(j0 + kTile, n); ++j)
        for (Index i = std::max(i0, j + 1); i < std::min(i0 + kTile, n); ++i) {
          const double a = double(H(i, j)), b = double(H(j, i));
          if (a != b && !(std::abs(a - b) <= tol * root[i] * root[j])) {
            fi = i, fj = j;
            return true;
          }
        }
    return false;
  };
  // Column tiles on every thread; the message names the pair a serial walk meets first.
  const Index tiles = (n + kTile - 1) / kTile;
  Index first = tiles;
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1) reduction(min : first)
#endif
  for (Index t = 0; t < tiles; ++t) {
    Index i, j;
    if (first_failure(t * kTile, i, j)) first = std::min(first, t);
  }
  Index i = 0, j = 0;
  if (first == tiles || !first_failure(first * kTile, i, j)) return Report::success();
  const double a = double(H(i, j)), b = double(H(j, i));
  return Report::fail(Status::NotSymmetric,
                      "Hessian is not symmetric: H(" + std::to_string(i) + "," + std::to_string(j) +
                          ") = " + std::to_string(a) + " but H(" + std::to_string(j) + "," +
                          std::to_string(i) + ") = " + std::to_string(b) +
                          "; pass the Gram matrix X Xᵀ (or (H + Hᵀ)/2 if rounding broke its symmetry)");
}

// Tag: the Hessian handed to InverseFactor::compute was already checked (square, finite,
// symmetric).
struct CheckedHessian {};

// The damping attempts of InverseFactor::compute (shared with the CUDA backend): λ = percdamp ·
// mean(diag H), percdamp growing by `growth` after each failed attempt (from 1e−4 when it starts
// at 0). Each attempt factors A = (H·4^−k0 + λ0·I)·4^−k1, λ0 = λ·4^−k0: exact powers of four that
// bring H, then H + λI, near 1.
class DampingSchedule {
 public:
  DampingSchedule(double mean_diag, const DampingPolicy& policy)
      : policy_(policy), mean_diag_(mean_diag), k0_(log4_near(mean_diag)),
        mean0_(scale_pow4(mean_diag, k0_)), percdamp_(policy.percdamp) {}

  static Report check(const DampingPolicy& policy) {
    if (!(policy.percdamp >= 0) || !std::isfinite(policy.percdamp) || !(policy.growth > 1) ||
        !std::isfinite(policy.growth) || policy.max_attempts < 1)
      return Report::fail(Status::InvalidArgument, "damping policy needs a finite percdamp ≥ 0, "
                                                   "growth > 1 and at least one attempt");
    return Report::success();
  }

  // Moves to the next attempt; false once the policy's attempts are spent or λ is not finite.
  bool next() {
    if (attempts_ == policy_.max_attempts) return false;
    if (attempts_ > 0) percdamp_ = percdamp_ > 0 ? percdamp_ * policy_.growth : 1e-4;
    lambda0_ = percdamp_ * mean0_;
    if (!std::isfinite(lambda0_)) return false;
    k1_ = log4_near(mean0_ + lambda0_);
    ++attempts_;
    return true;
  }
  int attempts() const { return attempts_; }
  double percdamp() const { return percdamp_; }
  double damping() const { return percdamp_ * mean_diag_; }      // λ
  int log4_scale() const { return k0_ + k1_; }
  double scaled_damping() const { return scale_pow4(lambda0_, k1_); }  // λ·4^−(k0+k1)
  double half0() const { return std::ldexp(1.0, -k0_); }          // 2^−k0
  double half1() const { return std::ldexp(1.0, -k1_); }          // 2^−k1
  // A's diagonal entry for H's diagonal entry d: (d·4^−k0 + λ0)·4^−k1.
  double damped_diagonal(double d) const { return scale_pow4(scale_pow4(d, k0_) + lambda0_, k1_); }
  std::string failure(Index failed_pivot) const {
    return "Cholesky failed" +
           (failed_pivot >= 0 ? " at pivot " + std::to_string(failed_pivot) : std::string()) +
           " even with percdamp " + std::to_string(percdamp_) + " after " +
           std::to_string(attempts_) +
           " attempts; the Hessian is indefinite or nearly singular (collect more calibration "
           "tokens or raise percdamp)";
  }

 private:
  DampingPolicy policy_;
  double mean_diag_;
  int k0_;
  double mean0_;  // in [1/4, 4)
  double percdamp_;
  double lambda0_ = 0;
  int k1_ = 0;
  int attempts_ = 0;
};

}  // namespace internal

// U with (H + λI)⁻¹ = 4^(−log4_scale)·UᵀU. H is first normalized by a power of 4 near the
// damped diagonal's mean, so U is O(1) whatever the scale of H (1e−100 or 1e80) and the scaling
// itself is exact: the solvers' results do not depend on it.
template <class Scalar = double>
class InverseFactor {
 public:
  using Mat = Matrix<Scalar>;

  InverseFactor() { internal::check_scalar<Scalar>(); }

  // Reversed route: with J the exchange matrix, chol(J(H+λI)J) = L'L'ᵀ gives U = J L'⁻¹ J —
  // the reference's chol(cholesky_inverse(chol(H)), upper) with one factorization instead of two.
  template <class Derived>
  InverseFactor& compute(const Eigen::MatrixBase<Derived>& H, const DampingPolicy& policy = {}) {
    reset();
    if (H.rows() != H.cols())
      return fail(Status::ShapeMismatch, "Hessian must be square, got " + std::to_string(H.rows()) +
                                             "×" + std::to_string(H.cols()));
    if (!internal::all_finite(H))
      return fail(Status::NonFiniteInput,
                  "Hessian holds NaN or Inf; check the calibration activations");
    if (Report r = internal::DampingSchedule::check(policy); !r.ok()) return fail(r.status, r.message);
    if (Report r = internal::check_symmetric(H); !r.ok()) return fail(r.status, r.message);
    return factor(H, policy);
  }

  // The same for a Hessian the caller has already found square, finite and symmetric
  // (prepare_hessian checks the caller's matrix, so that its messages name the caller's indices):
  // two O(n²) passes fewer.
  // With FactorForm::Cholesky, upper() is R (see FactorForm) and the inversion is skipped.
  template <class Derived>
  InverseFactor& compute(const Eigen::MatrixBase<Derived>& H, const DampingPolicy& policy,
                         internal::CheckedHessian,
                         internal::FactorForm form = internal::FactorForm::Inverse) {
    reset();
    form_ = form;
    if (Report r = internal::DampingSchedule::check(policy); !r.ok()) return fail(r.status, r.message);
    return factor(H, policy);
  }

  // ‖(H + λI)·4^(−k)·z − v‖ / ‖v‖ with z = UᵀU·v (or R⁻ᵀR⁻¹·v in the Cholesky form) for a fixed
  // probe v: how far the factor is from the inverse. O(n²); H must be the matrix given to compute().
  template <class Derived>
  double residual(const Eigen::MatrixBase<Derived>& H) const {
    const Index n = upper_.rows();
    if (info_ != Status::Success || H.rows() != n) return std::numeric_limits<double>::infinity();
    if (n == 0) return 0.0;  // the empty factor is exact (and ‖v‖ = 0 would make 0/0)
    Eigen::VectorXd v(n);
    for (Index i = 0; i < n; ++i) v[i] = ((i * 7919) % 13) % 2 ? 1.0 : -0.5;  // fixed signs
    const Eigen::VectorXd z =
        form_ == internal::FactorForm::Inverse ? inverse_times_gram(v) : inverse_times_solves(v);
    // H·z column by column in double: no n × n double copy of H, which at n = 4096 would touch
    // 134 MB for an O(n²) check. Rows in blocks on every thread; each entry is summed in the same
    // order whatever the threads.
    const Index blocks = (n + kCheckRows - 1) / kCheckRows;
    Eigen::VectorXd Hz(n);
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1)
#endif
    for (Index b = 0; b < blocks; ++b) {
      const Index r0 = b * kCheckRows, h = std::min(kCheckRows, n - r0);
      auto Hz_b = Hz.segment(r0, h);
      Hz_b.setZero();
      for (Index j = 0; j < n; ++j) Hz_b += H.col(j).segment(r0, h).template cast<double>() * z[j];
      for (Index i = r0; i < r0 + h; ++i)
        Hz[i] = internal::scale_pow4(Hz[i], log4_scale_) + scaled_damping_ * z[i];
    }
    return (Hz - v).norm() / v.norm();
  }

  Status info() const { return info_; }
  const std::string& message() const { return message_; }
  // U, upper triangular with (H + λI)⁻¹ = 4^(−log4_scale())·UᵀU; R = U⁻¹ when computed in the
  // Cholesky form.
  const Mat& upper() const { return upper_; }
  int log4_scale() const { return log4_scale_; }
  // Moves U out (the factor keeps its diagnostics); saves a copy of n² entries.
  Mat take_upper() {
    Mat u = std::move(upper_);
    upper_.resize(0, 0);
    return u;
  }
  double damping() const { return damping_; }              // absolute λ used
  double relative_damping() const { return relative_damping_; }  // percdamp used
  int attempts() const { return attempts_; }
  // First pivot (in H's indexing) at which a factorization failed; −1 if none did.
  Index failed_pivot() const { return failed_pivot_; }

 private:
  static constexpr Index kCheckRows = 256;  // rows (or columns) per task of the accuracy check

  // UᵀU·v in double, U read in its scalar: y = U·v by row blocks, then z = Uᵀ·y by columns.
  Eigen::VectorXd inverse_times_gram(const Eigen::VectorXd& v) const {
    const Index n = upper_.rows(), blocks = (n + kCheckRows - 1) / kCheckRows;
    Eigen::VectorXd y(n), z(n);
#ifdef _OPENMP
#pragma omp parallel
#endif
    {
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
      for (Index b = 0; b < blocks; ++b) {  // y = U·v: rows [r0, r0 + h) meet columns j ≥ r0
        const Index r0 = b * kCheckRows, h = std::min(kCheckRows, n - r0);
        y.segment(r0, h).setZero();
        for (Index j = r0; j < n; ++j) {
          const Index rows = std::min(h, j - r0 + 1);
          y.segment(r0, rows) += upper_.col(j).segment(r0, rows).template cast<double>() * v[j];
        }
      }
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 64)
#endif
      for (Index j = 0; j < n; ++j)  // z = Uᵀ·y
        z[j] = upper_.col(j).head(j + 1).template cast<double>().dot(y.head(j + 1));
    }
    return z;
  }

  // R⁻ᵀR⁻¹·v in double, R read in its scalar: two blocked substitutions, each block's triangle
  // serially and what it passes to the other blocks on every thread.
  Eigen::VectorXd inverse_times_solves(const Eigen::VectorXd& v) const {
    const Index n = upper_.rows(), blocks = (n + kCheckRows - 1) / kCheckRows;
    auto R = [this](Index i, Index j) { return double(upper_(i, j)); };
    Eigen::VectorXd y = v;  // y = R⁻¹·v, from the last block up
    for (Index b = blocks - 1; b >= 0; --b) {
      const Index c0 = b * kCheckRows, h = std::min(kCheckRows, n - c0);
      for (Index j = c0 + h - 1; j >= c0; --j) {
        y[j] /= R(j, j);
        for (Index i = c0; i < j; ++i) y[i] -= R(i, j) * y[j];
      }
#ifdef _OPENMP
#pragma omp parallel for schedule(static)
#endif
      for (Index rb = 0; rb < b; ++rb) {  // the full row blocks above: y −= R(rows, block)·y_b
        const Index r0 = rb * kCheckRows;
        auto y_rows = y.segment(r0, kCheckRows);
        for (Index j = c0; j < c0 + h; ++j)
          y_rows -= upper_.col(j).segment(r0, kCheckRows).template cast<double>() * y[j];
      }
    }
    Eigen::VectorXd z(n);  // z = R⁻ᵀ·y, from the first block down
    for (Index b = 0; b < blocks; ++b) {
      const Index c0 = b * kCheckRows, h = std::min(kCheckRows, n - c0);
#ifdef _OPENMP
#pragma omp parallel for schedule(static)
#endif
      for (Index j = c0; j < c0 + h; ++j)
        z[j] = y[j] - upper_.col(j).head(c0).template cast<double>().dot(z.head(c0));
      for (Index j = c0; j < c0 + h; ++j) {
        for (Index i = c0; i < j; ++i) z[j] -= R(i, j) * z[i];
        z[j] /= R(j, j);
      }
    }
    return z;
  }

  // The damping loop on a checked H with a checked policy.
  template <class Derived>
  InverseFactor& factor(const Eigen::MatrixBase<Derived>& H, const DampingPolicy& policy) {
    const Index n = H.rows();
    const double mean_diag = internal::mean_diagonal(H);
    if (!(mean_diag > 0))
      return fail(Status::NotPositiveDefinite,
                  "Hessian diagonal has a non-positive mean; it is not a Gram matrix of inputs");
    internal::DampingSchedule schedule(mean_diag, policy);
    while (schedule.next()) {
      // A = J·(H/4^k0 + λ0·I)·J / 4^k1, every scaling an exact power of two: x·4^−k0·4^−k1 as
      // four exact multiplications by 2^−k0, 2^−k0, 2^−k1, 2^−k1 (the powers computed once).
      // Only A's lower triangle is factored and inverted.
      internal::reversed_scaled_lower(H, schedule.half0(), schedule.half1(), upper_);
      for (Index i = 0; i < n; ++i)
        upper_(i, i) = Scalar(schedule.damped_diagonal(double(H(n - 1 - i, n - 1 - i))));
      const Index pivot = internal::cholesky_lower_inplace(upper_);
      attempts_ = schedule.attempts();
      if (pivot < 0) {
        if (form_ == internal::FactorForm::Inverse) internal::invert_lower_inplace(upper_);
        // J L'⁻¹ J (U) or J L' J (R) is upper triangular
        if (internal::reverse_lower_to_upper(upper_)) {
          damping_ = schedule.damping();
          relative_damping_ = schedule.percdamp();
          log4_scale_ = schedule.log4_scale();
          scaled_damping_ = schedule.scaled_damping();
          info_ = Status::Success;
          return *this;
        }
        // Tiny positive pivots whose inverse overflows the scalar: more damping, as for a failure.
      } else if (failed_pivot_ < 0) {
        failed_pivot_ = n - 1 - pivot;  // back to H's index
      }
    }
    upper_.resize(0, 0);
    return fail(Status::NotPositiveDefinite, schedule.failure(failed_pivot_));
  }

  void reset() {
    info_ = Status::Success;
    message_.clear();
    form_ = internal::FactorForm::Inverse;
    damping_ = relative_damping_ = 0;
    log4_scale_ = 0;
    scaled_damping_ = 0;
    attempts_ = 0;
    failed_pivot_ = -1;
  }
  InverseFactor& fail(Status s, std::string m) {
    info_ = s;
    message_ = std::move(m);
    upper_.resize(0, 0);
    return *this;
  }

  Mat upper_;
  internal::FactorForm form_ = internal::FactorForm::Inverse;
  Status info_ = Status::InvalidArgument;
  std::string message_ = "compute() not called";
  double damping_ = 0, relative_damping_ = 0;
  int log4_scale_ = 0;
  double scaled_damping_ = 0;  // λ·4^−k
  int attempts_ = 0;
  Index failed_pivot_ = -1;
};

}  // namespace loaq
