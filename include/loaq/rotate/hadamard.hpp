// Orthogonal rotations for QuaRot-style quantization: normalized Hadamard matrices of order
// n = b·2^k (Sylvester, Paley I and Paley II cores) applied as a fast transform, and a seeded
// Haar-random orthogonal matrix for the orders none of those constructions builds.
//
// Conventions (dense() and every test follow them):
//   H_n = H_{2^k} ⊗ H_b, i.e. H_n(j·b + i, j'·b + i') = H_{2^k}(j, j')·H_b(i, i') with the core
//   index i ∈ [0, b) fastest. A column viewed as a b × 2^k matrix M then transforms as
//   H_b·M·H_{2^k}: the core product is one GEMM over a whole block of columns, and the butterflies
//   move contiguous runs of b ≥ 1 entries.
//   Q = H_n·D/√n, so Q x = H_n (D x)/√n: the ±1 diagonal D (signs(), all +1 unless randomized)
//   applies first.
// Reproducibility: signs and Gaussians come from the raw 64-bit output of std::mt19937_64(seed)
// (the standard fixes that sequence), never from std::*_distribution, whose output is
// implementation-defined. Signs are exactly portable; the fallback's Gaussians go through
// std::log / std::cos / std::sin (Box–Muller) and a Householder QR, so they are reproducible on one
// platform and agree elsewhere to rounding.
// Non-finite inputs are not checked: a NaN or Inf spreads through its column, as in a GEMM.
#pragma once

#include <Eigen/Core>
#include <Eigen/QR>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "../config.hpp"

namespace loaq {

enum class RotationKind { Hadamard, RandomOrthogonal };

namespace internal {

enum class HadamardCore { None, Sylvester, PaleyI, PaleyII };

inline bool is_prime(Index q) {
  if (q < 2) return false;
  for (Index d = 2; d * d <= q; ++d)
    if (q % d == 0) return false;
  return true;
}

// The construction that builds a ±1 Hadamard matrix of order b (Sylvester first, then Paley I).
inline HadamardCore hadamard_core_kind(Index b) {
  if (b >= 1 && (b & (b - 1)) == 0) return HadamardCore::Sylvester;
  if (b % 4 == 0 && is_prime(b - 1)) return HadamardCore::PaleyI;  // q = b − 1 ≡ 3 (mod 4)
  if (b % 8 == 4 && is_prime(b / 2 - 1)) return HadamardCore::PaleyII;  // q = b/2 − 1 ≡ 1 (mod 4)
  return HadamardCore::None;
}

// Quadratic character of GF(q), q an odd prime: χ(0) = 0, +1 on squares, −1 otherwise.
inline std::vector<signed char> quadratic_character(Index q) {
  std::vector<signed char> chi(std::size_t(q), -1);
  chi[0] = 0;
  for (Index x = 1; x <= q / 2; ++x) chi[std::size_t((x * x) % q)] = 1;
  return chi;
}

// Conference-matrix entry S(r, c) of order q + 1: S = [0 1ᵀ; ε·1 Q] with the Jacobsthal matrix
// Q(i, j) = χ(j − i); ε = −1 (Paley I, S antisymmetric) or +1 (Paley II, S symmetric).
inline int conference_entry(const std::vector<signed char>& chi, Index q, Index r, Index c,
                            int eps) {
  if (r == 0) return c == 0 ? 0 : 1;
  if (c == 0) return eps;
  return chi[std::size_t((c - r + q) % q)];
}

template <class S>
Matrix<S> build_hadamard_core(Index b) {
  Matrix<S> H;
  switch (hadamard_core_kind(b)) {
    case HadamardCore::None:
      break;
    case HadamardCore::Sylvester:  // H_{2m} = [H_m H_m; H_m −H_m]
      H.resize(b, b);
      H(0, 0) = S(1);
      for (Index m = 1; m < b; m *= 2) {
        H.block(0, m, m, m) = H.topLeftCorner(m, m);
        H.block(m, 0, m, m) = H.topLeftCorner(m, m);
        H.block(m, m, m, m) = -H.topLeftCorner(m, m);
      }
      break;
    case HadamardCore::PaleyI: {  // H = I + S: HHᵀ = I + S + Sᵀ + SSᵀ = (q + 1)·I
      const Index q = b - 1;
      const auto chi = quadratic_character(q);
      H.resize(b, b);
      for (Index c = 0; c < b; ++c)
        for (Index r = 0; r < b; ++r) H(r, c) = S(r == c ? 1 : conference_entry(chi, q, r, c, -1));
      break;
    }
    case HadamardCore::PaleyII: {  // H = S ⊗ [1 −1; −1 −1] + I ⊗ [1 1; 1 −1]
      const Index q = b / 2 - 1;
      const auto chi = quadratic_character(q);
      H.resize(b, b);
      for (Index c = 0; c < q + 1; ++c)
        for (Index r = 0; r < q + 1; ++r) {
          const int s = conference_entry(chi, q, r, c, 1), d = r == c;
          H(2 * r, 2 * c) = S(s + d);
          H(2 * r, 2 * c + 1) = S(-s + d);
          H(2 * r + 1, 2 * c) = S(-s + d);
          H(2 * r + 1, 2 * c + 1) = S(-s - d);
        }
      break;
    }
  }
  return H;
}

// Smallest b with n = b·2^k that some construction builds; 0 when there is none.
inline Index smallest_hadamard_core(Index n) {
  Index k = 0;
  while (((n >> k) & 1) == 0) ++k;
  for (; k >= 0; --k)
    if (hadamard_core_kind(n >> k) != HadamardCore::None) return n >> k;
  return 0;
}

// Gaussian from two raw 64-bit draws (Box–Muller; u1 ∈ (0, 1] keeps the log finite).
struct RawGaussian {
  std::mt19937_64 rng;
  double spare = 0;
  bool has_spare = false;
  explicit RawGaussian(std::uint64_t seed) : rng(seed) {}
  double operator()() {
    if (has_spare) {
      has_spare = false;
      return spare;
    }
    const double u1 = double((rng() >> 11) + 1) * 0x1p-53, u2 = double(rng() >> 11) * 0x1p-53;
    const double r = std::sqrt(-2.0 * std::log(u1)), t = 6.283185307179586 * u2;
    spare = r * std::sin(t);
    has_spare = true;
    return r * std::cos(t);
  }
};

// One stage of in-place Walsh–Hadamard butterflies on pairs of contiguous runs of h entries.
// Runs go in fixed-width chunks so that even GCC's -O2 (very cheap) vectorizer takes them.
template <Index W, class S>
void butterfly_run(S* __restrict a, S* __restrict c, Index h) {
  for (Index i = 0; i < h; i += W)
    for (Index j = i; j < i + W; ++j) {
      const S u = a[j], v = c[j];
      a[j] = u + v;
      c[j] = u - v;
    }
}
template <Index W, class S>
void butterfly_stage(S* x, Index n, Index h) {
  for (Index s = 0; s < n; s += 2 * h) butterfly_run<W>(x + s, x + s + h, h);
}
template <class S>
void butterfly_stage(S* x, Index n, Index h) {
  if (h % 16 == 0)
    butterfly_stage<16>(x, n, h);
  else if (h % 8 == 0)
    butterfly_stage<8>(x, n, h);
  else if (h % 4 == 0)
    butterfly_stage<4>(x, n, h);
  else
    butterfly_stage<1>(x, n, h);
}
// The three narrowest stages of a plain FWHT at once: runs of 1, 2 and 4 are too short to vectorize.
template <class S>
void fwht8(S* x) {
  const S a0 = x[0] + x[1], a1 = x[0] - x[1], a2 = x[2] + x[3], a3 = x[2] - x[3];
  const S a4 = x[4] + x[5], a5 = x[4] - x[5], a6 = x[6] + x[7], a7 = x[6] - x[7];
  const S b0 = a0 + a2, b1 = a1 + a3, b2 = a0 - a2, b3 = a1 - a3;
  const S b4 = a4 + a6, b5 = a5 + a7, b6 = a4 - a6, b7 = a5 - a7;
  x[0] = b0 + b4;
  x[1] = b1 + b5;
  x[2] = b2 + b6;
  x[3] = b3 + b7;
  x[4] = b0 - b4;
  x[5] = b1 - b5;
  x[6] = b2 - b6;
  x[7] = b3 - b7;
}
// x ← (H_{n/b} ⊗ I_b)·x: butterflies on runs of b, 2b, …, n/2 entries.
template <class S>
void fwht_blocks(S* x, Index n, Index b) {
  Index h = b;
  if (b == 1 && n >= 8) {
    for (Index s = 0; s < n; s += 8) fwht8(x + s);
    h = 8;
  }
  for (; h < n; h *= 2) butterfly_stage(x, n, h);
}

}  // namespace internal

// ±1 Hadamard matrix of order b (H Hᵀ = b·I) from Sylvester (b a power of two), Paley I
// (b = q + 1, q prime ≡ 3 mod 4) or Paley II (b = 2(q + 1), q prime ≡ 1 mod 4); empty when none
// of them builds order b.
inline Eigen::MatrixXd hadamard_core(Index b) { return internal::build_hadamard_core<double>(b); }

// An orthogonal n × n transform Q: a normalized, optionally randomized Hadamard matrix
// Q = H_n·D/√n with H_n = H_{2^k} ⊗ H_b, or a seeded Haar-random orthogonal matrix.
// Q x costs O(n·(b + log n)) for Hadamard orders, O(n²) for the fallback. Immutable after
// construction: a const object may be used from several threads at once.
class OrthogonalTransform {
 public:
  // Normalized Hadamard of order n with the smallest core b (randomized: D from `seed`), or, when
  // no construction builds order n, random_orthogonal(n, seed) with warning() saying so.
  // Throws std::invalid_argument for n ≤ 0.
  static OrthogonalTransform hadamard(Index n, bool randomized = false, std::uint64_t seed = 0) {
    check_order(n);
    const Index b = internal::smallest_hadamard_core(n);
    if (b == 0) {
      OrthogonalTransform t = random_orthogonal(n, seed);
      t.warning_ = "order " + std::to_string(n) + ": " + no_construction_reason(n) +
                   "; using a seeded random orthogonal matrix";
      return t;
    }
    OrthogonalTransform t;
    t.n_ = n;
    t.b_ = b;
    t.kind_ = RotationKind::Hadamard;
    t.core_d_ = internal::build_hadamard_core<double>(b);
    t.core_f_ = t.core_d_.cast<float>();
    t.randomized_ = randomized;
    t.signs_ = Eigen::VectorXd::Ones(n);
    if (randomized) {  // one raw bit per sign
      std::mt19937_64 rng(seed);
      std::uint64_t bits = 0;
      for (Index i = 0; i < n; ++i) {
        if (i % 64 == 0) bits = rng();
        if ((bits >> (i % 64)) & 1) t.signs_[i] = -1.0;
      }
    }
    return t;
  }

  // Haar-random orthogonal matrix: QR of a Gaussian matrix (filled column by column from
  // RawGaussian(seed)) with the columns of Q flipped to make diag(R) positive (Mezzadri 2007).
  // O(n³) to build and n² doubles to store. Throws std::invalid_argument for n ≤ 0.
  static OrthogonalTransform random_orthogonal(Index n, std::uint64_t seed) {
    check_order(n);
    internal::RawGaussian gauss(seed);
    Eigen::MatrixXd G(n, n);
    for (Index j = 0; j < n; ++j)
      for (Index i = 0; i < n; ++i) G(i, j) = gauss();
    const Eigen::HouseholderQR<Eigen::MatrixXd> qr(G);
    OrthogonalTransform t;
    t.n_ = n;
    t.kind_ = RotationKind::RandomOrthogonal;
    t.q_ = qr.householderQ();
    for (Index j = 0; j < n; ++j)
      if (qr.matrixQR()(j, j) < 0) t.q_.col(j) = -t.q_.col(j);
    return t;
  }

  Index size() const { return n_; }
  RotationKind kind() const { return kind_; }
  // b of H_n = H_{2^k} ⊗ H_b; 0 for the random fallback.
  Index core_order() const { return b_; }
  bool randomized() const { return randomized_; }
  // Diagonal of D (n entries ±1, all +1 unless randomized); empty for the random fallback.
  const Eigen::VectorXd& signs() const { return signs_; }
  // Why hadamard() fell back to a random orthogonal matrix; empty otherwise.
  const std::string& warning() const { return warning_; }

  // X ← Q·X for every column of X (n × T). Float inputs stay in float. X's columns must be
  // contiguous (any column-major matrix, map or column block); wrong row count → invalid_argument.
  void apply(Eigen::Ref<Matrix<float>> X) const { transform<float>(X, false); }
  void apply(Eigen::Ref<Matrix<double>> X) const { transform<double>(X, false); }
  // X ← Qᵀ·X, the inverse of apply().
  void apply_transpose(Eigen::Ref<Matrix<float>> X) const { transform<float>(X, true); }
  void apply_transpose(Eigen::Ref<Matrix<double>> X) const { transform<double>(X, true); }
  // W ← W·Q for W of m × n (rows are vectors: W·Q = (Qᵀ·Wᵀ)ᵀ), e.g. a weight whose input is rotated.
  void apply_right(Eigen::Ref<Matrix<float>> W) const { right<float>(W, true); }
  void apply_right(Eigen::Ref<Matrix<double>> W) const { right<double>(W, true); }
  // W ← W·Qᵀ = (Q·Wᵀ)ᵀ.
  void apply_right_transpose(Eigen::Ref<Matrix<float>> W) const { right<float>(W, false); }
  void apply_right_transpose(Eigen::Ref<Matrix<double>> W) const { right<double>(W, false); }

  // Q as a dense n × n matrix.
  Eigen::MatrixXd dense() const {
    if (kind_ == RotationKind::RandomOrthogonal) return q_;
    Eigen::MatrixXd Q = Eigen::MatrixXd::Identity(n_, n_);
    apply(Q);
    return Q;
  }

 private:
  OrthogonalTransform() = default;

  static constexpr Index kBlockEntries = Index(1) << 14;  // 64 KiB of float
  static constexpr Index kMinGemmColumns = 256;

  static void check_order(Index n) {
    if (n <= 0)
      throw std::invalid_argument("OrthogonalTransform: order " + std::to_string(n) +
                                  " is not positive");
  }
  static std::string no_construction_reason(Index n) {
    Index k = 0;
    while (((n >> k) & 1) == 0) ++k;
    if (k < 2)
      return "Hadamard matrices exist only for orders 1, 2 and multiples of 4";
    // Every factor n/2^j with j < k − 1 is ≡ 0 mod 4; the smallest is the one to name.
    return "no Hadamard construction (Sylvester, Paley I, Paley II) for the factor " +
           std::to_string(n >> (k - 2));
  }
  void check_size(Index got, const char* what, const char* dim) const {
    if (got != n_)
      throw std::invalid_argument(std::string("OrthogonalTransform::") + what + ": the matrix has " +
                                  std::to_string(got) + " " + dim + ", the transform has order " +
                                  std::to_string(n_));
  }

  template <class S>
  const Matrix<S>& core() const {
    if constexpr (std::is_same<S, float>::value)
      return core_f_;
    else
      return core_d_;
  }

  template <class S>
  void transform(Eigen::Ref<Matrix<S>> X, bool transpose) const {
    check_size(X.rows(), transpose ? "apply_transpose" : "apply", "rows");
    if (X.cols() == 0) return;
    if (kind_ == RotationKind::RandomOrthogonal) {
      Matrix<S> Y;
      if constexpr (std::is_same<S, double>::value) {
        if (transpose)
          Y.noalias() = q_.transpose() * X;
        else
          Y.noalias() = q_ * X;
      } else {
        const Matrix<S> q = q_.cast<S>();
        if (transpose)
          Y.noalias() = q.transpose() * X;
        else
          Y.noalias() = q * X;
      }
      X = Y;
      return;
    }
    const Index n = n_, b = b_, T = X.cols();
    const double inv_sqrt_n = 1.0 / std::sqrt(double(n));
    // D, and 1/√n when there is no core product to carry it, as one pass of row factors.
    const bool row_pass = randomized_ || b == 1;
    const Vector<S> row_factor = (signs_ * (b == 1 ? inv_sqrt_n : 1.0)).template cast<S>();
    const S core_scale = S(inv_sqrt_n);
    // A block of columns is one core GEMM, b × b by b × (n/b)·cols: about kBlockEntries entries
    // keep it in L2, and a large core needs kMinGemmColumns right-hand columns to be compute-bound
    // (one column at a time, 11008 = 2·5504 rereads its 121 MB core per column).
    Index block = std::max<Index>(1, kBlockEntries / n);
    if (b > 1) block = std::max(block, (kMinGemmColumns * b + n - 1) / n);
    block = std::min(block, T);
    const Index nblocks = (T + block - 1) / block;
    // Columns that are not adjacent in memory (a row block) go through a contiguous copy.
    const bool adjacent = X.outerStride() == n || T == 1;
#ifdef _OPENMP
#pragma omp parallel if (nblocks > 1 && T * n >= (Index(1) << 16))
#endif
    {
      // Per thread: no shared scratch.
      Matrix<S> tmp(b > 1 ? b : 0, b > 1 ? (n / b) * block : 0), buf(adjacent ? 0 : n, block);
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
      for (Index k = 0; k < nblocks; ++k) {
        const Index t0 = k * block, cols = std::min(block, T - t0);
        if (!adjacent) buf.leftCols(cols) = X.middleCols(t0, cols);
        S* data = adjacent ? X.col(t0).data() : buf.data();
        Eigen::Map<Matrix<S>> B(data, n, cols);
        for (Index t = 0; t < cols; ++t) {
          if (row_pass && !transpose) B.col(t).array() *= row_factor.array();
          internal::fwht_blocks(B.col(t).data(), n, b);
        }
        if (b > 1) {
          Eigen::Map<Matrix<S>> M(data, b, (n / b) * cols);
          auto Y = tmp.leftCols(M.cols());
          if (transpose)
            Y.noalias() = core<S>().transpose() * M;
          else
            Y.noalias() = core<S>() * M;
          M = core_scale * Y;
        }
        if (row_pass && transpose) B.array().colwise() *= row_factor.array();
        if (!adjacent) X.middleCols(t0, cols) = B;
      }
    }
  }

  template <class S>
  void right(Eigen::Ref<Matrix<S>> W, bool q_on_right) const {
    check_size(W.cols(), q_on_right ? "apply_right" : "apply_right_transpose", "columns");
    Matrix<S> Wt = W.transpose();  // rows become contiguous columns
    transform<S>(Wt, q_on_right);
    W = Wt.transpose();
  }

  Index n_ = 0, b_ = 0;
  RotationKind kind_ = RotationKind::Hadamard;
  bool randomized_ = false;
  Eigen::MatrixXd core_d_;  // ±1, both scalars kept so no call converts b² entries
  Matrix<float> core_f_;
  Eigen::VectorXd signs_;
  Eigen::MatrixXd q_;  // the random fallback
  std::string warning_;
};

}  // namespace loaq
