// Streaming accumulator: running 2/n_seq scaling, batch-size invariance, cross terms, errors.
#include <doctest/doctest.h>

#include <atomic>
#include <functional>
#include <thread>
#include <vector>

#include "../support.hpp"

using loaq::Index;

TEST_CASE("streaming batches equal one pass with H = 2/n_seq Σ x xᵀ") {
  std::mt19937 rng(37);
  const Index n = 24, m = 10;
  const Eigen::MatrixXd Xh = loaq_test::random_inputs(n, 90, rng);
  const Eigen::MatrixXd X = Xh + 0.1 * loaq_test::random_matrix<double>(n, 90, rng);
  const Eigen::MatrixXd R = loaq_test::random_matrix<double>(m, 90, rng);
  const Eigen::MatrixXd Rh = R + 0.2 * loaq_test::random_matrix<double>(m, 90, rng);
  loaq::CalibrationAccumulator<double> once(n, m), streamed(n, m);
  REQUIRE(once.add_batch(Xh, X, Rh, R, 6).ok());  // 6 sequences of 15 tokens
  for (Index b = 0; b < 3; ++b)                    // 3 batches of 2 sequences
    REQUIRE(streamed.add_batch(Xh.middleCols(30 * b, 30), X.middleCols(30 * b, 30),
                               Rh.middleCols(30 * b, 30), R.middleCols(30 * b, 30), 2).ok());
  const Eigen::MatrixXd H = (2.0 / 6) * Xh * Xh.transpose();
  const Eigen::MatrixXd C = (2.0 / 6) * (X - Xh) * Xh.transpose();
  const Eigen::MatrixXd G = (2.0 / 6) * (R - Rh) * Xh.transpose();
  for (auto* acc : {&once, &streamed}) {
    CHECK(acc->sequences() == 6);
    CHECK(acc->tokens() == 90);
    CHECK((acc->hessian() - H).norm() <= 1e-12 * H.norm());
    CHECK((acc->cross() - C).norm() <= 1e-12 * C.norm());
    CHECK((acc->residual_cross() - G).norm() <= 1e-12 * G.norm());
  }
  CHECK(streamed.hessian().isApprox(streamed.hessian().transpose(), 0));
}

TEST_CASE("token weights give the RMSNorm-aware statistics") {
  std::mt19937 rng(41);
  const Index n = 7, m = 5, T = 30;
  const Eigen::MatrixXd Xh = loaq_test::random_inputs(n, T, rng), X = loaq_test::random_inputs(n, T, rng);
  const Eigen::MatrixXd Rh = loaq_test::random_matrix<double>(m, T, rng), R = loaq_test::random_matrix<double>(m, T, rng);
  const Eigen::VectorXd a = Eigen::VectorXd::Random(T).cwiseAbs(), b = Eigen::VectorXd::Random(T).cwiseAbs();
  loaq::CalibrationAccumulator<double> acc(n, m);
  REQUIRE(acc.add_weighted_batch(Xh, X, &Rh, &R, a, b).ok());
  Eigen::MatrixXd H = Eigen::MatrixXd::Zero(n, n), C = H, G = Eigen::MatrixXd::Zero(m, n);
  for (Index t = 0; t < T; ++t) {
    H += 2 * a[t] * a[t] * Xh.col(t) * Xh.col(t).transpose();
    C += 2 * a[t] * (b[t] * X.col(t) - a[t] * Xh.col(t)) * Xh.col(t).transpose();
    G += 2 * a[t] * (b[t] * R.col(t) - a[t] * Rh.col(t)) * Xh.col(t).transpose();
  }
  CHECK((acc.hessian() - H).norm() <= 1e-12 * H.norm());
  CHECK((acc.cross() - C).norm() <= 1e-12 * C.norm());
  CHECK((acc.residual_cross() - G).norm() <= 1e-12 * G.norm());
}

TEST_CASE("accumulator rejects mismatched and non-finite batches") {
  loaq::CalibrationAccumulator<double> acc(4, 3);
  CHECK(acc.add_batch(Eigen::MatrixXd::Ones(5, 10)).status == loaq::Status::ShapeMismatch);
  CHECK(acc.add_batch(Eigen::MatrixXd::Ones(4, 10), Eigen::MatrixXd::Ones(4, 9)).status ==
        loaq::Status::ShapeMismatch);
  CHECK(acc.add_batch(Eigen::MatrixXd::Ones(4, 10), Eigen::MatrixXd::Ones(4, 10),
                      Eigen::MatrixXd::Ones(2, 10), Eigen::MatrixXd::Ones(2, 10)).status ==
        loaq::Status::ShapeMismatch);
  Eigen::MatrixXd bad = Eigen::MatrixXd::Ones(4, 10);
  bad(3, 3) = std::nan("");
  CHECK(acc.add_batch(bad).status == loaq::Status::NonFiniteInput);
  CHECK(acc.add_batch(Eigen::MatrixXd::Ones(4, 10), 0).status == loaq::Status::InvalidArgument);
  CHECK(acc.tokens() == 0);  // nothing was half-added
  CHECK(acc.hessian().isZero(0));
}

TEST_CASE("a tracked cross term refuses a batch without its inputs, which would skip its rescaling") {
  std::mt19937 rng(43);
  const Index n = 6, m = 4, T = 12;
  const Eigen::MatrixXd Xh = loaq_test::random_inputs(n, T, rng), X = loaq_test::random_inputs(n, T, rng);
  const Eigen::MatrixXd Rh = loaq_test::random_matrix<double>(m, T, rng), R = loaq_test::random_matrix<double>(m, T, rng);
  const Eigen::VectorXd a = Eigen::VectorXd::Ones(T);
  loaq::CalibrationAccumulator<double> with_c(n), with_g(n, m);
  REQUIRE(with_c.add_batch(Xh, X).ok());
  REQUIRE(with_g.add_weighted_residual_batch(Xh, Rh, R, a, a).ok());
  CHECK(!with_g.has_cross());
  const Eigen::MatrixXd C = with_c.cross(), G = with_g.residual_cross();
  CHECK(with_c.add_batch(Xh).status == loaq::Status::InvalidArgument);
  CHECK(with_g.add_batch(Xh, X).status == loaq::Status::InvalidArgument);
  CHECK(with_g.add_batch(Xh, X, Rh, R).status == loaq::Status::InvalidArgument);  // C mid-stream
  CHECK(with_c.tokens() == T);
  CHECK(with_g.tokens() == T);
  CHECK(with_c.cross() == C);
  CHECK(with_g.residual_cross() == G);
  CHECK(with_g.add_weighted_residual_batch(Xh, Rh, R, a, a).ok());
  CHECK(with_g.tokens() == 2 * T);
}

TEST_CASE("a batch of zero tokens is a no-op at every size, and no tokens at all is an error") {
  for (Index n : {8, 64, 128, 300}) {
    loaq::CalibrationAccumulator<double> acc(n, 5);
    CHECK(acc.add_batch(Eigen::MatrixXd(n, 0)).ok());  // SIGFPE under the SYRK before
    CHECK(acc.add_batch(Eigen::MatrixXd(n, 0), Eigen::MatrixXd(n, 0), Eigen::MatrixXd(5, 0),
                        Eigen::MatrixXd(5, 0)).ok());
    CHECK(acc.tokens() == 0);
    CHECK(acc.sequences() == 0);
    CHECK(acc.hessian().isZero(0));
    // Solving on it says why instead of returning zeros.
    loaq::QuantizedWeight<float> out;
    const loaq::Report r = loaq::gptq(Eigen::MatrixXf::Ones(3, n), acc.hessian(),
                                      loaq::UniformGrid<float, 4>(), loaq::GptqOptions{}, out);
    CHECK(r.status == loaq::Status::InvalidArgument);
    CHECK(r.message.find("no calibration tokens") != std::string::npos);
    CHECK(out.weight.size() == 0);
  }
  loaq::CalibrationAccumulator<double> acc(4);
  CHECK(acc.add_batch(Eigen::MatrixXd(5, 0)).status == loaq::Status::ShapeMismatch);
}

TEST_CASE("activations whose products overflow are refused and leave the statistics untouched") {
  std::mt19937 rng(5);
  const Eigen::MatrixXd X = loaq_test::random_inputs(6, 20, rng);
  loaq::CalibrationAccumulator<double> acc(6);
  REQUIRE(acc.add_batch(X).ok());
  const Eigen::MatrixXd before = acc.hessian();
  const loaq::Report r = acc.add_batch(X * 1e160);
  CHECK(r.status == loaq::Status::OutOfRange);
  CHECK(acc.tokens() == 20);
  CHECK((acc.hessian() == before));
  CHECK(acc.add_batch(X * 1e100).ok());  // large but representable: fine
  CHECK(acc.hessian().allFinite());
}

TEST_CASE("float products: activations that overflow float are refused, not turned into Inf") {
  std::mt19937 rng(6);
  const Eigen::MatrixXd X = loaq_test::random_inputs(6, 20, rng);
  loaq::CalibrationAccumulator<double> fast(6);
  fast.set_float_products(true);
  REQUIRE(fast.add_batch(X, X).ok());
  const Eigen::MatrixXd before = fast.hessian();
  const loaq::Report r = fast.add_batch(X * 1e25, X * 1e25);  // fine in double, Inf in float
  CHECK(r.status == loaq::Status::OutOfRange);
  CHECK(r.message.find("float products off") != std::string::npos);
  CHECK(fast.tokens() == 20);
  CHECK((fast.hessian() == before));
  CHECK(fast.add_batch(X * 1e15, X * 1e15).ok());  // large but representable in float
  CHECK(fast.hessian().allFinite());
  CHECK(fast.cross().allFinite());
  const loaq::Report tiny = fast.add_batch(X * 1e-20, X * 1e-20);  // products below float's range
  CHECK(tiny.status == loaq::Status::OutOfRange);
  CHECK(tiny.message.find("underflow") != std::string::npos);
  CHECK(fast.tokens() == 40);
  loaq::CalibrationAccumulator<double> exact(6);
  CHECK(exact.add_batch(X * 1e25).ok());  // double holds both
  CHECK(exact.add_batch(X * 1e-20).ok());
}

TEST_CASE("float products: the statistics within float rounding of the double ones, weights included") {
  // n above the 256-row SYRK panel, so the float path's off-diagonal panel is exercised too.
  std::mt19937 rng(43);
  const Index n = 300, m = 40, T = 120;
  const Eigen::MatrixXd Xh = loaq_test::random_inputs(n, 3 * T, rng);
  const Eigen::MatrixXd X = Xh + 0.1 * loaq_test::random_matrix<double>(n, 3 * T, rng);
  const Eigen::MatrixXd R = loaq_test::random_matrix<double>(m, 3 * T, rng);
  const Eigen::MatrixXd Rh = R + 0.2 * loaq_test::random_matrix<double>(m, 3 * T, rng);
  const Eigen::VectorXd a = Eigen::VectorXd::Random(3 * T).cwiseAbs(), b = Eigen::VectorXd::Random(3 * T).cwiseAbs();
  loaq::CalibrationAccumulator<double> exact(n, m), fast(n, m), fast_weighted(n, m), exact_weighted(n, m);
  CHECK_FALSE(fast.float_products());  // off by default
  fast.set_float_products(true);
  fast_weighted.set_float_products(true);
  REQUIRE(fast.float_products());
  for (Index w = 0; w < 3; ++w) {  // three windows: the sums across them stay in double
    const auto cols = [&](const Eigen::MatrixXd& M) { return Eigen::MatrixXd(M.middleCols(w * T, T)); };
    const Eigen::VectorXd aw = a.segment(w * T, T), bw = b.segment(w * T, T);
    const Eigen::MatrixXd xh = cols(Xh), x = cols(X), r = cols(R), rh = cols(Rh);
    REQUIRE(exact.add_batch(xh, x, rh, r).ok());
    REQUIRE(fast.add_batch(xh, x, rh, r).ok());
    REQUIRE(exact_weighted.add_weighted_batch(xh, x, &rh, &r, aw, bw).ok());
    REQUIRE(fast_weighted.add_weighted_batch(xh, x, &rh, &r, aw, bw).ok());
  }
  for (auto [e, f] : {std::pair{&exact, &fast}, std::pair{&exact_weighted, &fast_weighted}}) {
    const auto rel = [](const Eigen::MatrixXd& A, const Eigen::MatrixXd& B) { return (A - B).norm() / A.norm(); };
    CHECK(rel(e->hessian(), f->hessian()) < 1e-6);
    CHECK(rel(e->cross(), f->cross()) < 1e-6);
    CHECK(rel(e->residual_cross(), f->residual_cross()) < 1e-6);
    CHECK(e->hessian() != f->hessian());  // the products really ran in float
    CHECK(f->hessian() == Eigen::MatrixXd(f->hessian().transpose()));
  }
  loaq::CalibrationAccumulator<float> single(n);
  single.set_float_products(true);
  CHECK_FALSE(single.float_products());  // nothing to gain when Acc is float
}

namespace {
// A TaskRunner on `threads` std::threads taking the tasks in index order.
loaq::TaskRunner thread_runner(int threads) {
  return [threads](Index count, const std::function<void(Index)>& task) {
    std::atomic<Index> next{0};
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&] {
        for (Index i; (i = next++) < count;) task(i);
      });
    for (auto& t : pool) t.join();
  };
}
}  // namespace

TEST_CASE("task runners: a batch's products are row-block tasks, the same bits in any order on any thread") {
  std::mt19937 rng(47);
  const Index n = 600, m = 400, T = 64;  // Ĥ: 3 panels of 256 rows; C: 4 blocks of 192; G: 3
  const Eigen::MatrixXd Xh = loaq_test::random_inputs(n, 3 * T, rng);
  const Eigen::MatrixXd X = Xh + 0.1 * loaq_test::random_matrix<double>(n, 3 * T, rng);
  const Eigen::MatrixXd R = loaq_test::random_matrix<double>(m, 3 * T, rng);
  const Eigen::MatrixXd Rh = R + 0.2 * loaq_test::random_matrix<double>(m, 3 * T, rng);
  const Eigen::VectorXd a = Eigen::VectorXd::Random(3 * T).cwiseAbs(), b = Eigen::VectorXd::Random(3 * T).cwiseAbs();
  const loaq_test::SerialEigen one_thread_products;  // with OpenMP, for the std::thread runners (tasks.hpp)
  for (bool float_products : {false, true}) {
    CAPTURE(float_products);
    loaq::CalibrationAccumulator<double> serial(n, m), reversed(n, m), threaded(n, m), weighted(n, m),
        weighted_threaded(n, m);
    std::vector<Index> counts;
    reversed.set_task_runner([&](Index count, const std::function<void(Index)>& task) {
      counts.push_back(count);
      for (Index i = count; i-- > 0;) task(i);
    });
    threaded.set_task_runner(thread_runner(3));
    weighted_threaded.set_task_runner(thread_runner(2));
    for (auto* acc : {&serial, &reversed, &threaded, &weighted, &weighted_threaded})
      acc->set_float_products(float_products);
    for (Index w = 0; w < 3; ++w) {
      const auto cols = [&](const Eigen::MatrixXd& M) { return Eigen::MatrixXd(M.middleCols(w * T, T)); };
      const Eigen::VectorXd aw = a.segment(w * T, T), bw = b.segment(w * T, T);
      const Eigen::MatrixXd xh = cols(Xh), x = cols(X), r = cols(R), rh = cols(Rh);
      for (auto* acc : {&serial, &reversed, &threaded}) REQUIRE(acc->add_batch(xh, x, rh, r).ok());
      for (auto* acc : {&weighted, &weighted_threaded}) REQUIRE(acc->add_weighted_batch(xh, x, &rh, &r, aw, bw).ok());
    }
    CHECK(counts == std::vector<Index>{10, 10, 10});
    for (auto* acc : {&reversed, &threaded}) {
      CHECK(acc->hessian() == serial.hessian());
      CHECK(acc->cross() == serial.cross());
      CHECK(acc->residual_cross() == serial.residual_cross());
    }
    CHECK(weighted_threaded.hessian() == weighted.hessian());
    CHECK(weighted_threaded.cross() == weighted.cross());
    CHECK(weighted_threaded.residual_cross() == weighted.residual_cross());
    const Eigen::MatrixXd H = (2.0 / 3) * Xh * Xh.transpose();  // and they are the statistics
    CHECK((serial.hessian() - H).norm() <= (float_products ? 1e-6 : 1e-12) * H.norm());
  }
}

TEST_CASE("row-block tasks sum every entry as the unsplit product (SmolLM2's down_proj inputs)") {
  // What keeps published results reproducible across this split: C from one batch equals the
  // one-GEMM formula bit for bit, in double and with float products.
  std::mt19937 rng(53);
  const Index n = 1536, T = 256;
  const Eigen::MatrixXd Xh = loaq_test::random_inputs(n, T, rng);
  const Eigen::MatrixXd X = Xh + 0.1 * loaq_test::random_matrix<double>(n, T, rng);
  const Eigen::MatrixXd D = X - Xh;
  const loaq_test::SerialEigen serial;  // the expected product on one thread, as the tasks run
  loaq::CalibrationAccumulator<double> exact(n), fast(n);
  fast.set_float_products(true);
  REQUIRE(exact.add_batch(Xh, X).ok());
  REQUIRE(fast.add_batch(Xh, X).ok());
  Eigen::MatrixXd C = Eigen::MatrixXd::Zero(n, n);
  C.noalias() += 2.0 * D * Xh.transpose();
  CHECK(exact.cross() == C);
  Eigen::MatrixXf p;
  p.noalias() = D.cast<float>() * Xh.cast<float>().transpose();
  const Eigen::MatrixXd Cf = Eigen::MatrixXd::Zero(n, n) + 2.0 * p.cast<double>();
  CHECK(fast.cross() == Cf);
}

TEST_CASE("hessian(): threads asking at once all get the whole symmetric matrix; copies keep it") {
  std::mt19937 rng(59);
  const Index n = 700, T = 200;
  const Eigen::MatrixXd X = loaq_test::random_inputs(n, T, rng);
  for (int round = 0; round < 20; ++round) {
    loaq::CalibrationAccumulator<double> acc(n);
    REQUIRE(acc.add_batch(X).ok());
    const loaq::CalibrationAccumulator<double> copy = acc;  // taken before any mirroring
    const Eigen::MatrixXd expected = copy.hessian();
    REQUIRE(expected == Eigen::MatrixXd(expected.transpose()));
    std::vector<Eigen::MatrixXd> seen(4);
    std::vector<std::thread> pool;
    for (std::size_t t = 0; t < seen.size(); ++t) pool.emplace_back([&, t] { seen[t] = acc.hessian(); });
    for (auto& th : pool) th.join();
    for (const auto& H : seen) REQUIRE(H == expected);
    const loaq::CalibrationAccumulator<double> after = acc;  // copies the mirrored matrix
    CHECK(after.hessian() == expected);
  }
}
