// GPTQ, GPTAQ, the LoaQ closed-form targets and RTN on the GPU: the CPU API's semantics (same
// options, grids, statuses and results up to floating-point summation order), in two forms:
//   - on device matrices (DeviceMatrix in, DeviceQuantizedWeight out), for pipelines that keep
//     a model's layers and statistics on the GPU;
//   - on host Eigen matrices (QuantizedWeight out), copying in and out around the same solve.
// Every call takes a Context (create one and reuse it). Inputs are never modified: a weight
// handed over as an rvalue DeviceMatrix is solved in its own storage, as gptq(std::move(W), …)
// does on the CPU.
#pragma once

#include <string>
#include <type_traits>
#include <utility>

#include "../solve/gptaq.hpp"
#include "../solve/targets.hpp"
#include "../subblock/objective.hpp"
#include "column_loop.cuh"

namespace loaq {
namespace cuda {
namespace detail {

// The weight the column loop runs on, with its row scaling once chosen.
template <class S>
struct SolveWeight {
  DeviceMatrix<S> W;
  internal::RowScaling<S> rows;
  DeviceBuffer<int> exponents;
  bool checked = false;  // W known to be finite
  bool fitted = false;   // rows chosen (and W scaled) already
};

// A host weight on the device in the solver's scalar. A weight of another scalar is checked and
// scaled on the host, as the CPU solvers do, since its rows may not fit S before scaling;
// `scale` false uploads a plain cast (the targets start from the unscaled W, as on the CPU).
template <class S, class DW>
Report upload_weight(Context& ctx, const Eigen::MatrixBase<DW>& W, SolveWeight<S>& w, bool scale = true) {
  if constexpr (std::is_same<typename DW::Scalar, S>::value) {
    return upload(ctx, W, w.W);
  } else {
    if (!scale) return upload(ctx, W, w.W);
    if (!internal::all_finite(W))
      return Report::fail(Status::NonFiniteInput, "weight holds NaN or Inf");
    LOAQ_CUDA_TRY(w.rows.fit(W));
    LOAQ_CUDA_TRY(upload(ctx, w.rows.scaled(W), w.W));
    std::vector<int> e(static_cast<std::size_t>(W.rows()));
    for (Index r = 0; r < W.rows(); ++r) e[std::size_t(r)] = w.rows.any() ? w.rows.exponent(r) : 0;
    LOAQ_CUDA_TRY(upload_array(ctx, e.data(), e.size(), w.exponents));
    w.fitted = true;
    return Report::success();
  }
}

// One pass over W on the device, at most once per weight.
template <class S>
Report check_weight_finite(Context& ctx, SolveWeight<S>& w) {
  if (w.checked || w.fitted) return Report::success();
  bool finite = true;
  LOAQ_CUDA_TRY(all_finite(ctx, w.W.data(), std::size_t(w.W.size()), finite));
  if (!finite) return Report::fail(Status::NonFiniteInput, "weight holds NaN or Inf");
  w.checked = true;
  return Report::success();
}

template <class S>
Report fit_weight_rows(Context& ctx, SolveWeight<S>& w) {
  if (w.fitted) return Report::success();
  LOAQ_CUDA_TRY(check_weight_finite(ctx, w));
  LOAQ_CUDA_TRY(fit_row_scaling(ctx, w.W, w.rows, w.exponents));
  w.fitted = true;
  return Report::success();
}

// dst (scalar T) ← src (scalar S) element-wise, or a copy when the scalars agree.
template <class T, class S>
Report convert(Context& ctx, const DeviceMatrix<S>& src, DeviceMatrix<T>& dst, double half = 1.0) {
  if constexpr (std::is_same<T, S>::value) {
    if (half == 1.0) return copy(ctx, src, dst);
  }
  LOAQ_CUDA_TRY(dst.resize(src.rows(), src.cols()));
  if (src.size() == 0) return Report::success();
  convert_scaled_kernel<<<grid_for(std::size_t(src.size())), kThreads, 0, ctx.stream()>>>(
      src.data(), std::size_t(src.size()), half, dst.data());
  return ctx.launched("converting a matrix");
}

// GPTAQ's Pᵀ = (α·triu₁(d·Uᵀ)·U)ᵀ in solve order, computed in T (the factor's precision) and
// stored in S: the CPU's gptaq_correction.
template <class T, class S, class SD>
Report gptaq_correction(Context& ctx, const DeviceMatrix<SD>& dXXT, const DevicePreparedHessian<S>& prep,
                        const DeviceMatrix<T>& Ut, double alpha, DeviceMatrix<S>& Pt) {
  const Index n = dXXT.rows();
  DeviceMatrix<T> d, A;
  LOAQ_CUDA_TRY(d.resize(n, n));
  LOAQ_CUDA_TRY(A.resize(n, n));
  if (n == 0) return Pt.resize(0, 0);
  permuted_scaled_kernel<<<grid_for(std::size_t(n) * n), kThreads, 0, ctx.stream()>>>(
      dXXT.data(), n, prep.perm_device.data(), prep.dead_device.data(),
      std::ldexp(1.0, -prep.log4_scale), d.data());
  LOAQ_CUDA_TRY(ctx.launched("scaling dXXT"));
  LOAQ_CUDA_TRY(blas::trmm_right_lower(ctx, CUBLAS_OP_N, n, n, T(1), Ut.data(), n, d.data(), n,
                                       A.data(), n));  // d·Uᵀ
  strictly_upper_kernel<<<grid_for(std::size_t(n) * n), kThreads, 0, ctx.stream()>>>(A.data(), n);
  LOAQ_CUDA_TRY(ctx.launched("triu₁"));
  LOAQ_CUDA_TRY(blas::trmm_right_lower(ctx, CUBLAS_OP_T, n, n, T(alpha), Ut.data(), n, A.data(),
                                       n, d.data(), n));  // α·triu₁(d·Uᵀ)·U
  LOAQ_CUDA_TRY(blas::geam(ctx, CUBLAS_OP_T, CUBLAS_OP_N, n, n, T(1), d.data(), n, T(0), A.data(),
                           n, A.data(), n));  // transposed
  return convert(ctx, A, Pt);
}

// W* = W + (α·W·C + β·G)_perm·Ĥ⁻¹ scattered back to the original columns, in T, stored in S:
// the CPU's closed_form_target. C and G carry Ĥ's scaling (4^−k is applied here, exactly).
template <class T, class S>
Report closed_form_target(Context& ctx, const DeviceMatrix<S>& W, const DeviceMatrix<double>* C,
                          const DeviceMatrix<double>* G, const DevicePreparedHessian<S>& prep,
                          const DeviceMatrix<T>& Ut, const TargetWeights& weights,
                          DeviceMatrix<S>& target) {
  const bool use_c = C && weights.alpha != 0, use_g = G && weights.beta != 0;
  if (!use_c && !use_g) return copy(ctx, W, target);
  const Index m = W.rows(), n = W.cols();
  const double half = std::ldexp(1.0, -prep.log4_scale);
  DeviceMatrix<T> Wt, B, tmp;
  LOAQ_CUDA_TRY(convert(ctx, W, Wt));
  LOAQ_CUDA_TRY(B.resize(m, n));
  LOAQ_CUDA_TRY(tmp.resize(m, n));
  if (B.size() == 0) return copy(ctx, W, target);
  if (use_c) {
    DeviceMatrix<T> Cn;
    LOAQ_CUDA_TRY(convert(ctx, *C, Cn, half));
    LOAQ_CUDA_TRY(blas::gemm(ctx, CUBLAS_OP_N, CUBLAS_OP_N, m, n, n, T(weights.alpha), Wt.data(),
                             m, Cn.data(), n, T(0), B.data(), m));
  } else {
    LOAQ_CUDA_TRY(check(cudaMemsetAsync(B.data(), 0, sizeof(T) * B.size(), ctx.stream()), "cudaMemset"));
  }
  if (use_g) {
    DeviceMatrix<T> Gn;
    LOAQ_CUDA_TRY(convert(ctx, *G, Gn, half));
    LOAQ_CUDA_TRY(blas::geam(ctx, CUBLAS_OP_N, CUBLAS_OP_N, m, n, T(1), B.data(), m,
                             T(weights.beta), Gn.data(), m, B.data(), m));
  }
  if (prep.permuted()) {
    gather_columns_kernel<<<grid_for(std::size_t(m) * n), kThreads, 0, ctx.stream()>>>(
        B.data(), m, n, prep.perm_device.data(), tmp.data());
    LOAQ_CUDA_TRY(ctx.launched("permuting the target's columns"));
    std::swap(B, tmp);
  }
  LOAQ_CUDA_TRY(blas::trmm_right_lower(ctx, CUBLAS_OP_N, m, n, T(1), Ut.data(), n, B.data(), m,
                                       tmp.data(), m));  // B·Uᵀ
  LOAQ_CUDA_TRY(blas::trmm_right_lower(ctx, CUBLAS_OP_T, m, n, T(1), Ut.data(), n, tmp.data(), m,
                                       B.data(), m));  // (B·Uᵀ)·U
  scatter_add_columns_kernel<<<grid_for(std::size_t(m) * n), kThreads, 0, ctx.stream()>>>(
      B.data(), m, n, prep.perm_device.data(), Wt.data());
  LOAQ_CUDA_TRY(ctx.launched("adding the correction"));
  return convert(ctx, Wt, target);
}

// What the solvers share: the problem's checks, the prepared Hessian, the method's extra term
// (GPTAQ's P when dXXT is given, the LoaQ target when `weights` is), then the loop.
template <class Grid, class SH, class SD>
Report solve(Context& ctx, SolveWeight<typename Grid::Scalar>& w, const DeviceMatrix<SH>& H,
             const DeviceMatrix<SD>* dXXT, double alpha, const DeviceMatrix<double>* C,
             const DeviceMatrix<double>* G, const TargetWeights* weights, const Grid& grid,
             const GptqOptions& opt, DeviceQuantizedWeight<typename Grid::Scalar>& out,
             SolveDiagnostics* diag, Matrix<typename Grid::Scalar>* target_out) {
  using S = typename Grid::Scalar;
  out = DeviceQuantizedWeight<S>{};
  if (target_out) target_out->resize(0, 0);
  LOAQ_CUDA_TRY(ctx.init());
  const Index m = w.W.rows(), n = w.W.cols();
  if (H.rows() != n || H.cols() != n)
    return Report::fail(Status::ShapeMismatch,
                        "Hessian must be n × n with n = " + std::to_string(n) +
                            " weight columns, got " + std::to_string(H.rows()) + "×" +
                            std::to_string(H.cols()));
  if (dXXT && (dXXT->rows() != n || dXXT->cols() != n))
    return Report::fail(Status::ShapeMismatch, "Hessian and dXXT must be n × n with n = " +
                                                   std::to_string(n) + " weight columns");
  if (C && (C->rows() != n || C->cols() != n))
    return Report::fail(Status::ShapeMismatch, "input cross term C must be n × n");
  if (G && (G->rows() != m || G->cols() != n))
    return Report::fail(Status::ShapeMismatch, "residual cross term G must be m × n (" +
                                                   std::to_string(m) + " × " + std::to_string(n) + ")");
  bool finite = true;
  if (dXXT) {
    LOAQ_CUDA_TRY(all_finite(ctx, dXXT->data(), std::size_t(dXXT->size()), finite));
    if (!finite) return Report::fail(Status::NonFiniteInput, "dXXT holds NaN or Inf");
    if (!std::isfinite(alpha)) return Report::fail(Status::InvalidArgument, "alpha must be finite");
  }
  for (const DeviceMatrix<double>* stat : {C, G})
    if (stat) {
      LOAQ_CUDA_TRY(all_finite(ctx, stat->data(), std::size_t(stat->size()), finite));
      if (!finite) return Report::fail(Status::NonFiniteInput, "cross statistics hold NaN or Inf");
    }
  if (weights && (!std::isfinite(weights->alpha) || !std::isfinite(weights->beta)))
    return Report::fail(Status::InvalidArgument, "alpha and beta must be finite");
  if (auto r = internal::check_options(opt, n); !r.ok()) return r;
  LOAQ_CUDA_TRY(check_weight_finite(ctx, w));
  DevicePreparedHessian<S> prep;
  LOAQ_CUDA_TRY(prepare_hessian(ctx, H, opt.act_order, opt.damping, prep, opt.factor));
  const bool in_double = prep.upper_t_double.size() > 0;

  if (weights) {  // the LoaQ target replaces W
    DeviceMatrix<S> target;
    if (in_double)
      LOAQ_CUDA_TRY(closed_form_target(ctx, w.W, C, G, prep, prep.upper_t_double, *weights, target));
    else
      LOAQ_CUDA_TRY(closed_form_target(ctx, w.W, C, G, prep, prep.upper_t, *weights, target));
    LOAQ_CUDA_TRY(all_finite(ctx, target.data(), std::size_t(target.size()), finite));
    if (!finite)
      return Report::fail(Status::NonFiniteInput,
                          "target overflowed; the statistics are badly scaled or the Hessian is "
                          "nearly singular (raise percdamp)");
    if (target_out) LOAQ_CUDA_TRY(download(ctx, target, *target_out));
    w.W = std::move(target);
    w.checked = true;  // just checked as the target
    w.fitted = false;
  }
  DeviceMatrix<S> Pt;
  const bool corrected = dXXT && alpha != 0;
  if (corrected) {
    if (in_double)
      LOAQ_CUDA_TRY(gptaq_correction(ctx, *dXXT, prep, prep.upper_t_double, alpha, Pt));
    else
      LOAQ_CUDA_TRY(gptaq_correction(ctx, *dXXT, prep, prep.upper_t, alpha, Pt));
    LOAQ_CUDA_TRY(all_finite(ctx, Pt.data(), std::size_t(Pt.size()), finite));
    if (!finite)
      return Report::fail(Status::OutOfRange,
                          "GPTAQ's correction overflowed: dXXT is far larger than the Hessian (are "
                          "both from the same calibration tokens and scaling?)");
  }
  LOAQ_CUDA_TRY(fit_weight_rows(ctx, w));
  if (auto r = solve_columns(ctx, w.W, w.rows, w.exponents, prep, grid, opt, corrected ? &Pt : nullptr,
                             out, diag);
      !r.ok()) {
    if (target_out) target_out->resize(0, 0);
    return r;
  }
  return Report::success();
}

template <class S>
Report move_weight(DeviceMatrix<S>&& W, SolveWeight<S>& w) {
  w.W = std::move(W);
  return Report::success();
}
template <class S>
Report copy_weight(Context& ctx, const DeviceMatrix<S>& W, SolveWeight<S>& w) {
  LOAQ_CUDA_TRY(ctx.init());
  return copy(ctx, W, w.W);
}

template <class Grid>
Report rtn(Context& ctx, SolveWeight<typename Grid::Scalar>& w, const Grid& grid, int group_size,
           const ParamSearch& search, DeviceQuantizedWeight<typename Grid::Scalar>& out) {
  using S = typename Grid::Scalar;
  out = DeviceQuantizedWeight<S>{};
  LOAQ_CUDA_TRY(ctx.init());
  const Index m = w.W.rows(), n = w.W.cols();
  GptqOptions opt;
  opt.group_size = group_size;
  opt.search = search;
  if (auto r = internal::check_options(opt, n); !r.ok()) return r;
  if (auto r = internal::check_grid(grid); !r.ok()) return r;
  LOAQ_CUDA_TRY(fit_weight_rows(ctx, w));
  const Index g = group_size > 0 ? group_size : std::max<Index>(n, 1);
  const Index groups = (n + g - 1) / g;
  LOAQ_CUDA_TRY(out.weight.resize(m, n));
  LOAQ_CUDA_TRY(out.codes.resize(std::size_t(m) * std::size_t(n)));
  LOAQ_CUDA_TRY(out.scales.resize(m, groups));
  LOAQ_CUDA_TRY(out.zeros.resize(m, groups));
  out.g_idx.resize(n);
  for (Index j = 0; j < n; ++j) out.g_idx[j] = int(j / g);
  if (m > 0 && groups > 0) {
    const dim3 blocks(grid_for(std::size_t(m), 128), unsigned(groups));
    rtn_kernel<<<blocks, 128, 0, ctx.stream()>>>(grid, w.W.data(), m, n, g, search,
                                                 out.scales.data(), out.zeros.data(),
                                                 out.codes.data(), out.weight.data());
    LOAQ_CUDA_TRY(ctx.launched("the RTN kernel"));
  }
  if (auto r = restore_rows(ctx, w.rows, w.exponents, out, zero_is_offset<Grid>::value); !r.ok()) {
    out = DeviceQuantizedWeight<S>{};
    return r;
  }
  return ctx.synchronize("RTN");
}

// Host → device → host around a device solve; `out` is empty after a failure.
template <class S, class F>
Report on_host(Context& ctx, QuantizedWeight<S>& out, F&& solve_on_device) {
  out = QuantizedWeight<S>{};
  DeviceQuantizedWeight<S> q;
  LOAQ_CUDA_TRY(solve_on_device(q));
  return download(ctx, q, out);
}

template <class DH>
using HostScalar = typename DH::Scalar;

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// GPTQ

// On the device; W (the solver's scalar) is read, never modified.
template <class Grid, class SH>
Report gptq(Context& ctx, const DeviceMatrix<typename Grid::Scalar>& W, const DeviceMatrix<SH>& H,
            const Grid& grid, const GptqOptions& options,
            DeviceQuantizedWeight<typename Grid::Scalar>& out, SolveDiagnostics* diag = nullptr) {
  detail::SolveWeight<typename Grid::Scalar> w;
  LOAQ_CUDA_TRY(detail::copy_weight(ctx, W, w));
  return detail::solve(ctx, w, H, static_cast<const DeviceMatrix<SH>*>(nullptr), 0.0, nullptr,
                       nullptr, nullptr, grid, options, out, diag, nullptr);
}

// The same, solving in the storage of a weight the caller hands over (no m × n copy).
template <class Grid, class SH>
Report gptq(Context& ctx, DeviceMatrix<typename Grid::Scalar>&& W, const DeviceMatrix<SH>& H,
            const Grid& grid, const GptqOptions& options,
            DeviceQuantizedWeight<typename Grid::Scalar>& out, SolveDiagnostics* diag = nullptr) {
  detail::SolveWeight<typename Grid::Scalar> w;
  LOAQ_CUDA_TRY(detail::move_weight(std::move(W), w));
  return detail::solve(ctx, w, H, static_cast<const DeviceMatrix<SH>*>(nullptr), 0.0, nullptr,
                       nullptr, nullptr, grid, options, out, diag, nullptr);
}

// On host matrices: loaq::gptq's signature with a Context in front.
template <class Grid, class DW, class DH>
Report gptq(Context& ctx, const Eigen::MatrixBase<DW>& W, const Eigen::MatrixBase<DH>& H,
            const Grid& grid, const GptqOptions& options, QuantizedWeight<typename Grid::Scalar>& out,
            SolveDiagnostics* diag = nullptr) {
  using S = typename Grid::Scalar;
  return detail::on_host(ctx, out, [&](DeviceQuantizedWeight<S>& q) {
    LOAQ_CUDA_TRY(ctx.init());
    detail::SolveWeight<S> w;
    DeviceMatrix<detail::HostScalar<DH>> Hd;
    LOAQ_CUDA_TRY(detail::upload_weight(ctx, W, w));
    LOAQ_CUDA_TRY(upload(ctx, H, Hd));
    return detail::solve(ctx, w, Hd, static_cast<const DeviceMatrix<double>*>(nullptr), 0.0,
                         nullptr, nullptr, nullptr, grid, options, q, diag, nullptr);
  });
}

// ---------------------------------------------------------------------------------------------
// GPTAQ (α = 0 is GPTQ exactly)

template <class Grid, class SH, class SD>
Report gptaq(Context& ctx, const DeviceMatrix<typename Grid::Scalar>& W, const DeviceMatrix<SH>& H,
             const DeviceMatrix<SD>& dXXT, const Grid& grid, const GptqOptions& options,
             double alpha, DeviceQuantizedWeight<typename Grid::Scalar>& out,
             SolveDiagnostics* diag = nullptr) {
  detail::SolveWeight<typename Grid::Scalar> w;
  LOAQ_CUDA_TRY(detail::copy_weight(ctx, W, w));
  return detail::solve(ctx, w, H, &dXXT, alpha, nullptr, nullptr, nullptr, grid, options, out,
                       diag, nullptr);
}

template <class Grid, class SH, class SD>
Report gptaq(Context& ctx, DeviceMatrix<typename Grid::Scalar>&& W, const DeviceMatrix<SH>& H,
             const DeviceMatrix<SD>& dXXT, const Grid& grid, const GptqOptions& options,
             double alpha, DeviceQuantizedWeight<typename Grid::Scalar>& out,
             SolveDiagnostics* diag = nullptr) {
  detail::SolveWeight<typename Grid::Scalar> w;
  LOAQ_CUDA_TRY(detail::move_weight(std::move(W), w));
  return detail::solve(ctx, w, H, &dXXT, alpha, nullptr, nullptr, nullptr, grid, options, out,
                       diag, nullptr);
}

template <class Grid, class DW, class DH, class DC>
Report gptaq(Context& ctx, const Eigen::MatrixBase<DW>& W, const Eigen::MatrixBase<DH>& H,
             const Eigen::MatrixBase<DC>& dXXT, const Grid& grid, const GptqOptions& options,
             double alpha, QuantizedWeight<typename Grid::Scalar>& out,
             SolveDiagnostics* diag = nullptr) {
  using S = typename Grid::Scalar;
  return detail::on_host(ctx, out, [&](DeviceQuantizedWeight<S>& q) {
    LOAQ_CUDA_TRY(ctx.init());
    detail::SolveWeight<S> w;
    DeviceMatrix<detail::HostScalar<DH>> Hd;
    DeviceMatrix<detail::HostScalar<DC>> Dd;
    LOAQ_CUDA_TRY(detail::upload_weight(ctx, W, w));
    LOAQ_CUDA_TRY(upload(ctx, H, Hd));
    LOAQ_CUDA_TRY(upload(ctx, dXXT, Dd));
    return detail::solve(ctx, w, Hd, &Dd, alpha, nullptr, nullptr, nullptr, grid, options, q,
                         diag, nullptr);
  });
}

// ---------------------------------------------------------------------------------------------
// LoaQ-family targets: W* = W + α·W·C·Ĥ⁻¹ + β·G·Ĥ⁻¹, then GPTQ(W*, Ĥ). C (n × n) and G (m × n)
// may be null; `target`, if given, receives W* (host).

template <class Grid, class SH>
Report solve_target(Context& ctx, const DeviceMatrix<typename Grid::Scalar>& W,
                    const DeviceMatrix<SH>& H, const DeviceMatrix<double>* C,
                    const DeviceMatrix<double>* G, const TargetWeights& weights, const Grid& grid,
                    const GptqOptions& options, DeviceQuantizedWeight<typename Grid::Scalar>& out,
                    SolveDiagnostics* diag = nullptr,
                    Matrix<typename Grid::Scalar>* target = nullptr) {
  detail::SolveWeight<typename Grid::Scalar> w;
  LOAQ_CUDA_TRY(detail::copy_weight(ctx, W, w));
  return detail::solve(ctx, w, H, static_cast<const DeviceMatrix<double>*>(nullptr), 0.0, C, G,
                       &weights, grid, options, out, diag, target);
}

template <class Grid, class DW, class DH>
Report solve_target(Context& ctx, const Eigen::MatrixBase<DW>& W, const Eigen::MatrixBase<DH>& H,
                    const Matrix<double>* C, const Matrix<double>* G, const TargetWeights& weights,
                    const Grid& grid, const GptqOptions& options,
                    QuantizedWeight<typename Grid::Scalar>& out, SolveDiagnostics* diag = nullptr,
                    Matrix<typename Grid::Scalar>* target = nullptr) {
  using S = typename Grid::Scalar;
  if (target) target->resize(0, 0);
  if (!internal::all_finite(W)) {  // checked in W's own scalar, before the cast to S
    out = QuantizedWeight<S>{};
    return Report::fail(Status::NonFiniteInput, "weight holds NaN or Inf");
  }
  return detail::on_host(ctx, out, [&](DeviceQuantizedWeight<S>& q) {
    LOAQ_CUDA_TRY(ctx.init());
    detail::SolveWeight<S> w;
    DeviceMatrix<detail::HostScalar<DH>> Hd;
    DeviceMatrix<double> Cd, Gd;
    LOAQ_CUDA_TRY(detail::upload_weight(ctx, W, w, /*scale=*/false));
    LOAQ_CUDA_TRY(upload(ctx, H, Hd));
    if (C) LOAQ_CUDA_TRY(upload(ctx, *C, Cd));
    if (G) LOAQ_CUDA_TRY(upload(ctx, *G, Gd));
    return detail::solve(ctx, w, Hd, static_cast<const DeviceMatrix<double>*>(nullptr), 0.0,
                         C ? &Cd : nullptr, G ? &Gd : nullptr, &weights, grid, options, q, diag,
                         target);
  });
}

// The LoaQ objectives (subblock/objective.hpp): statistics from ObjectiveStats on the host, the
// solve on the GPU, as loaq::solve_objective.
template <class Objective, class Grid, class DW>
Report solve_objective(Context& ctx, const Eigen::MatrixBase<DW>& W,
                       const ObjectiveStats<Objective>& st, const Grid& grid,
                       const GptqOptions& options, QuantizedWeight<typename Grid::Scalar>& out,
                       SolveDiagnostics* diag = nullptr,
                       Matrix<typename Grid::Scalar>* target = nullptr) {
  const auto& acc = st.stats();
  if (acc.tokens() == 0) {
    out = QuantizedWeight<typename Grid::Scalar>{};
    if (target) target->resize(0, 0);
    return Report::fail(Status::InvalidArgument, "no calibration batch was added");
  }
  const Matrix<double>* C = acc.has_cross() ? &acc.cross() : nullptr;
  const Matrix<double>* G = acc.has_residual_cross() ? &acc.residual_cross() : nullptr;
  return solve_target(ctx, W, acc.hessian(), C, G, st.weights(), grid, options, out, diag, target);
}

// ---------------------------------------------------------------------------------------------
// RTN: every group quantized on its own (loss stays 0).

template <class Grid>
Report rtn(Context& ctx, const DeviceMatrix<typename Grid::Scalar>& W, const Grid& grid,
           int group_size, const ParamSearch& search,
           DeviceQuantizedWeight<typename Grid::Scalar>& out) {
  detail::SolveWeight<typename Grid::Scalar> w;
  LOAQ_CUDA_TRY(detail::copy_weight(ctx, W, w));
  return detail::rtn(ctx, w, grid, group_size, search, out);
}

template <class Grid, class DW>
Report rtn(Context& ctx, const Eigen::MatrixBase<DW>& W, const Grid& grid, int group_size,
           const ParamSearch& search, QuantizedWeight<typename Grid::Scalar>& out) {
  using S = typename Grid::Scalar;
  return detail::on_host(ctx, out, [&](DeviceQuantizedWeight<S>& q) {
    LOAQ_CUDA_TRY(ctx.init());
    detail::SolveWeight<S> w;
    LOAQ_CUDA_TRY(detail::upload_weight(ctx, W, w));
    return detail::rtn(ctx, w, grid, group_size, search, q);
  });
}

}  // namespace cuda
}  // namespace loaq
