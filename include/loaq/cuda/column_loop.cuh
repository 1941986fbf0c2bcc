// The column loop of GPTQ, GPTAQ and every LoaQ target on the GPU (the CPU's solve_columns):
// one kernel per lazy block quantizes its columns with in-block error feedback, one cuBLAS GEMM
// per block carries the block's errors to the columns after it. Rows are independent: a warp
// owns 32 rows, each thread one row, whose block of columns lives in shared memory.
#pragma once

#include <math_constants.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "../grid/params.hpp"
#include "../solve/column_solver.hpp"
#include "../solve/options.hpp"
#include "../solve/row_scaling.hpp"
#include "blas.cuh"
#include "factor.cuh"
#include "kernels.cuh"

namespace loaq {
namespace cuda {

// QuantizedWeight's counterpart in device memory (column-major m × n weight and codes, m × groups
// scales and zeros); g_idx, loss and the diagnostics stay on the host.
template <class Scalar>
struct DeviceQuantizedWeight {
  DeviceMatrix<Scalar> weight;
  DeviceBuffer<std::uint8_t> codes;
  DeviceMatrix<Scalar> scales, zeros;
  Eigen::VectorXi g_idx;
  double loss = 0;
};

template <class Scalar>
Report download(Context& ctx, const DeviceQuantizedWeight<Scalar>& q, QuantizedWeight<Scalar>& out) {
  out = QuantizedWeight<Scalar>{};
  QuantizedWeight<Scalar> r;
  LOAQ_CUDA_TRY(download(ctx, q.weight, r.weight));
  r.codes.resize(q.weight.rows(), q.weight.cols());
  LOAQ_CUDA_TRY(download(ctx, q.codes.data(), std::size_t(r.codes.size()), r.codes.data()));
  LOAQ_CUDA_TRY(download(ctx, q.scales, r.scales));
  LOAQ_CUDA_TRY(download(ctx, q.zeros, r.zeros));
  r.g_idx = q.g_idx;
  r.loss = q.loss;
  out = std::move(r);
  return Report::success();
}

namespace detail {

constexpr int kRowsPerCta = 32;  // one warp: a row per thread
constexpr Index kStagedBlock = 128;

// GPTQ's find_params for one row: x[c·stride] for c < width (fit_params' semantics: min-max,
// then the optional MSE shrink search keeping a candidate only on strict improvement).
template <class Grid, class S>
__device__ void fit_row(const Grid& grid, const S* x, Index stride, Index width,
                        const ParamSearch& search, S& scale, S& zero) {
  S lo = 0, hi = 0;
  if (width > 0) {
    lo = hi = x[0];
#pragma unroll 8
    for (Index c = 1; c < width; ++c) {
      const S v = x[c * stride];
      lo = v < lo ? v : lo;
      hi = v > hi ? v : hi;
    }
  }
  grid.adjust_range(lo, hi);
  grid.params(lo, hi, scale, zero);
  if (!search.mse) return;
  const int steps = int(search.maxshrink * search.grid);
  const double p = double(S(search.norm));
  double best = CUDART_INF;
  for (int i = 0; i < steps; ++i) {
    const S f = S(1.0 - double(i) / search.grid);
    S s1, z1;
    grid.params(f * lo, f * hi, s1, z1);
    double err = 0;
    for (Index c = 0; c < width; ++c) {
      const S v = x[c * stride];
      const S d = fabs(grid.decode(grid.encode(v, s1, z1), s1, z1) - v);
      err += d == S(0) ? 0.0 : double(S(exp(p * log(double(d)))));  // as the CPU's SIMD kernel
    }
    if (err < best) {
      best = err;
      scale = s1;
      zero = z1;
    }
  }
}

// Group k's parameters (columns [k·g, k·g + width)) of every row; blockIdx.y is the group.
template <class Grid, class S>
__global__ void fit_groups_kernel(Grid grid, const S* W, Index m, Index n, Index g,
                                  ParamSearch search, S* scales, S* zeros) {
  const Index r = blockIdx.x * Index(blockDim.x) + threadIdx.x, k = blockIdx.y;
  if (r >= m) return;
  const Index c0 = k * g, width = c0 + g <= n ? g : n - c0;
  fit_row(grid, W + r + c0 * m, m, width, search, scales[r + k * m], zeros[r + k * m]);
}

// RTN: every group fitted and quantized on its own, no feedback.
template <class Grid, class S>
__global__ void rtn_kernel(Grid grid, const S* W, Index m, Index n, Index g, ParamSearch search,
                           S* scales, S* zeros, std::uint8_t* codes, S* weight) {
  const Index r = blockIdx.x * Index(blockDim.x) + threadIdx.x, k = blockIdx.y;
  if (r >= m) return;
  const Index c0 = k * g, width = c0 + g <= n ? g : n - c0;
  S s, z;
  fit_row(grid, W + r + c0 * m, m, width, search, s, z);
  scales[r + k * m] = s;
  zeros[r + k * m] = z;
  for (Index c = c0; c < c0 + width; ++c) {
    const std::uint8_t code = grid.encode(W[r + c * m], s, z);
    codes[r + c * m] = code;
    weight[r + c * m] = grid.decode(code, s, z);
  }
}

template <class S>
struct BlockArgs {
  const S* W;             // m × n in solve order, updated at block ends only
  Index m, n, i1, count, g, block_index;
  bool grouped, dynamic, static_groups;
  const S* Ut;            // Uᵀ: U(i, j) = Ut[j + i·n]
  const S* Pt;            // GPTAQ's Pᵀ, or null
  const std::int64_t* perm;
  S* weight;              // results in original column order
  std::uint8_t* codes;
  S* scales;
  S* zeros;
  S* E1;                  // m × count: scaled errors (w − q)/U_ii
  S* W1;                  // m × count: the block as quantized (GPTAQ), or the tile when unstaged
  bool tile_in_shared, stage_u, stage_p;
  const double* row_weight;
  double* partial_loss;   // (m / 32) × n: each warp's Σ e²·row_weight / 2 per column
  unsigned long long* overflow;  // first block·m + row whose error is not finite
  ParamSearch search;
};

template <class Grid, class S>
__global__ void __launch_bounds__(kRowsPerCta) quantize_block_kernel(BlockArgs<S> a, Grid grid) {
  extern __shared__ double shared_words[];  // double: aligned for either scalar
  S* shared = reinterpret_cast<S*>(shared_words);
  const int t = threadIdx.x;
  const Index r = blockIdx.x * Index(kRowsPerCta) + t, m = a.m, n = a.n, count = a.count;
  const bool active = r < m;

  // U's (and P's) diagonal block, rows i and columns j ≥ i: shared when it fits.
  S* next = a.tile_in_shared ? shared + count * kRowsPerCta : shared;
  const S* U = a.Ut + a.i1 + a.i1 * n;
  Index ldu = n;
  if (a.stage_u) {
    for (Index e = t; e < count * count; e += kRowsPerCta)
      next[e] = U[e % count + (e / count) * n];
    U = next;
    ldu = count;
    next += count * count;
  }
  const S* P = a.Pt ? a.Pt + a.i1 + a.i1 * n : nullptr;
  Index ldp = n;
  if (P && a.stage_p) {
    for (Index e = t; e < count * count; e += kRowsPerCta)
      next[e] = P[e % count + (e / count) * n];
    P = next;
    ldp = count;
  }
  // This row's block: W1 = W[:, i1:i2] (W itself is only updated at block ends).
  S* __restrict__ w = a.tile_in_shared ? shared + t : a.W1 + r;  // never overlaps U or P
  const Index ws = a.tile_in_shared ? kRowsPerCta : m;
  if (active)
    for (Index j = 0; j < count; ++j) w[j * ws] = a.W[r + (a.i1 + j) * m];
  __syncthreads();

  for (Index i = 0; i < count; ++i) {
    const Index col = a.i1 + i, dst = Index(a.perm[col]);
    const Index k = !a.grouped ? 0 : a.static_groups ? dst / a.g : col / a.g;
    const S* __restrict__ urow = U + i * ldu;
    S e = 0;
    if (active) {
      if (a.dynamic && col % a.g == 0)  // from W: a group starting mid-block sees block-start values
        fit_row(grid, a.W + r + col * m, m, a.g < n - col ? a.g : n - col, a.search,
                a.scales[r + k * m], a.zeros[r + k * m]);
      const S scale = a.scales[r + k * m], zero = a.zeros[r + k * m];
      const S x = w[i * ws];
      const std::uint8_t code = grid.encode(x, scale, zero);
      const S q = grid.decode(code, scale, zero);
      e = (x - q) / urow[i];
      a.codes[r + dst * m] = code;
      a.weight[r + dst * m] = q;
      a.E1[r + i * m] = e;
      if (!isfinite(e)) atomicMin(a.overflow, (unsigned long long)(a.block_index * m + r));
      if (P) {
        const S* __restrict__ prow = P + i * ldp;
#pragma unroll 4
        for (Index j = i; j < count; ++j) w[j * ws] -= e * urow[j] - x * prow[j];
      } else {
#pragma unroll 4
        for (Index j = i; j < count; ++j) w[j * ws] -= e * urow[j];
      }
    }
    double loss = active ? double(e) * double(e) * a.row_weight[r] : 0.0;
    for (int o = 16; o > 0; o /= 2) loss += __shfl_down_sync(0xffffffffu, loss, o);
    if (t == 0) a.partial_loss[blockIdx.x * n + col] = loss / 2;
  }
  if (a.W1 && a.tile_in_shared && active)
    for (Index j = 0; j < count; ++j) a.W1[r + j * m] = w[j * ws];
}

// loss[col] = Σ over warps of partial[warp·n + col], in a fixed order.
template <class D>
__global__ void sum_partial_loss_kernel(const D* partial, Index warps, Index n, D* loss) {
  const Index col = blockIdx.x * Index(blockDim.x) + threadIdx.x;
  if (col >= n) return;
  D sum = 0;
  for (Index p = 0; p < warps; ++p) sum += partial[p * n + col];
  loss[col] = sum;
}

// Parameters of every group of g columns (one group of n when g = n) from W as it is now.
template <class Grid, class S>
Report fit_groups(Context& ctx, const Grid& grid, const S* W, Index m, Index n, Index g,
                  const ParamSearch& search, S* scales, S* zeros) {
  const Index groups = n > 0 ? (n + g - 1) / g : 1;
  if (m == 0) return Report::success();
  const dim3 blocks(grid_for(std::size_t(m), 128), unsigned(groups));
  fit_groups_kernel<<<blocks, 128, 0, ctx.stream()>>>(grid, W, m, n, g, search, scales, zeros);
  return ctx.launched("fitting the grid parameters");
}

}  // namespace detail

// Rows of W (device, the solver's scalar) far outside the safe range brought near 1, exactly as
// the CPU's RowScaling::fit and scaled(); `exponents` receives the per-row exponents.
template <class S>
Report fit_row_scaling(Context& ctx, DeviceMatrix<S>& W, internal::RowScaling<S>& rows_scale,
                       DeviceBuffer<int>& exponents) {
  Eigen::VectorXd top;
  LOAQ_CUDA_TRY(row_max_abs(ctx, W.data(), W.rows(), W.cols(), top));
  if (W.cols() == 0) top.resize(0);
  LOAQ_CUDA_TRY(rows_scale.fit(Matrix<double>(top)));  // an m × 1 matrix of the row maxima
  if (!rows_scale.any()) return Report::success();
  std::vector<int> e(static_cast<std::size_t>(W.rows()));
  for (Index r = 0; r < W.rows(); ++r) e[std::size_t(r)] = rows_scale.exponent(r);
  LOAQ_CUDA_TRY(upload_array(ctx, e.data(), e.size(), exponents));
  return scale_rows(ctx, W.data(), W.rows(), W.cols(), exponents.data(), -1);
}

namespace detail {

// RowScaling::restore on the device: weights and scales (and offset zeros) back to their rows'
// scale, then the same check and message.
template <class S>
Report restore_rows(Context& ctx, const internal::RowScaling<S>& rows_scale,
                    const DeviceBuffer<int>& exponents, DeviceQuantizedWeight<S>& q,
                    bool zeros_are_offsets) {
  const Index m = q.weight.rows();
  if (rows_scale.any()) {
    LOAQ_CUDA_TRY(scale_rows(ctx, q.weight.data(), m, q.weight.cols(), exponents.data(), 1));
    LOAQ_CUDA_TRY(scale_rows(ctx, q.scales.data(), m, q.scales.cols(), exponents.data(), 1));
    if (zeros_are_offsets)
      LOAQ_CUDA_TRY(scale_rows(ctx, q.zeros.data(), m, q.zeros.cols(), exponents.data(), 1));
  }
  bool weight_ok = true, scales_ok = true;
  LOAQ_CUDA_TRY(all_finite(ctx, q.weight.data(), std::size_t(q.weight.size()), weight_ok));
  LOAQ_CUDA_TRY(all_finite(ctx, q.scales.data(), std::size_t(q.scales.size()), scales_ok));
  if (weight_ok && scales_ok) return Report::success();
  Index row = -1, srow = -1;
  LOAQ_CUDA_TRY(first_nonfinite_row(ctx, q.weight.data(), m, q.weight.cols(), row));
  LOAQ_CUDA_TRY(first_nonfinite_row(ctx, q.scales.data(), m, q.scales.cols(), srow));
  if (row < 0 || (srow >= 0 && srow < row)) row = srow;
  return Report::fail(Status::OutOfRange,
                      "the quantized weights of row " + std::to_string(row) + " do not fit the " +
                          (std::is_same<S, float>::value ? "float" : "double") +
                          " solver's range (grid points beyond its largest value); solve in "
                          "double or rescale the layer");
}

}  // namespace detail

// The loop on W (device, m × n, original column order, already brought to range by rows_scale;
// the solve works in its storage). Pt: GPTAQ's Pᵀ in solve order, or null.
template <class Grid>
Report solve_columns(Context& ctx, DeviceMatrix<typename Grid::Scalar>& W,
                     const internal::RowScaling<typename Grid::Scalar>& rows_scale,
                     const DeviceBuffer<int>& exponents,
                     const DevicePreparedHessian<typename Grid::Scalar>& prep, const Grid& grid,
                     const GptqOptions& opt, const DeviceMatrix<typename Grid::Scalar>* Pt,
                     DeviceQuantizedWeight<typename Grid::Scalar>& out, SolveDiagnostics* diag) {
  using S = typename Grid::Scalar;
  out = DeviceQuantizedWeight<S>{};
  const Index m = W.rows(), n = W.cols();
  if (Index(prep.perm.size()) != n)
    return Report::fail(Status::ShapeMismatch,
                        "weight has " + std::to_string(n) + " columns but the Hessian is " +
                            std::to_string(prep.perm.size()) + "×" + std::to_string(prep.perm.size()));
  if (auto r = internal::check_options(opt, n); !r.ok()) return r;
  if (auto r = internal::check_grid(grid); !r.ok()) return r;
  if (Pt && (Pt->rows() != n || Pt->cols() != n))
    return Report::fail(Status::ShapeMismatch, "asymmetric correction must be n × n");
  const Index g = opt.group_size > 0 ? opt.group_size : n;
  const bool grouped = opt.group_size > 0, dynamic = grouped && !opt.static_groups;
  const Index groups = grouped ? (n + g - 1) / g : 1;
  const std::vector<Index>& perm = prep.perm;

  Eigen::VectorXd row_weight;
  int loss_exponent = 0;
  internal::row_loss_weights(rows_scale, m, prep.log4_scale, row_weight, loss_exponent);
  DeviceBuffer<double> row_weight_device;
  LOAQ_CUDA_TRY(upload_array(ctx, row_weight.data(), std::size_t(m), row_weight_device));
  LOAQ_CUDA_TRY(out.scales.resize(m, groups));
  LOAQ_CUDA_TRY(out.zeros.resize(m, groups));
  out.g_idx.resize(n);
  if (!grouped) {
    LOAQ_CUDA_TRY(detail::fit_groups(ctx, grid, W.data(), m, n, std::max<Index>(n, 1), opt.search,
                                     out.scales.data(), out.zeros.data()));  // before dead columns go
    out.g_idx.setZero();
  }
  if (std::find(prep.dead.begin(), prep.dead.end(), true) != prep.dead.end() && m > 0) {
    detail::zero_columns_kernel<<<detail::grid_for(std::size_t(m) * n), detail::kThreads, 0,
                                  ctx.stream()>>>(W.data(), m, n, prep.dead_device.data());
    LOAQ_CUDA_TRY(ctx.launched("zeroing dead columns"));
  }
  if (grouped && opt.static_groups) {
    LOAQ_CUDA_TRY(detail::fit_groups(ctx, grid, W.data(), m, n, g, opt.search,
                                     out.scales.data(), out.zeros.data()));
    for (Index j = 0; j < n; ++j) out.g_idx[j] = int(j / g);
  } else if (grouped) {
    for (Index j = 0; j < n; ++j) out.g_idx[perm[std::size_t(j)]] = int(j / g);
  }
  if (prep.permuted() && m > 0) {
    DeviceMatrix<S> permuted;
    LOAQ_CUDA_TRY(permuted.resize(m, n));
    detail::gather_columns_kernel<<<detail::grid_for(std::size_t(m) * n), detail::kThreads, 0,
                                    ctx.stream()>>>(W.data(), m, n, prep.perm_device.data(),
                                                    permuted.data());
    LOAQ_CUDA_TRY(ctx.launched("permuting the weight's columns"));
    W = std::move(permuted);
  }
  bool u_finite = true;
  LOAQ_CUDA_TRY(all_finite(ctx, prep.upper_t.data(), std::size_t(prep.upper_t.size()), u_finite));
  if (!u_finite)
    return Report::fail(Status::OutOfRange,
                        "the inverse factor does not fit the solver's scalar (the damped Hessian "
                        "is too ill-conditioned): raise percdamp or solve in double");

  LOAQ_CUDA_TRY(out.weight.resize(m, n));
  LOAQ_CUDA_TRY(out.codes.resize(std::size_t(m) * std::size_t(n)));
  const Index B = std::min<Index>(opt.block_size, std::max<Index>(n, 1));
  const Index ctas = (m + detail::kRowsPerCta - 1) / detail::kRowsPerCta;
  const std::size_t limit = ctx.shared_memory_limit();
  const std::size_t tile_bytes = std::size_t(B) * detail::kRowsPerCta * sizeof(S),
                    block_bytes = std::size_t(B) * std::size_t(B) * sizeof(S);
  const bool tile_in_shared = tile_bytes <= limit / 2;
  const std::size_t base = tile_in_shared ? tile_bytes : 0;
  const bool stage_u = B <= detail::kStagedBlock && base + block_bytes <= limit;
  const bool stage_p = Pt && stage_u && base + 2 * block_bytes <= limit;
  const std::size_t shared_bytes = base + (stage_u ? block_bytes : 0) + (stage_p ? block_bytes : 0);
  DeviceMatrix<S> E1, W1;
  LOAQ_CUDA_TRY(E1.resize(m, B));
  if (Pt || !tile_in_shared) LOAQ_CUDA_TRY(W1.resize(m, B));
  DeviceBuffer<double> partial, column_loss;
  LOAQ_CUDA_TRY(partial.resize(std::size_t(ctas) * std::size_t(n)));
  LOAQ_CUDA_TRY(column_loss.resize(std::size_t(n)));
  DeviceBuffer<unsigned long long> overflow;
  const unsigned long long none = std::numeric_limits<unsigned long long>::max();
  LOAQ_CUDA_TRY(upload_array(ctx, &none, 1, overflow));
  auto kernel = detail::quantize_block_kernel<Grid, S>;
  LOAQ_CUDA_TRY(check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           int(shared_bytes)),
                      "raising the column kernel's shared memory"));

  for (Index i1 = 0, block = 0; i1 < n && m > 0; i1 += B, ++block) {
    const Index i2 = std::min(i1 + B, n), count = i2 - i1;
    detail::BlockArgs<S> a{W.data(), m, n, i1, count, g, block, grouped, dynamic,
                           opt.static_groups, prep.upper_t.data(), Pt ? Pt->data() : nullptr,
                           prep.perm_device.data(), out.weight.data(), out.codes.data(),
                           out.scales.data(), out.zeros.data(), E1.data(),
                           W1.size() ? W1.data() : nullptr, tile_in_shared, stage_u, stage_p,
                           row_weight_device.data(), partial.data(), overflow.data(), opt.search};
    kernel<<<unsigned(ctas), detail::kRowsPerCta, shared_bytes, ctx.stream()>>>(a, grid);
    LOAQ_CUDA_TRY(ctx.launched("the column kernel"));
    if (i2 < n) {  // the lazy update: W[:, i2:] −= E1·U[i1:i2, i2:] (− W1·P[i1:i2, i2:])
      const Index rest = n - i2;
      LOAQ_CUDA_TRY(blas::gemm(ctx, CUBLAS_OP_N, CUBLAS_OP_T, m, rest, count, S(-1), E1.data(), m,
                               prep.upper_t.data() + i2 + i1 * n, n, S(1), W.col(i2), m));
      if (Pt)
        LOAQ_CUDA_TRY(blas::gemm(ctx, CUBLAS_OP_N, CUBLAS_OP_T, m, rest, count, S(1), W1.data(), m,
                                 Pt->data() + i2 + i1 * n, n, S(1), W.col(i2), m));
    }
  }
  unsigned long long first_overflow = none;
  LOAQ_CUDA_TRY(download(ctx, overflow.data(), 1, &first_overflow));
  if (first_overflow != none) {
    const Index block = Index(first_overflow / std::uint64_t(m)), row = Index(first_overflow % std::uint64_t(m));
    out = DeviceQuantizedWeight<S>{};
    return Report::fail(Status::OutOfRange,
                        "the error feedback overflowed the solver's scalar in columns " +
                            std::to_string(block * B) + ".." + std::to_string(std::min(block * B + B, n) - 1) +
                            ", row " + std::to_string(row) + ": the damped Hessian is too "
                            "ill-conditioned for these weights; raise percdamp or solve in double");
  }
  if (auto r = detail::restore_rows(ctx, rows_scale, exponents, out, zero_is_offset<Grid>::value); !r.ok()) {
    out = DeviceQuantizedWeight<S>{};
    return r;
  }
  Eigen::VectorXd loss_solve = Eigen::VectorXd::Zero(n);
  if (m > 0 && n > 0) {
    detail::sum_partial_loss_kernel<<<detail::grid_for(std::size_t(n)), detail::kThreads, 0,
                                      ctx.stream()>>>(partial.data(), ctas, n, column_loss.data());
    LOAQ_CUDA_TRY(ctx.launched("summing the loss"));
    LOAQ_CUDA_TRY(download(ctx, column_loss.data(), std::size_t(n), loss_solve.data()));
  }
  out.loss = internal::report_loss(prep, loss_solve, loss_exponent, diag);
  return ctx.synchronize("the column loop");
}

}  // namespace cuda
}  // namespace loaq
