// Hessian preparation shared by every column solver: dead columns, act-order, damped factor.
#pragma once

#include <algorithm>
#include <numeric>
#include <string>
#include <vector>

#include "../config.hpp"
#include "../linalg/inverse_factor.hpp"
#include "../status.hpp"

namespace loaq {

// GPTQ fasterquant's preamble on H: H_ii = 1 where H_ii == 0 (dead), perm = stable argsort of
// diag(H) descending (act-order), then U with (H_perm + λI)⁻¹ = UᵀU.
struct PreparedHessian {
  std::vector<Index> perm;   // solve order → original column
  std::vector<bool> dead;    // by original column
  InverseFactor<double> factor;
  bool permuted() const {
    for (std::size_t j = 0; j < perm.size(); ++j)
      if (perm[j] != Index(j)) return true;
    return false;
  }
};

template <class Derived>
Report prepare_hessian(const Eigen::MatrixBase<Derived>& H_in, bool act_order,
                       const DampingPolicy& damping, PreparedHessian& out) {
  if (H_in.rows() != H_in.cols())
    return Report::fail(Status::ShapeMismatch, "Hessian must be square");
  if (!H_in.allFinite())
    return Report::fail(Status::NonFiniteInput,
                        "Hessian holds NaN or Inf; check the calibration activations");
  const Index n = H_in.rows();
  Matrix<double> H = H_in.template cast<double>();
  out.dead.assign(std::size_t(n), false);
  for (Index i = 0; i < n; ++i)
    if (H(i, i) == 0) {
      out.dead[std::size_t(i)] = true;
      H(i, i) = 1;
    }
  out.perm.resize(std::size_t(n));
  std::iota(out.perm.begin(), out.perm.end(), Index(0));
  if (act_order) {
    std::stable_sort(out.perm.begin(), out.perm.end(),
                     [&](Index a, Index b) { return H(a, a) > H(b, b); });
    H = H(out.perm, out.perm).eval();
  }
  out.factor.compute(H, damping);
  if (out.factor.info() != Status::Success)
    return Report::fail(out.factor.info(), out.factor.message());
  return Report::success();
}

}  // namespace loaq
