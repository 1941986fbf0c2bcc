// GPTQ solver properties: exact sequential optimality, loss identity, act-order, groups,
// dead columns, RTN equivalence on a diagonal Hessian, bad input.
#include <doctest/doctest.h>

#include "../oracle.hpp"
#include "../support.hpp"

using loaq::Index;

namespace {

// H = 2·X̂X̂ᵀ for n × T inputs, as the reference's add_batch with one sequence.
Eigen::MatrixXd gram(const Eigen::MatrixXd& X) { return 2.0 * X * X.transpose(); }

}  // namespace

TEST_CASE_TEMPLATE("GPTQ equals the exact sequential minimizer of ||W X - Q X||^2", Scalar, float,
                   double) {
  std::mt19937 rng(7);
  Index agree = 0, total = 0;
  for (int trial = 0; trial < 6; ++trial) {
    const Index m = 5, n = 12, T = 60;
    const Eigen::MatrixXd X = loaq_test::random_inputs(n, T, rng);
    const Eigen::MatrixXd W = loaq_test::random_matrix<double>(m, n, rng);
    for (int group : {-1, 4}) {
      for (bool sym : {false, true}) {
        loaq::GptqOptions opt;
        opt.group_size = group;
        opt.block_size = group > 0 ? group : 5;  // the oracle fits groups on the updated W
        opt.damping.percdamp = 0;                // the oracle solves the undamped problem
        loaq::QuantizedWeight<Scalar> out;
        REQUIRE(loaq::gptq(W.cast<Scalar>(), gram(X), loaq::UniformGrid<Scalar, 3>(sym), opt, out).ok());
        Eigen::MatrixXi codes;
        loaq_test::sequential_minimizer(W * X, X, loaq::UniformGrid<double, 3>(sym), group, &codes);
        agree += (out.codes.template cast<int>().array() == codes.array()).count();
        total += codes.size();
      }
    }
  }
  MESSAGE("codes identical to the brute-force sequential minimizer: " << agree << "/" << total);
  // float + FMA contraction (-march=native) can flip a near-tie, and a flip cascades along its
  // row; double must agree almost everywhere.
  CHECK(double(agree) / double(total) >= (std::is_same_v<Scalar, float> ? 0.97 : 0.99));
}

TEST_CASE_TEMPLATE("GPTQ loss equals half the damped proxy error of W - Q", Scalar, float, double) {
  std::mt19937 rng(11);
  const Index m = 16, n = 40;
  const Eigen::MatrixXd X = loaq_test::random_inputs(n, 200, rng);
  const Eigen::MatrixXd H = gram(X);
  const Eigen::MatrixXd W = loaq_test::random_matrix<double>(m, n, rng);
  for (bool act : {false, true}) {
    loaq::GptqOptions opt;
    opt.act_order = act;
    opt.block_size = 16;
    loaq::QuantizedWeight<Scalar> out;
    loaq::SolveDiagnostics diag;
    REQUIRE(loaq::gptq(W.cast<Scalar>(), H, loaq::UniformGrid<Scalar, 4>(false), opt, out, &diag).ok());
    Eigen::MatrixXd Hd = H;
    Hd.diagonal().array() += diag.damping;
    const Eigen::MatrixXd D = W - out.weight.template cast<double>();
    const double proxy = 0.5 * (D * Hd).cwiseProduct(D).sum();
    CHECK(out.loss == doctest::Approx(proxy).epsilon(std::is_same_v<Scalar, float> ? 1e-3 : 1e-9));
    CHECK(diag.column_loss.sum() == doctest::Approx(out.loss));
  }
}

TEST_CASE_TEMPLATE("act-order equals GPTQ on the explicitly permuted problem", Scalar, float, double) {
  std::mt19937 rng(3);
  const Index m = 12, n = 48;
  const Eigen::MatrixXd X = loaq_test::random_inputs(n, 150, rng);
  const Eigen::MatrixXd H = gram(X);
  const Eigen::MatrixXd W = loaq_test::random_matrix<double>(m, n, rng);
  loaq::UniformGrid<Scalar, 4> grid(false);
  for (int group : {-1, 16}) {
    loaq::GptqOptions opt;
    opt.act_order = true;
    opt.group_size = group;
    loaq::QuantizedWeight<Scalar> a, b;
    loaq::SolveDiagnostics diag;
    REQUIRE(loaq::gptq(W.cast<Scalar>(), H, grid, opt, a, &diag).ok());
    // The walk order is by descending diag(H), stable.
    for (std::size_t j = 1; j < diag.perm.size(); ++j)
      CHECK(H(diag.perm[j - 1], diag.perm[j - 1]) >= H(diag.perm[j], diag.perm[j]));
    const Eigen::MatrixXd Wp = W(Eigen::all, diag.perm);
    const Eigen::MatrixXd Hp = H(diag.perm, diag.perm);
    opt.act_order = false;
    REQUIRE(loaq::gptq(Wp.cast<Scalar>(), Hp, grid, opt, b).ok());
    // Undo the permutation: identical codes and values, column by column.
    for (Index j = 0; j < n; ++j) {
      CHECK((a.codes.col(diag.perm[std::size_t(j)]) == b.codes.col(j)));
      CHECK(a.g_idx[diag.perm[std::size_t(j)]] == b.g_idx[j]);
    }
    CHECK(a.loss == doctest::Approx(b.loss));
  }
}

TEST_CASE_TEMPLATE("static groups take parameters from the original weight, dynamic ones do not",
                   Scalar, float, double) {
  std::mt19937 rng(5);
  const Index m = 8, n = 64, g = 16;
  const Eigen::MatrixXd X = loaq_test::random_inputs(n, 200, rng);
  const Eigen::MatrixXd W = loaq_test::random_matrix<double>(m, n, rng);
  const loaq::Matrix<Scalar> Ws = W.cast<Scalar>();
  loaq::UniformGrid<Scalar, 3> grid(false);
  loaq::GptqOptions opt;
  opt.group_size = int(g);
  opt.block_size = 16;
  opt.static_groups = true;
  opt.act_order = true;
  loaq::QuantizedWeight<Scalar> st, dyn;
  REQUIRE(loaq::gptq(Ws, gram(X), grid, opt, st).ok());
  loaq::RowParams<Scalar> p;
  for (Index k = 0; k < n / g; ++k) {
    loaq::fit_params(grid, Ws.middleCols(k * g, g), loaq::ParamSearch{}, p);
    CHECK((st.scales.col(k) == p.scale));
    CHECK((st.zeros.col(k) == p.zero));
  }
  for (Index j = 0; j < n; ++j) CHECK(st.g_idx[j] == j / g);
  opt.static_groups = false;
  opt.act_order = false;
  REQUIRE(loaq::gptq(Ws, gram(X), grid, opt, dyn).ok());
  // Group 0 starts before any update: same parameters. Later groups see compensated weights.
  loaq::fit_params(grid, Ws.leftCols(g), loaq::ParamSearch{}, p);
  CHECK((dyn.scales.col(0) == p.scale));
  CHECK((dyn.scales.rightCols(n / g - 1) - st.scales.rightCols(n / g - 1)).cwiseAbs().maxCoeff() > 0);
  // Every stored value decodes from its code with its group's parameters.
  for (Index j = 0; j < n; ++j)
    for (Index i = 0; i < m; ++i)
      CHECK(dyn.weight(i, j) == grid.decode(dyn.codes(i, j), dyn.scales(i, dyn.g_idx[j]),
                                            dyn.zeros(i, dyn.g_idx[j])));
}

TEST_CASE_TEMPLATE("dead columns are quantized to zero and do not break the solve", Scalar, float,
                   double) {
  std::mt19937 rng(9);
  const Index m = 6, n = 20;
  Eigen::MatrixXd X = loaq_test::random_inputs(n, 100, rng);
  X.row(3).setZero();
  X.row(11).setZero();
  const Eigen::MatrixXd W = loaq_test::random_matrix<double>(m, n, rng);
  for (bool sym : {false, true}) {
    loaq::GptqOptions opt;
    opt.act_order = sym;
    loaq::QuantizedWeight<Scalar> out;
    loaq::SolveDiagnostics diag;
    REQUIRE(loaq::gptq(W.cast<Scalar>(), gram(X), loaq::UniformGrid<Scalar, 4>(sym), opt, out, &diag).ok());
    CHECK(diag.dead == std::vector<Index>{3, 11});
    CHECK(out.weight.col(3).isZero(0));
    CHECK(out.weight.col(11).isZero(0));
    CHECK(out.weight.allFinite());
    CHECK(diag.column_loss[3] == 0);
  }
}

TEST_CASE_TEMPLATE("a float Hessian is factored where it lies, with the bits of its double copy",
                   Scalar, float, double) {
  // prepare_hessian copies H only for dead columns or act-order, in H's own scalar, which holds
  // those changes exactly: the same values as the double copy it used to make, so the same bits.
  std::mt19937 rng(19);
  const Index n = 40;
  Eigen::MatrixXd X = loaq_test::random_inputs(n, 200, rng);
  for (bool dead : {false, true}) {
    if (dead) X.row(7).setZero();
    const Eigen::MatrixXf Hf = gram(X).cast<float>();
    const Eigen::MatrixXf Hf_copy = Hf;
    for (bool act_order : {false, true}) {
      for (auto precision : {loaq::FactorPrecision::Solver, loaq::FactorPrecision::Double}) {
        loaq::PreparedHessian<Scalar> from_float, from_double;
        REQUIRE(loaq::prepare_hessian(Hf, act_order, loaq::DampingPolicy{}, from_float, precision).ok());
        REQUIRE(loaq::prepare_hessian(Hf.cast<double>(), act_order, loaq::DampingPolicy{}, from_double,
                                      precision).ok());
        CHECK((from_float.upper == from_double.upper));
        CHECK((from_float.upper_double == from_double.upper_double));
        CHECK(from_float.perm == from_double.perm);
        CHECK(from_float.dead == from_double.dead);
        CHECK(from_float.damping == from_double.damping);
        CHECK(from_float.log4_scale == from_double.log4_scale);
        CHECK(from_float.dead[7] == dead);
      }
    }
    CHECK((Hf == Hf_copy));  // never modified, copied or not
  }
  // An expression (no storage to read in place) is evaluated once, to the same bits; a strided
  // view is read in place.
  const Eigen::MatrixXd H = gram(X);
  Eigen::MatrixXd wide = Eigen::MatrixXd::Zero(2 * n, 2 * n);
  wide.topLeftCorner(n, n) = H;
  loaq::PreparedHessian<Scalar> plain, expr, view;
  REQUIRE(loaq::prepare_hessian(H, false, loaq::DampingPolicy{}, plain).ok());
  REQUIRE(loaq::prepare_hessian(H * 1.0, false, loaq::DampingPolicy{}, expr).ok());
  REQUIRE(loaq::prepare_hessian(wide.topLeftCorner(n, n), false, loaq::DampingPolicy{}, view).ok());
  CHECK((expr.upper == plain.upper));
  CHECK((view.upper == plain.upper));
}

TEST_CASE_TEMPLATE("with a diagonal Hessian GPTQ is round-to-nearest", Scalar, float, double) {
  std::mt19937 rng(13);
  const Index m = 10, n = 33;
  const loaq::Matrix<Scalar> W = loaq_test::random_matrix<Scalar>(m, n, rng, 1.0);
  Eigen::VectorXd d = Eigen::VectorXd::Random(n).cwiseAbs().array() + 0.5;
  const Eigen::MatrixXd H = d.asDiagonal();
  for (int group : {-1, 8}) {
    for (bool sym : {false, true}) {
      loaq::UniformGrid<Scalar, 3> grid(sym);
      loaq::GptqOptions opt;
      opt.group_size = group;
      loaq::QuantizedWeight<Scalar> g, r;
      REQUIRE(loaq::gptq(W, H, grid, opt, g).ok());
      REQUIRE(loaq::rtn(W, grid, group, loaq::ParamSearch{}, r).ok());
      CHECK((g.codes == r.codes));
      CHECK((g.weight == r.weight));
      CHECK((g.scales == r.scales));
    }
  }
}

TEST_CASE_TEMPLATE("GPTQ beats RTN on correlated inputs for every grid", Scalar, float, double) {
  std::mt19937 rng(17);
  const Index m = 32, n = 64;
  const Eigen::MatrixXd X = loaq_test::random_inputs(n, 400, rng);
  const Eigen::MatrixXd H = gram(X);
  const loaq::Matrix<Scalar> W = loaq_test::random_matrix<Scalar>(m, n, rng, 1.0);
  auto proxy = [&](const auto& Q) {
    const Eigen::MatrixXd D = W.template cast<double>() - Q.template cast<double>();
    return (D * H).cwiseProduct(D).sum();
  };
  auto compare = [&](const auto& grid, const char* name) {
    loaq::GptqOptions opt;
    opt.group_size = 32;
    loaq::QuantizedWeight<Scalar> g, r;
    REQUIRE(loaq::gptq(W, H, grid, opt, g).ok());
    REQUIRE(loaq::rtn(W, grid, 32, loaq::ParamSearch{}, r).ok());
    CAPTURE(name);
    CHECK(proxy(g.weight) < proxy(r.weight));
  };
  compare(loaq::UniformGrid<Scalar, 3>(false), "asym");
  compare(loaq::UniformGrid<Scalar, 3>(true), "sym");
  compare(loaq::SignedSymmetricGrid<Scalar, 3>(), "signed");
  compare(loaq::nf4_grid<Scalar>(), "nf4");
  compare(loaq::e2m1_grid<Scalar>(), "e2m1");
}

TEST_CASE("GPTQ rejects bad input with a status, never NaN") {
  std::mt19937 rng(19);
  const Eigen::MatrixXd X = loaq_test::random_inputs(8, 40, rng);
  const Eigen::MatrixXd H = gram(X);
  Eigen::MatrixXf W = loaq_test::random_matrix<float>(4, 8, rng);
  loaq::UniformGrid<float, 4> grid;
  loaq::QuantizedWeight<float> out;
  loaq::GptqOptions opt;
  CHECK(loaq::gptq(W, Eigen::MatrixXd(H.topLeftCorner(7, 7)), grid, opt, out).status ==
        loaq::Status::ShapeMismatch);
  Eigen::MatrixXd Hn = H;
  Hn(2, 5) = std::nan("");
  CHECK(loaq::gptq(W, Hn, grid, opt, out).status == loaq::Status::NonFiniteInput);
  Eigen::MatrixXf Wn = W;
  Wn(1, 1) = INFINITY;
  CHECK(loaq::gptq(Wn, H, grid, opt, out).status == loaq::Status::NonFiniteInput);
  opt.block_size = 0;
  CHECK(loaq::gptq(W, H, grid, opt, out).status == loaq::Status::InvalidArgument);
  opt.block_size = 128;
  opt.group_size = 0;
  CHECK(loaq::gptq(W, H, grid, opt, out).status == loaq::Status::InvalidArgument);
  opt.group_size = -1;
  // Strongly indefinite: damping cannot rescue it; the message names the pivot.
  Eigen::MatrixXd Hi = H;
  Hi(0, 0) = -2 * H.diagonal().mean();
  opt.damping.max_attempts = 2;
  const loaq::Report r = loaq::gptq(W, Hi, grid, opt, out);
  CHECK(r.status == loaq::Status::NotPositiveDefinite);
  CHECK(r.message.find("pivot") != std::string::npos);
  opt.damping.max_attempts = 4;
  // Rank-deficient (fewer tokens than features) but damping makes it solvable.
  const Eigen::MatrixXd Xr = loaq_test::random_inputs(8, 3, rng);
  loaq::SolveDiagnostics diag;
  REQUIRE(loaq::gptq(W, gram(Xr), grid, opt, out, &diag).ok());
  CHECK(out.weight.allFinite());
}

TEST_CASE_TEMPLATE("GPTAQ's correction in row panels equals the full-width formula", Scalar, float,
                   double) {
  // n = 300: three panels of 128 rows, the last one short.
  std::mt19937 rng(17);
  const Index n = 300;
  const loaq::Matrix<Scalar> d = loaq_test::random_matrix<Scalar>(n, n, rng, 1.0);
  loaq::Matrix<Scalar> U = loaq_test::random_matrix<Scalar>(n, n, rng, 1.0).template triangularView<Eigen::Upper>();
  U.diagonal() = U.diagonal().cwiseAbs().array() + Scalar(1);
  // The formula in double, with dense products: triu₁(d·Uᵀ)·U.
  const Eigen::MatrixXd dd = d.template cast<double>(), Ud = U.template cast<double>();
  const Eigen::MatrixXd A = dd * Ud.transpose();
  const Eigen::MatrixXd expected = Eigen::MatrixXd(A.triangularView<Eigen::StrictlyUpper>()) * Ud;
  const loaq::Matrix<Scalar> P = loaq::internal::strictly_upper_product(d, U);
  const double tol = std::is_same<Scalar, float>::value ? 1e-5 : 1e-13;
  CHECK((P.template cast<double>() - expected).norm() / expected.norm() < tol);
  // Zero on and below the diagonal, exactly.
  CHECK(loaq::Matrix<Scalar>(P.template triangularView<Eigen::Lower>()).isZero(0));
}

namespace {
// One solve on a Hessian prepared in the given form (left_block 0: the inverse factor U).
template <class Scalar>
loaq::QuantizedWeight<Scalar> solve_in_form(const Eigen::MatrixXd& W, const Eigen::MatrixXd& H,
                                            const loaq::GptqOptions& opt, Index left_block) {
  loaq::PreparedHessian<Scalar> prep;
  REQUIRE(loaq::internal::prepare_hessian_as(H, opt.act_order, opt.damping, prep, opt.factor,
                                             left_block).ok());
  CHECK(prep.upper.size() == (left_block ? 0 : H.size()));
  CHECK(prep.left_factor.size() == (left_block ? H.size() : 0));
  loaq::QuantizedWeight<Scalar> out;
  REQUIRE(loaq::internal::solve_columns(W.cast<Scalar>(), prep, loaq::UniformGrid<Scalar, 4>(false),
                                        opt, nullptr, out, nullptr).ok());
  return out;
}
}  // namespace

// gptq() runs left-looking on R (R·Rᵀ = H) and the inverses of its diagonal blocks instead of on
// U = R⁻¹: every block must start where the right-looking loop leaves it, which is what a group's
// parameters are taken from. m = 150: a ragged row panel; n = 300: a ragged last block.
TEST_CASE_TEMPLATE("the left-looking loop is the right-looking one, group by group", Scalar, float,
                   double) {
  std::mt19937 rng(29);
  const Index m = 150, n = 300;
  const loaq_test::Problem pb = loaq_test::make_problem(m, n, rng, 2, 3);  // 3 dead columns
  struct Case { int block, group; bool act, stat; };
  for (const Case c : {Case{128, -1, false, false}, Case{128, 128, false, false},
                       Case{128, 32, false, false}, Case{64, 64, true, false},
                       Case{128, 32, true, true}, Case{128, 48, false, false},
                       Case{64, 128, false, false}}) {
    CAPTURE(c.block);
    CAPTURE(c.group);
    CAPTURE(c.act);
    const loaq::GptqOptions opt = loaq_test::blocked_options(c.block, c.group, c.act, c.stat);
    const auto right = solve_in_form<Scalar>(pb.W, pb.H, opt, 0);
    loaq::QuantizedWeight<Scalar> out;
    REQUIRE(loaq::gptq(pb.W.cast<Scalar>(), pb.H, loaq::UniformGrid<Scalar, 4>(false), opt, out).ok());
    // A group that reaches past its block (48 in 128, 128 in 64) needs U: gptq() keeps it.
    const bool fits = loaq::internal::left_looking_fits(opt);
    CHECK(fits == (c.group < 0 || c.stat || c.block % c.group == 0));
    if (!fits) {
      CHECK(out.weight == right.weight);
      loaq::PreparedHessian<Scalar> prep;
      REQUIRE(loaq::internal::prepare_hessian_as(pb.H, c.act, opt.damping, prep, opt.factor,
                                                 Index(c.block)).ok());
      loaq::QuantizedWeight<Scalar> refused;
      CHECK(loaq::internal::solve_columns(pb.W.cast<Scalar>(), prep,
                                          loaq::UniformGrid<Scalar, 4>(false), opt, nullptr,
                                          refused, nullptr).status == loaq::Status::InvalidArgument);
      CHECK(refused.weight.size() == 0);
      continue;
    }
    const auto left = solve_in_form<Scalar>(pb.W, pb.H, opt, c.block);
    CHECK(out.weight == left.weight);  // gptq() is the left-looking solve
    CHECK(out.codes == left.codes);
    // Both forms agree to rounding: in double every code, in float all but a few rounding ties.
    const double same = double((left.codes.array() == right.codes.array()).count()) / double(m * n);
    CHECK(same >= (std::is_same_v<Scalar, double> ? 1.0 : 0.999));
    const double scale_error = (left.scales - right.scales).cwiseAbs().maxCoeff() /
                               right.scales.cwiseAbs().maxCoeff();
    CHECK(scale_error < (std::is_same_v<Scalar, double> ? 1e-12 : 1e-4));
    CHECK(left.loss == doctest::Approx(right.loss).epsilon(std::is_same_v<Scalar, float> ? 1e-4 : 1e-12));
    for (const Index j : {3, 8, 13}) CHECK(left.weight.col(j).isZero(0));  // the dead columns
  }
}

// The float accuracy check guards both forms alike: U (a group wider than its block) and the
// left-looking form are redone in double when float cannot hold the damped inverse.
TEST_CASE("an inaccurate float factor is redone in double, whichever form the loop runs on") {
  std::mt19937 rng(31);
  const Index m = 40, n = 200;
  Eigen::MatrixXd X = loaq_test::random_matrix<double>(n, 60, rng);  // rank 60 of 200
  for (Index i = 0; i < n; i += 5) X.row(i) *= 300;
  const Eigen::MatrixXd H = gram(X);
  const Eigen::MatrixXf W = loaq_test::random_matrix<float>(m, n, rng);
  for (const double percdamp : {1e-2, 1e-8}) {  // κ about 1e2, then far beyond float's 1e5
    for (const int block : {40, 30}) {          // left-looking, then U
      CAPTURE(percdamp);
      CAPTURE(block);
      loaq::GptqOptions opt;
      opt.damping.percdamp = percdamp;
      opt.group_size = 40;
      opt.block_size = block;
      CHECK(loaq::internal::left_looking_fits(opt) == (block == 40));
      loaq::QuantizedWeight<float> out;
      loaq::SolveDiagnostics diag;
      REQUIRE(loaq::gptq(W, H, loaq::UniformGrid<float, 4>(), opt, out, &diag).ok());
      CHECK(diag.double_fallback == (percdamp < 1e-4));
      CHECK(out.weight.allFinite());
    }
  }
}

// A factor whose diagonal block's inverse overflows float (R unit upper triangular with −1 above
// the diagonal: R⁻¹ grows as 2^k) and no damping: U's factorization raises the damping for that,
// so the left-looking form must not fail where U succeeds. gptq() falls back to U and gets its
// result bit for bit.
TEST_CASE("a left-looking form beyond float's range falls back to U and its damping") {
  std::mt19937 rng(37);
  const Index m = 8, n = 160;
  Eigen::MatrixXd R = Eigen::MatrixXd::Identity(n, n);
  for (Index j = 0; j < n; ++j)
    for (Index i = 0; i < j; ++i) R(i, j) = -1.0;
  const Eigen::MatrixXd H = R * R.transpose();
  const Eigen::MatrixXd W = loaq_test::random_matrix<double>(m, n, rng);
  loaq::GptqOptions opt;
  opt.group_size = 128;
  opt.damping.percdamp = 0;
  REQUIRE(loaq::internal::left_looking_fits(opt));
  loaq::QuantizedWeight<float> out;
  loaq::SolveDiagnostics diag;
  REQUIRE(loaq::gptq(W.cast<float>(), H, loaq::UniformGrid<float, 4>(false), opt, out, &diag).ok());
  CHECK(out.weight.allFinite());
  CHECK(diag.factor_attempts > 1);  // the damping was raised
  CHECK(diag.relative_damping > 0);
  loaq::PreparedHessian<float> prep;
  REQUIRE(loaq::internal::prepare_hessian_as(H, false, opt.damping, prep, opt.factor, Index(128)).ok());
  CHECK(prep.left_block == 0);  // the left-looking form was given up for U
  CHECK(prep.upper.size() == n * n);
  const auto right = solve_in_form<float>(W, H, opt, 0);
  CHECK(out.weight == right.weight);
  CHECK(out.codes == right.codes);
}

// GPTAQ runs left-looking too: its correction P = triu₁(d·Uᵀ)·U in the left-looking form holds,
// in block column b, triu₁(d·Uᵀ)_pb·U_bb above P_bb (gptaq.hpp), computed on R without U.
// Checked against the dense formula in double, then the solve against U's, group by group, with
// dead columns, act-order, a ragged block and a ragged row panel.
TEST_CASE_TEMPLATE("GPTAQ's left-looking solve is the one on U", Scalar, float, double) {
  std::mt19937 rng(41);
  const Index m = 150, n = 300;
  const loaq_test::Problem pb = loaq_test::make_problem(m, n, rng, 2, 3);  // 3 dead columns
  const bool is_float = std::is_same_v<Scalar, float>;
  const loaq::UniformGrid<Scalar, 4> grid(false);
  const double alpha = 0.25;
  struct Case { int block, group; bool act, stat; };
  for (const Case c : {Case{128, -1, false, false}, Case{128, 32, false, false},
                       Case{64, 64, true, false}, Case{128, 128, true, true}}) {
    CAPTURE(c.block);
    CAPTURE(c.group);
    CAPTURE(c.act);
    const loaq::GptqOptions opt = loaq_test::blocked_options(c.block, c.group, c.act, c.stat);
    REQUIRE(loaq::internal::left_looking_fits(opt));
    loaq::PreparedHessian<Scalar> left, on_u;
    REQUIRE(loaq::internal::prepare_hessian_as(pb.H, c.act, opt.damping, left, opt.factor,
                                               Index(c.block)).ok());
    REQUIRE(loaq::prepare_hessian(pb.H, c.act, opt.damping, on_u).ok());
    const loaq::Matrix<Scalar> P_left = loaq::internal::left_correction(
        loaq::internal::correction_input<Scalar>(pb.C, left), left.left_factor, left.left_block,
        alpha);
    const loaq::Matrix<Scalar> P = loaq::gptaq_correction(pb.C, on_u, alpha);
    // The dense formula in double on U: block column b is T_pb·U_bb over P_bb.
    const Eigen::MatrixXd U = on_u.upper.template cast<double>();
    const Eigen::MatrixXd d = loaq::internal::correction_input<double>(pb.C, on_u);
    const Eigen::MatrixXd T = alpha * Eigen::MatrixXd((d * U.transpose()).triangularView<Eigen::StrictlyUpper>());
    Eigen::MatrixXd expected = Eigen::MatrixXd::Zero(n, n);
    for (Index c0 = 0; c0 < n; c0 += c.block) {
      const Index w = std::min<Index>(c.block, n - c0);
      expected.block(0, c0, c0 + w, w) = T.block(0, c0, c0 + w, w) * U.block(c0, c0, w, w);
      const Eigen::MatrixXd P_bb = P.block(c0, c0, w, w).template cast<double>();
      CHECK((expected.block(c0, c0, w, w) - P_bb).norm() <= (is_float ? 1e-4 : 1e-11) * P_bb.norm());
    }
    CHECK((P_left.template cast<double>() - expected).norm() / expected.norm() < (is_float ? 1e-4 : 1e-11));

    loaq::QuantizedWeight<Scalar> out, by_hand, right;
    REQUIRE(loaq::gptaq(pb.W.cast<Scalar>(), pb.H, pb.C, grid, opt, alpha, out).ok());
    REQUIRE(loaq::internal::solve_columns(pb.W.cast<Scalar>(), left, grid, opt, &P_left, by_hand,
                                          nullptr).ok());
    CHECK(out.weight == by_hand.weight);  // gptaq() is the left-looking solve
    REQUIRE(loaq::internal::solve_columns(pb.W.cast<Scalar>(), on_u, grid, opt, &P, right,
                                          nullptr).ok());
    const double same = double((out.codes.array() == right.codes.array()).count()) / double(m * n);
    CHECK(same >= (is_float ? 0.999 : 1.0));
    CHECK(out.loss == doctest::Approx(right.loss).epsilon(is_float ? 1e-4 : 1e-11));
    for (const Index j : {3, 8, 13}) CHECK(out.weight.col(j).isZero(0));  // the dead columns
  }
}
