// Inverse factor: UᵀU = (H + λI)⁻¹, the reference route, retries, statuses.
#include <doctest/doctest.h>

#include "../support.hpp"

using loaq::Index;

namespace {
// 2·X·Xᵀ of n random features over T tokens: a GPTQ Hessian.
Eigen::MatrixXd random_hessian(Index n, Index T, unsigned seed) {
  std::mt19937 rng(seed);
  const Eigen::MatrixXd X = loaq_test::random_inputs(n, T, rng);
  return 2.0 * X * X.transpose();
}
}  // namespace

TEST_CASE_TEMPLATE("inverse factor is the upper Cholesky factor of the damped inverse", Scalar,
                   float, double) {
  const Index n = 57;
  const Eigen::MatrixXd H = random_hessian(n, 300, 21);
  const Eigen::MatrixXd H_copy = H;
  loaq::InverseFactor<Scalar> f;
  f.compute(H.cast<Scalar>(), loaq::DampingPolicy{});
  REQUIRE(f.info() == loaq::Status::Success);
  CHECK(f.attempts() == 1);
  CHECK(f.failed_pivot() == -1);
  CHECK(f.damping() == doctest::Approx(0.01 * H.diagonal().mean()));
  // upper() is normalized: (H + λI)⁻¹ = 4^−k·UᵀU.
  const Eigen::MatrixXd U = f.upper().template cast<double>() * std::ldexp(1.0, -f.log4_scale());
  CHECK(U.isUpperTriangular(0));
  CHECK((U.diagonal().array() > 0).all());
  Eigen::MatrixXd Hd = H;
  Hd.diagonal().array() += f.damping();
  const double tol = std::is_same_v<Scalar, float> ? 1e-3 : 1e-10;
  CHECK((U.transpose() * U * Hd - Eigen::MatrixXd::Identity(n, n)).norm() < tol * std::sqrt(double(n)));
  // The reference route: chol(cholesky_inverse(chol(H)), upper).
  const Eigen::MatrixXd inv = Hd.llt().solve(Eigen::MatrixXd::Identity(n, n));
  const Eigen::MatrixXd U_ref = inv.llt().matrixU();
  CHECK((U - U_ref).norm() / U_ref.norm() < (std::is_same_v<Scalar, float> ? 1e-4 : 1e-10));
  CHECK((H == H_copy));  // the input is never modified
}

// Above n = 2048 a float factor inverts in steps of 128 columns (64 below and in double); the
// first step is ragged here (2100 = 16·128 + 52). It must be as accurate as the smaller steps.
TEST_CASE("a large float factor, inverted in wider steps, agrees with the double factor") {
  const Index n = 2100;
  const Eigen::MatrixXd H = random_hessian(n, 96, 23);
  loaq::InverseFactor<float> f;
  loaq::InverseFactor<double> d;
  REQUIRE(f.compute(H.cast<float>()).info() == loaq::Status::Success);
  REQUIRE(d.compute(H).info() == loaq::Status::Success);
  CHECK(f.residual(H) < 1e-3);
  REQUIRE(f.log4_scale() == d.log4_scale());
  const Eigen::MatrixXd Uf = f.upper().cast<double>();
  CHECK(Uf.isUpperTriangular(0));
  // float's rounding at this conditioning is about 1e-4; a wrong step would be off by O(1).
  CHECK((Uf - d.upper()).norm() / d.upper().norm() < 1e-3);
  // Block by block as well: an error confined to one step's columns would hide in the whole norm.
  for (Index j0 = 0; j0 < n; j0 += 128) {
    const Index w = std::min<Index>(128, n - j0);
    CAPTURE(j0);
    CHECK((Uf.middleCols(j0, w) - d.upper().middleCols(j0, w)).norm() /
              d.upper().middleCols(j0, w).norm() < 1e-3);
  }
}

TEST_CASE("inverse factor retries with escalating damping and reports what it used") {
  // Singular PSD (rank 3 in 6 dims) with zero damping fails, then succeeds on retry.
  std::mt19937 rng(23);
  const Eigen::MatrixXd X = loaq_test::random_inputs(6, 3, rng);
  const Eigen::MatrixXd H = X * X.transpose();
  loaq::InverseFactor<double> f;
  f.compute(H, loaq::DampingPolicy{0.0, 10.0, 4});
  REQUIRE(f.info() == loaq::Status::Success);
  CHECK(f.attempts() == 2);
  CHECK(f.failed_pivot() >= 0);
  CHECK(f.relative_damping() == doctest::Approx(1e-4));
  CHECK(f.upper().allFinite());

  // Indefinite beyond repair: status and the failing pivot in H's indexing.
  Eigen::MatrixXd D = Eigen::MatrixXd::Identity(5, 5) * 4.0;
  D(2, 2) = -5;  // mean diag 2.2: damping up to 1.0·2.2 cannot lift the −5 pivot
  f.compute(D, loaq::DampingPolicy{0.01, 10.0, 3});
  CHECK(f.info() == loaq::Status::NotPositiveDefinite);
  CHECK(f.failed_pivot() == 2);
  CHECK(f.attempts() == 3);
  CHECK(f.message().find("pivot 2") != std::string::npos);
}

TEST_CASE("inverse factor rejects non-finite and malformed input") {
  loaq::InverseFactor<double> f;
  Eigen::MatrixXd H = Eigen::MatrixXd::Identity(4, 4);
  H(1, 2) = H(2, 1) = std::nan("");
  CHECK(f.compute(H).info() == loaq::Status::NonFiniteInput);
  CHECK(f.upper().size() == 0);
  CHECK(f.compute(Eigen::MatrixXd::Identity(3, 4)).info() == loaq::Status::ShapeMismatch);
  CHECK(f.compute(Eigen::MatrixXd::Identity(3, 3), loaq::DampingPolicy{-1.0, 10, 4}).info() ==
        loaq::Status::InvalidArgument);
  CHECK(f.compute(-Eigen::MatrixXd::Identity(3, 3)).info() == loaq::Status::NotPositiveDefinite);
}

TEST_CASE("a non-symmetric Hessian is refused; float-GEMM rounding is not") {
  std::mt19937 rng(29);
  const Index n = 40;
  const Eigen::MatrixXd X = loaq_test::random_inputs(n, 500, rng);
  const Eigen::MatrixXd H = 2.0 * X * X.transpose();
  loaq::InverseFactor<double> f;
  Eigen::MatrixXd A = H;
  A(3, 17) += 0.05 * std::sqrt(H(3, 3) * H(17, 17));  // only the lower triangle differs
  CHECK(f.compute(A).info() == loaq::Status::NotSymmetric);
  CHECK(f.message().find("H(17,3)") != std::string::npos);
  CHECK(f.upper().size() == 0);
  // X Xᵀ formed in float by a GEMM: asymmetric in the last bits only.
  const Eigen::MatrixXf Xf = X.cast<float>();
  const Eigen::MatrixXf Hf = 2.0f * Xf * Xf.transpose();
  CHECK(f.compute(Hf.cast<double>()).info() == loaq::Status::Success);
  loaq::QuantizedWeight<float> out;
  CHECK(loaq::gptq(Eigen::MatrixXf::Ones(2, n), A, loaq::UniformGrid<float, 4>(), {}, out).status ==
        loaq::Status::NotSymmetric);
}

TEST_CASE_TEMPLATE("the factor is exact under power-of-4 scaling and finite at any representable scale",
                   Scalar, float, double) {
  const Index n = 50;
  const Eigen::MatrixXd H = random_hessian(n, 400, 31);
  loaq::InverseFactor<Scalar> base, f;
  REQUIRE(base.compute(H).info() == loaq::Status::Success);
  for (int j : {-300, -40, -3, 5, 60, 400}) {
    REQUIRE(f.compute(H * std::ldexp(1.0, 2 * j)).info() == loaq::Status::Success);
    CHECK((f.upper() == base.upper()));  // normalization is exact: same bits
    CHECK(f.log4_scale() == base.log4_scale() + j);
  }
  for (double scale : {1e-300, 1e-100, 1e80, 1e300}) {
    REQUIRE(f.compute(H * scale).info() == loaq::Status::Success);
    CHECK(f.upper().allFinite());
    CHECK(f.residual(H * scale) < (std::is_same_v<Scalar, float> ? 1e-2 : 1e-10));
  }
  // Huge damping: H + λI ≈ λI, still a finite, accurate factor (GPTQ degenerates to RTN).
  for (double percdamp : {1e10, 1e80, 1e300}) {
    REQUIRE(f.compute(H, loaq::DampingPolicy{percdamp, 10, 1}).info() == loaq::Status::Success);
    CHECK(f.upper().allFinite());
    CHECK(f.residual(H) < 1e-3);
  }
  CHECK(f.compute(H, loaq::DampingPolicy{std::numeric_limits<double>::infinity(), 10, 1}).info() ==
        loaq::Status::InvalidArgument);
}

TEST_CASE_TEMPLATE("the factor's accuracy check is the dense formula, without dense copies",
                   Scalar, float, double) {
  // residual() works column by column in double; it must equal ‖(H + λI)·4^−k·UᵀU·v − v‖/‖v‖
  // formed with dense double matrices, for the documented fixed probe v. n = 600: three row
  // blocks of its threaded passes, the last one ragged.
  for (const Index n : {Index(45), Index(600)}) {
    CAPTURE(n);
    const Eigen::MatrixXd H = random_hessian(n, n + 300, 37);
    loaq::InverseFactor<Scalar> f;
    REQUIRE(f.compute(H).info() == loaq::Status::Success);
    Eigen::VectorXd v(n);
    for (Index i = 0; i < n; ++i) v[i] = ((i * 7919) % 13) % 2 ? 1.0 : -0.5;
    const Eigen::MatrixXd U = f.upper().template cast<double>();
    Eigen::MatrixXd Hd = H;
    Hd.diagonal().array() += f.damping();
    const double dense =
        (Hd * std::ldexp(1.0, -2 * f.log4_scale()) * (U.transpose() * (U * v)) - v).norm() / v.norm();
    CHECK(f.residual(H) == doctest::Approx(dense).epsilon(1e-6));
    // A float H is read where it lies: the same value as from its exact double copy.
    const Eigen::MatrixXf Hf = H.cast<float>();
    CHECK(f.residual(Hf) == f.residual(Hf.cast<double>()));
    // A factor that is not the inverse's is caught: the check of a different H fails.
    CHECK(f.residual(2.0 * H) > 0.5);
  }
  // An empty Hessian's factor is exact: 0, not the 0/0 of an empty probe.
  loaq::InverseFactor<Scalar> empty;
  REQUIRE(empty.compute(Eigen::MatrixXd(0, 0)).info() == loaq::Status::Success);
  CHECK(empty.residual(Eigen::MatrixXd(0, 0)) == 0.0);
}

TEST_CASE("the symmetry check names the first asymmetric pair column by column") {
  const Index n = 300;  // five tile columns of 64
  Eigen::MatrixXd A = random_hessian(n, 400, 41);
  const double bump = 0.05 * std::sqrt(A(150, 150) * A(250, 250));
  A(250, 200) += bump;  // tile column 3
  A(150, 70) += bump;   // tile column 1: met first
  A(71, 150) += bump;   // the pair (150, 71): the same tile, one column later
  loaq::InverseFactor<double> f;
  CHECK(f.compute(A).info() == loaq::Status::NotSymmetric);
  CHECK(f.message().find("H(150,70)") != std::string::npos);
}

// The Cholesky form (what plain GPTQ's left-looking loop starts from) skips the inversion: R with
// (H + λI)·4^−k = R·Rᵀ, which is U⁻¹, and its accuracy check solves with R instead of
// multiplying by U. n = 600: three blocks of the substitutions, the last one ragged.
TEST_CASE_TEMPLATE("the Cholesky form is U's inverse, and its check is the dense formula", Scalar,
                   float, double) {
  using loaq::internal::FactorForm;
  for (const Index n : {Index(45), Index(600)}) {
    CAPTURE(n);
    const Eigen::MatrixXd H = random_hessian(n, n + 300, 41);
    loaq::InverseFactor<Scalar> u, r;
    REQUIRE(u.compute(H).info() == loaq::Status::Success);
    REQUIRE(r.compute(H, loaq::DampingPolicy{}, loaq::internal::CheckedHessian{}, FactorForm::Cholesky)
                .info() == loaq::Status::Success);
    CHECK(r.log4_scale() == u.log4_scale());
    CHECK(r.damping() == u.damping());
    const Eigen::MatrixXd R = r.upper().template cast<double>();
    CHECK(R.isUpperTriangular(0));
    CHECK((R.diagonal().array() > 0).all());
    Eigen::MatrixXd Hd = H;
    Hd.diagonal().array() += r.damping();
    Hd *= std::ldexp(1.0, -2 * r.log4_scale());
    const double eps = std::is_same_v<Scalar, float> ? 1e-6 : 1e-14;
    CHECK((R * R.transpose() - Hd).norm() / Hd.norm() < 10 * eps);
    const Eigen::MatrixXd U = u.upper().template cast<double>();
    CHECK((R * U - Eigen::MatrixXd::Identity(n, n)).norm() < (std::is_same_v<Scalar, float> ? 1e-3 : 1e-10));
    Eigen::VectorXd v(n);
    for (Index i = 0; i < n; ++i) v[i] = ((i * 7919) % 13) % 2 ? 1.0 : -0.5;
    const Eigen::VectorXd y = R.triangularView<Eigen::Upper>().solve(v);
    const Eigen::VectorXd z = R.transpose().triangularView<Eigen::Lower>().solve(y);
    const double dense = (Hd * z - v).norm() / v.norm();
    CHECK(std::abs(r.residual(H) - dense) <= 1e-3 * dense + 1e-12);
    CHECK(r.residual(H) < (std::is_same_v<Scalar, float> ? 1e-3 : 1e-10));
    CHECK(r.residual(2.0 * H) > 0.5);  // a factor of another matrix is caught
  }
}
