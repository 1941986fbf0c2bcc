// Round-to-nearest: every group quantized independently with its own parameters.
#pragma once

#include "../simd/quantize.hpp"
#include "column_solver.hpp"
#include "options.hpp"

namespace loaq {

// group_size −1: one group per row. Output layout matches the column solvers'; loss stays 0.
// On failure `out` is empty.
template <class Grid, class DW>
Report rtn(const Eigen::MatrixBase<DW>& W, const Grid& grid, int group_size,
           const ParamSearch& search, QuantizedWeight<typename Grid::Scalar>& out) {
  using Scalar = typename Grid::Scalar;
  out = QuantizedWeight<Scalar>{};
  const Index m = W.rows(), n = W.cols();
  GptqOptions opt;
  opt.group_size = group_size;
  opt.search = search;
  if (auto r = internal::check_options(opt, n); !r.ok()) return r;
  if (auto r = internal::check_grid(grid); !r.ok()) return r;
  if (!internal::all_finite(W))
    return Report::fail(Status::NonFiniteInput, "weight holds NaN or Inf");
  internal::RowScaling<Scalar> rows_scale;
  if (auto r = rows_scale.fit(W); !r.ok()) return r;
  const Index g = group_size > 0 ? group_size : std::max<Index>(n, 1);
  const Index groups = (n + g - 1) / g;
  out.weight.resize(m, n);
  out.codes.resize(m, n);
  out.scales.resize(m, groups);
  out.zeros.resize(m, groups);
  out.g_idx.resize(n);
  const Matrix<Scalar> Ws = rows_scale.scaled(W);
  RowParams<Scalar> p;
  for (Index k = 0; k < groups; ++k) {
    const Index c0 = k * g, width = std::min(g, n - c0);
    fit_params(grid, Ws.middleCols(c0, width), search, p);
    out.scales.col(k) = p.scale;
    out.zeros.col(k) = p.zero;
    for (Index c = c0; c < c0 + width; ++c) {  // the column solvers' kernel, without updates
      out.g_idx[c] = int(k);
      simd::quantize_column(grid, &Ws(0, c), p.scale.data(), p.zero.data(), &out.codes(0, c),
                            &out.weight(0, c), m);
    }
  }
  if (auto r = rows_scale.restore(out, zero_is_offset<Grid>::value); !r.ok()) {
    out = QuantizedWeight<Scalar>{};
    return r;
  }
  return Report::success();
}

}  // namespace loaq
