// The upper Cholesky factor U of the damped inverse Hessian, (H + λI)⁻¹ = UᵀU, with escalating
// damping on failure. Eigen LLT-style: compute() / info(), never throws, never touches its input.
#pragma once

#include <Eigen/Cholesky>
#include <cmath>
#include <string>

#include "../config.hpp"
#include "../status.hpp"

namespace loaq {

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
      const Index pivot = Eigen::internal::llt_inplace<Scalar, Eigen::Lower>::blocked(upper_);
      attempts_ = attempt + 1;
      if (pivot < 0) {
        Mat inv = Mat::Identity(n, n);
        upper_.template triangularView<Eigen::Lower>().solveInPlace(inv);
        upper_ = inv.reverse();
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
