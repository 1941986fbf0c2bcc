// Per-row grid parameters for a block of columns: min-max and the MSE shrink search
// (GPTQ Quantizer.find_params semantics).
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "../config.hpp"
#include "../simd/quantize.hpp"

namespace loaq {

// Runtime options of the parameter search. Defaults are the GPTQ reference's.
struct ParamSearch {
  bool mse = false;        // shrink search minimising Σ|x̂ − x|^norm
  double norm = 2.4;
  int grid = 100;
  double maxshrink = 0.8;  // the search tries int(maxshrink·grid) shrink factors
};

// One scale and zero per row.
template <class Scalar>
struct RowParams {
  Vector<Scalar> scale, zero;
};

// Grids whose `zero` is an offset in value units (x̂ = s·code + zero, e.g. GgmlQ4_1Grid) declare
// `static constexpr bool zero_is_offset = true`: such a zero scales with its row like the scale.
// Every other grid's zero is in code units.
template <class Grid, class = void>
struct zero_is_offset : std::false_type {};
template <class Grid>
struct zero_is_offset<Grid, std::void_t<decltype(Grid::zero_is_offset)>>
    : std::integral_constant<bool, Grid::zero_is_offset> {};

// x̂ = quantize(x) with the grid and one row's parameters.
template <class Grid>
typename Grid::Scalar quantize(const Grid& grid, typename Grid::Scalar x,
                               typename Grid::Scalar scale, typename Grid::Scalar zero) {
  return grid.decode(grid.encode(x, scale, zero), scale, zero);
}

// find_params over the columns of `block` (rows × cols): per-row min-max, then optionally the
// MSE search over shrink factors f = 1 − i/grid, keeping a candidate only on strict improvement.
template <class Grid, class Derived>
void fit_params(const Grid& grid, const Eigen::MatrixBase<Derived>& block,
                const ParamSearch& search, RowParams<typename Grid::Scalar>& out) {
  using Scalar = typename Grid::Scalar;
  const Index rows = block.rows(), cols = block.cols();
  out.scale.resize(rows);
  out.zero.resize(rows);
  const int steps = int(search.maxshrink * search.grid);
  // Column-major blocks: reduce across columns with whole columns at a time (SIMD, unit stride)
  // rather than walking each row with a stride.
  Vector<Scalar> lo = Vector<Scalar>::Zero(rows), hi = Vector<Scalar>::Zero(rows);
  if (cols) {
    lo = block.col(0).template cast<Scalar>();
    hi = lo;
    for (Index c = 1; c < cols; ++c) {
      lo = lo.cwiseMin(block.col(c).template cast<Scalar>());
      hi = hi.cwiseMax(block.col(c).template cast<Scalar>());
    }
  }
  for (Index r = 0; r < rows; ++r) {
    Scalar xmin = lo[r], xmax = hi[r];
    grid.adjust_range(xmin, xmax);
    grid.params(xmin, xmax, out.scale[r], out.zero[r]);
    lo[r] = xmin;
    hi[r] = xmax;
  }
  if (!search.mse || rows == 0) return;

  // Candidate by candidate, column by column: every row's error still sums over its columns in
  // order (as a per-row loop would), but each column is one unit-stride SIMD pass.
  const Matrix<Scalar> X = block.template cast<Scalar>();
  std::vector<double> best(std::size_t(rows), std::numeric_limits<double>::infinity());
  std::vector<double> err(best.size());
  Vector<Scalar> s1(rows), z1(rows);
  const Scalar p = Scalar(search.norm);
  for (int i = 0; i < steps; ++i) {
    const Scalar f = Scalar(1.0 - double(i) / search.grid);
    for (Index r = 0; r < rows; ++r) grid.params(f * lo[r], f * hi[r], s1[r], z1[r]);
    std::fill(err.begin(), err.end(), 0.0);
    for (Index c = 0; c < cols; ++c)
      simd::add_pow_error(grid, &X(0, c), s1.data(), z1.data(), p, err.data(), rows);
    for (Index r = 0; r < rows; ++r)
      if (err[std::size_t(r)] < best[std::size_t(r)]) {
        best[std::size_t(r)] = err[std::size_t(r)];
        out.scale[r] = s1[r];
        out.zero[r] = z1[r];
      }
  }
}

}  // namespace loaq
