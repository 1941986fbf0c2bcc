// GPTQ (Frantar et al. 2022), exact semantics of the reference fasterquant (spec §3).
#pragma once

#include "column_solver.hpp"

namespace loaq {

// Quantizes W (m × n) against H (n × n, e.g. 2/n_seq Σ x xᵀ) with the given grid. On failure
// `out` is empty and the Report says what was wrong.
template <class Grid, class DW, class DH>
Report gptq(const Eigen::MatrixBase<DW>& W, const Eigen::MatrixBase<DH>& H, const Grid& grid,
            const GptqOptions& options, QuantizedWeight<typename Grid::Scalar>& out,
            SolveDiagnostics* diag = nullptr) {
  out = QuantizedWeight<typename Grid::Scalar>{};
  if (H.rows() != W.cols() || H.cols() != W.cols())
    return Report::fail(Status::ShapeMismatch,
                        "Hessian must be n × n with n = " + std::to_string(W.cols()) +
                            " weight columns, got " + std::to_string(H.rows()) + "×" +
                            std::to_string(H.cols()));
  if (auto r = internal::check_options(options, W.cols()); !r.ok()) return r;
  if (!W.allFinite()) return Report::fail(Status::NonFiniteInput, "weight holds NaN or Inf");
  PreparedHessian<typename Grid::Scalar> prep;
  if (auto r = prepare_hessian(H, options.act_order, options.damping, prep, options.factor); !r.ok())
    return r;
  return internal::solve_columns(W, prep, grid, options, nullptr, out, diag);
}

}  // namespace loaq
