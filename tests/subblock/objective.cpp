// Sub-block objectives on drifted streams: LoaQ lowers the error it promises to lower.
#include <doctest/doctest.h>

#include <functional>
#include <limits>

#include "../support.hpp"

using loaq::Index;

namespace {

struct SubblockData {
  Eigen::MatrixXd Xh, X, Rh, R;
};

// Output linear of a sub-block (W: d × n) with drifted quantized streams.
SubblockData subblock_tokens(const Eigen::MatrixXd& A, const Eigen::MatrixXd& B, Index d, Index n,
                             Index T, std::mt19937& rng) {
  SubblockData s;
  s.X = loaq_test::random_inputs(n, T, rng);
  s.R = 3.0 * loaq_test::random_matrix<double>(d, T, rng);
  s.Xh = s.X + 0.2 * (A * s.X) + 0.05 * loaq_test::random_matrix<double>(n, T, rng);
  s.Rh = s.R + 0.2 * (B * s.Xh) + 0.1 * loaq_test::random_matrix<double>(d, T, rng);
  return s;
}

double residual_error(const Eigen::MatrixXd& Q, const Eigen::MatrixXd& W, const SubblockData& s) {
  return ((s.Rh + Q * s.Xh) - (s.R + W * s.X)).squaredNorm() / double(s.X.cols());
}
double normalized_error(const Eigen::MatrixXd& Q, const Eigen::MatrixXd& W, const SubblockData& s,
                        const Eigen::VectorXd& gamma) {
  return (loaq::rmsnorm(Eigen::MatrixXd(s.Rh + Q * s.Xh), gamma, 1e-5) -
          loaq::rmsnorm(Eigen::MatrixXd(s.R + W * s.X), gamma, 1e-5)).squaredNorm() / double(s.X.cols());
}

// An output linear W (d × n) with calibration and held-out tokens drifted the same way.
struct DriftedSubblock {
  Eigen::MatrixXd W;
  SubblockData calib, held;
};
DriftedSubblock drifted_subblock(Index d, Index n, Index T, std::mt19937& rng) {
  DriftedSubblock s;
  s.W = loaq_test::random_matrix<double>(d, n, rng, 0.05);
  const Eigen::MatrixXd A = loaq_test::random_matrix<double>(n, n, rng) / std::sqrt(double(n));
  const Eigen::MatrixXd B = loaq_test::random_matrix<double>(d, n, rng) / std::sqrt(double(n));
  s.calib = subblock_tokens(A, B, d, n, T, rng);
  s.held = subblock_tokens(A, B, d, n, T, rng);
  return s;
}

}  // namespace

TEST_CASE("on drifted streams LoaQ's sub-block objectives beat GPTQ on the sub-block output") {
  std::mt19937 rng(67);
  const Index d = 48, n = 96;
  const auto [W, calib, held] = drifted_subblock(d, n, 1024, rng);
  const Eigen::VectorXd gamma = loaq_test::random_matrix<double>(d, 1, rng).array().abs() + 0.5;

  loaq::GptqOptions opt;
  opt.group_size = 32;
  loaq::UniformGrid<double, 3> grid(false);
  loaq::CalibrationAccumulator<double> plain(n);
  REQUIRE(plain.add_batch(calib.Xh).ok());
  loaq::ObjectiveStats<loaq::ResidualOutput> res(n, d, {1, 1});
  loaq::ObjectiveStats<loaq::NormalizedOutput> nrm(W, {1, 1, 1e-5, true});
  for (Index b = 0; b < 4; ++b) {  // streamed in four batches of 256 tokens
    const auto cols = [&](const Eigen::MatrixXd& M) { return M.middleCols(b * 256, 256); };
    REQUIRE(res.add(cols(calib.Xh), cols(calib.X), cols(calib.Rh), cols(calib.R)).ok());
    REQUIRE(nrm.add(cols(calib.Xh), cols(calib.X), cols(calib.Rh), cols(calib.R)).ok());
  }
  loaq::QuantizedWeight<double> gptq, loaq_res, loaq_nrm;
  REQUIRE(loaq::gptq(W, plain.hessian(), grid, opt, gptq).ok());
  REQUIRE(loaq::solve_objective(W, res, grid, opt, loaq_res).ok());
  REQUIRE(loaq::solve_objective(W, nrm, grid, opt, loaq_nrm).ok());

  for (const SubblockData* s : {&calib, &held}) {
    const std::string which = s == &calib ? "calibration" : "held-out";
    const double g_res = residual_error(gptq.weight, W, *s), l_res = residual_error(loaq_res.weight, W, *s);
    const double g_nrm = normalized_error(gptq.weight, W, *s, gamma),
                 l_nrm = normalized_error(loaq_nrm.weight, W, *s, gamma);
    MESSAGE(which << " residual-stream error per token: GPTQ " << g_res << ", LoaQ residual " << l_res);
    MESSAGE(which << " post-RMSNorm error per token: GPTQ " << g_nrm << ", LoaQ normalized " << l_nrm);
    CHECK(l_res < g_res);
    CHECK(l_nrm < g_nrm);
  }
}

TEST_CASE("folding an RMSNorm's gamma into the next linear is exact") {
  std::mt19937 rng(71);
  const Eigen::MatrixXd h = loaq_test::random_matrix<double>(16, 20, rng);
  Eigen::VectorXd gamma = Eigen::VectorXd::Random(16).array() + 1.2;
  Eigen::MatrixXd Wq = loaq_test::random_matrix<double>(8, 16, rng), Wk = loaq_test::random_matrix<double>(4, 16, rng);
  const Eigen::MatrixXd yq = Wq * loaq::rmsnorm(h, gamma, 1e-6), yk = Wk * loaq::rmsnorm(h, gamma, 1e-6);
  loaq::fold_rmsnorm(gamma, {&Wq, &Wk});
  CHECK(gamma.isOnes(0));
  CHECK((Wq * loaq::rmsnorm(h, gamma, 1e-6) - yq).norm() < 1e-12 * yq.norm());
  CHECK((Wk * loaq::rmsnorm(h, gamma, 1e-6) - yk).norm() < 1e-12 * yk.norm());
}

TEST_CASE("LLaMA linears get the objective of their role") {
  for (const char* name : {"q_proj", "k_proj", "v_proj", "gate_proj", "model.layers.0.mlp.up_proj"})
    CHECK(loaq::llama_linear_role(name) == loaq::LinearRole::Input);
  for (const char* name : {"o_proj", "model.layers.7.self_attn.o_proj", "down_proj"})
    CHECK(loaq::llama_linear_role(name) == loaq::LinearRole::Output);
}

TEST_CASE("float products keep the normalized objective's statistics and what it gains over GPTQ") {
  std::mt19937 rng(71);
  const Index d = 48, n = 96;
  const auto [W, calib, held] = drifted_subblock(d, n, 1024, rng);
  const Eigen::VectorXd gamma = Eigen::VectorXd::Ones(d);
  loaq::ObjectiveStats<loaq::NormalizedOutput> exact(W, {0.5, 0.5, 1e-5, true}), fast(W, {0.5, 0.5, 1e-5, true});
  fast.set_float_products(true);
  loaq::CalibrationAccumulator<double> plain(n);
  for (Index b = 0; b < 4; ++b) {
    const auto cols = [&](const Eigen::MatrixXd& M) { return M.middleCols(b * 256, 256); };
    REQUIRE(exact.add(cols(calib.Xh), cols(calib.X), cols(calib.Rh), cols(calib.R)).ok());
    REQUIRE(fast.add(cols(calib.Xh), cols(calib.X), cols(calib.Rh), cols(calib.R)).ok());
    REQUIRE(plain.add_batch(cols(calib.Xh)).ok());
  }
  const auto rel = [](const Eigen::MatrixXd& E, const Eigen::MatrixXd& F) { return (E - F).norm() / E.norm(); };
  CHECK(rel(exact.stats().hessian(), fast.stats().hessian()) < 1e-5);
  CHECK(rel(exact.stats().cross(), fast.stats().cross()) < 1e-5);
  CHECK(rel(exact.stats().residual_cross(), fast.stats().residual_cross()) < 1e-5);
  CHECK(exact.stats().hessian() != fast.stats().hessian());

  loaq::GptqOptions opt;
  opt.group_size = 32;
  loaq::UniformGrid<double, 3> grid(false);
  loaq::QuantizedWeight<double> gptq, loaq_fast;
  REQUIRE(loaq::gptq(W, plain.hessian(), grid, opt, gptq).ok());
  REQUIRE(loaq::solve_objective(W, fast, grid, opt, loaq_fast).ok());
  CHECK(normalized_error(loaq_fast.weight, W, held, gamma) < normalized_error(gptq.weight, W, held, gamma));

  // A weight whose outputs overflow float: refused with float products, fine in double.
  const Eigen::MatrixXd huge = Eigen::MatrixXd::Constant(d, n, 1e38);  // W·x beyond float
  loaq::ObjectiveStats<loaq::NormalizedOutput> huge_fast(huge, {0.5, 0.5, 1e-5, true}), huge_exact(huge, {0.5, 0.5, 1e-5, true});
  huge_fast.set_float_products(true);
  const auto first = [&](const Eigen::MatrixXd& M) { return M.leftCols(256); };
  const loaq::Report r = huge_fast.add(first(calib.Xh), first(calib.X), first(calib.Rh), first(calib.R));
  CHECK(r.status == loaq::Status::OutOfRange);
  CHECK(huge_fast.stats().tokens() == 0);
  CHECK(huge_exact.add(first(calib.Xh), first(calib.X), first(calib.Rh), first(calib.R)).ok());
  // Beyond double as well: refused in every mode, nothing added (never a silent Inf in y).
  const Eigen::MatrixXd beyond = Eigen::MatrixXd::Constant(d, n, 1e307);
  for (bool target_only : {false, true})
    for (bool float_products : {false, true}) {
      CAPTURE(target_only);
      CAPTURE(float_products);
      loaq::ObjectiveStats<loaq::NormalizedOutput> st(beyond, {0.5, 0.5, 1e-5, true});
      REQUIRE(st.set_target_only(target_only).ok());
      st.set_float_products(float_products);
      CHECK(st.add(first(calib.Xh), first(calib.X), first(calib.Rh), first(calib.R)).status ==
            loaq::Status::OutOfRange);
      CHECK(st.stats().tokens() == 0);
    }
}

TEST_CASE("target-only normalized statistics: α·W·C + β·G from one product, the same target") {
  std::mt19937 rng(83);
  const Index d = 48, n = 96;
  const auto [W, calib, held] = drifted_subblock(d, n, 1024, rng);
  const auto rel = [](const Eigen::MatrixXd& E, const Eigen::MatrixXd& F) { return (E - F).norm() / E.norm(); };
  loaq::GptqOptions opt;
  opt.group_size = 32;
  loaq::UniformGrid<double, 3> grid(false);
  for (bool weighted : {true, false})
    for (const auto& [alpha, beta] : {std::pair{0.5, 0.25}, std::pair{1.0, 1.0}})
      for (bool float_products : {false, true}) {
        CAPTURE(weighted);
        CAPTURE(alpha);
        CAPTURE(beta);
        CAPTURE(float_products);
        const loaq::NormalizedOutput obj{alpha, beta, 1e-5, weighted};
        loaq::ObjectiveStats<loaq::NormalizedOutput> full(W, obj), only(W, obj);
        REQUIRE(only.set_target_only(true).ok());
        for (auto* st : {&full, &only}) {
          st->set_float_products(float_products);
          for (Index b = 0; b < 4; ++b) {
            const auto cols = [&](const Eigen::MatrixXd& M) { return M.middleCols(b * 256, 256); };
            REQUIRE(st->add(cols(calib.Xh), cols(calib.X), cols(calib.Rh), cols(calib.R)).ok());
          }
        }
        CHECK(only.target_only());
        CHECK(!only.stats().has_cross());
        REQUIRE(only.stats().residual_cross().rows() == d);
        const double tol = float_products ? 1e-5 : 1e-12;
        const Eigen::MatrixXd B = alpha * W * full.stats().cross() + beta * full.stats().residual_cross();
        CHECK(rel(B, only.stats().residual_cross()) < tol);
        CHECK(rel(full.stats().hessian(), only.stats().hessian()) < 1e-12);

        loaq::QuantizedWeight<double> qf, qo;
        Eigen::MatrixXd tf, to;
        REQUIRE(loaq::solve_objective(W, full, grid, opt, qf, nullptr, &tf).ok());
        REQUIRE(loaq::solve_objective(W, only, grid, opt, qo, nullptr, &to).ok());
        CHECK(rel(tf, to) < tol);
        CHECK((qf.codes.array() == qo.codes.array()).cast<double>().mean() > 0.99);
      }

  // The choice is made before the first batch: later it is refused and the mode kept.
  loaq::ObjectiveStats<loaq::NormalizedOutput> st(W, {0.5, 0.25, 1e-5, true});
  REQUIRE(st.add(calib.Xh.leftCols(8), calib.X.leftCols(8), calib.Rh.leftCols(8), calib.R.leftCols(8)).ok());
  CHECK(st.set_target_only(true).status == loaq::Status::InvalidArgument);
  CHECK(!st.target_only());
  CHECK(st.set_target_only(false).ok());  // no change: accepted
}

TEST_CASE("normalized objective: W·x as row-block tasks, the same bits as the unsplit formula for any runner") {
  // SmolLM2's down_proj (m = 576, n = 1536: W·x sums beyond one product panel); the pipeline's
  // float activations. Expected: the frozen RMS factors from one product each, then the weighted
  // statistics of a plain accumulator.
  std::mt19937 rng(79);
  const Index m = 576, n = 1536, T = 128;
  const Eigen::MatrixXf W = loaq_test::random_matrix<float>(m, n, rng) / std::sqrt(float(n));
  const Eigen::MatrixXf X = loaq_test::random_inputs(n, T, rng).cast<float>();
  const Eigen::MatrixXf Xh = X + 0.1f * loaq_test::random_matrix<float>(n, T, rng);
  const Eigen::MatrixXf R = loaq_test::random_matrix<float>(m, T, rng);
  const Eigen::MatrixXf Rh = R + 0.1f * loaq_test::random_matrix<float>(m, T, rng);
  const Eigen::MatrixXd Wd = W.cast<double>(), x = X.cast<double>(), xh = Xh.cast<double>(),
                        r = R.cast<double>(), rh = Rh.cast<double>();
  const loaq::NormalizedOutput obj{0.5, 0.5, 1e-5, true};
  const loaq_test::SerialEigen serial;  // the expected products and the runner's tasks (tasks.hpp)
  for (bool float_products : {false, true}) {
    CAPTURE(float_products);
    Eigen::VectorXd s, sh;
    if (float_products) {
      const Eigen::MatrixXf y = W * X, yh = W * Xh;
      const Eigen::MatrixXd yd = y.cast<double>(), yhd = yh.cast<double>();
      s = loaq::inverse_rms(r + yd, obj.eps);
      sh = loaq::inverse_rms(rh + yhd, obj.eps);
    } else {
      s = loaq::inverse_rms(r + Wd * x, obj.eps);
      sh = loaq::inverse_rms(rh + Wd * xh, obj.eps);
    }
    loaq::CalibrationAccumulator<double> expected(n, m);
    expected.set_float_products(float_products);
    REQUIRE(expected.add_weighted_batch(xh, x, &rh, &r, sh, s).ok());

    loaq::ObjectiveStats<loaq::NormalizedOutput> plain(W, obj), reversed(W, obj);
    Index tasks = 0;
    reversed.set_task_runner([&](Index count, const std::function<void(Index)>& task) {
      tasks += count;
      for (Index i = count; i-- > 0;) task(i);
    });
    for (auto* st : {&plain, &reversed}) {
      st->set_float_products(float_products);
      REQUIRE(st->add(Xh, X, Rh, R).ok());
      const auto differs = [](const Eigen::MatrixXd& A, const Eigen::MatrixXd& B) { return (A - B).cwiseAbs().maxCoeff(); };
      CHECK(differs(st->stats().hessian(), expected.hessian()) == 0);
      CHECK(differs(st->stats().cross(), expected.cross()) == 0);
      CHECK(differs(st->stats().residual_cross(), expected.residual_cross()) == 0);
    }
    // W·x: 3 blocks of 192 rows for each of x, x̂; then Ĥ (6 panels), C (8 blocks), G (3).
    CHECK(tasks == 6 + 6 + 8 + 3);
  }
}

TEST_CASE("normalized objective: the FP output y from the caller replaces W·x; bad y is refused") {
  std::mt19937 rng(89);
  const Index d = 48, n = 96;
  const auto [W, calib, held] = drifted_subblock(d, n, 512, rng);
  const auto rel = [](const Eigen::MatrixXd& E, const Eigen::MatrixXd& F) { return (E - F).norm() / E.norm(); };
  const Eigen::MatrixXd Y = calib.R + W * calib.X;  // what the FP model outputs, in double
  // The float FP stream: r + W·x as a float forward pass computes it.
  const Eigen::MatrixXf Yf = calib.R.cast<float>() + W.cast<float>() * calib.X.cast<float>();
  for (bool target_only : {true, false})
    for (bool float_products : {false, true}) {
      CAPTURE(target_only);
      CAPTURE(float_products);
      const loaq::NormalizedOutput obj{0.5, 0.25, 1e-5, true};
      loaq::ObjectiveStats<loaq::NormalizedOutput> formed(W, obj), given(W, obj);
      for (auto* st : {&formed, &given}) {
        REQUIRE(st->set_target_only(target_only).ok());
        st->set_float_products(float_products);
      }
      REQUIRE(formed.add(calib.Xh, calib.X, calib.Rh, calib.R).ok());
      if (float_products)
        REQUIRE(given.add(calib.Xh, calib.X, calib.Rh, calib.R, Yf).ok());
      else
        REQUIRE(given.add(calib.Xh, calib.X, calib.Rh, calib.R, Y).ok());
      const double tol = float_products ? 1e-5 : 1e-12;
      CHECK(rel(formed.stats().hessian(), given.stats().hessian()) < tol);
      CHECK(rel(formed.stats().residual_cross(), given.stats().residual_cross()) < tol);
      CHECK(formed.stats().has_cross() == given.stats().has_cross());
      // y is what the RMS factors and the target read: a wrong y moves both.
      loaq::ObjectiveStats<loaq::NormalizedOutput> wrong(W, obj);
      REQUIRE(wrong.set_target_only(target_only).ok());
      REQUIRE(wrong.add(calib.Xh, calib.X, calib.Rh, calib.R, Eigen::MatrixXd(2.0 * Y)).ok());
      CHECK(rel(formed.stats().residual_cross(), wrong.stats().residual_cross()) > 0.1);
    }

  // Bad y: a status that says what, and nothing added.
  loaq::ObjectiveStats<loaq::NormalizedOutput> st(W, {0.5, 0.25, 1e-5, true});
  REQUIRE(st.set_target_only(true).ok());
  CHECK(st.add(calib.Xh, calib.X, calib.Rh, calib.R, Y.topRows(d - 1)).status == loaq::Status::ShapeMismatch);
  CHECK(st.add(calib.Xh, calib.X, calib.Rh, calib.R, Y.leftCols(7)).status == loaq::Status::ShapeMismatch);
  Eigen::MatrixXd bad = Y;
  bad(3, 5) = std::numeric_limits<double>::quiet_NaN();
  CHECK(st.add(calib.Xh, calib.X, calib.Rh, calib.R, bad).status == loaq::Status::NonFiniteInput);
  // x is not read with y given and target-only statistics, but a NaN in it is still refused.
  Eigen::MatrixXd bad_x = calib.X;
  bad_x(0, 0) = std::numeric_limits<double>::infinity();
  CHECK(st.add(calib.Xh, bad_x, calib.Rh, calib.R, Y).status == loaq::Status::NonFiniteInput);
  CHECK(st.stats().tokens() == 0);
  // A batch of zero tokens with its zero-token y adds nothing and is no error.
  CHECK(st.add(calib.Xh.leftCols(0), calib.X.leftCols(0), calib.Rh.leftCols(0), calib.R.leftCols(0),
               Y.leftCols(0)).ok());
  CHECK(st.stats().tokens() == 0);
  REQUIRE(st.add(calib.Xh, calib.X, calib.Rh, calib.R, Y).ok());
  CHECK(st.stats().tokens() == calib.X.cols());
}
