// Hadamard rotations: the cores, the fast transform against matrices built here from the
// definitions (Euler's criterion, popcount parity, explicit Kronecker indexing), the fallback.
#include <doctest/doctest.h>

#include <bitset>
#include <cmath>
#include <cstdint>
#include <limits>
#include <loaq/rotate/hadamard.hpp>
#include <random>
#include <stdexcept>
#include <string>

using loaq::Index;
using loaq::OrthogonalTransform;
using loaq::RotationKind;

namespace {

bool prime(Index q) {
  if (q < 2) return false;
  for (Index d = 2; d <= q / d; ++d)
    if (q % d == 0) return false;
  return true;
}

// Legendre symbol (a/q) by Euler's criterion a^((q−1)/2) mod q.
int legendre(Index a, Index q) {
  a = ((a % q) + q) % q;
  if (a == 0) return 0;
  std::uint64_t r = 1, base = std::uint64_t(a), e = std::uint64_t((q - 1) / 2);
  for (; e; e >>= 1, base = base * base % std::uint64_t(q))
    if (e & 1) r = r * base % std::uint64_t(q);
  return r == 1 ? 1 : -1;
}

int sylvester(Index i, Index j) { return std::bitset<64>(std::uint64_t(i & j)).count() % 2 ? -1 : 1; }

// Entry (r, c) of the order-b core from the textbook definitions; 2 when b has no construction.
int core_entry(Index b, Index r, Index c) {
  if ((b & (b - 1)) == 0) return sylvester(r, c);
  if ((b - 1) % 4 == 3 && prime(b - 1)) {  // Paley I: I + [0 1ᵀ; −1 Q], Q(i, j) = χ(j − i)
    if (r == c) return 1;
    if (r == 0) return 1;
    if (c == 0) return -1;
    return legendre(c - r, b - 1);
  }
  const Index q = b / 2 - 1;
  if (b % 2 == 0 && q % 4 == 1 && prime(q)) {  // Paley II: S ⊗ [1 −1; −1 −1] + I ⊗ [1 1; 1 −1]
    const Index R = r / 2, C = c / 2;
    const int s = R == 0 ? (C == 0 ? 0 : 1) : C == 0 ? 1 : legendre(C - R, q);
    const int A[2][2] = {{1, -1}, {-1, -1}}, B[2][2] = {{1, 1}, {1, -1}};
    return s * A[r % 2][c % 2] + (R == C) * B[r % 2][c % 2];
  }
  return 2;
}

// Q(r, c) = H_{2^k}(r / b, c / b)·H_b(r mod b, c mod b)·d_c/√n.
double q_entry(const OrthogonalTransform& t, Index r, Index c) {
  const Index b = t.core_order();
  return sylvester(r / b, c / b) * core_entry(b, r % b, c % b) * t.signs()[c] /
         std::sqrt(double(t.size()));
}

template <class S>
loaq::Matrix<S> gaussian(Index rows, Index cols, std::mt19937& rng) {
  std::normal_distribution<double> g;
  loaq::Matrix<S> M(rows, cols);
  for (Index j = 0; j < cols; ++j)
    for (Index i = 0; i < rows; ++i) M(i, j) = S(g(rng));
  return M;
}

double max_abs(const Eigen::MatrixXd& A) { return A.cwiseAbs().maxCoeff(); }

// apply / apply_transpose / apply_right* in scalar S against QX = Q·X and QtX = Qᵀ·X (X holds
// float-representable values): contiguous columns, a row block (columns not adjacent), a column
// block, and rows W = X(:, 0:5)ᵀ, for which W·Q = (Qᵀ·X)ᵀ and W·Qᵀ = (Q·X)ᵀ.
template <class S>
void check_fast_equals_dense(const OrthogonalTransform& t, const Eigen::MatrixXd& X,
                             const Eigen::MatrixXd& QX, const Eigen::MatrixXd& QtX) {
  const Index n = t.size(), cols = X.cols();
  // Sums of n ±1/√n-weighted N(0, 1) values: the rounding error stays far below these.
  const double tol = std::is_same<S, float>::value ? 2e-5 : 1e-12;
  const loaq::Matrix<S> Xs = X.cast<S>();
  loaq::Matrix<S> Y = Xs;
  t.apply(Y);
  CHECK(max_abs(Y.template cast<double>() - QX) <= tol);
  Y = Xs;
  t.apply_transpose(Y);
  CHECK(max_abs(Y.template cast<double>() - QtX) <= tol);

  loaq::Matrix<S> Big = loaq::Matrix<S>::Constant(n + 3, 5, S(7));
  Big.topRows(n) = Xs.leftCols(5);
  t.apply(Big.topRows(n));
  CHECK(max_abs(Big.topRows(n).template cast<double>() - QX.leftCols(5)) <= tol);
  CHECK((Big.bottomRows(3).array() == S(7)).all());

  Y = Xs;
  t.apply(Y.middleCols(3, 4));
  CHECK(max_abs(Y.middleCols(3, 4).template cast<double>() - QX.middleCols(3, 4)) <= tol);
  CHECK(Y.leftCols(3) == Xs.leftCols(3));
  CHECK(Y.rightCols(cols - 7) == Xs.rightCols(cols - 7));

  const loaq::Matrix<S> W = Xs.leftCols(5).transpose();
  loaq::Matrix<S> V = W;
  t.apply_right(V);
  CHECK(max_abs(V.template cast<double>() - QtX.leftCols(5).transpose()) <= tol);
  V = W;
  t.apply_right_transpose(V);
  CHECK(max_abs(V.template cast<double>() - QX.leftCols(5).transpose()) <= tol);
}

void check_fast_equals_dense(const OrthogonalTransform& t, const Eigen::MatrixXd& Q,
                             std::mt19937& rng) {
  const Index cols = t.size() > 1536 ? 9 : 37;  // more than one block of columns either way
  const Eigen::MatrixXd X = gaussian<float>(t.size(), cols, rng).cast<double>();
  const Eigen::MatrixXd QX = Q * X, QtX = Q.transpose() * X;
  check_fast_equals_dense<double>(t, X, QX, QtX);
  check_fast_equals_dense<float>(t, X, QX, QtX);
}

}  // namespace

TEST_CASE("hadamard_core: ±1 with H·Hᵀ = b·I exactly, the textbook matrix, or empty") {
  for (Index b : {1, 2, 4, 8, 12, 20, 28, 36, 44, 60, 68, 76, 108, 140, 148}) {
    CAPTURE(b);
    const Eigen::MatrixXd H = loaq::hadamard_core(b);
    REQUIRE(H.rows() == b);
    REQUIRE(H.cols() == b);
    CHECK((H.array().abs() == 1.0).all());
    CHECK(H * H.transpose() == double(b) * Eigen::MatrixXd::Identity(b, b));
    Index same = 0;
    for (Index c = 0; c < b; ++c)
      for (Index r = 0; r < b; ++r) same += H(r, c) == core_entry(b, r, c);
    CHECK(same == b * b);
  }
  // 92 and 172 have Hadamard matrices, but not from these three constructions.
  for (Index b : {-4, 0, 3, 6, 10, 52, 92, 172, 344})
    CHECK(loaq::hadamard_core(b).size() == 0);
}

TEST_CASE("the smallest core b with n = b·2^k is chosen") {
  const std::pair<Index, Index> cases[] = {{1, 1},     {2, 1},     {12, 12},  {24, 12},
                                           {48, 12},   {64, 1},    {576, 36}, {896, 28},
                                           {1536, 12}, {4096, 1},  {4864, 76}, {8960, 140},
                                           {14336, 28}, {18944, 148}};
  for (auto [n, b] : cases) {
    CAPTURE(n);
    const OrthogonalTransform t = OrthogonalTransform::hadamard(n);
    CHECK(t.kind() == RotationKind::Hadamard);
    CHECK(t.core_order() == b);
    CHECK(t.warning().empty());
    CHECK(t.size() == n);
  }
}

TEST_CASE("every model order: orthogonal, the definition H·D/√n, fast transform = dense product") {
  std::mt19937 rng(11);
  for (Index n : {12, 24, 48, 64, 576, 896, 1536, 4096, 4864}) {
    CAPTURE(n);
    const OrthogonalTransform t = OrthogonalTransform::hadamard(n, true, 1000 + n);
    REQUIRE(t.kind() == RotationKind::Hadamard);
    REQUIRE(t.signs().size() == n);
    CHECK((t.signs().array().abs() == 1.0).all());
    CHECK((t.signs().array() < 0).any());
    CHECK((t.signs().array() > 0).any());
    const Eigen::MatrixXd Q = t.dense();
    // Every entry for the smaller orders, a sample of 20000 for the large ones.
    double err = 0;
    if (n <= 896) {
      for (Index c = 0; c < n; ++c)
        for (Index r = 0; r < n; ++r) err = std::max(err, std::abs(Q(r, c) - q_entry(t, r, c)));
      const Eigen::MatrixXd QtQ = Q.transpose() * Q;
      CHECK(max_abs(QtQ - Eigen::MatrixXd::Identity(n, n)) <= 1e-6);
    } else {
      std::uniform_int_distribution<Index> pick(0, n - 1);
      for (int s = 0; s < 20000; ++s) {
        const Index r = pick(rng), c = pick(rng);
        err = std::max(err, std::abs(Q(r, c) - q_entry(t, r, c)));
      }
      Eigen::MatrixXd QtQ = Q;  // Qᵀ·Q with the fast transform, checked against Qᵀ·X below
      t.apply_transpose(QtQ);
      CHECK(max_abs(QtQ - Eigen::MatrixXd::Identity(n, n)) <= 1e-6);
    }
    CHECK(err <= 1e-15);
    check_fast_equals_dense(t, Q, rng);
  }
}

TEST_CASE("signs are the raw bits of mt19937_64(seed); the seed decides the matrix") {
  const Index n = 576;
  const OrthogonalTransform a = OrthogonalTransform::hadamard(n, true, 42);
  std::mt19937_64 rng(42);
  std::uint64_t bits = 0;
  Index same = 0;
  for (Index i = 0; i < n; ++i) {
    if (i % 64 == 0) bits = rng();
    same += a.signs()[i] == (((bits >> (i % 64)) & 1) ? -1.0 : 1.0);
  }
  CHECK(same == n);
  CHECK(a.randomized());
  CHECK(a.dense() == OrthogonalTransform::hadamard(n, true, 42).dense());
  CHECK(a.signs() != OrthogonalTransform::hadamard(n, true, 43).signs());
  CHECK(a.dense() != OrthogonalTransform::hadamard(n, true, 43).dense());
  // Not randomized: D = I whatever the seed, Q = H/√n.
  const OrthogonalTransform plain = OrthogonalTransform::hadamard(n, false, 42);
  CHECK(!plain.randomized());
  CHECK((plain.signs().array() == 1.0).all());
  CHECK(plain.dense() == OrthogonalTransform::hadamard(n, false, 7).dense());
  CHECK(plain.dense() != a.dense());
}

TEST_CASE("orders with no construction fall back to a seeded Haar orthogonal matrix and say so") {
  std::mt19937 rng(5);
  const std::pair<Index, std::string> cases[] = {
      {688, "no Hadamard construction (Sylvester, Paley I, Paley II) for the factor 172"},
      {344, "for the factor 172"},
      {6, "only for orders 1, 2 and multiples of 4"},
      {3, "only for orders 1, 2 and multiples of 4"}};
  for (const auto& [n, why] : cases) {
    CAPTURE(n);
    const OrthogonalTransform t = OrthogonalTransform::hadamard(n, true, 9);
    CHECK(t.kind() == RotationKind::RandomOrthogonal);
    CHECK(t.core_order() == 0);
    CHECK(t.signs().size() == 0);
    CHECK(t.warning().find("order " + std::to_string(n) + ": ") == 0);
    CHECK(t.warning().find(why) != std::string::npos);
    CHECK(t.warning().find("using a seeded random orthogonal matrix") != std::string::npos);
    const Eigen::MatrixXd Q = t.dense();
    CHECK(max_abs(Q.transpose() * Q - Eigen::MatrixXd::Identity(n, n)) <= 1e-6);
    CHECK(Q == OrthogonalTransform::hadamard(n, true, 9).dense());
    CHECK(Q != OrthogonalTransform::hadamard(n, true, 10).dense());
    check_fast_equals_dense(t, Q, rng);
  }
  // Asked for directly: no warning.
  CHECK(OrthogonalTransform::random_orthogonal(64, 1).warning().empty());
  CHECK(OrthogonalTransform::random_orthogonal(64, 1).kind() == RotationKind::RandomOrthogonal);
}

TEST_CASE("the fallback is Q of G = QR, G Gaussian by Box–Muller on raw bits, diag(R) > 0") {
  const Index n = 40;
  const std::uint64_t seed = 77;
  std::mt19937_64 rng(seed);
  Eigen::MatrixXd G(n, n);
  for (Index k = 0; k < n * n; k += 2) {  // column-major fill, cos then sin of one pair
    const double u1 = double((rng() >> 11) + 1) / 9007199254740992.0;
    const double u2 = double(rng() >> 11) / 9007199254740992.0;
    const double r = std::sqrt(-2.0 * std::log(u1)), a = 6.283185307179586 * u2;
    G(k % n, k / n) = r * std::cos(a);
    G((k + 1) % n, (k + 1) / n) = r * std::sin(a);
  }
  const Eigen::MatrixXd Q = OrthogonalTransform::random_orthogonal(n, seed).dense();
  const Eigen::MatrixXd R = Q.transpose() * G;  // upper triangular with a positive diagonal
  CHECK(max_abs(R.triangularView<Eigen::StrictlyLower>().toDenseMatrix()) <= 1e-12);
  CHECK((R.diagonal().array() > 0).all());
  CHECK(max_abs(Q * R - G) <= 1e-12);
}

TEST_CASE("apply_transpose inverts apply, 11008 = 5504·2 (Paley I, q = 5503) included") {
  std::mt19937 rng(8);
  // 11008 is LLaMA-7B's MLP width. Its dense Q would be 1 GB: check rows against the definition.
  const OrthogonalTransform big = OrthogonalTransform::hadamard(11008, true, 3);
  CHECK(big.kind() == RotationKind::Hadamard);
  CHECK(big.core_order() == 5504);
  const Eigen::MatrixXd x = gaussian<double>(11008, 2, rng);
  Eigen::MatrixXd y = x;
  big.apply(y);
  for (Index r : {0, 1, 5503, 5504, 9000, 11007}) {
    double ref = 0;
    for (Index c = 0; c < 11008; ++c) ref += q_entry(big, r, c) * x(c, 1);
    CHECK(std::abs(y(r, 1) - ref) <= 1e-12);
  }
  CHECK(std::abs(y.col(0).norm() - x.col(0).norm()) <= 1e-10 * x.col(0).norm());
  big.apply_transpose(y);
  CHECK(max_abs(y - x) <= 1e-12);
  for (Index n : {1, 2, 12, 576, 688, 1536}) {
    CAPTURE(n);
    const OrthogonalTransform t = OrthogonalTransform::hadamard(n, true, 1);
    const Eigen::MatrixXf X = gaussian<float>(n, 300, rng);  // 300 columns: several blocks
    Eigen::MatrixXf Y = X;
    t.apply(Y);
    const Eigen::MatrixXf QX = Y;
    if (n > 1) CHECK(max_abs((Y - X).cast<double>()) > 0.1);
    t.apply_transpose(Y);
    CHECK(max_abs((Y - X).cast<double>()) <= 1e-5);
    Eigen::VectorXf v = X.col(0);  // a vector binds too
    t.apply(v);
    CHECK(max_abs((v - QX.col(0)).cast<double>()) <= 1e-5);
    t.apply_transpose(v);
    CHECK(max_abs((v - X.col(0)).cast<double>()) <= 1e-5);
  }
}

TEST_CASE("bad input throws std::invalid_argument; non-finite values propagate") {
  CHECK_THROWS_AS(OrthogonalTransform::hadamard(0), std::invalid_argument);
  CHECK_THROWS_AS(OrthogonalTransform::hadamard(-64, true, 1), std::invalid_argument);
  CHECK_THROWS_AS(OrthogonalTransform::random_orthogonal(0, 1), std::invalid_argument);
  for (const OrthogonalTransform& t :
       {OrthogonalTransform::hadamard(48), OrthogonalTransform::hadamard(688)}) {
    Eigen::MatrixXf X = Eigen::MatrixXf::Ones(47, 3);
    Eigen::MatrixXd W = Eigen::MatrixXd::Ones(3, 49);
    CHECK_THROWS_AS(t.apply(X), std::invalid_argument);
    CHECK_THROWS_AS(t.apply_transpose(X), std::invalid_argument);
    CHECK_THROWS_AS(t.apply_right(W), std::invalid_argument);
    CHECK_THROWS_AS(t.apply_right_transpose(W), std::invalid_argument);
    CHECK(X == Eigen::MatrixXf::Ones(47, 3));  // untouched
    Eigen::MatrixXd empty(t.size(), 0);
    t.apply(empty);  // no columns: nothing to do
  }
  // Every entry of a Hadamard matrix is nonzero, so a NaN reaches its whole column and no other.
  const OrthogonalTransform t = OrthogonalTransform::hadamard(576, true, 2);
  Eigen::MatrixXf X = Eigen::MatrixXf::Ones(576, 2);
  X(100, 0) = std::numeric_limits<float>::quiet_NaN();
  t.apply(X);
  CHECK(X.col(0).array().isNaN().all());
  CHECK(X.col(1).allFinite());
}
