// The CUDA backend against the CPU solvers and the reference implementations. Needs a GPU: without
// one the program says why and exits 77, which ctest reports as skipped (CI compiles it only).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <functional>
#include <loaq/cuda.cuh>

#include "../support.hpp"

using loaq::Index;

namespace {

loaq::cuda::Context& gpu() {
  static loaq::cuda::Context ctx;
  return ctx;
}

using loaq_test::Problem;

// The layers these tests solve: T = 3n tokens, `dead` channels no token reaches.
Problem make_problem(Index m, Index n, std::mt19937& rng, Index dead = 0) {
  return loaq_test::make_problem(m, n, rng, 3, dead);
}

template <class S>
double agreement(const loaq::QuantizedWeight<S>& gpu_out, const loaq::QuantizedWeight<S>& cpu_out) {
  auto step = [&](Index i, Index j) { return cpu_out.scales(i, cpu_out.g_idx[j]); };
  return loaq_test::agreement(gpu_out.weight, cpu_out.weight, step);
}

// GPU and CPU results of one solve: the same codes (up to flips from summation order), layout,
// loss and diagnostics.
template <class S>
void check_same(const loaq::QuantizedWeight<S>& g, const loaq::QuantizedWeight<S>& c,
                const loaq::SolveDiagnostics* gd = nullptr, const loaq::SolveDiagnostics* cd = nullptr) {
  REQUIRE(g.weight.rows() == c.weight.rows());
  REQUIRE(g.weight.cols() == c.weight.cols());
  REQUIRE(g.scales.cols() == c.scales.cols());
  CHECK((g.g_idx.array() == c.g_idx.array()).all());
  const double agree = agreement(g, c);
  CAPTURE(agree);
  CHECK(agree >= 0.999);
  CHECK(g.loss == doctest::Approx(c.loss).epsilon(5e-3));
  const double codes_equal = double((g.codes.array() == c.codes.array()).count()) / double(c.codes.size());
  CHECK(codes_equal >= 0.999);
  if (gd && cd) {
    CHECK(gd->perm == cd->perm);
    CHECK(gd->dead == cd->dead);
    CHECK(gd->factor_attempts == cd->factor_attempts);
    CHECK(gd->relative_damping == cd->relative_damping);
    CHECK(gd->double_fallback == cd->double_fallback);
    CHECK(gd->column_loss.size() == cd->column_loss.size());
  }
}

}  // namespace

TEST_CASE("GPTQ and GPTAQ on the GPU reproduce the reference implementations") {
  for (const auto& c : loaq_test::reference_cases()) {
    const std::string file = c["file"];
    CAPTURE(file);
    loaq::io::SafetensorsReader st(loaq_test::data_path("reference/" + file));
    const Eigen::MatrixXf W = st.matrix<float>("weight");
    const Eigen::MatrixXf expected = st.matrix<float>("expected", W.rows(), W.cols());
    const loaq::GptqOptions opt = loaq_test::reference_options(c);
    auto run = [&](const auto& grid) {
      loaq::QuantizedWeight<float> out;
      if (c["method"] == "gptq") {
        const Eigen::MatrixXf H = st.matrix<float>("hessian", W.cols(), W.cols());
        REQUIRE(loaq::cuda::gptq(gpu(), W, H, grid, opt, out).ok());
      } else {  // the statistics accumulated on the GPU, the solve on device matrices
        const Eigen::MatrixXd Xhat = st.matrix<double>("inputs").transpose();
        const Eigen::MatrixXd X = st.matrix<double>("fp_inputs").transpose();
        loaq::cuda::CalibrationAccumulator<double> acc(gpu(), W.cols());
        REQUIRE(acc.add_batch(Xhat, X).ok());
        loaq::cuda::DeviceMatrix<float> Wd;
        REQUIRE(loaq::cuda::upload(gpu(), W, Wd).ok());
        loaq::cuda::DeviceQuantizedWeight<float> q;
        REQUIRE(loaq::cuda::gptaq(gpu(), Wd, acc.hessian(), acc.cross(), grid, opt,
                                  double(c["alpha"]), q).ok());
        REQUIRE(loaq::cuda::download(gpu(), q, out).ok());
      }
      auto step = [&](Index i, Index j) { return out.scales(i, out.g_idx[j]); };
      const double agree = loaq_test::agreement(out.weight, expected, step);
      MESSAGE(file << ": " << agree * 100 << "% of codes identical on the GPU");
      CHECK(agree >= 0.999);
    };
    CHECK(loaq_test::with_reference_grid(c, run));  // false: bits outside the suite's grids
  }
}

TEST_CASE_TEMPLATE("GPU and CPU agree on random layers with every option", S, float, double) {
  std::mt19937 rng(101);
  struct Shape { Index m, n, dead; };
  for (const Shape shape : {Shape{48, 96, 0}, Shape{130, 257, 3}}) {
    const Problem p = make_problem(shape.m, shape.n, rng, shape.dead);
    const loaq::Matrix<S> W = p.W.cast<S>();
    for (int variant = 0; variant < 8; ++variant) {
      loaq::GptqOptions opt;
      opt.group_size = variant % 4 == 0 ? -1 : variant % 4 == 1 ? 32 : variant % 4 == 2 ? 100 : 16;
      opt.act_order = variant & 1;
      opt.static_groups = variant == 3 || variant == 6;
      opt.block_size = variant == 2 ? 200 : variant == 5 ? 32 : 128;  // 200: the unstaged path
      opt.search.mse = variant == 7;
      opt.factor = variant == 4 ? loaq::FactorPrecision::Double : loaq::FactorPrecision::Solver;
      CAPTURE(shape.n);
      CAPTURE(variant);
      const loaq::UniformGrid<S, 4> asym(false);
      const loaq::UniformGrid<S, 3> sym(true);
      const loaq::SignedSymmetricGrid<S, 4> signed_grid;
      loaq::QuantizedWeight<S> g, c;
      loaq::SolveDiagnostics gd, cd;
      // GPTQ, on two grids
      REQUIRE(loaq::cuda::gptq(gpu(), W, p.H, asym, opt, g, &gd).ok());
      REQUIRE(loaq::gptq(W, p.H, asym, opt, c, &cd).ok());
      check_same(g, c, &gd, &cd);
      REQUIRE(loaq::cuda::gptq(gpu(), W, p.H, signed_grid, opt, g).ok());
      REQUIRE(loaq::gptq(W, p.H, signed_grid, opt, c).ok());
      check_same(g, c);
      // GPTAQ
      REQUIRE(loaq::cuda::gptaq(gpu(), W, p.H, p.C, sym, opt, 0.25, g, &gd).ok());
      REQUIRE(loaq::gptaq(W, p.H, p.C, sym, opt, 0.25, c, &cd).ok());
      check_same(g, c, &gd, &cd);
      // LoaQ targets: linear output (QEP), residual only, both
      for (const auto& [use_c, use_g, weights] :
           {std::tuple{true, false, loaq::TargetWeights{0.5, 0}},
            std::tuple{false, true, loaq::TargetWeights{0, 1}},
            std::tuple{true, true, loaq::TargetWeights{1, 1}}}) {
        const Eigen::MatrixXd* C = use_c ? &p.C : nullptr;
        const Eigen::MatrixXd* G = use_g ? &p.G : nullptr;
        loaq::Matrix<S> gt, ct;
        REQUIRE(loaq::cuda::solve_target(gpu(), W, p.H, C, G, weights, asym, opt, g, &gd, &gt).ok());
        REQUIRE(loaq::solve_target(W, p.H, C, G, weights, asym, opt, c, &cd, &ct).ok());
        const double tol = std::is_same<S, float>::value ? 1e-3 : 1e-10;
        CHECK((gt - ct).norm() <= tol * ct.norm());
        check_same(g, c, &gd, &cd);
      }
    }
  }
}

TEST_CASE("every LoaQ objective solves on the GPU as on the CPU") {
  std::mt19937 rng(139);
  const Index m = 24, n = 64, T = 300;
  const Eigen::MatrixXd W = loaq_test::random_matrix<double>(m, n, rng, 0.3);
  const Eigen::MatrixXd xh = loaq_test::random_inputs(n, T, rng);
  const Eigen::MatrixXd x = xh + 0.2 * loaq_test::random_matrix<double>(n, T, rng);
  const Eigen::MatrixXd r = 3.0 * loaq_test::random_matrix<double>(m, T, rng);
  const Eigen::MatrixXd rh = r + 0.3 * loaq_test::random_matrix<double>(m, T, rng);
  loaq::ObjectiveStats<loaq::LinearOutput> linear(n, {1.0});
  loaq::ObjectiveStats<loaq::ResidualOutput> residual(n, m, {1.0, 1.0});
  loaq::ObjectiveStats<loaq::NormalizedOutput> weighted(W, {1.0, 1.0, 1e-5, true});
  loaq::ObjectiveStats<loaq::NormalizedOutput> matching(W, {1.0, 0.5, 1e-5, false});
  REQUIRE(linear.add(xh, x).ok());
  REQUIRE(residual.add(xh, x, rh, r).ok());
  REQUIRE(weighted.add(xh, x, rh, r).ok());
  REQUIRE(matching.add(xh, x, rh, r).ok());
  loaq::GptqOptions opt;
  opt.group_size = 32;
  opt.act_order = true;
  const loaq::UniformGrid<float, 3> grid;
  auto compare = [&](const auto& stats) {
    loaq::QuantizedWeight<float> g, c;
    loaq::SolveDiagnostics gd, cd;
    loaq::Matrix<float> gt, ct;
    REQUIRE(loaq::cuda::solve_objective(gpu(), W, stats, grid, opt, g, &gd, &gt).ok());
    REQUIRE(loaq::solve_objective(W, stats, grid, opt, c, &cd, &ct).ok());
    CHECK((gt - ct).norm() <= 1e-3 * ct.norm());
    CHECK((ct.cast<double>() - W).norm() > 1e-3 * W.norm());  // a target that moved W
    check_same(g, c, &gd, &cd);
  };
  compare(linear);
  compare(residual);
  compare(weighted);
  compare(matching);
  loaq::ObjectiveStats<loaq::LinearOutput> empty(n, {1.0});
  loaq::QuantizedWeight<float> out;
  CHECK(loaq::cuda::solve_objective(gpu(), W, empty, grid, opt, out).status ==
        loaq::Status::InvalidArgument);
}

TEST_CASE_TEMPLATE("RTN on the GPU is the CPU's, code for code", S, float, double) {
  std::mt19937 rng(103);
  const loaq::Matrix<S> W = loaq_test::random_matrix<double>(70, 300, rng, 0.5).cast<S>();
  for (int group : {-1, 64, 100}) {
    for (bool mse : {false, true}) {
      CAPTURE(group);
      CAPTURE(mse);
      loaq::ParamSearch search;
      search.mse = mse;
      loaq::QuantizedWeight<S> g, c;
      REQUIRE(loaq::cuda::rtn(gpu(), W, loaq::UniformGrid<S, 3>(false), group, search, g).ok());
      REQUIRE(loaq::rtn(W, loaq::UniformGrid<S, 3>(false), group, search, c).ok());
      const double equal = double((g.codes.array() == c.codes.array()).count()) / double(c.codes.size());
      CHECK(equal >= (mse ? 0.999 : 1.0));
      CHECK((g.g_idx.array() == c.g_idx.array()).all());
      if (!mse) CHECK(g.weight == c.weight);
    }
  }
}

TEST_CASE("calibration statistics on the GPU equal the CPU's") {
  std::mt19937 rng(107);
  const Index n = 72, m = 40;
  loaq::CalibrationAccumulator<double> cpu(n, m);
  loaq::cuda::CalibrationAccumulator<double> dev(gpu(), n, m);
  for (Index T : {50, 0, 131}) {
    const Eigen::MatrixXd Xh = loaq_test::random_inputs(n, T, rng);
    const Eigen::MatrixXd X = Xh + 0.1 * loaq_test::random_matrix<double>(n, T, rng);
    const Eigen::MatrixXd R = loaq_test::random_matrix<double>(m, T, rng);
    const Eigen::MatrixXd Rh = R + 0.1 * loaq_test::random_matrix<double>(m, T, rng);
    const Eigen::VectorXd a = Eigen::VectorXd::Random(T).array() + 2, b = Eigen::VectorXd::Random(T).array() + 2;
    if (T == 131) {
      REQUIRE(cpu.add_weighted_batch(Xh, X, &Rh, &R, a, b, 3).ok());
      REQUIRE(dev.add_weighted_batch(Xh, X, &Rh, &R, a, b, 3).ok());
    } else {
      REQUIRE(cpu.add_batch(Xh, X, Rh, R).ok());
      REQUIRE(dev.add_batch(Xh, X, Rh, R).ok());
    }
  }
  CHECK(dev.sequences() == cpu.sequences());
  CHECK(dev.tokens() == cpu.tokens());
  Eigen::MatrixXd H, C, G;
  REQUIRE(dev.hessian(H).ok());
  REQUIRE(dev.cross(C).ok());
  REQUIRE(dev.residual_cross(G).ok());
  CHECK((H - cpu.hessian()).norm() <= 1e-12 * cpu.hessian().norm());
  CHECK((C - cpu.cross()).norm() <= 1e-12 * cpu.cross().norm());
  CHECK((G - cpu.residual_cross()).norm() <= 1e-12 * cpu.residual_cross().norm());
  CHECK(H == H.transpose());
  // The same refusals as the CPU's, before anything changes. The stream tracks C and G, so every
  // batch must bring x, r̂ and r: a batch of x̂ alone is refused before its values are looked at.
  Eigen::MatrixXd bad = Eigen::MatrixXd::Ones(n, 4);
  bad(2, 1) = NAN;
  const Eigen::MatrixXd ones = Eigen::MatrixXd::Ones(n, 4), huge = ones * 1e160,
                        r0 = Eigen::MatrixXd::Zero(m, 4);
  auto same_refusal = [&](loaq::Report gpu_report, loaq::Report cpu_report, loaq::Status expected) {
    CHECK(gpu_report.status == expected);
    CHECK(cpu_report.status == expected);
  };
  same_refusal(dev.add_batch(bad, bad, r0, r0), cpu.add_batch(bad, bad, r0, r0),
               loaq::Status::NonFiniteInput);
  same_refusal(dev.add_batch(Eigen::MatrixXd::Ones(n + 1, 4)),
               cpu.add_batch(Eigen::MatrixXd::Ones(n + 1, 4)), loaq::Status::ShapeMismatch);
  same_refusal(dev.add_batch(ones), cpu.add_batch(ones), loaq::Status::InvalidArgument);
  same_refusal(dev.add_batch(huge, huge, r0, r0), cpu.add_batch(huge, huge, r0, r0),
               loaq::Status::OutOfRange);
  CHECK(dev.tokens() == cpu.tokens());
  REQUIRE(dev.hessian(H).ok());
  CHECK((H - cpu.hessian()).norm() <= 1e-12 * cpu.hessian().norm());
}

TEST_CASE_TEMPLATE("the GPU factor: the CPU's damping, escalation, fallback and statuses", S, float, double) {
  std::mt19937 rng(109);
  const Problem p = make_problem(8, 150, rng, 2);
  auto factor = [&](const Eigen::MatrixXd& H, const loaq::DampingPolicy& policy,
                    loaq::cuda::DevicePreparedHessian<S>& dev, loaq::PreparedHessian<S>& cpu,
                    bool act_order) {
    loaq::cuda::DeviceMatrix<double> Hd;
    REQUIRE(loaq::cuda::upload(gpu(), H, Hd).ok());
    const loaq::Report g = loaq::cuda::prepare_hessian(gpu(), Hd, act_order, policy, dev);
    const loaq::Report c = loaq::prepare_hessian(H, act_order, policy, cpu);
    CHECK(g.status == c.status);
    CAPTURE(g.message);
    CAPTURE(c.message);
    return g.ok() && c.ok();
  };
  loaq::cuda::DevicePreparedHessian<S> dev;
  loaq::PreparedHessian<S> cpu;
  for (bool act_order : {false, true}) {
    REQUIRE(factor(p.H, {}, dev, cpu, act_order));
    CHECK(dev.perm == cpu.perm);
    CHECK(dev.dead == cpu.dead);
    CHECK(dev.log4_scale == cpu.log4_scale);
    CHECK(dev.damping == cpu.damping);
    CHECK(dev.attempts == cpu.attempts);
    loaq::Matrix<S> Ut;
    REQUIRE(loaq::cuda::download(gpu(), dev.upper_t, Ut).ok());
    const loaq::Matrix<S> U = Ut.transpose();
    const double tol = std::is_same<S, float>::value ? 1e-4 : 1e-10;
    CHECK((U - cpu.upper).norm() <= tol * cpu.upper.norm());
    CHECK(U.isUpperTriangular());
  }
  // Indefinite: the damping escalates the same way and fails at the same pivot.
  Eigen::MatrixXd Hi = p.H;
  Hi(10, 10) = -50 * p.H.diagonal().maxCoeff();
  CHECK(!factor(Hi, {0.01, 10.0, 3}, dev, cpu, false));
  Eigen::MatrixXd Hs = p.H;  // slightly indefinite: percdamp 0.01 fails, 0.1 succeeds
  Hs.diagonal().array() -= 0.05 * p.H.diagonal().mean();
  const bool ok = factor(Hs, {0.01, 10.0, 6}, dev, cpu, false);
  if (ok) {
    CHECK(dev.attempts == cpu.attempts);
    CHECK(dev.relative_damping == cpu.relative_damping);
    CHECK(dev.failed_pivot == cpu.failed_pivot);
  }
  Eigen::MatrixXd Hn = p.H;
  Hn(4, 7) = NAN;
  CHECK(!factor(Hn, {}, dev, cpu, false));
  Eigen::MatrixXd Ha = p.H;
  Ha(4, 7) += 0.1 * p.H.diagonal().maxCoeff();
  CHECK(!factor(Ha, {}, dev, cpu, false));
  CHECK(!factor(Eigen::MatrixXd::Zero(9, 9), {}, dev, cpu, false));
  CHECK(!factor(p.H, {-1, 10, 4}, dev, cpu, false));
}

TEST_CASE("float: an ill-conditioned Hessian falls back to a double factor on both") {
  std::mt19937 rng(113);
  const Index n = 120;
  const Eigen::MatrixXd B = loaq_test::random_matrix<double>(n, 12, rng);
  Eigen::MatrixXd H = B * B.transpose();
  H.diagonal().array() += 1e-6;
  const Eigen::MatrixXf W = loaq_test::random_matrix<float>(16, n, rng);
  loaq::GptqOptions opt;
  opt.damping.percdamp = 1e-7;
  loaq::QuantizedWeight<float> g, c;
  loaq::SolveDiagnostics gd, cd;
  const loaq::Report gr = loaq::cuda::gptq(gpu(), W, H, loaq::UniformGrid<float, 4>(), opt, g, &gd);
  const loaq::Report cr = loaq::gptq(W, H, loaq::UniformGrid<float, 4>(), opt, c, &cd);
  CHECK(gr.status == cr.status);
  if (gr.ok() && cr.ok()) {
    CHECK(gd.double_fallback == cd.double_fallback);
    CHECK(std::isfinite(g.loss));
  }
}

TEST_CASE("bad input on the GPU: the CPU's statuses, an empty result, inputs untouched") {
  std::mt19937 rng(127);
  const Problem p = make_problem(6, 32, rng);
  const Eigen::MatrixXf W = p.W.cast<float>();
  const loaq::UniformGrid<float, 4> grid;
  loaq::QuantizedWeight<float> out;
  REQUIRE(loaq::cuda::gptq(gpu(), W, p.H, grid, {}, out).ok());
  REQUIRE(out.weight.size() > 0);
  auto same_status = [&](const std::function<loaq::Report(loaq::QuantizedWeight<float>&, bool)>& run) {
    loaq::QuantizedWeight<float> g = out, c;
    const loaq::Report rg = run(g, true), rc = run(c, false);
    CAPTURE(rg.message);
    CAPTURE(rc.message);
    CHECK(!rg.ok());
    CHECK(rg.status == rc.status);
    CHECK(g.weight.size() == 0);
    CHECK(g.loss == 0);
  };
  Eigen::MatrixXf nan_w = W;
  nan_w(1, 1) = NAN;
  same_status([&](auto& o, bool dev) {
    return dev ? loaq::cuda::gptq(gpu(), nan_w, p.H, grid, {}, o) : loaq::gptq(nan_w, p.H, grid, {}, o);
  });
  const Eigen::MatrixXd H_small = p.H.topLeftCorner(31, 31);
  same_status([&](auto& o, bool dev) {
    return dev ? loaq::cuda::gptq(gpu(), W, H_small, grid, {}, o) : loaq::gptq(W, H_small, grid, {}, o);
  });
  for (int variant = 0; variant < 4; ++variant) {
    loaq::GptqOptions bad;
    if (variant == 0) bad.block_size = 0;
    if (variant == 1) bad.group_size = 0;
    if (variant == 2) bad.damping.percdamp = NAN;
    if (variant == 3) bad.search = {true, -1.0, 100, 0.8};
    CAPTURE(variant);
    same_status([&](auto& o, bool dev) {
      return dev ? loaq::cuda::gptq(gpu(), W, p.H, grid, bad, o) : loaq::gptq(W, p.H, grid, bad, o);
    });
  }
  same_status([&](auto& o, bool dev) {
    return dev ? loaq::cuda::gptaq(gpu(), W, p.H, p.C, grid, {}, NAN, o)
               : loaq::gptaq(W, p.H, p.C, grid, {}, NAN, o);
  });
  const Eigen::MatrixXd G_bad = p.G.topRows(5);
  same_status([&](auto& o, bool dev) {
    return dev ? loaq::cuda::solve_target(gpu(), W, p.H, &p.C, &G_bad, {1, 1}, grid, {}, o)
               : loaq::solve_target(W, p.H, &p.C, &G_bad, {1, 1}, grid, {}, o);
  });
  Eigen::MatrixXd W_huge = p.W;  // a double weight beyond float's range
  W_huge(4, 3) = 1e100;
  same_status([&](auto& o, bool dev) {
    return dev ? loaq::cuda::gptq(gpu(), W_huge, p.H, grid, {}, o) : loaq::gptq(W_huge, p.H, grid, {}, o);
  });
}

TEST_CASE("no calibration tokens, no rows, no columns: the CPU's answers on the GPU") {
  std::mt19937 rng(149);
  const Index n = 40;
  const Eigen::MatrixXf W = loaq_test::random_matrix<float>(8, n, rng);
  const loaq::UniformGrid<float, 4> grid;
  // An accumulator that saw no batch (or only empty ones) holds the zero Hessian.
  loaq::cuda::CalibrationAccumulator<double> dev(gpu(), n);
  loaq::CalibrationAccumulator<double> cpu(n);
  REQUIRE(dev.add_batch(Eigen::MatrixXd(n, 0)).ok());
  REQUIRE(cpu.add_batch(Eigen::MatrixXd(n, 0)).ok());
  Eigen::MatrixXd H;
  REQUIRE(dev.hessian(H).ok());
  CHECK(H == cpu.hessian());
  loaq::cuda::DeviceMatrix<float> Wd;
  REQUIRE(loaq::cuda::upload(gpu(), W, Wd).ok());
  loaq::cuda::DeviceQuantizedWeight<float> q;
  const loaq::Report rg = loaq::cuda::gptq(gpu(), Wd, dev.hessian(), grid, {}, q);
  loaq::QuantizedWeight<float> c;
  const loaq::Report rc = loaq::gptq(W, cpu.hessian(), grid, {}, c);
  CHECK(rg.status == loaq::Status::InvalidArgument);
  CHECK(rg.status == rc.status);
  CHECK(rg.message == rc.message);
  // Empty layers: the same status and the same (empty) shapes as the CPU, nothing non-finite.
  const Problem p = make_problem(6, n, rng);
  for (const std::pair<Index, Index> shape : {std::pair<Index, Index>{0, n}, std::pair<Index, Index>{6, 0}}) {
    const Index rows = shape.first, cols = shape.second;
    CAPTURE(rows);
    CAPTURE(cols);
    const Eigen::MatrixXf We = p.W.topLeftCorner(rows, cols).cast<float>();
    const Eigen::MatrixXd He = p.H.topLeftCorner(cols, cols);
    loaq::QuantizedWeight<float> g, cc;
    loaq::GptqOptions opt;
    opt.group_size = 16;
    const loaq::Report a = loaq::cuda::gptq(gpu(), We, He, grid, opt, g);
    const loaq::Report b = loaq::gptq(We, He, grid, opt, cc);
    CAPTURE(a.message);
    CAPTURE(b.message);
    CHECK(a.status == b.status);
    if (a.ok() && b.ok()) {
      CHECK(g.weight.rows() == cc.weight.rows());
      CHECK(g.weight.cols() == cc.weight.cols());
      CHECK(g.scales.rows() == cc.scales.rows());
      CHECK(g.scales.cols() == cc.scales.cols());
      CHECK(g.scales.allFinite());
      CHECK(g.loss == cc.loss);
    }
    const loaq::Report ra = loaq::cuda::rtn(gpu(), We, grid, 16, {}, g);
    const loaq::Report rb = loaq::rtn(We, grid, 16, {}, cc);
    CHECK(ra.status == rb.status);
  }
}

TEST_CASE("rows at the edge of float's range are solved like rows at magnitude 1") {
  std::mt19937 rng(131);
  const Problem p = make_problem(6, 64, rng);
  for (double top : {1e30, 1e-30, 3e38}) {
    Eigen::MatrixXf W = p.W.cast<float>();
    W.row(2) = (p.W.row(2) / p.W.row(2).cwiseAbs().maxCoeff() * top).cast<float>();
    CAPTURE(top);
    loaq::GptqOptions opt;
    opt.group_size = 16;
    loaq::QuantizedWeight<float> g, c;
    const loaq::Report rg = loaq::cuda::gptq(gpu(), W, p.H, loaq::UniformGrid<float, 4>(), opt, g);
    const loaq::Report rc = loaq::gptq(W, p.H, loaq::UniformGrid<float, 4>(), opt, c);
    CAPTURE(rg.message);
    CHECK(rg.status == rc.status);
    if (rg.ok() && rc.ok()) {
      check_same(g, c);
      CHECK(g.weight.allFinite());
    }
  }
}

TEST_CASE("device matrices in and out: the same solve, the input weight unchanged") {
  std::mt19937 rng(137);
  const Problem p = make_problem(40, 128, rng);
  const Eigen::MatrixXf W = p.W.cast<float>();
  loaq::cuda::DeviceMatrix<float> Wd;
  loaq::cuda::DeviceMatrix<double> Hd;
  REQUIRE(loaq::cuda::upload(gpu(), W, Wd).ok());
  REQUIRE(loaq::cuda::upload(gpu(), p.H, Hd).ok());
  loaq::GptqOptions opt;
  opt.group_size = 32;
  const loaq::UniformGrid<float, 4> grid;
  loaq::cuda::DeviceQuantizedWeight<float> q;
  REQUIRE(loaq::cuda::gptq(gpu(), Wd, Hd, grid, opt, q).ok());
  Eigen::MatrixXf back;
  REQUIRE(loaq::cuda::download(gpu(), Wd, back).ok());
  CHECK(back == W);  // a const device weight is read, not solved in
  loaq::QuantizedWeight<float> from_device, from_host, moved;
  REQUIRE(loaq::cuda::download(gpu(), q, from_device).ok());
  REQUIRE(loaq::cuda::gptq(gpu(), W, p.H, grid, opt, from_host).ok());
  CHECK(from_device.codes == from_host.codes);
  CHECK(from_device.weight == from_host.weight);
  CHECK(from_device.loss == from_host.loss);
  REQUIRE(loaq::cuda::gptq(gpu(), std::move(Wd), Hd, grid, opt, q).ok());
  REQUIRE(loaq::cuda::download(gpu(), q, moved).ok());
  CHECK(moved.codes == from_host.codes);
}

int main(int argc, char** argv) {
  std::string why;
  if (!loaq::cuda::device_available(&why)) {
    std::printf("loaq_cuda_tests: skipped, no usable CUDA device (%s)\n", why.c_str());
    return 77;
  }
  doctest::Context context(argc, argv);
  return context.run();
}
