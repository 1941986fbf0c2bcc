// GPTQ (Frantar et al. 2022), exact semantics of the reference fasterquant (spec §3).
#pragma once

#include <utility>

#include "column_solver.hpp"

namespace loaq {
namespace internal {

// W is an Eigen expression (read, then copied) or an rvalue Matrix<Scalar> (solved in place).
// after_factor() runs once H has been factored and is no longer read (a handed-over H is
// released there, so that the result can reuse its storage).
template <class Grid, class WArg, class DH, class AfterFactor>
Report gptq_solve(WArg&& W, const Eigen::MatrixBase<DH>& H, const Grid& grid,
                  const GptqOptions& options, QuantizedWeight<typename Grid::Scalar>& out,
                  SolveDiagnostics* diag, AfterFactor&& after_factor) {
  out = QuantizedWeight<typename Grid::Scalar>{};
  if (H.rows() != W.cols() || H.cols() != W.cols())
    return Report::fail(Status::ShapeMismatch,
                        "Hessian must be n × n with n = " + std::to_string(W.cols()) +
                            " weight columns, got " + std::to_string(H.rows()) + "×" +
                            std::to_string(H.cols()));
  if (auto r = check_options(options, W.cols()); !r.ok()) return r;
  if (!internal::all_finite(W))
    return Report::fail(Status::NonFiniteInput, "weight holds NaN or Inf");
  PreparedHessian<typename Grid::Scalar> prep;
  if (auto r = prepare_plain_gptq(H, options, prep); !r.ok())
    return r;
  after_factor();
  return solve_columns(std::forward<WArg>(W), prep, grid, options, nullptr, out, diag);
}

}  // namespace internal

// Quantizes W (m × n) against H (n × n, e.g. 2/n_seq Σ x xᵀ) with the given grid. On failure
// `out` is empty and the Report says what was wrong.
template <class Grid, class DW, class DH>
Report gptq(const Eigen::MatrixBase<DW>& W, const Eigen::MatrixBase<DH>& H, const Grid& grid,
            const GptqOptions& options, QuantizedWeight<typename Grid::Scalar>& out,
            SolveDiagnostics* diag = nullptr) {
  return internal::gptq_solve(W, H, grid, options, out, diag, [] {});
}

// The same, solving in the storage of a weight the caller hands over (`gptq(std::move(W), …)`):
// one m × n copy fewer. W is left valid but unspecified; the result is identical.
template <class Grid, class DH>
Report gptq(Matrix<typename Grid::Scalar>&& W, const Eigen::MatrixBase<DH>& H, const Grid& grid,
            const GptqOptions& options, QuantizedWeight<typename Grid::Scalar>& out,
            SolveDiagnostics* diag = nullptr) {
  return internal::gptq_solve(std::move(W), H, grid, options, out, diag, [] {});
}

// The same, also handing over the Hessian (`gptq(W, std::move(H), …)`, any scalar): H's storage
// is released as soon as its inverse factor is computed, so the result can reuse it. Peak memory
// is n² entries lower and fresh memory is not touched again for the output; the result is
// identical. H is left empty once factored; if W, the options or H itself are refused, or the
// factorization fails, H is left as it was.
template <class Grid, class DW, class HScalar>
Report gptq(const Eigen::MatrixBase<DW>& W, Matrix<HScalar>&& H, const Grid& grid,
            const GptqOptions& options, QuantizedWeight<typename Grid::Scalar>& out,
            SolveDiagnostics* diag = nullptr) {
  return internal::gptq_solve(W, H, grid, options, out, diag, [&H] { H = Matrix<HScalar>(); });
}
template <class Grid, class HScalar>
Report gptq(Matrix<typename Grid::Scalar>&& W, Matrix<HScalar>&& H, const Grid& grid,
            const GptqOptions& options, QuantizedWeight<typename Grid::Scalar>& out,
            SolveDiagnostics* diag = nullptr) {
  return internal::gptq_solve(std::move(W), H, grid, options, out, diag,
                              [&H] { H = Matrix<HScalar>(); });
}

}  // namespace loaq
