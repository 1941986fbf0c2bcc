// Round-to-nearest: every group quantized independently with its own parameters.
#pragma once

#include "options.hpp"

namespace loaq {

// group_size −1: one group per row. Output layout matches the column solvers'.
template <class Grid, class DW>
Report rtn(const Eigen::MatrixBase<DW>& W, const Grid& grid, int group_size,
           const ParamSearch& search, QuantizedWeight<typename Grid::Scalar>& out) {
  using Scalar = typename Grid::Scalar;
  const Index m = W.rows(), n = W.cols();
  if (group_size == 0 || group_size < -1)
    return Report::fail(Status::InvalidArgument, "group size must be −1 (per row) or ≥ 1");
  if (!W.allFinite()) return Report::fail(Status::NonFiniteInput, "weight holds NaN or Inf");
  const Index g = group_size > 0 ? group_size : std::max<Index>(n, 1);
  const Index groups = (n + g - 1) / g;
  out.weight.resize(m, n);
  out.codes.resize(m, n);
  out.scales.resize(m, groups);
  out.zeros.resize(m, groups);
  out.g_idx.resize(n);
  out.loss = 0;
  const Matrix<Scalar> Ws = W.template cast<Scalar>();
  RowParams<Scalar> p;
  for (Index k = 0; k < groups; ++k) {
    const Index c0 = k * g, width = std::min(g, n - c0);
    fit_params(grid, Ws.middleCols(c0, width), search, p);
    out.scales.col(k) = p.scale;
    out.zeros.col(k) = p.zero;
    for (Index c = c0; c < c0 + width; ++c) {
      out.g_idx[c] = int(k);
      for (Index r = 0; r < m; ++r) {
        out.codes(r, c) = grid.encode(Ws(r, c), p.scale[r], p.zero[r]);
        out.weight(r, c) = grid.decode(out.codes(r, c), p.scale[r], p.zero[r]);
      }
    }
  }
  return Report::success();
}

}  // namespace loaq
