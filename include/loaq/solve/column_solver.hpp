// The one column loop behind GPTQ, GPTAQ and every LoaQ target (spec §3, §4).
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "../config.hpp"
#include "../grid/params.hpp"
#include "../simd/quantize.hpp"
#include "../status.hpp"
#include "options.hpp"
#include "prepare.hpp"
#include "row_scaling.hpp"

#ifndef LOAQ_SUBBLOCK
#define LOAQ_SUBBLOCK 16
#endif

namespace loaq {
namespace internal {

inline Report check_options(const GptqOptions& o, Index n) {
  if (o.block_size < 1)
    return Report::fail(Status::InvalidArgument, "block size must be ≥ 1");
  if (o.group_size == 0 || o.group_size < -1)
    return Report::fail(Status::InvalidArgument, "group size must be −1 (per row) or ≥ 1");
  if (o.search.mse && (!(o.search.norm > 0) || !std::isfinite(o.search.norm) || o.search.grid < 1 ||
                       o.search.grid > 100000 || !(o.search.maxshrink > 0) ||
                       o.search.maxshrink > 1))
    return Report::fail(Status::InvalidArgument,
                        "MSE search needs a finite norm > 0, grid in [1, 100000] and maxshrink in "
                        "(0, 1]");
  (void)n;
  return Report::success();
}

// Grids that can be invalid (a codebook built from a bad table) say so through status().
template <class Grid>
auto check_grid(const Grid& grid, int) -> decltype(grid.status(), Report()) {
  return grid.status();
}
template <class Grid>
Report check_grid(const Grid&, long) { return Report::success(); }
template <class Grid>
Report check_grid(const Grid& grid) { return check_grid(grid, 0); }

// Rows per panel of the column loop, a function of m only (never of the thread count, so results
// do not depend on it). Panels of equal height (a multiple of 16 rows, the widest float packet)
// in an even count, so that two threads get the same rows: four of at least 128 rows, else two
// of at least 64, else one, and more where a panel would pass 1024 rows. Taller panels make the
// block GEMM faster (its right-hand side is packed once per panel); up to 1024 rows the panel's
// slice of the lazy block (1024 × 128) still fits in L2.
inline Index panel_rows(Index m) {
  Index count = m >= 4 * 128 ? 4 : m >= 2 * 64 ? 2 : 1;
  count = std::max(count, (m + 1023) / 1024);
  if (count > 1 && count % 2 != 0) ++count;
  const Index rows = (m + count - 1) / count;
  return std::max<Index>(1, std::min(m, (rows + 15) / 16 * 16));
}

// Whether the loop on PreparedHessian's left-looking form reproduces the reference: no dynamic
// group reaches past its block (such a group would read later columns as the right-looking loop
// leaves them, which the left-looking loop never forms).
inline bool left_looking_fits(const GptqOptions& o) {
  const bool dynamic = o.group_size > 0 && !o.static_groups;
  return !dynamic || o.block_size % o.group_size == 0;
}

// The block of the left-looking form a solve with these options asks prepare_hessian_as for: the
// block size where the left-looking loop fits, else 0 (U), and always 0 with
// FactorPrecision::Double (whose bits results have been published from).
inline Index left_block_for(const GptqOptions& o) {
  return o.factor == FactorPrecision::Solver && left_looking_fits(o) ? Index(o.block_size) : 0;
}

// Prepares H for a solve with no correction and no target (plain GPTQ): in the left-looking form
// where it fits, which needs no inverse of R (n³/3 flops fewer); else as U.
template <class Scalar, class Derived>
Report prepare_plain_gptq(const Eigen::MatrixBase<Derived>& H, const GptqOptions& o,
                          PreparedHessian<Scalar>& prep) {
  return prepare_hessian_as(H, o.act_order, o.damping, prep, o.factor, left_block_for(o));
}

// Loss weight of each row: 4^(e − e_max) undoes the row scaling of (w − q)² relative to the
// largest row; 4^e_max goes into the final scaling with the Hessian's, so nothing overflows.
template <class Scalar>
void row_loss_weights(const RowScaling<Scalar>& rows_scale, Index m, int log4_scale,
                      Eigen::VectorXd& row_weight, int& loss_exponent) {
  row_weight = Eigen::VectorXd::Ones(m);
  loss_exponent = 2 * log4_scale;
  if (!rows_scale.any()) return;
  int e_max = std::numeric_limits<int>::min();
  for (Index r = 0; r < m; ++r) e_max = std::max(e_max, rows_scale.exponent(r));
  for (Index r = 0; r < m; ++r) row_weight[r] = std::ldexp(1.0, 2 * (rows_scale.exponent(r) - e_max));
  loss_exponent += 2 * e_max;
}

// The solve's loss, Σ of the per-column losses (given in solve order, scaled by 2^loss_exponent),
// and the diagnostics when asked for. Prep: a prepared Hessian, on the host or the GPU.
template <class Prep>
double report_loss(const Prep& prep, const Eigen::VectorXd& loss_solve_order, int loss_exponent,
                   SolveDiagnostics* diag) {
  const Index n = loss_solve_order.size();
  Eigen::VectorXd loss_by_column(n);
  for (Index j = 0; j < n; ++j)
    loss_by_column[prep.perm[std::size_t(j)]] = std::ldexp(loss_solve_order[j], loss_exponent);
  if (diag) {
    diag->damping = prep.damping;
    diag->relative_damping = prep.relative_damping;
    diag->factor_attempts = prep.attempts;
    diag->failed_pivot = prep.failed_pivot;
    diag->double_fallback = prep.double_fallback;
    diag->perm = prep.perm;
    diag->dead.clear();
    for (Index j = 0; j < n; ++j)
      if (prep.dead[std::size_t(j)]) diag->dead.push_back(j);
    diag->column_loss = loss_by_column;
  }
  return loss_by_column.sum();
}

// What both entry points of the column loop check before they touch W: shapes, options, the
// grid, finiteness; then the per-row rescaling W needs (fitted into rows_scale).
template <class Grid, class Derived>
Report check_columns_input(const Eigen::MatrixBase<Derived>& W,
                           const PreparedHessian<typename Grid::Scalar>& prep, const Grid& grid,
                           const GptqOptions& opt, const Matrix<typename Grid::Scalar>* P,
                           const Matrix<typename Grid::Scalar>* drift,
                           RowScaling<typename Grid::Scalar>& rows_scale) {
  const Index n = W.cols();
  if (Index(prep.perm.size()) != n)
    return Report::fail(Status::ShapeMismatch,
                        "weight has " + std::to_string(n) + " columns but the Hessian is " +
                            std::to_string(prep.perm.size()) + "×" +
                            std::to_string(prep.perm.size()));
  if (auto r = check_options(opt, n); !r.ok()) return r;
  if (!internal::all_finite(W))
    return Report::fail(Status::NonFiniteInput, "weight holds NaN or Inf");
  if (P && (P->rows() != n || P->cols() != n))
    return Report::fail(Status::ShapeMismatch, "asymmetric correction must be n × n");
  if (drift && (drift->rows() != W.rows() || drift->cols() != n))
    return Report::fail(Status::ShapeMismatch, "target drift must be m × n");
  if (auto r = check_grid(grid); !r.ok()) return r;
  return drift ? rows_scale.fit(W, *drift) : rows_scale.fit(W);
}

template <class Grid>
Report solve_scaled_columns(Matrix<typename Grid::Scalar>&& W,
                            const RowScaling<typename Grid::Scalar>& rows_scale,
                            const PreparedHessian<typename Grid::Scalar>& prep, const Grid& grid,
                            const GptqOptions& opt, const Matrix<typename Grid::Scalar>* P,
                            QuantizedWeight<typename Grid::Scalar>& out, SolveDiagnostics* diag,
                            const Matrix<typename Grid::Scalar>* drift);

// Quantizes W (m × n, original column order) column by column on a prepared Hessian.
// P (n × n in solve order, may be null) is GPTAQ's asymmetric correction:
//   inner:  W1[:, i:] −= e·U1[i, i:] − w·P1[i, i:]
//   block:  W[:, i2:] −= E1·U[i1:i2, i2:] − W1·P[i1:i2, i2:]
// in the form of prep's factor: P itself with U, its left-looking form with that (gptaq.hpp).
// U is the normalized factor (see PreparedHessian): e = (w − q)/U_ii and the updates e·U[i, :]
// do not depend on the normalization; the loss is scaled back to H's own scale.
// drift (m × n in solve order, may be null; left-looking form only) is a closed-form target's D
// (targets.hpp): the loop then solves toward W + B·Ĥ⁻¹ without that target ever being formed.
// W is any Eigen expression (read, then copied) or an rvalue Matrix<Scalar>, whose storage the
// solve then works in (one m × n copy fewer; W is left valid but unspecified).
template <class Grid, class WArg>
Report solve_columns(WArg&& W, const PreparedHessian<typename Grid::Scalar>& prep, const Grid& grid,
                     const GptqOptions& opt, const Matrix<typename Grid::Scalar>* P,
                     QuantizedWeight<typename Grid::Scalar>& out, SolveDiagnostics* diag,
                     const Matrix<typename Grid::Scalar>* drift = nullptr) {
  out = QuantizedWeight<typename Grid::Scalar>{};
  RowScaling<typename Grid::Scalar> rows_scale;
  if (auto r = check_columns_input(W, prep, grid, opt, P, drift, rows_scale); !r.ok()) return r;
  Matrix<typename Grid::Scalar> drift_scaled;  // only when a row of it had to be rescaled
  if (drift && rows_scale.any()) {
    drift_scaled = rows_scale.scaled(*drift);
    drift = &drift_scaled;
  }
  return solve_scaled_columns(rows_scale.scaled(std::forward<WArg>(W)), rows_scale, prep, grid,
                              opt, P, out, diag, drift);
}

// The loop itself, on W already checked and brought to the solver's range by rows_scale.
template <class Grid>
Report solve_scaled_columns(Matrix<typename Grid::Scalar>&& W_scaled,
                            const RowScaling<typename Grid::Scalar>& rows_scale,
                            const PreparedHessian<typename Grid::Scalar>& prep, const Grid& grid,
                            const GptqOptions& opt, const Matrix<typename Grid::Scalar>* P,
                            QuantizedWeight<typename Grid::Scalar>& out, SolveDiagnostics* diag,
                            const Matrix<typename Grid::Scalar>* drift) {
  using Scalar = typename Grid::Scalar;
  using Mat = Matrix<Scalar>;
  Mat W = std::move(W_scaled);
  const Index m = W.rows(), n = W.cols();
  const Index g = opt.group_size > 0 ? opt.group_size : n;
  const bool grouped = opt.group_size > 0;
  const bool dynamic = grouped && !opt.static_groups;
  const Index groups = grouped ? (n + g - 1) / g : 1;
  const std::vector<Index>& perm = prep.perm;

  Eigen::VectorXd row_weight;
  int loss_exponent = 0;
  row_loss_weights(rows_scale, m, prep.log4_scale, row_weight, loss_exponent);
  // The m × n results first: a Hessian handed over and released after its factor leaves a block
  // of exactly this size free, which the weight then reuses if nothing smaller was carved from it.
  out.weight.resize(m, n);
  out.codes.resize(m, n);
  out.scales.resize(m, groups);
  out.zeros.resize(m, groups);
  out.g_idx.resize(n);
  const Index R = panel_rows(m), panels = (m + R - 1) / R;
  // Parameters of columns [c0, c0 + width) into group column k, rows split like the solve.
  auto fit_group = [&](Index k, Index c0, Index width) {
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1)
#endif
    for (Index p = 0; p < panels; ++p) {
      const Index r0 = p * R, rows = std::min(R, m - r0);
      RowParams<Scalar> fitted;
      fit_params(grid, W.block(r0, c0, rows, width), opt.search, fitted);
      out.scales.block(r0, k, rows, 1) = fitted.scale;
      out.zeros.block(r0, k, rows, 1) = fitted.zero;
    }
  };
  if (!grouped) {
    fit_group(0, 0, n);  // before dead columns are zeroed
    out.g_idx.setZero();
  }
  for (Index j = 0; j < n; ++j)
    if (prep.dead[std::size_t(j)]) W.col(j).setZero();
  if (grouped && opt.static_groups) {
    for (Index k = 0; k < groups; ++k) fit_group(k, k * g, std::min(g, n - k * g));
    for (Index j = 0; j < n; ++j) out.g_idx[j] = int(j / g);
  } else if (grouped) {
    for (Index j = 0; j < n; ++j) out.g_idx[perm[std::size_t(j)]] = int(j / g);
  }
  if (prep.permuted()) W = W(Eigen::all, perm).eval();

  // Right-looking on U: each block's errors e go to the columns after it, W[:, i2:] −= E1·U[b, i2:].
  // Left-looking on the left-looking form (PreparedHessian): each block starts from
  // W_b + (W − Q)_p·R_pb·U_bb, p the columns before it. That is exactly where the right-looking
  // loop leaves the block (with R = U⁻¹, U_pb = −R_pp⁻¹·R_pb·U_bb and the errors so far are
  // E_p = (W − Q)_p·R_pp), and the block then runs the same way on U_bb. GPTAQ's correction adds
  // Q_p·P_pb to the start (P here in its left-looking form, gptaq.hpp), and each finished block's
  // own correction (W̄ − Q)_b·P_bb (W̄: the columns just before they were quantized) joins its
  // q − w, so that later blocks' GEMM carries it; inside the block P_bb works as right-looking.
  const bool left = prep.left_block > 0;
  const Mat& M = left ? prep.left_factor : prep.upper;
  if ((left && (prep.left_block != opt.block_size || !left_looking_fits(opt))) ||
      (drift && (!left || std::find(prep.dead.begin(), prep.dead.end(), true) != prep.dead.end()))) {
    out = QuantizedWeight<Scalar>{};
    return Report::fail(Status::InvalidArgument,
                        "internal: this solve needs the inverse factor U, not the left-looking form");
  }
  if (!internal::all_finite(M)) {
    out = QuantizedWeight<Scalar>{};
    return Report::fail(Status::OutOfRange,
                        "the inverse factor does not fit the solver's scalar (the damped Hessian "
                        "is too ill-conditioned): raise percdamp or solve in double");
  }
  std::vector<char> overflowed(std::size_t(panels), 0);  // per panel: a non-finite error
  // GPTAQ left-looking: the quantized columns in solve order, what the correction multiplies.
  Mat Q_solved(left && P ? m : 0, n);

  // Results go straight to their original column (no solve-order copy to permute at the end).
  const Index B = opt.block_size, block_cols = std::min<Index>(B, n);
  constexpr Index kSub = LOAQ_SUBBLOCK;
  // Each thread's working copy of the panel it runs (W1: the block's columns as they are
  // updated, E1: their scaled errors), kept from panel to panel and block to block. Two m × B
  // matrices would be fresh memory, one page fault per 4 KiB on every solve (a visible part of a
  // small layer's run); a thread's panel is at most 1024 × B.
  // Left-looking, W keeps each column as it was given until it is quantized (then q − w replaces
  // it), so a group that starts inside a block takes its parameters from W0, a copy of the
  // panel's block as it was when the block started (what the right-looking W holds: spec §3's
  // note).
  struct PanelScratch {
    Mat W1, E1, W0;
  };
#ifdef _OPENMP
  std::vector<PanelScratch> scratch(std::size_t(std::max(1, omp_get_max_threads())));
#else
  std::vector<PanelScratch> scratch(1);
#endif
  const bool keep_block_start = left && dynamic && g < B;
  Eigen::MatrixXd panel_loss(panels, n);  // summed over panels in a fixed order below

  for (Index i1 = 0; i1 < n; i1 += B) {
    const Index i2 = std::min(i1 + B, n), count = i2 - i1;
    // Rows are independent: each fixed panel of rows runs the whole block on its own, so the
    // result does not depend on how panels are spread over threads. Handed out one at a time:
    // the count is often odd (576 rows: four of 128 and one of 64), and a static split would
    // give one of two threads twice the rows of the other.
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1)
#endif
    for (Index p = 0; p < panels; ++p) {
      const Index r0 = p * R, rows = std::min(R, m - r0);
#ifdef _OPENMP
      PanelScratch& own_scratch = scratch[std::size_t(omp_get_thread_num())];
#else
      PanelScratch& own_scratch = scratch[0];
#endif
      if (own_scratch.W1.rows() < rows) {
        own_scratch.W1.resize(std::min(R, m), block_cols);
        own_scratch.E1.resize(std::min(R, m), block_cols);
        if (keep_block_start) own_scratch.W0.resize(std::min(R, m), block_cols);
      }
      auto W1p = own_scratch.W1.topLeftCorner(rows, count);
      auto E1p = own_scratch.E1.topLeftCorner(rows, count);
      W1p = W.block(r0, i1, rows, count);  // W itself is only updated at block ends (spec note)
      if (left && i1 > 0) {  // W's earlier columns hold q − w: one GEMM per block
        W1p.noalias() -= W.block(r0, 0, rows, i1) * M.block(0, i1, i1, count);
        if (P) W1p.noalias() += Q_solved.block(r0, 0, rows, i1) * P->block(0, i1, i1, count);
      }
      if (drift) W1p += drift->block(r0, i1, rows, count);  // the target's share of the start
      if (keep_block_start) own_scratch.W0.topLeftCorner(rows, count) = W1p;
      // Where a group's columns are as they were at the block's start: W right-looking; W1
      // left-looking when groups are blocks (a group starts at the block's first column, before
      // any update inside it), else W0. Columns of W1 and W0 count from i1, their rows from r0.
      auto block_start = [&](Index col, Index width) {
        if (keep_block_start) return own_scratch.W0.block(0, col - i1, rows, width);
        if (left) return own_scratch.W1.block(0, col - i1, rows, width);
        return W.block(r0, col, rows, width);
      };
      RowParams<Scalar> local;
      Mat Wb;  // GPTAQ: the sub-block's columns before quantization
      // Inside the block, a second level of laziness: rank-1 updates only within a sub-block
      // of kSub columns, then one small GEMM carries the sub-block to the rest of the block.
      for (Index s0 = 0; s0 < count; s0 += kSub) {
        const Index s1 = std::min(s0 + kSub, count);
        if (P) Wb.resize(rows, s1 - s0);
        for (Index i = s0; i < s1; ++i) {
          const Index col = i1 + i, dst = perm[std::size_t(col)];
          if (dynamic && col % g == 0) {
            fit_params(grid, block_start(col, std::min(g, n - col)), opt.search, local);
            out.scales.block(r0, col / g, rows, 1) = local.scale;
            out.zeros.block(r0, col / g, rows, 1) = local.zero;
          }
          const Index k = !grouped ? 0 : opt.static_groups ? dst / g : col / g;
          const Scalar d = M(col, col);
          if (P) Wb.col(i - s0) = W1p.col(i);
          simd::quantize_column(grid, &W1p(0, i), &out.scales(r0, k), &out.zeros(r0, k),
                                &out.codes(r0, dst), &out.weight(r0, dst), rows);
          const auto q = out.weight.block(r0, dst, rows, 1);
          E1p.col(i) = (W1p.col(i) - q) / d;
          if (left) W.block(r0, col, rows, 1) = q - W.block(r0, col, rows, 1);
          if (Q_solved.rows()) Q_solved.block(r0, col, rows, 1) = q;
          // Σ (w − q)²/d²/2 in double, so no magnitude overflows it.
          panel_loss(p, col) = simd::weighted_square_sum(&E1p(0, i), &row_weight[r0], rows) / 2;
          const Index span = s1 - i;
          if (P)  // both rank-1 terms in one pass over each column (two outer products: two)
            for (Index c = i; c < s1; ++c)
              W1p.col(c) -= E1p.col(i) * M(col, i1 + c) - Wb.col(i - s0) * (*P)(col, i1 + c);
          else
            W1p.middleCols(i, span).noalias() -= E1p.col(i) * M.row(col).segment(col, span);
        }
        if (s1 < count) {
          auto later = W1p.rightCols(count - s1);
          later.noalias() -= E1p.middleCols(s0, s1 - s0) *
                             M.block(i1 + s0, i1 + s1, s1 - s0, count - s1);
          if (P) later.noalias() += Wb * P->block(i1 + s0, i1 + s1, s1 - s0, count - s1);
        }
      }
      if (!internal::all_finite(E1p)) overflowed[std::size_t(p)] = 1;
      if (left && P) {  // (W̄ − Q)_b = E1·diag(U_bb)
        const Mat own = E1p * M.diagonal().segment(i1, count).asDiagonal();
        W.block(r0, i1, rows, count).noalias() -=
            own * P->block(i1, i1, count, count).template triangularView<Eigen::StrictlyUpper>();
      }
      if (!left && i2 < n) {  // the lazy update: one GEMM per block (and panel)
        auto rest = W.block(r0, i2, rows, n - i2);
        rest.noalias() -= E1p * M.block(i1, i2, count, n - i2);
        if (P) rest.noalias() += W1p * P->block(i1, i2, count, n - i2);
      }
    }
    for (Index p = 0; p < panels; ++p)
      if (overflowed[std::size_t(p)]) {
        out = QuantizedWeight<Scalar>{};
        return Report::fail(Status::OutOfRange,
                            "the error feedback overflowed the solver's scalar in columns " +
                                std::to_string(i1) + ".." + std::to_string(i2 - 1) + ", rows " +
                                std::to_string(p * R) + "..: the damped Hessian is too "
                                "ill-conditioned for these weights; raise percdamp or solve in "
                                "double");
      }
  }

  if (auto r = rows_scale.restore(out, zero_is_offset<Grid>::value); !r.ok()) {
    out = QuantizedWeight<Scalar>{};
    return r;
  }
  Eigen::VectorXd loss_solve_order(n);
  for (Index j = 0; j < n; ++j) loss_solve_order[j] = panel_loss.col(j).sum();
  out.loss = report_loss(prep, loss_solve_order, loss_exponent, diag);
  return Report::success();
}

}  // namespace internal
}  // namespace loaq
