// The damped inverse factor on the GPU: the CPU's prepare_hessian (dead columns, act-order,
// U with (H_perm + λI)⁻¹ = 4^(−log4_scale)·UᵀU, escalating damping, the float accuracy check
// with its double fallback) with cuSOLVER's potrf and trtri doing the O(n³) work.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <string>
#include <type_traits>
#include <vector>

#include "../linalg/inverse_factor.hpp"
#include "../solve/prepare.hpp"
#include "blas.cuh"
#include "kernels.cuh"

namespace loaq {
namespace cuda {

// PreparedHessian's counterpart: U is kept transposed (upper_t = Uᵀ, lower triangular, column-
// major), so that each row of U, which the column loop walks, is contiguous in device memory.
template <class Scalar>
struct DevicePreparedHessian {
  std::vector<Index> perm;                 // solve order → original column
  std::vector<bool> dead;                  // by original column
  DeviceBuffer<std::int64_t> perm_device;
  DeviceBuffer<unsigned char> dead_device;
  DeviceMatrix<Scalar> upper_t;            // Uᵀ in the solver's scalar
  DeviceMatrix<double> upper_t_double;     // FactorPrecision::Double with a float solver
  int log4_scale = 0;
  double damping = 0, relative_damping = 0;
  int attempts = 0;
  Index failed_pivot = -1;
  bool double_fallback = false;
  bool permuted() const {
    for (std::size_t j = 0; j < perm.size(); ++j)
      if (perm[j] != Index(j)) return true;
    return false;
  }
};

namespace detail {

// y_i = Σ_{j ≥ i} U(i, j)·v_j with U(i, j) = Ut[j + i·n]: one warp per row, coalesced.
template <class S>
__global__ void upper_times_kernel(const S* Ut, Index n, const double* v, double* y) {
  const Index i = blockIdx.x * Index(blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (i >= n) return;
  double sum = 0;
  for (Index j = i + lane; j < n; j += 32) sum += double(Ut[j + i * n]) * v[j];
  for (int o = 16; o > 0; o /= 2) sum += __shfl_down_sync(0xffffffffu, sum, o);
  if (lane == 0) y[i] = sum;
}

// z_j = Σ_{i ≤ j} U(i, j)·y_i: one thread per j, a warp's loads one coalesced column of Ut.
template <class S>
__global__ void upper_transpose_times_kernel(const S* Ut, Index n, const double* y, double* z) {
  const Index j = blockIdx.x * Index(blockDim.x) + threadIdx.x;
  if (j >= n) return;
  double sum = 0;
#pragma unroll 16  // loads in flight: the loop is latency-bound, one thread per column
  for (Index i = 0; i <= j; ++i) sum += double(Ut[j + i * n]) * y[i];
  z[j] = sum;
}

// out_i = Σ_j H(p_i, p_j)·z_j with diag[i] (dead columns' 1) on the diagonal.
template <class SH>
__global__ void permuted_times_kernel(const SH* H, Index n, const std::int64_t* perm,
                                      const double* diag, const double* z, double* out) {
  const Index i = blockIdx.x * Index(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  double sum = 0;
  const std::int64_t pi = perm[i];
#pragma unroll 16
  for (Index j = 0; j < n; ++j) sum += (i == j ? diag[i] : double(H[pi + perm[j] * n])) * z[j];
  out[i] = sum;
}

struct FactorOutcome {
  Status info = Status::Success;
  std::string message;
  int log4_scale = 0;
  double damping = 0, relative_damping = 0, scaled_damping = 0;
  int attempts = 0;
  Index failed_pivot = -1;
};

// InverseFactor::compute's damping loop in the factor scalar F on a prepared Hessian: on success
// L holds L'⁻¹ (lower) of the reversed matrix and Ut (scalar S) the transposed factor.
template <class F, class S, class SH>
Report factor_attempts(Context& ctx, const DeviceMatrix<SH>& H, const DeviceBuffer<std::int64_t>& perm,
                       const std::vector<double>& diag_solve, double mean_diag,
                       const DampingPolicy& policy, DeviceMatrix<S>& Ut, FactorOutcome& outcome) {
  const Index n = H.rows();
  outcome = FactorOutcome{};
  DeviceMatrix<F> A;
  LOAQ_CUDA_TRY(A.resize(n, n));
  DeviceBuffer<double> diag_device;
  DeviceBuffer<char> work;
  DeviceBuffer<int> info;
  std::vector<double> diag_reversed(static_cast<std::size_t>(n));
  internal::DampingSchedule schedule(mean_diag, policy);
  while (schedule.next()) {
    for (Index i = 0; i < n; ++i)
      diag_reversed[std::size_t(i)] =
          double(F(schedule.damped_diagonal(diag_solve[std::size_t(n - 1 - i)])));
    LOAQ_CUDA_TRY(upload_array(ctx, diag_reversed.data(), diag_reversed.size(), diag_device));
    factor_input_kernel<<<grid_for(std::size_t(n) * n), kThreads, 0, ctx.stream()>>>(
        H.data(), n, perm.data(), diag_device.data(), schedule.half0(), schedule.half1(), A.data());
    LOAQ_CUDA_TRY(ctx.launched("building the damped Hessian"));
    Index pivot = -1;
    LOAQ_CUDA_TRY(blas::potrf_lower(ctx, n, A.data(), work, info, pivot));
    outcome.attempts = schedule.attempts();
    if (pivot < 0) {
      bool singular = false;
      LOAQ_CUDA_TRY(blas::invert_lower(ctx, n, A.data(), work, info, singular));
      bool finite = false;
      if (!singular) LOAQ_CUDA_TRY(all_finite(ctx, A.data(), std::size_t(A.size()), finite));
      if (finite) {
        LOAQ_CUDA_TRY(Ut.resize(n, n));
        anti_transpose_lower_kernel<<<grid_for(std::size_t(n) * n), kThreads, 0, ctx.stream()>>>(
            A.data(), n, Ut.data());
        LOAQ_CUDA_TRY(ctx.launched("transposing the factor"));
        outcome.damping = schedule.damping();
        outcome.relative_damping = schedule.percdamp();
        outcome.log4_scale = schedule.log4_scale();
        outcome.scaled_damping = schedule.scaled_damping();
        return ctx.synchronize("the inverse factor");
      }
      // Tiny positive pivots whose inverse overflows the scalar: more damping, as for a failure.
    } else if (outcome.failed_pivot < 0) {
      outcome.failed_pivot = n - 1 - pivot;  // back to H's index
    }
  }
  outcome.info = Status::NotPositiveDefinite;
  outcome.message = schedule.failure(outcome.failed_pivot);
  return Report::success();
}

// ‖(H + λI)·4^(−k)·UᵀU·v − v‖ / ‖v‖ for the CPU factor's probe v, in double.
template <class S, class SH>
Report factor_residual(Context& ctx, const DeviceMatrix<SH>& H, const DeviceBuffer<std::int64_t>& perm,
                       const std::vector<double>& diag_solve, const DeviceMatrix<S>& Ut,
                       const FactorOutcome& f, double& residual) {
  const Index n = H.rows();
  Eigen::VectorXd v(n);
  for (Index i = 0; i < n; ++i) v[i] = ((i * 7919) % 13) % 2 ? 1.0 : -0.5;  // InverseFactor's probe
  DeviceBuffer<double> dv, dy, dz, dhz, ddiag;
  LOAQ_CUDA_TRY(upload_array(ctx, v.data(), std::size_t(n), dv));
  LOAQ_CUDA_TRY(upload_array(ctx, diag_solve.data(), diag_solve.size(), ddiag));
  LOAQ_CUDA_TRY(dy.resize(std::size_t(n)));
  LOAQ_CUDA_TRY(dz.resize(std::size_t(n)));
  LOAQ_CUDA_TRY(dhz.resize(std::size_t(n)));
  upper_times_kernel<<<grid_for(std::size_t(n) * 32), kThreads, 0, ctx.stream()>>>(Ut.data(), n, dv.data(), dy.data());
  upper_transpose_times_kernel<<<grid_for(std::size_t(n)), kThreads, 0, ctx.stream()>>>(Ut.data(), n, dy.data(), dz.data());
  permuted_times_kernel<<<grid_for(std::size_t(n)), kThreads, 0, ctx.stream()>>>(
      H.data(), n, perm.data(), ddiag.data(), dz.data(), dhz.data());
  LOAQ_CUDA_TRY(ctx.launched("the factor's accuracy check"));
  Eigen::VectorXd z(n), Hz(n);
  LOAQ_CUDA_TRY(download(ctx, dz.data(), std::size_t(n), z.data()));
  LOAQ_CUDA_TRY(download(ctx, dhz.data(), std::size_t(n), Hz.data()));
  for (Index i = 0; i < n; ++i)
    Hz[i] = internal::scale_pow4(Hz[i], f.log4_scale) + f.scaled_damping * z[i];
  residual = (Hz - v).norm() / v.norm();
  if (!std::isfinite(residual)) residual = std::numeric_limits<double>::infinity();
  return Report::success();
}

template <class Scalar>
void take_outcome(const FactorOutcome& f, DevicePreparedHessian<Scalar>& out) {
  out.log4_scale = f.log4_scale;
  out.damping = f.damping;
  out.relative_damping = f.relative_damping;
  out.attempts = f.attempts;
  out.failed_pivot = f.failed_pivot;
}

}  // namespace detail

// The GPU prepare_hessian: same checks, statuses and messages as the CPU's, same damping and
// fallback policy; H stays unmodified on the device (float or double).
template <class Scalar, class SH>
Report prepare_hessian(Context& ctx, const DeviceMatrix<SH>& H, bool act_order,
                       const DampingPolicy& policy, DevicePreparedHessian<Scalar>& out,
                       FactorPrecision precision = FactorPrecision::Solver) {
  internal::check_scalar<Scalar>();
  out = DevicePreparedHessian<Scalar>{};
  LOAQ_CUDA_TRY(ctx.init());
  if (H.rows() != H.cols()) return Report::fail(Status::ShapeMismatch, "Hessian must be square");
  const Index n = H.rows();
  bool finite = true;
  LOAQ_CUDA_TRY(all_finite(ctx, H.data(), std::size_t(H.size()), finite));
  if (!finite)
    return Report::fail(Status::NonFiniteInput,
                        "Hessian holds NaN or Inf; check the calibration activations");
  std::vector<SH> diag_raw(static_cast<std::size_t>(n));
  if (n > 0) {
    LOAQ_CUDA_TRY(check(cudaMemcpy2DAsync(diag_raw.data(), sizeof(SH), H.data(), sizeof(SH) * (n + 1),
                                          sizeof(SH), std::size_t(n), cudaMemcpyDeviceToHost,
                                          ctx.stream()),
                        "reading the Hessian's diagonal"));
    LOAQ_CUDA_TRY(ctx.synchronize("reading the Hessian's diagonal"));
  }
  {  // symmetric to rounding (internal::check_symmetric's rule)
    std::vector<double> root(diag_raw.size());
    for (std::size_t i = 0; i < root.size(); ++i) root[i] = std::sqrt(std::abs(double(diag_raw[i])));
    DeviceBuffer<double> droot;
    DeviceBuffer<unsigned long long> first;
    LOAQ_CUDA_TRY(upload_array(ctx, root.data(), root.size(), droot));
    const unsigned long long none = std::numeric_limits<unsigned long long>::max();
    LOAQ_CUDA_TRY(upload_array(ctx, &none, 1, first));
    if (n > 1) {
      detail::asymmetry_kernel<<<detail::grid_for(std::size_t(n) * n), detail::kThreads, 0,
                                 ctx.stream()>>>(H.data(), n, droot.data(), 1e-3, first.data());
      LOAQ_CUDA_TRY(ctx.launched("the symmetry check"));
    }
    unsigned long long at = none;
    LOAQ_CUDA_TRY(download(ctx, first.data(), 1, &at));
    if (at != none) {
      const Index i = Index(at % std::uint64_t(n)), j = Index(at / std::uint64_t(n));
      SH a = 0, b = 0;
      LOAQ_CUDA_TRY(download(ctx, H.data() + i + j * n, 1, &a));
      LOAQ_CUDA_TRY(download(ctx, H.data() + j + i * n, 1, &b));
      return Report::fail(
          Status::NotSymmetric,
          "Hessian is not symmetric: H(" + std::to_string(i) + "," + std::to_string(j) + ") = " +
              std::to_string(double(a)) + " but H(" + std::to_string(j) + "," + std::to_string(i) +
              ") = " + std::to_string(double(b)) +
              "; pass the Gram matrix X Xᵀ (or (H + Hᵀ)/2 if rounding broke its symmetry)");
    }
  }
  std::vector<double> diag(diag_raw.begin(), diag_raw.end());
  LOAQ_CUDA_TRY(internal::order_columns(diag, act_order, out.dead, out.perm));
  std::vector<double> diag_solve(static_cast<std::size_t>(n));
  for (Index i = 0; i < n; ++i) diag_solve[std::size_t(i)] = diag[std::size_t(out.perm[std::size_t(i)])];
  const std::vector<std::int64_t> perm64(out.perm.begin(), out.perm.end());
  const std::vector<unsigned char> dead8(out.dead.begin(), out.dead.end());
  LOAQ_CUDA_TRY(upload_array(ctx, perm64.data(), perm64.size(), out.perm_device));
  LOAQ_CUDA_TRY(upload_array(ctx, dead8.data(), dead8.size(), out.dead_device));

  LOAQ_CUDA_TRY(internal::DampingSchedule::check(policy));
  const double mean_diag =
      internal::mean_in_range(Eigen::Map<const Eigen::VectorXd>(diag_solve.data(), n));
  if (!(mean_diag > 0))
    return Report::fail(Status::NotPositiveDefinite,
                        "Hessian diagonal has a non-positive mean; it is not a Gram matrix of inputs");

  detail::FactorOutcome f;
  if (!std::is_same<Scalar, double>::value && precision == FactorPrecision::Solver) {
    DeviceMatrix<Scalar> Ut;
    LOAQ_CUDA_TRY(detail::factor_attempts<Scalar>(ctx, H, out.perm_device, diag_solve, mean_diag,
                                                  policy, Ut, f));
    double residual = std::numeric_limits<double>::infinity();
    if (f.info == Status::Success)
      LOAQ_CUDA_TRY(detail::factor_residual(ctx, H, out.perm_device, diag_solve, Ut, f, residual));
    if (f.info == Status::Success && residual <= internal::kFloatFactorTolerance) {
      out.upper_t = std::move(Ut);
      detail::take_outcome(f, out);
      return Report::success();
    }
    out.double_fallback = true;
  }
  DeviceMatrix<double> Ut_double;
  LOAQ_CUDA_TRY(detail::factor_attempts<double>(ctx, H, out.perm_device, diag_solve, mean_diag,
                                                policy, Ut_double, f));
  if (f.info != Status::Success) return Report::fail(f.info, f.message);
  detail::take_outcome(f, out);
  if constexpr (std::is_same<Scalar, double>::value) {
    out.upper_t = std::move(Ut_double);
  } else {
    LOAQ_CUDA_TRY(out.upper_t.resize(n, n));
    detail::convert_scaled_kernel<<<detail::grid_for(std::size_t(n) * n), detail::kThreads, 0,
                                    ctx.stream()>>>(Ut_double.data(), std::size_t(n) * n, 1.0,
                                                    out.upper_t.data());
    LOAQ_CUDA_TRY(ctx.launched("converting the factor"));
    if (precision == FactorPrecision::Double) out.upper_t_double = std::move(Ut_double);
  }
  return ctx.synchronize("the inverse factor");
}

}  // namespace cuda
}  // namespace loaq
