// The one column loop behind GPTQ, GPTAQ and every LoaQ target (spec §3, §4).
#pragma once

#include <string>
#include <vector>

#include "../config.hpp"
#include "../grid/params.hpp"
#include "../status.hpp"
#include "options.hpp"
#include "prepare.hpp"

namespace loaq {
namespace internal {

inline Report check_options(const GptqOptions& o, Index n) {
  if (o.block_size < 1)
    return Report::fail(Status::InvalidArgument, "block size must be ≥ 1");
  if (o.group_size == 0 || o.group_size < -1)
    return Report::fail(Status::InvalidArgument, "group size must be −1 (per row) or ≥ 1");
  if (o.search.mse && (!(o.search.norm > 0) || o.search.grid < 1 || !(o.search.maxshrink > 0) ||
                       o.search.maxshrink > 1))
    return Report::fail(Status::InvalidArgument,
                        "MSE search needs norm > 0, grid ≥ 1 and maxshrink in (0, 1]");
  (void)n;
  return Report::success();
}

// Quantizes W (m × n, original column order) column by column on a prepared Hessian.
// P (n × n in solve order, may be null) is GPTAQ's asymmetric correction:
//   inner:  W1[:, i:] −= e·U1[i, i:] − w·P1[i, i:]
//   block:  W[:, i2:] −= E1·U[i1:i2, i2:] − W1·P[i1:i2, i2:]
template <class Grid, class Derived>
Report solve_columns(const Eigen::MatrixBase<Derived>& W_in, const PreparedHessian& prep,
                     const Grid& grid, const GptqOptions& opt,
                     const Matrix<typename Grid::Scalar>* P,
                     QuantizedWeight<typename Grid::Scalar>& out, SolveDiagnostics* diag) {
  using Scalar = typename Grid::Scalar;
  using Mat = Matrix<Scalar>;
  const Index m = W_in.rows(), n = W_in.cols();
  if (Index(prep.perm.size()) != n)
    return Report::fail(Status::ShapeMismatch,
                        "weight has " + std::to_string(n) + " columns but the Hessian is " +
                            std::to_string(prep.perm.size()) + "×" +
                            std::to_string(prep.perm.size()));
  if (auto r = check_options(opt, n); !r.ok()) return r;
  if (!W_in.allFinite())
    return Report::fail(Status::NonFiniteInput, "weight holds NaN or Inf");
  if (P && (P->rows() != n || P->cols() != n))
    return Report::fail(Status::ShapeMismatch, "asymmetric correction must be n × n");

  const Index g = opt.group_size > 0 ? opt.group_size : n;
  const bool grouped = opt.group_size > 0;
  const bool dynamic = grouped && !opt.static_groups;
  const Index groups = grouped ? (n + g - 1) / g : 1;
  const std::vector<Index>& perm = prep.perm;

  Mat W = W_in.template cast<Scalar>();
  RowParams<Scalar> current;
  if (!grouped) fit_params(grid, W, opt.search, current);  // before dead columns are zeroed
  for (Index j = 0; j < n; ++j)
    if (prep.dead[std::size_t(j)]) W.col(j).setZero();

  out.scales.resize(m, groups);
  out.zeros.resize(m, groups);
  out.g_idx.resize(n);
  if (!grouped) {
    out.scales.col(0) = current.scale;
    out.zeros.col(0) = current.zero;
    out.g_idx.setZero();
  } else if (opt.static_groups) {
    for (Index k = 0; k < groups; ++k) {
      fit_params(grid, W.middleCols(k * g, std::min(g, n - k * g)), opt.search, current);
      out.scales.col(k) = current.scale;
      out.zeros.col(k) = current.zero;
    }
    for (Index j = 0; j < n; ++j) out.g_idx[j] = int(j / g);
  } else {
    for (Index j = 0; j < n; ++j) out.g_idx[perm[std::size_t(j)]] = int(j / g);
  }
  if (prep.permuted()) W = W(Eigen::all, perm).eval();

  const Mat U = prep.factor.upper().template cast<Scalar>();
  Mat Q(m, n);
  CodeMatrix codes(m, n);
  Eigen::VectorXd column_loss(n);
  const Index B = opt.block_size;
  Mat W1, E1(m, B);
  Vector<Scalar> w(m), q(m), e(m);

  for (Index i1 = 0; i1 < n; i1 += B) {
    const Index i2 = std::min(i1 + B, n), count = i2 - i1;
    W1 = W.middleCols(i1, count);  // the full W is only updated at block ends (see spec note)
    for (Index i = 0; i < count; ++i) {
      const Index col = i1 + i;
      if (dynamic && col % g == 0) {
        fit_params(grid, W.middleCols(col, std::min(g, n - col)), opt.search, current);
        out.scales.col(col / g) = current.scale;
        out.zeros.col(col / g) = current.zero;
      }
      const Index k = opt.static_groups && grouped ? Index(perm[std::size_t(col)] / g) : 0;
      const Scalar* scale = opt.static_groups && grouped ? &out.scales(0, k) : current.scale.data();
      const Scalar* zero = opt.static_groups && grouped ? &out.zeros(0, k) : current.zero.data();

      w = W1.col(i);
      const Scalar d = U(col, col);
      double loss = 0;
      for (Index r = 0; r < m; ++r) {
        const std::uint8_t c = grid.encode(w[r], scale[r], zero[r]);
        codes(r, col) = c;
        q[r] = grid.decode(c, scale[r], zero[r]);
        const double diff = double(w[r] - q[r]);
        loss += diff * diff;
      }
      column_loss[col] = loss / (double(d) * double(d)) / 2;
      Q.col(col) = q;
      e = (w - q) / d;
      const Index rest = count - i;
      if (P)
        W1.rightCols(rest).noalias() -=
            e * U.row(col).segment(col, rest) - w * P->row(col).segment(col, rest);
      else
        W1.rightCols(rest).noalias() -= e * U.row(col).segment(col, rest);
      E1.col(i) = e;
    }
    if (i2 < n) {
      W.rightCols(n - i2).noalias() -= E1.leftCols(count) * U.block(i1, i2, count, n - i2);
      if (P) W.rightCols(n - i2).noalias() += W1 * P->block(i1, i2, count, n - i2);
    }
  }

  out.weight.resize(m, n);
  out.codes.resize(m, n);
  Eigen::VectorXd loss_by_column(n);
  for (Index j = 0; j < n; ++j) {
    const Index c = perm[std::size_t(j)];
    out.weight.col(c) = Q.col(j);
    out.codes.col(c) = codes.col(j);
    loss_by_column[c] = column_loss[j];
  }
  out.loss = loss_by_column.sum();
  if (diag) {
    diag->damping = prep.factor.damping();
    diag->relative_damping = prep.factor.relative_damping();
    diag->factor_attempts = prep.factor.attempts();
    diag->failed_pivot = prep.factor.failed_pivot();
    diag->perm = perm;
    diag->dead.clear();
    for (Index j = 0; j < n; ++j)
      if (prep.dead[std::size_t(j)]) diag->dead.push_back(j);
    diag->column_loss = loss_by_column;
  }
  return Report::success();
}

}  // namespace internal
}  // namespace loaq
