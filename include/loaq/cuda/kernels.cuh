// Element-wise and reduction kernels of the GPU backend: input checks, exact power-of-two
// scalings, conversions and column permutations. Each has a host wrapper on a Context's stream
// that returns a Report.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "runtime.cuh"

namespace loaq {
namespace cuda {
namespace detail {

constexpr int kThreads = 256;

inline unsigned grid_for(std::size_t count, int threads = kThreads) {
  const std::size_t blocks = (count + std::size_t(threads) - 1) / std::size_t(threads);
  return unsigned(std::min<std::size_t>(std::max<std::size_t>(blocks, 1), 65535u * 8u));
}

template <class T>
__global__ void any_nonfinite_kernel(const T* x, std::size_t count, int* found) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < count;
       i += std::size_t(gridDim.x) * blockDim.x)
    if (!isfinite(x[i])) *found = 1;  // every writer stores the same value
}

// max |W(r, :)| in double, one thread per row (the loads of a warp are one coalesced column).
template <class S>
__global__ void row_max_abs_kernel(const S* W, Index m, Index n, double* out) {
  const Index r = blockIdx.x * Index(blockDim.x) + threadIdx.x;
  if (r >= m) return;
  double top = 0;
#pragma unroll 16  // loads in flight: one thread per row is latency-bound
  for (Index c = 0; c < n; ++c) top = fmax(top, fabs(double(W[r + c * m])));
  out[r] = top;
}

// W(r, :) ← W(r, :)·2^(sign·e_r): exact, as the CPU's RowScaling.
template <class S>
__global__ void scale_rows_kernel(S* W, Index m, Index cols, const int* exponent, int sign) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x;
       i < std::size_t(m) * std::size_t(cols); i += std::size_t(gridDim.x) * blockDim.x) {
    const int e = exponent[i % std::size_t(m)];
    if (e != 0) W[i] = S(ldexp(double(W[i]), sign * e));
  }
}

// flags[r] = 1 where row r of the m × cols matrix holds a NaN or Inf.
template <class S>
__global__ void nonfinite_rows_kernel(const S* A, Index m, Index cols, int* flags) {
  const Index r = blockIdx.x * Index(blockDim.x) + threadIdx.x;
  if (r >= m) return;
  for (Index c = 0; c < cols; ++c)
    if (!isfinite(A[r + c * m])) {
      flags[r] = 1;
      return;
    }
}

// The first (column-major) pair i > j with |H_ij − H_ji| > tol·root_i·root_j, as j·n + i.
template <class S>
__global__ void asymmetry_kernel(const S* H, Index n, const double* root, double tol,
                                 unsigned long long* first) {
  for (std::size_t idx = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x;
       idx < std::size_t(n) * std::size_t(n); idx += std::size_t(gridDim.x) * blockDim.x) {
    const Index i = Index(idx % std::size_t(n)), j = Index(idx / std::size_t(n));
    if (i <= j) continue;
    const double a = double(H[i + j * n]), b = double(H[j + i * n]);
    if (a != b && !(fabs(a - b) <= tol * root[i] * root[j])) atomicMin(first, (unsigned long long)idx);
  }
}

// A(i, j) = F(H(p[n−1−i], p[n−1−j])·h0²·h1²) off the diagonal, diag[i] on it: the reversed,
// permuted Hessian the factor starts from, rescaled exactly as the CPU's (four products by powers
// of two, so that no intermediate overflows).
template <class F, class SH>
__global__ void factor_input_kernel(const SH* H, Index n, const std::int64_t* perm,
                                    const double* diag, double h0, double h1, F* A) {
  for (std::size_t idx = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x;
       idx < std::size_t(n) * std::size_t(n); idx += std::size_t(gridDim.x) * blockDim.x) {
    const Index i = Index(idx % std::size_t(n)), j = Index(idx / std::size_t(n));
    A[idx] = i == j ? F(diag[i])
                    : F(double(H[perm[n - 1 - i] + perm[n - 1 - j] * n]) * h0 * h0 * h1 * h1);
  }
}

// Ut(r, c) = r ≥ c ? S(L(n−1−c, n−1−r)) : 0. With L = L'⁻¹ of the reversed matrix, Ut is Uᵀ for
// the upper factor U = J·L'⁻¹·J: U's rows are Ut's columns, contiguous for the column loop.
template <class S, class F>
__global__ void anti_transpose_lower_kernel(const F* L, Index n, S* Ut) {
  for (std::size_t idx = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x;
       idx < std::size_t(n) * std::size_t(n); idx += std::size_t(gridDim.x) * blockDim.x) {
    const Index r = Index(idx % std::size_t(n)), c = Index(idx / std::size_t(n));
    Ut[idx] = r >= c ? S(L[(n - 1 - c) + (n - 1 - r) * n]) : S(0);
  }
}

// out(i, j) = dead[p_j] ? 0 : S(D(p_i, p_j)·4^−k): GPTAQ's dXXT, dead columns zeroed, in solve
// order (half = 2^−k, applied twice as scale_pow4 does).
template <class S, class SD>
__global__ void permuted_scaled_kernel(const SD* D, Index n, const std::int64_t* perm,
                                       const unsigned char* dead, double half, S* out) {
  for (std::size_t idx = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x;
       idx < std::size_t(n) * std::size_t(n); idx += std::size_t(gridDim.x) * blockDim.x) {
    const Index i = Index(idx % std::size_t(n)), j = Index(idx / std::size_t(n));
    out[idx] = dead[perm[j]] ? S(0) : S(double(D[perm[i] + perm[j] * n]) * half * half);
  }
}

// Keeps the strictly upper triangle of the n × n matrix A.
template <class S>
__global__ void strictly_upper_kernel(S* A, Index n) {
  for (std::size_t idx = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x;
       idx < std::size_t(n) * std::size_t(n); idx += std::size_t(gridDim.x) * blockDim.x)
    if (Index(idx % std::size_t(n)) >= Index(idx / std::size_t(n))) A[idx] = S(0);
}

// out = S(in·4^−k) element-wise (half = 2^−k, applied twice as scale_pow4 does: exact up to the
// final rounding to S).
template <class S, class SI>
__global__ void convert_scaled_kernel(const SI* in, std::size_t count, double half, S* out) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < count;
       i += std::size_t(gridDim.x) * blockDim.x)
    out[i] = S(double(in[i]) * half * half);
}

// out(:, j) = in(:, perm[j]) for m × n matrices.
template <class S>
__global__ void gather_columns_kernel(const S* in, Index m, Index n, const std::int64_t* perm, S* out) {
  for (std::size_t idx = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x;
       idx < std::size_t(m) * std::size_t(n); idx += std::size_t(gridDim.x) * blockDim.x) {
    const Index r = Index(idx % std::size_t(m)), j = Index(idx / std::size_t(m));
    out[idx] = in[r + perm[j] * m];
  }
}

// target(:, perm[j]) += B(:, j).
template <class S>
__global__ void scatter_add_columns_kernel(const S* B, Index m, Index n, const std::int64_t* perm,
                                           S* target) {
  for (std::size_t idx = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x;
       idx < std::size_t(m) * std::size_t(n); idx += std::size_t(gridDim.x) * blockDim.x) {
    const Index r = Index(idx % std::size_t(m)), j = Index(idx / std::size_t(m));
    target[r + perm[j] * m] += B[idx];
  }
}

// Columns j of the m × n matrix W with dead[j] set to zero.
template <class S>
__global__ void zero_columns_kernel(S* W, Index m, Index n, const unsigned char* dead) {
  for (std::size_t idx = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x;
       idx < std::size_t(m) * std::size_t(n); idx += std::size_t(gridDim.x) * blockDim.x)
    if (dead[idx / std::size_t(m)]) W[idx] = S(0);
}

}  // namespace detail

// Whether the `count` values at x (device memory) are all finite.
template <class T>
Report all_finite(Context& ctx, const T* x, std::size_t count, bool& finite) {
  finite = true;
  if (count == 0) return Report::success();
  DeviceBuffer<int> flag;
  LOAQ_CUDA_TRY(flag.resize(1));
  LOAQ_CUDA_TRY(check(cudaMemsetAsync(flag.data(), 0, sizeof(int), ctx.stream()), "cudaMemset"));
  detail::any_nonfinite_kernel<<<detail::grid_for(count), detail::kThreads, 0, ctx.stream()>>>(
      x, count, flag.data());
  LOAQ_CUDA_TRY(ctx.launched("the finiteness check"));
  int found = 0;
  LOAQ_CUDA_TRY(download(ctx, flag.data(), 1, &found));
  finite = found == 0;
  return Report::success();
}

// First row (or −1) of the m × cols matrix that holds a NaN or Inf.
template <class S>
Report first_nonfinite_row(Context& ctx, const S* A, Index m, Index cols, Index& row) {
  row = -1;
  if (m == 0 || cols == 0) return Report::success();
  DeviceBuffer<int> flags;
  LOAQ_CUDA_TRY(flags.resize(std::size_t(m)));
  LOAQ_CUDA_TRY(check(cudaMemsetAsync(flags.data(), 0, sizeof(int) * m, ctx.stream()), "cudaMemset"));
  detail::nonfinite_rows_kernel<<<detail::grid_for(m, 128), 128, 0, ctx.stream()>>>(A, m, cols,
                                                                                    flags.data());
  LOAQ_CUDA_TRY(ctx.launched("the per-row finiteness check"));
  std::vector<int> host(static_cast<std::size_t>(m));
  LOAQ_CUDA_TRY(download(ctx, flags.data(), host.size(), host.data()));
  for (Index r = 0; r < m; ++r)
    if (host[std::size_t(r)]) {
      row = r;
      break;
    }
  return Report::success();
}

// The largest |w| of every row of the m × n matrix W, on the host.
template <class S>
Report row_max_abs(Context& ctx, const S* W, Index m, Index n, Eigen::VectorXd& top) {
  top = Eigen::VectorXd::Zero(m);
  if (m == 0 || n == 0) return Report::success();
  DeviceBuffer<double> out;
  LOAQ_CUDA_TRY(out.resize(std::size_t(m)));
  detail::row_max_abs_kernel<<<detail::grid_for(m, 128), 128, 0, ctx.stream()>>>(W, m, n, out.data());
  LOAQ_CUDA_TRY(ctx.launched("the row maxima"));
  return download(ctx, out.data(), std::size_t(m), top.data());
}

// W(r, :) ← W(r, :)·2^(sign·exponent[r]) for the m × cols matrix W (exponent on the device).
template <class S>
Report scale_rows(Context& ctx, S* W, Index m, Index cols, const int* exponent, int sign) {
  if (m == 0 || cols == 0) return Report::success();
  detail::scale_rows_kernel<<<detail::grid_for(std::size_t(m) * cols), detail::kThreads, 0,
                              ctx.stream()>>>(W, m, cols, exponent, sign);
  return ctx.launched("the row scaling");
}

}  // namespace cuda
}  // namespace loaq
