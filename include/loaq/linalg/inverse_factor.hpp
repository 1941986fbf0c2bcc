// The upper Cholesky factor U of the damped inverse Hessian, (H + λI)⁻¹ = UᵀU, with escalating
// damping on failure. Eigen LLT-style: compute() / info(), never throws, never touches its input.
#pragma once

#include <Eigen/Cholesky>
#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>

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
  A11.adjoint().template triangularView<Eigen::Upper>().template solveInPlace<Eigen::OnTheRight>(
      A21);  // L21 = A21·L11⁻ᵀ
  A22.template selfadjointView<Eigen::Lower>().rankUpdate(A21, Scalar(-1));
  const Index p = cholesky_lower_recursive<Scalar>(A22);
  return p >= 0 ? p + n1 : -1;
}

// L⁻¹ in place, blocked from the bottom-right: with the trailing block already inverted,
// L21 ← −L22⁻¹·L21·L11⁻¹, then L11 ← L11⁻¹. Scratch of n × 64 only (a recursive split into
// halves needs n²/4 and was no faster here).
template <class Scalar>
void invert_lower_blocked(StridedRef<Scalar> A) {
  const Index n = A.rows();
  constexpr Index nb = 64;
  Matrix<Scalar> tmp, diag_inv;
  for (Index j = ((n - 1) / nb) * nb; j >= 0; j -= nb) {
    const Index jb = std::min(nb, n - j), rest = n - j - jb;
    auto L11 = A.block(j, j, jb, jb);
    if (rest > 0) {
      auto L21 = A.block(j + jb, j, rest, jb);
      tmp.noalias() = A.block(j + jb, j + jb, rest, rest).template triangularView<Eigen::Lower>() *
                      L21;
      L11.template triangularView<Eigen::Lower>().template solveInPlace<Eigen::OnTheRight>(tmp);
      L21 = -tmp;
    }
    diag_inv.setIdentity(jb, jb);
    L11.template triangularView<Eigen::Lower>().solveInPlace(diag_inv);
    L11.template triangularView<Eigen::Lower>() = diag_inv;
  }
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
    const Index n = H.rows();
    if (H.rows() != H.cols())
      return fail(Status::ShapeMismatch, "Hessian must be square, got " + std::to_string(H.rows()) +
                                             "×" + std::to_string(H.cols()));
    if (!H.allFinite())
      return fail(Status::NonFiniteInput,
                  "Hessian holds NaN or Inf; check the calibration activations");
    if (!(policy.percdamp >= 0) || !std::isfinite(policy.percdamp) || !(policy.growth > 1) ||
        policy.max_attempts < 1)
      return fail(Status::InvalidArgument,
                  "damping policy needs percdamp ≥ 0, growth > 1 and at least one attempt");
    const double mean_diag = n ? double(H.diagonal().template cast<double>().mean()) : 1.0;
    if (!(mean_diag > 0))
      return fail(Status::NotPositiveDefinite,
                  "Hessian diagonal has a non-positive mean; it is not a Gram matrix of inputs");

    double percdamp = policy.percdamp;
    for (int attempt = 0; attempt < policy.max_attempts; ++attempt) {
      if (attempt > 0) percdamp = percdamp > 0 ? percdamp * policy.growth : 1e-4;
      const Scalar lambda = Scalar(percdamp * mean_diag);
      upper_ = H.template cast<Scalar>().reverse();
      upper_.diagonal().array() += lambda;
      const Index pivot = internal::cholesky_lower_inplace(upper_);
      attempts_ = attempt + 1;
      if (pivot < 0) {
        internal::invert_lower_inplace(upper_);
        upper_.template triangularView<Eigen::StrictlyUpper>().setZero();
        upper_.reverseInPlace();  // J L'⁻¹ J is upper triangular
        damping_ = double(lambda);
        relative_damping_ = percdamp;
        info_ = Status::Success;
        return *this;
      }
      if (failed_pivot_ < 0) failed_pivot_ = n - 1 - pivot;  // back to H's index
    }
    upper_.resize(0, 0);
    return fail(Status::NotPositiveDefinite,
                "Cholesky failed at pivot " + std::to_string(failed_pivot_) + " even with percdamp " +
                    std::to_string(percdamp) + " after " + std::to_string(attempts_) +
                    " attempts; the Hessian is indefinite (collect more calibration tokens or raise "
                    "percdamp)");
  }

  Status info() const { return info_; }
  const std::string& message() const { return message_; }
  // U, upper triangular with (H + λI)⁻¹ = UᵀU.
  const Mat& upper() const { return upper_; }
  double damping() const { return damping_; }              // absolute λ used
  double relative_damping() const { return relative_damping_; }  // percdamp used
  int attempts() const { return attempts_; }
  // First pivot (in H's indexing) at which a factorization failed; −1 if none did.
  Index failed_pivot() const { return failed_pivot_; }

 private:
  void reset() {
    info_ = Status::Success;
    message_.clear();
    damping_ = relative_damping_ = 0;
    attempts_ = 0;
    failed_pivot_ = -1;
  }
  InverseFactor& fail(Status s, std::string m) {
    info_ = s;
    message_ = std::move(m);
    return *this;
  }

  Mat upper_;
  Status info_ = Status::InvalidArgument;
  std::string message_ = "compute() not called";
  double damping_ = 0, relative_damping_ = 0;
  int attempts_ = 0;
  Index failed_pivot_ = -1;
};

}  // namespace loaq
