// LoaQ-family closed forms: GPTQ at α = β = 0, direct least squares, the exact sequential
// minimizer, and identity targets when the streams agree.
#include <doctest/doctest.h>

#include "../oracle.hpp"
#include "../support.hpp"

using loaq::Index;

namespace {

struct Streams {
  Eigen::MatrixXd W, Xh, X, Rh, R;  // W m × n; inputs n × T; residuals m × T
};

// An FP stream and a quantized stream that has drifted from it (partly predictably).
Streams drifted_streams(Index m, Index n, Index T, std::mt19937& rng, double drift = 0.15) {
  Streams s;
  s.W = loaq_test::random_matrix<double>(m, n, rng) / std::sqrt(double(n));
  s.X = loaq_test::random_inputs(n, T, rng);
  s.R = loaq_test::random_matrix<double>(m, T, rng);
  const Eigen::MatrixXd A = loaq_test::random_matrix<double>(n, n, rng) / std::sqrt(double(n));
  const Eigen::MatrixXd B = loaq_test::random_matrix<double>(m, n, rng) / std::sqrt(double(n));
  s.Xh = s.X + drift * (A * s.X + 0.5 * loaq_test::random_matrix<double>(n, T, rng));
  s.Rh = s.R + drift * (B * s.Xh + 0.5 * loaq_test::random_matrix<double>(m, T, rng));
  return s;
}

// argmin_Q ‖Q·Xin − Y‖ by QR on the tokens (no normal equations).
Eigen::MatrixXd least_squares(const Eigen::MatrixXd& Xin, const Eigen::MatrixXd& Y) {
  return Xin.transpose().colPivHouseholderQr().solve(Y.transpose()).transpose();
}

loaq::PreparedHessian<double> undamped(const Eigen::MatrixXd& H) {
  loaq::PreparedHessian<double> prep;
  REQUIRE(loaq::prepare_hessian(H, false, loaq::DampingPolicy{0.0, 10, 1}, prep).ok());
  return prep;
}

double relative(const Eigen::MatrixXd& a, const Eigen::MatrixXd& b) { return (a - b).norm() / b.norm(); }

}  // namespace

TEST_CASE_TEMPLATE("alpha = beta = 0 is GPTQ bit for bit", Scalar, float, double) {
  std::mt19937 rng(43);
  const Streams s = drifted_streams(24, 48, 200, rng);
  loaq::CalibrationAccumulator<double> acc(48, 24);
  REQUIRE(acc.add_batch(s.Xh, s.X, s.Rh, s.R).ok());
  for (bool act : {false, true}) {
    loaq::GptqOptions opt;
    opt.act_order = act;
    opt.group_size = 16;
    opt.block_size = 32;
    loaq::UniformGrid<Scalar, 3> grid(false);
    loaq::QuantizedWeight<Scalar> a, b, c;
    REQUIRE(loaq::gptq(s.W.cast<Scalar>(), acc.hessian(), grid, opt, a).ok());
    REQUIRE(loaq::solve_target(s.W.cast<Scalar>(), acc.hessian(), &acc.cross(), &acc.residual_cross(),
                               loaq::TargetWeights{0, 0}, grid, opt, b).ok());
    REQUIRE(loaq::gptaq(s.W.cast<Scalar>(), acc.hessian(), acc.cross(), grid, opt, 0.0, c).ok());
    CHECK((a.codes == b.codes));
    CHECK((a.weight == b.weight));
    CHECK((a.scales == b.scales));
    CHECK((a.weight == c.weight));
    CHECK(a.loss == b.loss);
  }
}

TEST_CASE("closed-form targets equal direct least squares of their objectives") {
  std::mt19937 rng(47);
  const Index m = 6, n = 10, T = 80;
  const Streams s = drifted_streams(m, n, T, rng, 0.3);
  const double alpha = 0.7, beta = 0.4;

  SUBCASE("linear output (QEP / LLOA)") {
    loaq::ObjectiveStats<loaq::LinearOutput> st(n, {alpha});
    REQUIRE(st.add(s.Xh, s.X).ok());
    const auto prep = undamped(st.stats().hessian());
    const Eigen::MatrixXd Wt = loaq::closed_form_target<double>(s.W, &st.stats().cross(), nullptr, prep, st.weights());
    const Eigen::MatrixXd Y = s.W * s.Xh + alpha * s.W * (s.X - s.Xh);
    CHECK(relative(Wt, least_squares(s.Xh, Y)) < 1e-10);
  }
  SUBCASE("sub-block residual output (SLOA)") {
    loaq::ObjectiveStats<loaq::ResidualOutput> st(n, m, {alpha, beta});
    REQUIRE(st.add(s.Xh, s.X, s.Rh, s.R).ok());
    const auto prep = undamped(st.stats().hessian());
    const Eigen::MatrixXd Wt = loaq::closed_form_target<double>(
        s.W, &st.stats().cross(), &st.stats().residual_cross(), prep, st.weights());
    const Eigen::MatrixXd Y = s.W * s.Xh + alpha * s.W * (s.X - s.Xh) + beta * (s.R - s.Rh);
    CHECK(relative(Wt, least_squares(s.Xh, Y)) < 1e-10);
    // α = β = 1 is the paper's objective ‖(R̂ + Q X̂) − (R + W X)‖² itself.
    loaq::ObjectiveStats<loaq::ResidualOutput> one(n, m, {1, 1});
    REQUIRE(one.add(s.Xh, s.X, s.Rh, s.R).ok());
    const Eigen::MatrixXd W1 = loaq::closed_form_target<double>(
        s.W, &one.stats().cross(), &one.stats().residual_cross(), prep, one.weights());
    CHECK(relative(W1, least_squares(s.Xh, s.R + s.W * s.X - s.Rh)) < 1e-10);
  }
  SUBCASE("RMSNorm-aware output (NSOA), weighted, with the next norm's gamma") {
    const double eps = 1e-5;
    loaq::ObjectiveStats<loaq::NormalizedOutput> st(s.W, {1, 1, eps, true});
    REQUIRE(st.add(s.Xh, s.X, s.Rh, s.R).ok());
    const auto prep = undamped(st.stats().hessian());
    const Eigen::MatrixXd Wt = loaq::closed_form_target<double>(
        s.W, &st.stats().cross(), &st.stats().residual_cross(), prep, st.weights());
    // Direct: min over vec(Q) of Σ_t ‖γ ⊙ ŝ_t (r̂_t + Q x̂_t) − γ ⊙ s_t (r_t + W x_t)‖², one big
    // least-squares problem in all m·n unknowns, for two different γ.
    const Eigen::VectorXd s_fp = loaq::inverse_rms(s.R + s.W * s.X, eps);
    const Eigen::VectorXd s_q = loaq::inverse_rms(s.Rh + s.W * s.Xh, eps);
    for (int k = 0; k < 2; ++k) {
      const Eigen::VectorXd gamma = k == 0 ? Eigen::VectorXd::Ones(m)
                                           : Eigen::VectorXd(Eigen::VectorXd::Random(m).array() + 2.0);
      Eigen::MatrixXd A = Eigen::MatrixXd::Zero(m * T, m * n);
      Eigen::VectorXd b(m * T);
      for (Index t = 0; t < T; ++t)
        for (Index i = 0; i < m; ++i) {
          for (Index j = 0; j < n; ++j) A(t * m + i, i * n + j) = gamma[i] * s_q[t] * s.Xh(j, t);
          b[t * m + i] = gamma[i] * (s_fp[t] * (s.R(i, t) + s.W.row(i).dot(s.X.col(t))) - s_q[t] * s.Rh(i, t));
        }
      const Eigen::VectorXd q = A.colPivHouseholderQr().solve(b);
      const Eigen::MatrixXd direct = Eigen::Map<const Eigen::MatrixXd>(q.data(), n, m).transpose();
      CHECK(relative(Wt, direct) < 1e-10);
    }
  }
  SUBCASE("RMSNorm-aware output, output-matching factors (unweighted)") {
    const double eps = 1e-5;
    loaq::ObjectiveStats<loaq::NormalizedOutput> st(s.W, {alpha, beta, eps, false});
    REQUIRE(st.add(s.Xh, s.X, s.Rh, s.R).ok());
    const auto prep = undamped(st.stats().hessian());
    const Eigen::MatrixXd Wt = loaq::closed_form_target<double>(
        s.W, &st.stats().cross(), &st.stats().residual_cross(), prep, st.weights());
    const Eigen::VectorXd mt = loaq::inverse_rms(s.R + s.W * s.X, eps).cwiseQuotient(
        loaq::inverse_rms(s.Rh + s.W * s.Xh, eps));
    const Eigen::MatrixXd Y = s.W * s.Xh + alpha * s.W * (s.X * mt.asDiagonal() - s.Xh) +
                              beta * (s.R * mt.asDiagonal() - s.Rh);
    CHECK(relative(Wt, least_squares(s.Xh, Y)) < 1e-10);
  }
}

TEST_CASE("with identical streams every target is W itself") {
  std::mt19937 rng(53);
  const Index m = 8, n = 12;
  const Streams s = drifted_streams(m, n, 100, rng);
  loaq::ObjectiveStats<loaq::LinearOutput> lin(n, {1});
  loaq::ObjectiveStats<loaq::ResidualOutput> res(n, m, {1, 1});
  loaq::ObjectiveStats<loaq::NormalizedOutput> nw(s.W, {1, 1, 1e-5, true}), nu(s.W, {1, 1, 1e-5, false});
  REQUIRE(lin.add(s.X, s.X).ok());
  REQUIRE(res.add(s.X, s.X, s.R, s.R).ok());
  REQUIRE(nw.add(s.X, s.X, s.R, s.R).ok());
  REQUIRE(nu.add(s.X, s.X, s.R, s.R).ok());
  auto target = [&](const auto& st) {
    loaq::PreparedHessian<double> prep;
    REQUIRE(loaq::prepare_hessian(st.stats().hessian(), true, loaq::DampingPolicy{}, prep).ok());
    const Eigen::MatrixXd* G = st.stats().has_residual_cross() ? &st.stats().residual_cross() : nullptr;
    return Eigen::MatrixXd(loaq::closed_form_target<double>(s.W, &st.stats().cross(), G, prep, st.weights()));
  };
  CHECK(relative(target(lin), s.W) < 1e-14);
  CHECK(relative(target(res), s.W) < 1e-14);
  CHECK(relative(target(nw), s.W) < 1e-14);
  CHECK(relative(target(nu), s.W) < 1e-14);
}

TEST_CASE_TEMPLATE("GPTQ on the alpha = 1 linear target is the exact sequential minimizer of "
                   "||W X - Q Xhat||^2", Scalar, float, double) {
  std::mt19937 rng(59);
  Index agree = 0, total = 0;
  for (int trial = 0; trial < 4; ++trial) {
    const Streams s = drifted_streams(5, 12, 60, rng, 0.3);
    loaq::ObjectiveStats<loaq::LinearOutput> st(12, {1.0});
    REQUIRE(st.add(s.Xh, s.X).ok());
    for (int group : {-1, 4}) {
      loaq::GptqOptions opt;
      opt.group_size = group;
      opt.block_size = group > 0 ? group : 5;
      opt.damping.percdamp = 0;
      loaq::UniformGrid<Scalar, 3> grid(false);
      loaq::QuantizedWeight<Scalar> out;
      REQUIRE(loaq::solve_objective(s.W.cast<Scalar>(), st, grid, opt, out).ok());
      Eigen::MatrixXi codes;
      loaq_test::sequential_minimizer(s.W * s.X, s.Xh, loaq::UniformGrid<double, 3>(false), group, &codes);
      agree += (out.codes.template cast<int>().array() == codes.array()).count();
      total += codes.size();
    }
  }
  MESSAGE("codes identical to the brute-force sequential minimizer: " << agree << "/" << total);
  // float + FMA contraction (-march=native) can flip a near-tie, and a flip cascades along its
  // row; double must agree almost everywhere.
  CHECK(double(agree) / double(total) >= (std::is_same_v<Scalar, float> ? 0.97 : 0.99));
}

TEST_CASE("target solves reject mismatched statistics") {
  std::mt19937 rng(61);
  const Streams s = drifted_streams(4, 6, 30, rng);
  loaq::CalibrationAccumulator<double> acc(6, 4);
  REQUIRE(acc.add_batch(s.Xh, s.X, s.Rh, s.R).ok());
  loaq::QuantizedWeight<double> out;
  loaq::UniformGrid<double, 4> grid;
  const Eigen::MatrixXd badG = Eigen::MatrixXd::Zero(3, 6);
  CHECK(loaq::solve_target(s.W, acc.hessian(), &acc.cross(), &badG, {}, grid, {}, out).status ==
        loaq::Status::ShapeMismatch);
  Eigen::MatrixXd nanC = acc.cross();
  nanC(0, 0) = NAN;
  CHECK(loaq::solve_target(s.W, acc.hessian(), &nanC, nullptr, {}, grid, {}, out).status ==
        loaq::Status::NonFiniteInput);
  CHECK(loaq::solve_target(s.W, acc.hessian(), &acc.cross(), nullptr, {NAN, 1}, grid, {}, out).status ==
        loaq::Status::InvalidArgument);
  loaq::ObjectiveStats<loaq::NormalizedOutput> st(s.W, {});
  CHECK(st.add(s.Xh, s.X, s.Rh.topRows(3), s.R).status == loaq::Status::ShapeMismatch);
  CHECK(loaq::solve_objective(s.W, st, grid, {}, out).status == loaq::Status::InvalidArgument);
}

namespace {
// The target solve on U: W* formed (closed_form_target), then GPTQ on it.
template <class Scalar>
std::pair<loaq::QuantizedWeight<Scalar>, loaq::Matrix<Scalar>> solve_on_u(
    const loaq_test::Problem& pb, const Eigen::MatrixXd* G, const loaq::TargetWeights& tw,
    const loaq::GptqOptions& opt) {
  loaq::PreparedHessian<Scalar> prep;
  REQUIRE(loaq::prepare_hessian(pb.H, opt.act_order, opt.damping, prep).ok());
  REQUIRE(prep.upper.size() == pb.H.size());
  loaq::Matrix<Scalar> Wt = loaq::closed_form_target<Scalar>(pb.W, &pb.C, G, prep, tw);
  loaq::QuantizedWeight<Scalar> out;
  REQUIRE(loaq::internal::solve_columns(Wt, prep, loaq::UniformGrid<Scalar, 4>(false), opt,
                                        nullptr, out, nullptr).ok());
  return {out, Wt};
}
}  // namespace

// In the solver's scalar, solve_target never forms W* = W + B·Ĥ⁻¹: it solves B·R⁻ᵀ blockwise
// on the left-looking form and the loop starts each block from the target's share (targets.hpp).
// That must be U's solve up to rounding, for every grouping the left-looking loop takes, and
// its W* (formed only when asked for) must be U's. m = 150, n = 300: ragged panel and block.
TEST_CASE_TEMPLATE("the left-looking target solve is the one on U", Scalar, float, double) {
  std::mt19937 rng(83);
  const Index m = 150, n = 300;
  const loaq_test::Problem pb = loaq_test::make_problem(m, n, rng, 3);
  const loaq::UniformGrid<Scalar, 4> grid(false);
  const bool is_float = std::is_same_v<Scalar, float>;
  struct Case { int block, group; bool act, stat, residual; double alpha, beta; };
  for (const Case c : {Case{128, -1, false, false, true, 1, 1}, Case{128, 32, false, false, true, 1, 1},
                       Case{64, 64, true, false, false, 0.5, 0}, Case{128, 128, true, true, true, 0.7, 0.3},
                       Case{128, 128, false, false, true, 0, 1}}) {
    CAPTURE(c.block);
    CAPTURE(c.group);
    CAPTURE(c.act);
    CAPTURE(c.alpha);
    const loaq::GptqOptions opt = loaq_test::blocked_options(c.block, c.group, c.act, c.stat);
    REQUIRE(loaq::internal::left_looking_fits(opt));
    const Eigen::MatrixXd* G = c.residual ? &pb.G : nullptr;
    const loaq::TargetWeights tw{c.alpha, c.beta};
    loaq::QuantizedWeight<Scalar> out, quiet;
    loaq::Matrix<Scalar> Wt;
    REQUIRE(loaq::solve_target(pb.W, pb.H, &pb.C, G, tw, grid, opt, out, nullptr, &Wt).ok());
    REQUIRE(loaq::solve_target(pb.W, pb.H, &pb.C, G, tw, grid, opt, quiet).ok());
    CHECK(quiet.weight == out.weight);  // asking for W* does not change the solve
    CHECK(quiet.loss == out.loss);

    // With dynamic groups it is the left-looking route without W*, bit for bit: the drift
    // D_b = (B·R⁻ᵀ)_b·U_bb handed to the loop. Per-row and static parameters are fitted on W*, which is formed.
    const bool dynamic = c.group > 0 && !c.stat;
    loaq::PreparedHessian<Scalar> left;
    REQUIRE(loaq::internal::prepare_hessian_as(pb.H, c.act, opt.damping, left, opt.factor,
                                               Index(c.block)).ok());
    loaq::Matrix<Scalar> D = loaq::internal::target_drift<Scalar>(
        pb.W, &pb.C, G, left.perm, left.permuted(), left.log4_scale, tw);
    loaq::internal::left_target_drift(D, left.left_factor, left.left_block);
    loaq::QuantizedWeight<Scalar> by_hand;
    REQUIRE(loaq::internal::solve_columns(pb.W, left, grid, opt, nullptr, by_hand, nullptr, &D).ok());
    if (dynamic) CHECK(by_hand.weight == out.weight);

    const auto [on_u, Wt_u] = solve_on_u<Scalar>(pb, G, tw, opt);
    const double target_error = (Wt - Wt_u).template cast<double>().norm() /
                                (Wt_u - pb.W.cast<Scalar>()).template cast<double>().norm();
    CHECK(target_error < (is_float ? 1e-4 : 1e-11));
    const double same = double((out.codes.array() == on_u.codes.array()).count()) / double(m * n);
    CHECK(same >= (is_float ? 0.999 : 1.0));
    CHECK(out.loss == doctest::Approx(on_u.loss).epsilon(is_float ? 1e-4 : 1e-11));
  }
}

// A dead column (H_jj = 0) makes the loop zero W's column; only U's route zeroes the target's
// too, so such a solve takes it, bit for bit. Likewise FactorPrecision::Double.
TEST_CASE("target solves with a dead column or a double factor stay on U") {
  std::mt19937 rng(89);
  const loaq_test::Problem pb = loaq_test::make_problem(40, 96, rng, 3, 2);  // columns 3, 8 dead
  loaq::GptqOptions opt;
  opt.block_size = 32;
  opt.group_size = 32;
  const loaq::TargetWeights tw{1, 1};
  const loaq::UniformGrid<float, 4> grid(false);
  loaq::QuantizedWeight<float> out;
  loaq::Matrix<float> Wt;
  REQUIRE(loaq::solve_target(pb.W, pb.H, &pb.C, &pb.G, tw, grid, opt, out, nullptr, &Wt).ok());
  const auto [on_u, Wt_u] = solve_on_u<float>(pb, &pb.G, tw, opt);
  CHECK(out.weight == on_u.weight);
  CHECK(Wt == Wt_u);
  for (const Index j : {3, 8}) CHECK(out.weight.col(j).isZero(0));

  const loaq_test::Problem live = loaq_test::make_problem(40, 96, rng, 3);
  opt.factor = loaq::FactorPrecision::Double;
  REQUIRE(loaq::solve_target(live.W, live.H, &live.C, &live.G, tw, grid, opt, out).ok());
  loaq::PreparedHessian<float> prep;
  REQUIRE(loaq::prepare_hessian(live.H, false, opt.damping, prep, opt.factor).ok());
  loaq::QuantizedWeight<float> expected;
  REQUIRE(loaq::internal::solve_columns(
              loaq::closed_form_target<float>(live.W, &live.C, &live.G, prep, tw), prep, grid, opt,
              nullptr, expected, nullptr).ok());
  CHECK(out.weight == expected.weight);
}
