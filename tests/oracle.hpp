// Test oracle: the exact sequential minimizer of ‖Y − Q·X̂‖² over a fixed grid, written the
// straightforward way (fresh least squares on the free columns at every step, brute force over
// every code of the current column). Independent of the Cholesky/inverse-factor machinery.
#pragma once

#include <Eigen/QR>
#include <limits>

#include <loaq/loaq.hpp>

namespace loaq_test {

// Y: m × T target outputs; Xhat: n × T inputs. Columns are walked in natural order; with
// group > 0 the parameters of each group come from the continuous optimum at the group's first
// column (GPTQ with block size = group size does the same). Returns the dequantized Q.
template <class Grid>
Eigen::MatrixXd sequential_minimizer(const Eigen::MatrixXd& Y, const Eigen::MatrixXd& Xhat,
                                     const Grid& grid, int group, Eigen::MatrixXi* codes = nullptr) {
  const loaq::Index m = Y.rows(), n = Xhat.rows();
  const loaq::Index g = group > 0 ? group : n;
  Eigen::MatrixXd Q = Eigen::MatrixXd::Zero(m, n);
  if (codes) codes->resize(m, n);
  loaq::RowParams<double> params;
  // Continuous optimum of the free columns [j, n) given Q's fixed columns [0, j).
  auto free_optimum = [&](loaq::Index j, const Eigen::MatrixXd& Qfixed) {
    const Eigen::MatrixXd resid = Y - Qfixed.leftCols(j) * Xhat.topRows(j);
    const Eigen::MatrixXd Xf = Xhat.bottomRows(n - j).transpose();  // T × free
    return Eigen::MatrixXd(Xf.colPivHouseholderQr().solve(resid.transpose()).transpose());
  };
  for (loaq::Index j = 0; j < n; ++j) {
    const Eigen::MatrixXd Z = free_optimum(j, Q);
    if (j % g == 0)
      loaq::fit_params(grid, Z.leftCols(std::min(g, n - j)), loaq::ParamSearch{}, params);
    for (loaq::Index r = 0; r < m; ++r) {
      double best = std::numeric_limits<double>::infinity();
      int best_code = 0;
      for (int c = 0; c < (1 << Grid::bits); ++c) {
        const double q = grid.decode(std::uint8_t(c), params.scale[r], params.zero[r]);
        if (grid.encode(q, params.scale[r], params.zero[r]) != c) continue;  // not on the grid
        // Row r's residual with column j fixed to q and columns > j re-optimized.
        Eigen::RowVectorXd y = Y.row(r) - Q.row(r).head(j) * Xhat.topRows(j) - q * Xhat.row(j);
        double err;
        if (j + 1 < n) {
          const Eigen::MatrixXd Xf = Xhat.bottomRows(n - j - 1).transpose();
          const Eigen::VectorXd z = Xf.colPivHouseholderQr().solve(y.transpose());
          err = (y.transpose() - Xf * z).squaredNorm();
        } else {
          err = y.squaredNorm();
        }
        if (err < best) {
          best = err;
          best_code = c;
        }
      }
      Q(r, j) = grid.decode(std::uint8_t(best_code), params.scale[r], params.zero[r]);
      if (codes) (*codes)(r, j) = best_code;
    }
  }
  return Q;
}

}  // namespace loaq_test
