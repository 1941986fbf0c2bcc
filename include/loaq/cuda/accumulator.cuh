// Calibration statistics accumulated on the GPU: CalibrationAccumulator's API and running
// scaling (spec §2), with cuBLAS SYRK/GEMM doing the O(n²·T) products. Batches come from the
// host (n × T, one column per token); the statistics stay on the device, ready for the GPU
// solvers, and can be copied back.
#pragma once

#include <string>

#include "../stats/accumulator.hpp"
#include "blas.cuh"
#include "kernels.cuh"

namespace loaq {
namespace cuda {
namespace detail {

// The strictly upper triangle of the n × n matrix H from its lower one.
template <class S>
__global__ void mirror_lower_kernel(S* H, Index n) {
  for (std::size_t idx = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x;
       idx < std::size_t(n) * std::size_t(n); idx += std::size_t(gridDim.x) * blockDim.x) {
    const Index i = Index(idx % std::size_t(n)), j = Index(idx / std::size_t(n));
    if (i < j) H[idx] = H[j + i * n];
  }
}

}  // namespace detail

template <class Acc = double>
class CalibrationAccumulator {
 public:
  using Mat = Matrix<Acc>;

  // n: input features; residual_rows: m for the residual cross term G (0 = not tracked).
  // Ĥ starts as the n × n zero matrix on the device, as on the CPU, so that a solve before any
  // batch says "no calibration tokens"; a failure to set it up (no device, no memory) is
  // reported by the first add_batch.
  CalibrationAccumulator(Context& ctx, Index n, Index residual_rows = 0)
      : ctx_(&ctx), n_(n), residual_rows_(residual_rows), setup_(zero_hessian()) {}

  Index features() const { return n_; }
  Index sequences() const { return sequences_; }
  Index tokens() const { return tokens_; }
  bool has_cross() const { return cross_.size() > 0; }
  bool has_residual_cross() const { return residual_cross_.size() > 0; }

  // Ĥ only (GPTQ add_batch).
  template <class D>
  Report add_batch(const Eigen::MatrixBase<D>& Xhat, Index sequences = 1) {
    return add(Xhat.template cast<Acc>(), nullptr, nullptr, nullptr, nullptr, nullptr, sequences);
  }
  // Ĥ and C = Σ(x − x̂)x̂ᵀ.
  template <class D1, class D2>
  Report add_batch(const Eigen::MatrixBase<D1>& Xhat, const Eigen::MatrixBase<D2>& X,
                   Index sequences = 1) {
    const Mat x = X.template cast<Acc>();
    return add(Xhat.template cast<Acc>(), &x, nullptr, nullptr, nullptr, nullptr, sequences);
  }
  // Ĥ, C and G = Σ(r − r̂)x̂ᵀ.
  template <class D1, class D2, class D3, class D4>
  Report add_batch(const Eigen::MatrixBase<D1>& Xhat, const Eigen::MatrixBase<D2>& X,
                   const Eigen::MatrixBase<D3>& Rhat, const Eigen::MatrixBase<D4>& R,
                   Index sequences = 1) {
    const Mat x = X.template cast<Acc>(), rh = Rhat.template cast<Acc>(), r = R.template cast<Acc>();
    return add(Xhat.template cast<Acc>(), &x, &rh, &r, nullptr, nullptr, sequences);
  }
  // The token-weighted form: Ĥ = Σ a² x̂x̂ᵀ, C = Σ a(b·x − a·x̂)x̂ᵀ, G = Σ a(b·r − a·r̂)x̂ᵀ.
  template <class D1>
  Report add_weighted_batch(const Eigen::MatrixBase<D1>& Xhat, const Mat& X, const Mat* Rhat,
                            const Mat* R, const Vector<Acc>& a, const Vector<Acc>& b,
                            Index sequences = 1) {
    return add(Xhat.template cast<Acc>(), &X, Rhat, R, &a, &b, sequences);
  }

  // The statistics on the device (Ĥ full and symmetric), in the solvers' scaling.
  const DeviceMatrix<Acc>& hessian() const { return hessian_; }
  const DeviceMatrix<Acc>& cross() const { return cross_; }
  const DeviceMatrix<Acc>& residual_cross() const { return residual_cross_; }

  // The statistics copied to the host (an n × n zero Hessian before any batch).
  Report hessian(Mat& out) {
    LOAQ_CUDA_TRY(setup_);
    return download(*ctx_, hessian_, out);
  }
  Report cross(Mat& out) { return download(*ctx_, cross_, out); }
  Report residual_cross(Mat& out) { return download(*ctx_, residual_cross_, out); }

 private:
  Report add(const Mat& xh, const Mat* X, const Mat* Rhat, const Mat* R, const Vector<Acc>* a,
             const Vector<Acc>* b, Index sequences) {
    LOAQ_CUDA_TRY(internal::check_calibration_batch(n_, residual_rows_, tokens_, has_cross(),
                                                    has_residual_cross(), xh, X, Rhat, R, a, b,
                                                    sequences));
    const Index T = xh.cols();
    if (T == 0) return Report::success();  // an empty batch adds nothing (not even sequences)
    LOAQ_CUDA_TRY(setup_);
    // The batch terms on the host (O(n·T)); the products on the device (O(n²·T)).
    const Mat xa = a ? Mat(xh * a->asDiagonal()) : xh;
    DeviceMatrix<Acc> dxa, dterm;
    LOAQ_CUDA_TRY(upload(*ctx_, xa, dxa));
    if (X && !has_cross()) {
      LOAQ_CUDA_TRY(cross_.resize(n_, n_));
      LOAQ_CUDA_TRY(zero(cross_));
    }
    if (R && !has_residual_cross()) {
      LOAQ_CUDA_TRY(residual_cross_.resize(R->rows(), n_));
      LOAQ_CUDA_TRY(zero(residual_cross_));
    }
    // Running rescale exactly as GPTQ: S·n/(n+b), then + 2/(n+b)·Σ.
    const Acc keep = Acc(sequences_) / Acc(sequences_ + sequences);
    const Acc step = Acc(2) / Acc(sequences_ + sequences);
    LOAQ_CUDA_TRY(blas::syrk_lower(*ctx_, n_, T, step, dxa.data(), n_, keep, hessian_.data(), n_));
    detail::mirror_lower_kernel<<<detail::grid_for(std::size_t(n_) * n_), detail::kThreads, 0,
                                  ctx_->stream()>>>(hessian_.data(), n_);
    LOAQ_CUDA_TRY(ctx_->launched("symmetrizing the Hessian"));
    if (X) {
      const Mat d = a ? Mat(*X * b->asDiagonal() - xa) : Mat(*X - xh);
      LOAQ_CUDA_TRY(upload(*ctx_, d, dterm));
      LOAQ_CUDA_TRY(blas::gemm(*ctx_, CUBLAS_OP_N, CUBLAS_OP_T, n_, n_, T, step, dterm.data(), n_,
                               dxa.data(), n_, keep, cross_.data(), n_));
    }
    if (R) {
      const Mat e = a ? Mat(*R * b->asDiagonal() - *Rhat * a->asDiagonal()) : Mat(*R - *Rhat);
      LOAQ_CUDA_TRY(upload(*ctx_, e, dterm));
      LOAQ_CUDA_TRY(blas::gemm(*ctx_, CUBLAS_OP_N, CUBLAS_OP_T, e.rows(), n_, T, step, dterm.data(),
                               e.rows(), dxa.data(), n_, keep, residual_cross_.data(), e.rows()));
    }
    LOAQ_CUDA_TRY(ctx_->synchronize("accumulating a calibration batch"));
    sequences_ += sequences;
    tokens_ += T;
    return Report::success();
  }

  Report zero_hessian() {
    LOAQ_CUDA_TRY(ctx_->init());
    LOAQ_CUDA_TRY(hessian_.resize(n_, n_));
    LOAQ_CUDA_TRY(zero(hessian_));
    return ctx_->synchronize("zeroing the Hessian");
  }
  Report zero(DeviceMatrix<Acc>& M) {
    return check(cudaMemsetAsync(M.data(), 0, sizeof(Acc) * M.size(), ctx_->stream()), "cudaMemset");
  }

  Context* ctx_;
  Index n_ = 0, residual_rows_ = 0;
  DeviceMatrix<Acc> hessian_, cross_, residual_cross_;
  Index sequences_ = 0, tokens_ = 0;
  Report setup_;  // after hessian_: initialized by zero_hessian()
};

}  // namespace cuda
}  // namespace loaq
