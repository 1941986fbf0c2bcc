// Magnitude sweep (solve/row_scaling.hpp, the factor's normalization): every method, float and
// double, W scaled by 10^k and H by 10^j over a wide grid. GPTQ's codes do not depend on the
// scale of H, results scale with W, and nothing is ever NaN or Inf while inputs are representable.
#include <doctest/doctest.h>

#include "../support.hpp"

using loaq::Index;

namespace {

using loaq_test::make_problem;
using loaq_test::Problem;

// Every method on one problem; W, H, C, G scaled as given (C and G with H: they share its 2/n·Σ).
template <class Scalar>
loaq::Report solve(const std::string& method, const Problem& p, double w_scale, double h_scale,
                   loaq::QuantizedWeight<Scalar>& out) {
  const loaq::Matrix<Scalar> W = (p.W * w_scale).cast<Scalar>();
  const Eigen::MatrixXd H = p.H * h_scale, C = p.C * h_scale, G = p.G * h_scale * w_scale;
  loaq::GptqOptions opt;
  opt.group_size = 16;
  opt.act_order = true;
  const loaq::UniformGrid<Scalar, 3> grid(false);
  if (method == "rtn") return loaq::rtn(W, grid, 16, {}, out);
  if (method == "gptq") return loaq::gptq(W, H, grid, opt, out);
  if (method == "gptaq") return loaq::gptaq(W, H, C, grid, opt, 0.25, out);
  if (method == "qep") return loaq::solve_target(W, H, &C, nullptr, {0.5, 0}, grid, opt, out);
  return loaq::solve_target(W, H, &C, &G, {1, 1}, grid, opt, out);  // loaq residual
}

double code_agreement(const loaq::CodeMatrix& a, const loaq::CodeMatrix& b) {
  return double((a.array() == b.array()).count()) / double(a.size());
}

}  // namespace

TEST_CASE_TEMPLATE("magnitude sweep: finite results, codes invariant to the H scale, results scale with W",
                   Scalar, float, double) {
  std::mt19937 rng(53);
  const Problem p = make_problem(24, 48, rng);
  const bool is_float = std::is_same_v<Scalar, float>;
  const std::vector<int> w_exp = is_float ? std::vector<int>{-30, -12, 0, 12, 30}
                                          : std::vector<int>{-200, -30, 0, 30, 200};
  const std::vector<int> h_exp = {-250, -100, -30, 0, 30, 100, 250};
  for (const std::string method : {"rtn", "gptq", "gptaq", "qep", "loaq"}) {
    CAPTURE(method);
    loaq::QuantizedWeight<Scalar> base;
    REQUIRE(solve(method, p, 1, 1, base).ok());
    for (int k : w_exp)
      for (int j : h_exp) {
        CAPTURE(k);
        CAPTURE(j);
        // G scales with both W and H; skip products beyond double's range (not representable).
        if (method == "loaq" && std::abs(k + j) > 300) continue;
        const double ws = std::pow(10.0, k), hs = std::pow(10.0, j);
        loaq::QuantizedWeight<Scalar> out;
        const loaq::Report r = solve(method, p, ws, hs, out);
        REQUIRE_MESSAGE(r.ok(), r.message);
        CHECK(out.weight.allFinite());
        CHECK(out.scales.allFinite());
        // The loss is ~ (w − q)²·H: finite whenever that product is within double's range.
        if (std::log10(base.loss + 1e-300) + 2 * k + j < 300) CHECK(std::isfinite(out.loss));
        // Rounding differs with a non-power-of-two scale, so a rare near-tie may flip.
        CHECK(code_agreement(out.codes, base.codes) >= 0.97);
        const double rel = ((out.weight.template cast<double>() / ws) - base.weight.template cast<double>())
                               .norm() / base.weight.template cast<double>().norm();
        CHECK(rel < 0.05);
      }
    // Powers of two (W) and four (H) are exact: the same codes, bit for bit.
    for (int e : {-100, -7, 9, 100}) {
      loaq::QuantizedWeight<Scalar> out;
      REQUIRE(solve(method, p, std::ldexp(1.0, e), std::ldexp(1.0, 2 * e), out).ok());
      CHECK((out.codes == base.codes));
      CHECK((out.weight == (base.weight * Scalar(std::ldexp(1.0, e)))));
    }
  }
}

TEST_CASE_TEMPLATE("a weight handed over (std::move) or stored row-major: the same result bit for bit",
                   Scalar, float, double) {
  std::mt19937 rng(57);
  const Problem p = make_problem(40, 48, rng);
  loaq::Matrix<Scalar> W = p.W.cast<Scalar>();
  W.row(3) *= Scalar(std::ldexp(1.0, 90));    // beyond the safe range: rescaled rows
  W.row(7) *= Scalar(std::ldexp(1.0, -90));
  W.row(11).setZero();
  const Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> W_rows = W;
  const loaq::UniformGrid<Scalar, 3> grid(false);
  for (const bool act_order : {false, true})
    for (const double alpha : {0.0, 0.25}) {
      CAPTURE(act_order);
      CAPTURE(alpha);
      loaq::GptqOptions opt;
      opt.group_size = 16;
      opt.act_order = act_order;
      auto solve = [&](auto&& weight, loaq::QuantizedWeight<Scalar>& out) {
        return alpha == 0 ? loaq::gptq(std::forward<decltype(weight)>(weight), p.H, grid, opt, out)
                          : loaq::gptaq(std::forward<decltype(weight)>(weight), p.H, p.C, grid, opt,
                                        alpha, out);
      };
      loaq::QuantizedWeight<Scalar> base, moved, rows;
      REQUIRE(solve(W, base).ok());
      REQUIRE(solve(W_rows, rows).ok());
      loaq::Matrix<Scalar> handed = W;
      REQUIRE(solve(std::move(handed), moved).ok());
      for (const auto* out : {&moved, &rows}) {
        CHECK((out->codes == base.codes));
        CHECK((out->weight == base.weight));
        CHECK((out->scales == base.scales));
        CHECK((out->zeros == base.zeros));
        CHECK((out->g_idx == base.g_idx));
        CHECK(out->loss == base.loss);
      }
      if (alpha == 0) {  // GPTQ also takes the Hessian over, with or without the weight
        loaq::QuantizedWeight<Scalar> both, hessian_only;
        loaq::Matrix<Scalar> handed_w = W;
        Eigen::MatrixXd handed_h = p.H, handed_h2 = p.H;
        REQUIRE(loaq::gptq(std::move(handed_w), std::move(handed_h), grid, opt, both).ok());
        REQUIRE(loaq::gptq(W, std::move(handed_h2), grid, opt, hessian_only).ok());
        CHECK(handed_h.size() == 0);  // released once factored
        CHECK(handed_h2.size() == 0);
        for (const auto* out : {&both, &hessian_only}) {
          CHECK((out->codes == base.codes));
          CHECK((out->weight == base.weight));
          CHECK((out->scales == base.scales));
          CHECK((out->zeros == base.zeros));
          CHECK(out->loss == base.loss);
        }
        // A handed-over Hessian that is refused is left as it was.
        Eigen::MatrixXd bad_h = p.H;
        bad_h(2, 2) = std::numeric_limits<double>::infinity();
        const Eigen::MatrixXd bad_copy = bad_h;
        loaq::QuantizedWeight<Scalar> refused;
        CHECK(loaq::gptq(W, std::move(bad_h), grid, opt, refused).status ==
              loaq::Status::NonFiniteInput);
        CHECK((bad_h.array() == bad_copy.array()).all());  // Inf == Inf
        CHECK(refused.weight.size() == 0);
        // So is one whose factorization fails (indefinite, no retries).
        Eigen::MatrixXd indefinite = p.H;
        indefinite(4, 4) = -indefinite(4, 4);
        const Eigen::MatrixXd indefinite_copy = indefinite;
        loaq::GptqOptions once = opt;
        once.damping.max_attempts = 1;
        CHECK(loaq::gptq(W, std::move(indefinite), grid, once, refused).status ==
              loaq::Status::NotPositiveDefinite);
        CHECK((indefinite == indefinite_copy));
      }
      CHECK(std::abs(base.weight(3, 0)) > std::ldexp(1.0, 80));  // the scaled rows came back
      // A handed-over weight with NaN is refused like any other.
      loaq::Matrix<Scalar> bad = W;
      bad(5, 5) = std::numeric_limits<Scalar>::quiet_NaN();
      loaq::QuantizedWeight<Scalar> out;
      CHECK(solve(std::move(bad), out).status == loaq::Status::NonFiniteInput);
      CHECK(out.weight.size() == 0);
    }
}

TEST_CASE("weights at the edge of float's range: a correct result or an error naming the row") {
  std::mt19937 rng(59);
  const Problem p = make_problem(6, 32, rng);
  for (const std::string method : {"rtn", "gptq", "gptaq", "qep", "loaq"}) {
    CAPTURE(method);
    for (double top : {1e30, 1e36, 3e38}) {
      Eigen::MatrixXd W = p.W;
      W.row(2) = W.row(2) / W.row(2).cwiseAbs().maxCoeff() * top;
      loaq::QuantizedWeight<float> out;
      loaq::GptqOptions opt;
      const loaq::UniformGrid<float, 4> grid(false);
      loaq::Report r;
      if (method == "rtn") r = loaq::rtn(W.cast<float>(), grid, -1, {}, out);
      else if (method == "gptq") r = loaq::gptq(W.cast<float>(), p.H, grid, opt, out);
      else if (method == "gptaq") r = loaq::gptaq(W.cast<float>(), p.H, p.C, grid, opt, 0.25, out);
      else r = loaq::solve_target(W.cast<float>(), p.H, &p.C, nullptr, {0.5, 0}, grid, opt, out);
      CAPTURE(top);
      CAPTURE(r.message);
      if (r.ok()) {
        CHECK(out.weight.allFinite());
        CHECK(out.scales.allFinite());
        CHECK(std::isfinite(out.loss));  // summed in double: (1e30)² does not overflow it
        // The huge row is quantized like the same row at magnitude 1.
        const double err = (out.weight.row(2).cast<double>() - W.row(2)).norm() / W.row(2).norm();
        CHECK(err < 0.3);
      } else {
        CHECK(r.status == loaq::Status::OutOfRange);
        CHECK(r.message.find("row 2") != std::string::npos);
        CHECK(out.weight.size() == 0);
      }
    }
  }
  // Double weights beyond float's range with a float grid: refused, naming the row.
  Eigen::MatrixXd W = p.W;
  W(4, 3) = 1e100;
  loaq::QuantizedWeight<float> out;
  const loaq::Report r = loaq::gptq(W, p.H, loaq::UniformGrid<float, 4>(), loaq::GptqOptions{}, out);
  CHECK(r.status == loaq::Status::OutOfRange);
  CHECK(r.message.find("row 4") != std::string::npos);
  // The same in double is fine.
  loaq::QuantizedWeight<double> outd;
  CHECK(loaq::gptq(W, p.H, loaq::UniformGrid<double, 4>(), loaq::GptqOptions{}, outd).ok());
  CHECK(outd.weight.allFinite());
}

TEST_CASE("after a failed solve the output holds nothing of an earlier call") {
  std::mt19937 rng(61);
  const Problem p = make_problem(5, 16, rng);
  loaq::QuantizedWeight<float> out;
  loaq::SolveDiagnostics diag;
  REQUIRE(loaq::gptq(p.W.cast<float>(), p.H, loaq::UniformGrid<float, 4>(), {}, out, &diag).ok());
  REQUIRE(out.weight.size() > 0);
  Eigen::MatrixXf bad = p.W.cast<float>();
  bad(1, 1) = NAN;
  CHECK(loaq::gptq(bad, p.H, loaq::UniformGrid<float, 4>(), {}, out, &diag).status ==
        loaq::Status::NonFiniteInput);
  CHECK(out.weight.size() == 0);
  CHECK(out.codes.size() == 0);
  CHECK(out.scales.size() == 0);
  CHECK(out.loss == 0);
  loaq::Matrix<float> target = Eigen::MatrixXf::Ones(2, 2);
  CHECK(!loaq::solve_target(bad, p.H, &p.C, nullptr, {1, 0}, loaq::UniformGrid<float, 4>(), {}, out,
                            nullptr, &target).ok());
  CHECK(target.size() == 0);
}

TEST_CASE("an ill-conditioned Hessian without damping: a finite result or OutOfRange, never NaN codes") {
  // Found by the CLI fuzzer: a solve whose error feedback overflowed float fed NaN to the grid
  // (an undefined conversion to a code) and could pass NaN on as a finite-looking code.
  std::mt19937 rng(67);
  const Index n = 16;
  Eigen::MatrixXd B = loaq_test::random_matrix<double>(n, 3, rng);
  Eigen::MatrixXd H = B * B.transpose();  // rank 3
  H.diagonal().array() += 1e-30;
  for (Index i = 0; i < n; i += 4) H(i, i) *= 1e30;
  H = (0.5 * (H + H.transpose())).eval();
  const Eigen::MatrixXd W = loaq_test::random_matrix<double>(6, n, rng) * 1e30;
  for (int bits : {3, 6}) {
    loaq::GptqOptions opt;
    opt.damping = {0.0, 10.0, 1};
    opt.group_size = 2;
    opt.act_order = true;
    loaq::QuantizedWeight<float> out;
    const loaq::Report r = bits == 3 ? loaq::gptq(W, H, loaq::UniformGrid<float, 3>(), opt, out)
                                     : loaq::gptq(W, H, loaq::UniformGrid<float, 6>(), opt, out);
    CAPTURE(r.message);
    if (r.ok()) {
      CHECK(out.weight.allFinite());
      CHECK(std::isfinite(out.loss));
    } else {
      CHECK((r.status == loaq::Status::OutOfRange || r.status == loaq::Status::NotPositiveDefinite));
      CHECK(out.weight.size() == 0);
    }
  }
  // The fuzzer's Hessian itself: wildly non-symmetric, refused as such.
  Eigen::MatrixXd A = Eigen::MatrixXd::Identity(3, 3);
  A(0, 1) = 1e161;
  A(1, 0) = 1e-105;
  A(0, 0) = 1e298;
  loaq::InverseFactor<double> f;
  CHECK(f.compute(A).info() == loaq::Status::NotSymmetric);
}
