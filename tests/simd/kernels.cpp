// SIMD kernels against their generic fallback, and results that do not depend on the thread
// count (rows of the column loop, panels of the SYRK and tasks of the inverse factor are fixed,
// only their spread over threads varies).
#include <doctest/doctest.h>

#include <algorithm>
#include <utility>
#include <vector>

#include <loaq/simd/quantize.hpp>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "../support.hpp"

using loaq::Index;

TEST_CASE_TEMPLATE("SIMD column quantization equals the generic kernel", Scalar, float, double) {
  std::mt19937 rng(11);
  const Index rows = 203;  // not a multiple of any SIMD width: the tail runs too
  loaq::Matrix<Scalar> w = loaq_test::random_matrix<Scalar>(rows, 1, rng, 1.0);
  loaq::Vector<Scalar> scale(rows), zero(rows);
  for (Index r = 0; r < rows; ++r) {
    scale[r] = Scalar(0.05 + 0.01 * double(r % 7));
    zero[r] = Scalar(r % 16);
    if (r % 5 == 0) w(r, 0) = scale[r] * Scalar(double(r % 9) - 3.5);  // exact rounding ties
  }
  const loaq::UniformGrid<Scalar, 4> grid(false);
  std::vector<std::uint8_t> c_simd(rows), c_gen(rows);
  loaq::Vector<Scalar> q_simd(rows), q_gen(rows);
  const double l_simd = loaq::simd::quantize_column(grid, w.data(), scale.data(), zero.data(),
                                                    c_simd.data(), q_simd.data(), rows);
  const double l_gen = loaq::simd::quantize_column_generic(
      grid, w.data(), scale.data(), zero.data(), c_gen.data(), q_gen.data(), rows);
  CHECK(c_simd == c_gen);
  CHECK(q_simd == q_gen);
  CHECK(l_simd == doctest::Approx(l_gen).epsilon(1e-5));
}

TEST_CASE_TEMPLATE("SIMD MSE-search error equals the generic kernel", Scalar, float, double) {
  std::mt19937 rng(13);
  const Index rows = 203;
  const loaq::Matrix<Scalar> x = loaq_test::random_matrix<Scalar>(rows, 1, rng, 1.0);
  loaq::Vector<Scalar> scale(rows), zero(rows);
  for (Index r = 0; r < rows; ++r) {
    scale[r] = Scalar(0.2 + 0.05 * double(r % 5));
    zero[r] = Scalar(r % 8);
  }
  const loaq::UniformGrid<Scalar, 3> grid(false);
  std::vector<double> e_simd(rows, 1.0), e_gen(rows, 1.0);
  loaq::simd::add_pow_error(grid, x.data(), scale.data(), zero.data(), Scalar(2.4), e_simd.data(),
                            rows);
  loaq::simd::add_pow_error_generic(grid, x.data(), scale.data(), zero.data(), Scalar(2.4),
                                    e_gen.data(), rows);
  // The power comes from exp(p·log d) in double lanes: equal to std::pow to a few ulps.
  for (Index r = 0; r < rows; ++r)
    CHECK(e_simd[std::size_t(r)] == doctest::Approx(e_gen[std::size_t(r)]).epsilon(1e-6));
}

// Not SIMD, but the other hand-written kernel of the hot path: the recursive Cholesky and the
// in-place triangular inverse behind InverseFactor, at a size where the recursion splits twice.
TEST_CASE_TEMPLATE("The loop's weighted square sum is Σ w·e² in double, for any length", Scalar,
                   float, double) {
  std::mt19937 rng(17);
  std::uniform_real_distribution<double> weight(0.5, 2.0);
  for (const Index rows : {Index(0), Index(1), Index(15), Index(16), Index(203), Index(1024)}) {
    CAPTURE(rows);
    const loaq::Matrix<Scalar> e = loaq_test::random_matrix<Scalar>(std::max<Index>(rows, 1), 1, rng, 1.0);
    std::vector<double> w(std::size_t(std::max<Index>(rows, 1)));
    for (double& x : w) x = weight(rng);
    long double exact = 0;
    for (Index r = 0; r < rows; ++r)
      exact += static_cast<long double>(w[std::size_t(r)]) * double(e(r, 0)) * double(e(r, 0));
    const double sum = loaq::simd::weighted_square_sum(e.data(), w.data(), rows);
    CHECK(sum == doctest::Approx(double(exact)).epsilon(1e-13));
  }
  // Each term in double: a float error whose square overflows float still sums finitely.
  const float big[2] = {3e30f, -3e30f};
  const double ones[2] = {1.0, 1.0};
  CHECK(loaq::simd::weighted_square_sum(big, ones, 2) == doctest::Approx(1.8e61));
}

TEST_CASE("Inverse factor equals chol(cholesky_inverse(chol(H)), upper) past the recursion leaf") {
  std::mt19937 rng(17);
  const Index n = 600;
  const Eigen::MatrixXd X = loaq_test::random_inputs(n, 900, rng);
  const Eigen::MatrixXd H = 2.0 * X * X.transpose();
  loaq::DampingPolicy damping;
  loaq::InverseFactor<double> f;
  REQUIRE(f.compute(H, damping).info() == loaq::Status::Success);
  Eigen::MatrixXd Hd = H;
  Hd.diagonal().array() += f.damping();
  const Eigen::MatrixXd Hinv = Hd.llt().solve(Eigen::MatrixXd::Identity(n, n));
  const Eigen::MatrixXd U_ref = Hinv.llt().matrixU();
  const Eigen::MatrixXd U = f.upper() * std::ldexp(1.0, -f.log4_scale());  // (H+λI)⁻¹ = UᵀU
  CHECK((U - U_ref).cwiseAbs().maxCoeff() <= 1e-9 * U_ref.cwiseAbs().maxCoeff());
  CHECK(f.upper().triangularView<Eigen::StrictlyLower>().toDenseMatrix().isZero(0));

  Eigen::MatrixXd bad = Eigen::MatrixXd::Identity(n, n);
  bad(100, 100) = -1;  // the reversed route meets it in the second half of the recursion
  damping.percdamp = 0;
  damping.max_attempts = 1;
  CHECK(f.compute(bad, damping).info() == loaq::Status::NotPositiveDefinite);
  CHECK(f.failed_pivot() == 100);
}

#ifdef _OPENMP
namespace {

template <class F>
auto with_threads(int threads, F&& f) {
  const int before = omp_get_max_threads();
  omp_set_num_threads(threads);
  auto r = f();
  omp_set_num_threads(before);
  return r;
}

}  // namespace

TEST_CASE_TEMPLATE("the inverse factor and its checks give the same bits for any thread count",
                   Scalar, float, double) {
  std::mt19937 rng(7);
  const Index n = 601;  // the recursion's threaded panels, and an odd middle column to reverse
  const Eigen::MatrixXd X = loaq_test::random_inputs(n, 900, rng);
  const Eigen::MatrixXd H = 2.0 * X * X.transpose();
  for (const auto form : {loaq::internal::FactorForm::Inverse, loaq::internal::FactorForm::Cholesky}) {
    CAPTURE(int(form));
    auto factor = [&] {
      loaq::InverseFactor<Scalar> f;
      REQUIRE(f.compute(H, loaq::DampingPolicy{}, loaq::internal::CheckedHessian{}, form).info() ==
              loaq::Status::Success);
      return std::make_pair(f.upper(), f.residual(H));
    };
    const auto one = with_threads(1, factor), two = with_threads(2, factor),
               three = with_threads(3, factor);
    CHECK((one.first == two.first));
    CHECK((one.first == three.first));
    CHECK(one.first.template triangularView<Eigen::StrictlyLower>().toDenseMatrix().isZero(0));
    CHECK(one.second == two.second);
    CHECK(one.second == three.second);
    CHECK(one.second < 1e-3);
  }
  // Several asymmetric pairs: every thread count names the one a serial walk meets first.
  Eigen::MatrixXd A = H;
  const double bump = 0.05 * std::sqrt(A(500, 500) * A(90, 90));
  A(500, 90) += bump;
  A(590, 400) += bump;
  auto refused = [&] {
    loaq::InverseFactor<Scalar> f;
    f.compute(A);
    return f.message();
  };
  CHECK(with_threads(1, refused).find("H(500,90)") != std::string::npos);
  CHECK(with_threads(2, refused) == with_threads(1, refused));
  CHECK(with_threads(3, refused) == with_threads(1, refused));
}

TEST_CASE_TEMPLATE("GPTQ and GPTAQ give bit-identical results for any thread count", Scalar, float,
                   double) {
  std::mt19937 rng(5);
  const Index m = 600, n = 160, T = 400;  // several row panels, several blocks
  const Eigen::MatrixXd Xhat = loaq_test::random_inputs(n, T, rng);
  const Eigen::MatrixXd X = Xhat + 0.1 * loaq_test::random_inputs(n, T, rng);
  const loaq::Matrix<Scalar> W = loaq_test::random_matrix<Scalar>(m, n, rng, 1.0);
  loaq::CalibrationAccumulator<double> acc(n);
  REQUIRE(acc.add_batch(Xhat, X).ok());
  loaq::GptqOptions opt;
  opt.group_size = 32;
  opt.block_size = 64;
  const loaq::UniformGrid<Scalar, 4> grid(false);
  auto gptq = [&] {
    loaq::QuantizedWeight<Scalar> out;
    REQUIRE(loaq::gptq(W, acc.hessian(), grid, opt, out).ok());
    return out;
  };
  // The left-looking loop with a group as wide as its block, and the right-looking one (a group
  // wider than its block keeps U).
  for (const int group : {64, 96}) {
    loaq::GptqOptions o = opt;
    o.group_size = group;
    auto solve = [&] {
      loaq::QuantizedWeight<Scalar> out;
      REQUIRE(loaq::gptq(W, acc.hessian(), grid, o, out).ok());
      return out;
    };
    const auto a = with_threads(1, solve), b = with_threads(2, solve), c = with_threads(3, solve);
    CHECK(a.weight == b.weight);
    CHECK(a.weight == c.weight);
    CHECK(a.loss == c.loss);
  }
  auto gptaq = [&] {
    loaq::QuantizedWeight<Scalar> out;
    REQUIRE(loaq::gptaq(W, acc.hessian(), acc.cross(), grid, opt, 0.25, out).ok());
    return out;
  };
  const auto one = with_threads(1, gptq), two = with_threads(2, gptq),
             three = with_threads(3, gptq);
  CHECK(one.weight == two.weight);
  CHECK(one.weight == three.weight);
  CHECK(one.codes == two.codes);
  CHECK(one.scales == two.scales);
  CHECK(one.loss == two.loss);
  const auto a1 = with_threads(1, gptaq), a2 = with_threads(2, gptaq);
  CHECK(a1.weight == a2.weight);
  CHECK(a1.codes == a2.codes);
  // The LoaQ target W* (its B·Ĥ⁻¹ in blocks of rows over the threads; m = 600: four blocks).
  const Eigen::MatrixXd G = 0.1 * loaq_test::random_matrix<double>(m, n, rng);
  auto target = [&] {
    loaq::QuantizedWeight<Scalar> out;
    loaq::Matrix<Scalar> Wt;
    REQUIRE(loaq::solve_target(W, acc.hessian(), &acc.cross(), &G, {0.5, 0.25}, grid, opt, out,
                               nullptr, &Wt).ok());
    return std::pair(Wt, out.codes);
  };
  const auto t1 = with_threads(1, target), t2 = with_threads(2, target), t3 = with_threads(3, target);
  CHECK(t1.first == t2.first);
  CHECK(t1.first == t3.first);
  CHECK(t1.second == t2.second);
}

TEST_CASE("the column loop's row panels: equal heights in an even count, at most 1024 rows") {
  // Two threads take panels one at a time: an odd count or a short panel beside full ones would
  // leave one of them idle at the end of every block (576 rows were four of 128 and one of 64).
  for (Index m = 1; m <= 20000; ++m) {
    const Index R = loaq::internal::panel_rows(m), count = (m + R - 1) / R;
    CAPTURE(m);
    REQUIRE(R >= 1);
    REQUIRE(R <= std::max<Index>(m, 16));
    CHECK(R <= 1024);
    CHECK((R % 16 == 0 || count == 1));
    CHECK((count == 1 || count % 2 == 0));
    CHECK(m - (count - 1) * R > R - 16 * (count - 1) - 16);  // the last panel is nearly full
    if (m >= 128) CHECK(count >= 2);
    if (m >= 512) CHECK(count >= 4);
  }
}

TEST_CASE("the factor's threaded tasks: 256 rows in double, an even count of equal work in float") {
  using loaq::internal::FactorWork;
  using loaq::internal::factor_task_bounds;
  // The work of columns [a, b) of an n × n lower triangle (column j costs n − j), or of rows.
  const auto work = [](FactorWork kind, Index n, Index a, Index b) {
    if (kind == FactorWork::EqualRows) return double(b - a);
    return double(b - a) * double(n) - (double(b) * double(b) - double(a) * double(a)) / 2;
  };
  for (const FactorWork kind : {FactorWork::EqualRows, FactorWork::LowerTriangleColumns})
    for (Index n = 0; n <= 5000; ++n) {
      CAPTURE(n);
      CAPTURE(int(kind));
      const std::vector<Index> d = factor_task_bounds<double>(n, kind);
      const std::vector<Index> f = factor_task_bounds<float>(n, kind);
      for (const auto* bounds : {&d, &f}) {
        REQUIRE(bounds->front() == 0);
        REQUIRE(bounds->back() == n);
        if (n == 0) REQUIRE(bounds->size() == 1);
        for (std::size_t t = 1; t < bounds->size(); ++t) REQUIRE((*bounds)[t] > (*bounds)[t - 1]);
      }
      // double: what the published results were factored with.
      for (std::size_t t = 1; t + 1 < d.size(); ++t) CHECK(d[t] == Index(t) * 256);
      CHECK(Index(d.size()) - 1 == (n + 255) / 256);
      // float: two tasks or more from 32 rows on, an even count, bounds on whole 16-float packets,
      // and no task with much more than its share of the work.
      const Index tasks = Index(f.size()) - 1;
      if (n < 32) {
        CHECK(tasks <= 1);
        continue;
      }
      CHECK(tasks % 2 == 0);
      CHECK(tasks >= std::max<Index>(2, (n + 255) / 256));
      for (std::size_t t = 1; t + 1 < f.size(); ++t) CHECK(f[t] % 16 == 0);
      // Each bound is off its exact place by at most 8 rows (or columns, each costing ≤ n).
      const double share = work(kind, n, 0, n) / double(tasks);
      const double rounding = kind == FactorWork::EqualRows ? 16.0 : 16.0 * double(n);
      for (Index t = 0; t < tasks; ++t) CHECK(work(kind, n, f[t], f[t + 1]) <= share + rounding);
    }
}

TEST_CASE_TEMPLATE("The inverse factor is bit-identical for any thread count", Scalar, float,
                   double) {
  // n above the recursion leaf (256) and not a multiple of double's 256-row tasks, so the threaded
  // triangular solve, rank update and triangular product all split unevenly there (and in float
  // into the equal-work tasks of factor_task_bounds).
  std::mt19937 rng(8);
  const Index n = 700;
  const Eigen::MatrixXd X = loaq_test::random_inputs(n, 2 * n, rng);
  const loaq::Matrix<Scalar> H = (X * X.transpose()).cast<Scalar>();
  auto factor = [&] {
    loaq::InverseFactor<Scalar> f;
    f.compute(H);
    REQUIRE(f.info() == loaq::Status::Success);
    return loaq::Matrix<Scalar>(f.upper());
  };
  const loaq::Matrix<Scalar> one = with_threads(1, factor);
  CHECK(one == with_threads(2, factor));
  CHECK(one == with_threads(3, factor));
  // And it is the factor: UᵀU·(H + λI)·4^−k = I to rounding.
  loaq::InverseFactor<Scalar> f;
  f.compute(H);
  CHECK(f.residual(H) < (std::is_same<Scalar, float>::value ? 1e-3 : 1e-10));
}

TEST_CASE("The statistics (Ĥ, C, G, normalized W·x) are bit-identical for any thread count") {
  std::mt19937 rng(9);
  const Index n = 700, m = 450, T = 300;  // three SYRK panels, four row blocks of C, three of G
  const Eigen::MatrixXd X = loaq_test::random_inputs(n, T, rng);
  const Eigen::MatrixXd Xh = X + 0.1 * loaq_test::random_matrix<double>(n, T, rng);
  const Eigen::MatrixXd R = loaq_test::random_matrix<double>(m, T, rng);
  const Eigen::MatrixXd Rh = R + 0.1 * loaq_test::random_matrix<double>(m, T, rng);
  const Eigen::MatrixXd W = loaq_test::random_matrix<double>(m, n, rng) / 30.0;
  auto accumulate = [&] {
    loaq::CalibrationAccumulator<double> acc(n, m);
    REQUIRE(acc.add_batch(Xh, X, Rh, R).ok());
    REQUIRE(acc.add_batch(Xh.leftCols(100), X.leftCols(100), Rh.leftCols(100), R.leftCols(100)).ok());
    loaq::ObjectiveStats<loaq::NormalizedOutput> normalized(W, {0.5, 0.5, 1e-5, true});
    REQUIRE(normalized.add(Xh, X, Rh, R).ok());
    return std::vector<Eigen::MatrixXd>{acc.hessian(), acc.cross(), acc.residual_cross(),
                                        normalized.stats().hessian(), normalized.stats().cross(),
                                        normalized.stats().residual_cross()};
  };
  const auto one = with_threads(1, accumulate);
  for (int threads : {2, 3}) {
    CAPTURE(threads);
    const auto many = with_threads(threads, accumulate);
    for (std::size_t i = 0; i < one.size(); ++i) CHECK(one[i] == many[i]);
  }
  CHECK((one[0] - 2.0 / 2.0 * (Xh * Xh.transpose() + Xh.leftCols(100) * Xh.leftCols(100).transpose()))
            .cwiseAbs()
            .maxCoeff() < 1e-9 * one[0].cwiseAbs().maxCoeff());
}
#endif

TEST_CASE("pin_eigen_blocking: the inverse factor no longer depends on the caches the CPU reports") {
  // Eigen's product blocking follows the cache sizes it detects; two CPUs are simulated by
  // setting them. n is large enough for the factor's rank updates to be split along k.
  std::ptrdiff_t l1, l2, l3;
  Eigen::internal::manage_caching_sizes(Eigen::GetAction, &l1, &l2, &l3);
  std::mt19937 rng(10);
  const Index n = 1100;
  const Eigen::MatrixXd X = loaq_test::random_inputs(n, 2 * n, rng);
  const Eigen::MatrixXd H = X * X.transpose();
  auto factor_on = [&](std::ptrdiff_t cpu_l1, std::ptrdiff_t cpu_l2, std::ptrdiff_t cpu_l3, bool pin) {
    Eigen::setCpuCacheSizes(cpu_l1, cpu_l2, cpu_l3);
    if (pin) loaq::pin_eigen_blocking();
    loaq::InverseFactor<double> f;
    f.compute(H);
    REQUIRE(f.info() == loaq::Status::Success);
    return Eigen::MatrixXd(f.upper());
  };
  const Eigen::MatrixXd small = factor_on(32 << 10, 512 << 10, 8 << 20, false);
  const Eigen::MatrixXd large = factor_on(48 << 10, 2 << 20, 256 << 20, false);
  REQUIRE(small != large);  // unpinned, the two CPUs round differently: the effect is real
  CHECK(factor_on(32 << 10, 512 << 10, 8 << 20, true) == factor_on(48 << 10, 2 << 20, 256 << 20, true));
  Eigen::setCpuCacheSizes(l1, l2, l3);
}
