// Per-token activation quantizer: QuaRot ActQuantizer semantics, SIMD against the generic kernels,
// and bad input.
#include <doctest/doctest.h>

#include <cstring>
#include <limits>

#include <loaq/grid/activation.hpp>

#include "../support.hpp"

using loaq::Index;

namespace act_test {

using Spec = loaq::ActivationQuantSpec;
using loaq::simd::ActivationGeneric;
using loaq::simd::ActivationSimd;

Spec spec_of(int bits, bool sym, double clip = 1.0, Index group = -1) {
  Spec s;
  s.bits = bits;
  s.symmetric = sym;
  s.clip_ratio = clip;
  s.group_size = group;
  return s;
}

// Same shape and the same bits (−0 and +0 differ).
template <class M>
bool same_bits(const M& a, const M& b) {
  if (a.rows() != b.rows() || a.cols() != b.cols()) return false;
  if (a.size() == 0) return true;  // memcmp on an empty matrix's null data is undefined
  return std::memcmp(a.data(), b.data(), sizeof(*a.data()) * std::size_t(a.size())) == 0;
}

template <class S>
loaq::Matrix<S> fake(loaq::Matrix<S> X, const Spec& spec) {
  const loaq::Report r = loaq::fake_quantize_activations(X, spec);
  REQUIRE_MESSAGE(r.ok(), r.message);
  return X;
}

template <class S>
loaq::ActivationCodes<S> codes_of(const loaq::Matrix<S>& X, const Spec& spec) {
  loaq::ActivationCodes<S> c;
  const loaq::Report r = loaq::quantize_activations(X, spec, c);
  REQUIRE_MESSAGE(r.ok(), r.message);
  return c;
}

// QuaRot's fake_quant/quant_utils.py ActQuantizer in double, written out literally: per token
// (find_params) or per token and group (find_params_per_token_groupwise, whose range does not
// include 0). q is the signed code when symmetric.
struct Reference {
  Eigen::MatrixXd scale, zero, zero_ratio, ratio, q, xhat;  // ratios: −xmin/s and x/s, rounded
};

Reference quarot(const Eigen::MatrixXd& X, int bits, bool sym, double clip, Index group) {
  const Index n = X.rows(), T = X.cols(), gs = group > 0 ? group : n, G = n / gs;
  Reference ref{Eigen::MatrixXd(G, T), Eigen::MatrixXd(G, T), Eigen::MatrixXd::Zero(G, T),
                Eigen::MatrixXd(n, T),
                Eigen::MatrixXd(n, T), Eigen::MatrixXd(n, T)};
  for (Index t = 0; t < T; ++t)
    for (Index g = 0; g < G; ++g) {
      const auto x = X.col(t).segment(g * gs, gs);
      double xmin = x.minCoeff() * clip, xmax = x.maxCoeff() * clip;
      if (group <= 0) {
        xmin = std::min(x.minCoeff(), 0.0) * clip;
        xmax = std::max(x.maxCoeff(), 0.0) * clip;
      }
      double s, z = 0, lo, hi;
      if (sym) {
        const double maxq = std::pow(2.0, bits - 1) - 1;
        xmax = std::max(std::abs(xmin), xmax);
        s = xmax == 0 ? 1.0 : xmax / maxq;
        lo = -(maxq + 1);
        hi = maxq;
      } else {
        const double maxq = std::pow(2.0, bits) - 1;
        if (xmin == 0 && xmax == 0) {
          xmin = -1;
          xmax = 1;
        }
        s = (xmax - xmin) / maxq;
        ref.zero_ratio(g, t) = -xmin / s;
        z = std::nearbyint(-xmin / s);
        lo = 0;
        hi = maxq;
      }
      ref.scale(g, t) = s;
      ref.zero(g, t) = z;
      for (Index i = 0; i < gs; ++i) {
        const Index r = g * gs + i;
        ref.ratio(r, t) = x[i] / s;
        ref.q(r, t) = std::clamp(std::nearbyint(x[i] / s) + z, lo, hi);
        ref.xhat(r, t) = s * (ref.q(r, t) - z);
      }
    }
  return ref;
}

// Distance of v from the nearest rounding tie (k + 0.5).
double tie_distance(double v) { return std::abs(v - std::floor(v) - 0.5); }

// Round half to even, written without nearbyint: v = k + 0.5 exactly.
double even_neighbour(double v) {
  const double f = std::floor(v);
  return std::fmod(f, 2.0) == 0 ? f : f + 1;
}

}  // namespace act_test

TEST_CASE("activation spec: validate names the field and what to use") {
  using act_test::spec_of;
  CHECK(act_test::Spec{}.validate(16).ok());  // bits 16: off
  CHECK_FALSE(act_test::Spec{}.enabled());
  for (int bits = 2; bits <= 8; ++bits) CHECK(spec_of(bits, bits % 2 == 0).validate(16).ok());
  for (int bits : {-1, 0, 1, 9, 15, 17, 32}) {
    const loaq::Report r = spec_of(bits, false).validate(16);
    CHECK(r.status == loaq::Status::InvalidArgument);
    CHECK(r.message.find("bits = " + std::to_string(bits)) != std::string::npos);
  }
  for (double clip : {0.0, -0.5, 1.0000001, 2.0, std::nan(""),
                      std::numeric_limits<double>::infinity()}) {
    const loaq::Report r = spec_of(4, false, clip).validate(16);
    CHECK(r.status == loaq::Status::InvalidArgument);
    CHECK(r.message.find("clip_ratio") != std::string::npos);
  }
  CHECK(spec_of(4, false, 0.9).validate(16).ok());
  CHECK(spec_of(4, false, 1e-6).validate(16).ok());
  for (Index g : {Index(0), Index(-2), Index(5), Index(32)}) {
    const loaq::Report r = spec_of(4, true, 1.0, g).validate(16);
    CHECK(r.status == loaq::Status::InvalidArgument);
    CHECK(r.message.find("group_size") != std::string::npos);
  }
  for (Index g : {Index(1), Index(4), Index(16)}) CHECK(spec_of(4, true, 1.0, g).validate(16).ok());
  CHECK(spec_of(4, true).validate(0).status == loaq::Status::InvalidArgument);
  CHECK(spec_of(4, true).validate(0).message.find("no channels") != std::string::npos);
}

TEST_CASE_TEMPLATE("activation quantizer: bad input fails, names the entry and leaves X unchanged",
                   S, float, double) {
  using act_test::spec_of;
  std::mt19937 rng(3);
  const loaq::Matrix<S> X0 = loaq_test::random_matrix<S>(24, 6, rng);
  auto expect_fail = [&](const loaq::Matrix<S>& X_in, const act_test::Spec& spec,
                         loaq::Status status, const std::string& needle) {
    loaq::Matrix<S> X = X_in;
    const loaq::Report r = loaq::fake_quantize_activations(X, spec);
    CHECK(r.status == status);
    CHECK_MESSAGE(r.message.find(needle) != std::string::npos, r.message);
    CHECK(act_test::same_bits(X, X_in));
    loaq::ActivationCodes<S> out;
    out.codes.resize(2, 2);  // stale content is cleared
    const loaq::Report rc = loaq::quantize_activations(X, spec, out);
    CHECK(rc.status == status);
    CHECK(out.codes.size() == 0);
    CHECK(out.scale.size() == 0);
  };
  expect_fail(X0, spec_of(1, false), loaq::Status::InvalidArgument, "bits");
  expect_fail(X0, spec_of(9, true), loaq::Status::InvalidArgument, "bits");
  expect_fail(X0, spec_of(4, true, 0.0), loaq::Status::InvalidArgument, "clip_ratio");
  expect_fail(X0, spec_of(4, true, 1.5), loaq::Status::InvalidArgument, "clip_ratio");
  expect_fail(X0, spec_of(4, true, std::nan("")), loaq::Status::InvalidArgument, "clip_ratio");
  expect_fail(X0, spec_of(4, false, 1.0, 5), loaq::Status::InvalidArgument, "does not divide");
  expect_fail(X0, spec_of(4, false, 1.0, 0), loaq::Status::InvalidArgument, "group_size");
  expect_fail(loaq::Matrix<S>(0, 3), spec_of(4, false), loaq::Status::InvalidArgument,
              "no channels");

  // A non-finite entry in the last token: the earlier tokens are valid, and still untouched.
  const S inf = std::numeric_limits<S>::infinity();
  for (const S bad : {std::numeric_limits<S>::quiet_NaN(), inf, -inf}) {
    for (Index group : {Index(-1), Index(8)}) {
      loaq::Matrix<S> X = X0;
      X(21, 5) = bad;
      expect_fail(X, spec_of(4, false, 0.9, group), loaq::Status::NonFiniteInput,
                  "channel 21, token 5");
      X = X0;
      X(0, 2) = bad;
      expect_fail(X, spec_of(3, true, 1.0, group), loaq::Status::NonFiniteInput,
                  "channel 0, token 2");
    }
  }

  // T = 0 is a no-op; bits 16 leaves X as is but has no codes.
  loaq::Matrix<S> empty(8, 0);
  CHECK(loaq::fake_quantize_activations(empty, spec_of(4, true)).ok());
  loaq::ActivationCodes<S> out;
  CHECK(loaq::quantize_activations(empty, spec_of(4, true), out).ok());
  CHECK(out.codes.rows() == 8);
  CHECK(out.codes.cols() == 0);
  loaq::Matrix<S> X = X0;
  CHECK(loaq::fake_quantize_activations(X, act_test::Spec{}).ok());
  CHECK(act_test::same_bits(X, X0));
  CHECK(loaq::quantize_activations(X, act_test::Spec{}, out).status ==
        loaq::Status::InvalidArgument);
}

TEST_CASE_TEMPLATE("activation codes lie on the grid and dequantize to the fake-quantized values",
                   S, float, double) {
  std::mt19937 rng(5);
  const loaq::Matrix<S> X = loaq_test::random_matrix<S>(64, 9, rng, 1.0);  // heavy tails
  for (int bits = 2; bits <= 8; ++bits)
    for (bool sym : {false, true})
      for (Index group : {Index(-1), Index(16)}) {
        CAPTURE(bits);
        CAPTURE(sym);
        CAPTURE(group);
        const act_test::Spec spec = act_test::spec_of(bits, sym, 0.9, group);
        const auto c = act_test::codes_of(X, spec);
        const loaq::Matrix<S> Y = act_test::fake(X, spec);
        const Index G = group > 0 ? 64 / group : 1;
        REQUIRE(c.scale.rows() == G);
        REQUIRE(c.scale.cols() == 9);
        CHECK(c.group_size == (group > 0 ? group : 64));
        CHECK(int(c.codes.maxCoeff()) <= (1 << bits) - 1);
        CHECK(act_test::same_bits(c.dequantize(), Y));
        for (Index t = 0; t < 9; ++t)
          for (Index g = 0; g < G; ++g) {
            const S z = c.zero(g, t);
            CHECK(c.scale(g, t) > 0);
            CHECK(z == std::round(z));
            if (sym) CHECK(z == S(1 << (bits - 1)));
            else CHECK((z >= 0 && z <= S((1 << bits) - 1)));
          }
        // Every value is an integer multiple of its scale.
        for (Index t = 0; t < 9; ++t)
          for (Index i = 0; i < 64; ++i) {
            const S k = Y(i, t) / c.scale(i / c.group_size, t);
            CHECK(std::abs(k - std::round(k)) <= S(1e-4));
          }
      }
}

TEST_CASE_TEMPLATE("each token has its own scale: changing one token changes only its output", S,
                   float, double) {
  std::mt19937 rng(7);
  loaq::Matrix<S> X = loaq_test::random_matrix<S>(40, 8, rng);
  for (bool sym : {false, true}) {
    const act_test::Spec spec = act_test::spec_of(4, sym, 0.9);
    const auto c0 = act_test::codes_of(X, spec);
    const loaq::Matrix<S> Y0 = act_test::fake(X, spec);
    loaq::Matrix<S> X1 = X;
    X1.col(3) *= S(10);
    X1(0, 3) += S(1);
    const auto c1 = act_test::codes_of(X1, spec);
    const loaq::Matrix<S> Y1 = act_test::fake(X1, spec);
    for (Index t = 0; t < 8; ++t) {
      if (t == 3) {
        CHECK(c1.scale(0, t) > S(5) * c0.scale(0, t));
        CHECK_FALSE(act_test::same_bits(loaq::Matrix<S>(Y1.col(t)), loaq::Matrix<S>(Y0.col(t))));
      } else {
        CHECK(c1.scale(0, t) == c0.scale(0, t));
        CHECK(act_test::same_bits(loaq::Matrix<S>(Y1.col(t)), loaq::Matrix<S>(Y0.col(t))));
      }
    }
    // Scales differ across tokens of different magnitude.
    loaq::Matrix<S> X2 = X;
    X2.col(1) *= S(0.01);
    const auto c2 = act_test::codes_of(X2, spec);
    CHECK(c2.scale(0, 1) < S(0.02) * c2.scale(0, 0));
  }
}

TEST_CASE_TEMPLATE("clip ratio: the scale is clip·max|x|/maxq and values past it saturate", S,
                   float, double) {
  std::mt19937 rng(9);
  const loaq::Matrix<S> X = loaq_test::random_matrix<S>(48, 5, rng);
  const S clip = S(0.9);
  // Symmetric, 4 bits: m = 7, q ∈ [−8, 7].
  {
    const auto c = act_test::codes_of(X, act_test::spec_of(4, true, 0.9));
    const loaq::Matrix<S> Y = act_test::fake(X, act_test::spec_of(4, true, 0.9));
    for (Index t = 0; t < 5; ++t) {
      const S amax = X.col(t).cwiseAbs().maxCoeff(), s = amax * clip / S(7);
      CHECK(c.scale(0, t) == s);
      for (Index i = 0; i < 48; ++i) {
        const S x = X(i, t);
        if (x / s > S(7.5)) CHECK(Y(i, t) == S(7) * s);
        if (x / s < S(-8.5)) CHECK(Y(i, t) == S(-8) * s);
        CHECK(Y(i, t) <= S(7) * s);
        CHECK(Y(i, t) >= S(-8) * s);
      }
    }
  }
  // Asymmetric, 3 bits: m = 7, range [clip·min, clip·max], codes 0 and 7 at the clipped ends.
  {
    const auto c = act_test::codes_of(X, act_test::spec_of(3, false, 0.9));
    for (Index t = 0; t < 5; ++t) {
      const S xmin = std::min(X.col(t).minCoeff(), S(0)) * clip;
      const S xmax = std::max(X.col(t).maxCoeff(), S(0)) * clip;
      const S s = (xmax - xmin) / S(7);
      CHECK(c.scale(0, t) == s);
      CHECK(c.zero(0, t) == std::nearbyint(-xmin / s));
      Index idx_max, idx_min;
      X.col(t).maxCoeff(&idx_max);
      X.col(t).minCoeff(&idx_min);
      CHECK(int(c.codes(idx_max, t)) == 7);  // 0.9·max is the last grid point: max lies past it
      CHECK(int(c.codes(idx_min, t)) == 0);
    }
  }
  // A smaller clip ratio gives a proportionally smaller scale.
  const auto c1 = act_test::codes_of(X, act_test::spec_of(4, true, 1.0));
  const auto c5 = act_test::codes_of(X, act_test::spec_of(4, true, 0.5));
  for (Index t = 0; t < 5; ++t)
    CHECK(double(c5.scale(0, t)) == doctest::Approx(0.5 * double(c1.scale(0, t))).epsilon(1e-6));
}

TEST_CASE_TEMPLATE("activation round trip: within half a step, and grid points are exact", S,
                   float, double) {
  std::mt19937 rng(11);
  const loaq::Matrix<S> X = loaq_test::random_matrix<S>(72, 6, rng);
  for (int bits = 2; bits <= 8; ++bits)
    for (bool sym : {false, true})
      for (Index group : {Index(-1), Index(24)}) {
        CAPTURE(bits);
        CAPTURE(sym);
        const act_test::Spec spec = act_test::spec_of(bits, sym, 1.0, group);
        const auto c = act_test::codes_of(X, spec);
        const loaq::Matrix<S> Y = act_test::fake(X, spec);
        const S eps = std::numeric_limits<S>::epsilon();
        for (Index t = 0; t < 6; ++t)
          for (Index i = 0; i < 72; ++i) {
            const S s = c.scale(i / c.group_size, t);
            CHECK(std::abs(Y(i, t) - X(i, t)) <= s / 2 + 8 * eps * (s + std::abs(X(i, t))));
          }
      }

  // A token already on the grid comes back unchanged (scales are powers of two: exact).
  loaq::Matrix<S> G(15, 2);
  for (Index k = 0; k < 15; ++k) {
    G(k, 0) = S(0.25) * S(k - 7);  // symmetric 4 bits: max|x| = 7·0.25, s = 0.25
    G(k, 1) = S(0.25) * S(k - 3);  // asymmetric 4 bits: [−0.75, 2.75]
  }
  loaq::Matrix<S> A(16, 1);
  for (Index k = 0; k < 16; ++k) A(k, 0) = S(0.25) * S(k - 3);  // [−0.75, 3]: s = 0.25, z = 3
  CHECK(act_test::same_bits(act_test::fake(loaq::Matrix<S>(G.col(0)), act_test::spec_of(4, true)),
                            loaq::Matrix<S>(G.col(0))));
  CHECK(act_test::same_bits(act_test::fake(A, act_test::spec_of(4, false)), A));
  const auto ca = act_test::codes_of(A, act_test::spec_of(4, false));
  CHECK(ca.scale(0, 0) == S(0.25));
  CHECK(ca.zero(0, 0) == S(3));
  for (Index k = 0; k < 16; ++k) CHECK(int(ca.codes(k, 0)) == k);
}

TEST_CASE_TEMPLATE("activation rounding ties go to even, for values and for the zero point", S,
                   float, double) {
  // Symmetric 4 bits, max|x| = 1.75: s = 0.25, x/s = k + 0.5 exactly.
  loaq::Matrix<S> X(15, 1);
  X(0, 0) = S(1.75);
  for (Index k = 1; k < 15; ++k) X(k, 0) = S(0.25) * (S(k - 8) + S(0.5));  // −6.5 … 6.5
  const auto c = act_test::codes_of(X, act_test::spec_of(4, true));
  REQUIRE(c.scale(0, 0) == S(0.25));
  for (Index k = 1; k < 15; ++k) {
    const double v = double(k - 8) + 0.5;
    CHECK(int(c.codes(k, 0)) - 8 == int(act_test::even_neighbour(v)));
  }
  // Asymmetric 4 bits, [−0.625, 3.125]: s = 0.25, −xmin/s = 2.5 → z = 2 (half up would give 3).
  loaq::Matrix<S> A(3, 1);
  A << S(-0.625), S(3.125), S(0.375);  // 0.375/s = 1.5 → 2, code 4
  const auto ca = act_test::codes_of(A, act_test::spec_of(4, false));
  REQUIRE(ca.scale(0, 0) == S(0.25));
  CHECK(ca.zero(0, 0) == S(2));
  CHECK(int(ca.codes(0, 0)) == 0);  // −2.5 → −2, + 2
  CHECK(int(ca.codes(1, 0)) == 14);  // 12.5 → 12, + 2
  CHECK(int(ca.codes(2, 0)) == 4);
}

TEST_CASE_TEMPLATE("channel groups: each group of each token is quantized on its own", S, float,
                   double) {
  std::mt19937 rng(13);
  loaq::Matrix<S> X = loaq_test::random_matrix<S>(32, 5, rng);
  X.middleRows(16, 8) *= S(100);  // group 2 of every token
  for (bool sym : {false, true}) {
    const act_test::Spec spec = act_test::spec_of(4, sym, 0.9, 8);
    const auto c = act_test::codes_of(X, spec);
    const loaq::Matrix<S> Y = act_test::fake(X, spec);
    REQUIRE(c.scale.rows() == 4);
    for (Index t = 0; t < 5; ++t) {
      CHECK(c.scale(2, t) > S(20) * c.scale(0, t));
      for (Index g = 0; g < 4; ++g) {
        // A group equals that group quantized alone as one token.
        const loaq::Matrix<S> alone =
            act_test::fake(loaq::Matrix<S>(X.block(g * 8, t, 8, 1)), act_test::spec_of(4, sym, 0.9));
        CHECK(act_test::same_bits(alone, loaq::Matrix<S>(Y.block(g * 8, t, 8, 1))));
      }
    }
    // Per-token quantization differs: the small groups lose their resolution.
    const loaq::Matrix<S> P = act_test::fake(X, act_test::spec_of(4, sym, 0.9));
    CHECK((P - X).topRows(8).cwiseAbs().maxCoeff() > S(4) * (Y - X).topRows(8).cwiseAbs().maxCoeff());
  }
}

TEST_CASE_TEMPLATE("activation quantizer works on blocks of a larger matrix", S, float, double) {
  std::mt19937 rng(15);
  loaq::Matrix<S> X = loaq_test::random_matrix<S>(20, 7, rng);
  const loaq::Matrix<S> X0 = X;
  const act_test::Spec spec = act_test::spec_of(4, false, 0.9);
  REQUIRE(loaq::fake_quantize_activations(X.block(3, 2, 12, 4), spec).ok());
  const loaq::Matrix<S> expected = act_test::fake(loaq::Matrix<S>(X0.block(3, 2, 12, 4)), spec);
  CHECK(act_test::same_bits(loaq::Matrix<S>(X.block(3, 2, 12, 4)), expected));
  loaq::Matrix<S> outside = X - X0;
  outside.block(3, 2, 12, 4).setZero();
  CHECK(outside.isZero(0));
}

TEST_CASE_TEMPLATE("activation quantizer: SIMD equals generic bit for bit, ties and odd lengths",
                   S, float, double) {
  using act_test::ActivationGeneric;
  using act_test::ActivationSimd;
  std::mt19937 rng(17);
  const Index n = 203, T = 11;  // 203 = 7·29: no SIMD width divides it
  loaq::Matrix<S> X = loaq_test::random_matrix<S>(n, T, rng, 1.0);
  // Tokens full of exact ties: max|x| = 1.75 and multiples of 0.125 (s = 0.25 when symmetric).
  std::uniform_int_distribution<int> k(-14, 14);
  for (Index t : {Index(2), Index(7)}) {
    for (Index i = 0; i < n; ++i) X(i, t) = S(0.125) * S(k(rng));
    X(n / 2, t) = S(1.75);
  }
  X.col(4) *= S(1e-39);  // subnormal in float
  X.col(5).setZero();
  X(100, 6) = S(-1e30);  // one outlier
  for (int bits : {2, 3, 4, 5, 8})
    for (bool sym : {false, true})
      for (Index group : {Index(-1), Index(29), Index(7), Index(1)}) {
        CAPTURE(bits);
        CAPTURE(sym);
        CAPTURE(group);
        const act_test::Spec spec = act_test::spec_of(bits, sym, 0.9, group);
        loaq::Matrix<S> a = X, b = X;
        REQUIRE(loaq::fake_quantize_activations<ActivationSimd>(a, spec).ok());
        REQUIRE(loaq::fake_quantize_activations<ActivationGeneric>(b, spec).ok());
        CHECK(act_test::same_bits(a, b));
        CHECK(a.allFinite());
        loaq::ActivationCodes<S> ca, cb;
        REQUIRE(loaq::quantize_activations<ActivationSimd>(X, spec, ca).ok());
        REQUIRE(loaq::quantize_activations<ActivationGeneric>(X, spec, cb).ok());
        CHECK(ca.codes == cb.codes);
        CHECK(act_test::same_bits(ca.scale, cb.scale));
        CHECK(act_test::same_bits(ca.zero, cb.zero));
        CHECK(act_test::same_bits(ca.dequantize(), a));
      }

  // The kernels themselves at every length up to a few SIMD widths, and a non-finite entry at
  // every position (body and tail).
  const S nan = std::numeric_limits<S>::quiet_NaN(), inf = std::numeric_limits<S>::infinity();
  std::vector<S> v(X.data(), X.data() + n), w;
  std::vector<std::uint8_t> ca(n), cb(n);
  for (Index len = 1; len <= 70; ++len) {
    S la, ha, lb, hb;
    CHECK(ActivationSimd::range(v.data(), len, la, ha));
    CHECK(ActivationGeneric::range(v.data(), len, lb, hb));
    CHECK(la == lb);
    CHECK(ha == hb);
    CHECK(la == *std::min_element(v.begin(), v.begin() + len));
    CHECK(ha == *std::max_element(v.begin(), v.begin() + len));
    const S s = S(0.1), z = S(7), hi = S(15);
    std::vector<S> fa(v.begin(), v.begin() + len), fb = fa;
    ActivationSimd::fake_quantize(fa.data(), len, s, z, hi);
    ActivationGeneric::fake_quantize(fb.data(), len, s, z, hi);
    CHECK(std::memcmp(fa.data(), fb.data(), sizeof(S) * std::size_t(len)) == 0);
    ActivationSimd::encode(v.data(), len, s, z, hi, ca.data());
    ActivationGeneric::encode(v.data(), len, s, z, hi, cb.data());
    CHECK(std::equal(ca.begin(), ca.begin() + len, cb.begin()));
    for (Index pos = 0; pos < len; ++pos)
      for (const S bad : {nan, inf, -inf}) {
        w.assign(v.begin(), v.begin() + len);
        w[std::size_t(pos)] = bad;
        CHECK_FALSE(ActivationSimd::range(w.data(), len, la, ha));
        CHECK_FALSE(ActivationGeneric::range(w.data(), len, lb, hb));
      }
  }
}

TEST_CASE("activation quantizer agrees with QuaRot's formulas computed in double") {
  std::mt19937 rng(19);
  const Index n = 256, T = 40;
  const Eigen::MatrixXf X = loaq_test::random_inputs(n, T, rng).cast<float>();  // outlier channels
  const Eigen::MatrixXd Xd = X.cast<double>();
  Index compared = 0, near_ties = 0;
  for (int bits = 2; bits <= 8; ++bits)
    for (bool sym : {false, true})
      for (Index group : {Index(-1), Index(64)}) {
        CAPTURE(bits);
        CAPTURE(sym);
        CAPTURE(group);
        const double clip = 0.9;
        const act_test::Spec spec = act_test::spec_of(bits, sym, clip, group);
        const auto c = act_test::codes_of(X, spec);
        const Eigen::MatrixXf Y = act_test::fake(X, spec);
        const act_test::Reference ref = act_test::quarot(Xd, bits, sym, clip, group);
        const Index gs = c.group_size;
        // Random data: every group spans both signs, so QuaRot's groupwise range (without 0)
        // is the same as ours.
        for (Index t = 0; t < T; ++t)
          for (Index g = 0; g < n / gs; ++g) {
            REQUIRE(X.col(t).segment(g * gs, gs).minCoeff() < 0);
            REQUIRE(X.col(t).segment(g * gs, gs).maxCoeff() > 0);
            CHECK(double(c.scale(g, t)) == doctest::Approx(ref.scale(g, t)).epsilon(1e-6));
          }
        std::vector<int> used(1 << bits, 0);
        Index mismatched = 0;
        for (Index t = 0; t < T; ++t)
          for (Index i = 0; i < n; ++i) {
            const Index g = i / gs;
            // Float and double scales differ by ~1e-7 relative: only a value (or zero point)
            // within 1e-4 of a rounding tie may round the other way.
            const bool tie = act_test::tie_distance(ref.ratio(i, t)) < 1e-4 ||
                             (!sym && act_test::tie_distance(ref.zero_ratio(g, t)) < 1e-4);
            const int ours = int(c.codes(i, t)) - (sym ? 1 << (bits - 1) : 0);
            used[std::size_t(c.codes(i, t))] = 1;
            if (tie) {
              ++near_ties;
              CHECK(std::abs(ours - ref.q(i, t)) <= 1);
              continue;
            }
            ++compared;
            if (ours != int(ref.q(i, t))) ++mismatched;
            CHECK(std::abs(double(Y(i, t)) - ref.xhat(i, t)) <=
                  1e-6 * ref.scale(g, t) * (std::abs(ref.q(i, t)) + 1 + ref.zero(g, t)));
          }
        CHECK(mismatched == 0);
        // Meaningful: nearly every code of the grid occurs.
        CHECK(std::count(used.begin(), used.end(), 1) >= (1 << bits) * 9 / 10);
      }
  CHECK(compared > 200000);
  CHECK(near_ties < compared / 1000);
}

TEST_CASE("activation quantizer: huge and tiny magnitudes give finite values or a clear failure") {
  using act_test::spec_of;
  // ±1e38 and ±3e38: (xmax − xmin) overflows float for the latter; the scale stays finite.
  for (float big : {1e38f, 3e38f}) {
    Eigen::MatrixXf X(6, 2);
    X << big, -big, 1, -1, 0, 0.5f * big, -big, big, 3, -2, big, 1e-3f;
    for (bool sym : {false, true})
      for (int bits : {2, 4, 8}) {
        if (big > 2e38f && !sym && bits == 2) continue;  // s·(0 − z) = −2·(2e38): OutOfRange
        CAPTURE(big);
        CAPTURE(sym);
        CAPTURE(bits);
        const auto c = act_test::codes_of(X, spec_of(bits, sym));
        const Eigen::MatrixXf Y = act_test::fake(X, spec_of(bits, sym));
        CHECK(c.scale.allFinite());
        CHECK(Y.allFinite());
        for (Index t = 0; t < 2; ++t) {
          const double s = double(c.scale(0, t));
          CHECK(s == doctest::Approx(2.0 * double(big) / ((1 << bits) - (sym ? 2 : 1))).epsilon(1e-5));
          for (Index i = 0; i < 6; ++i)
            CHECK(std::abs(double(Y(i, t)) - double(X(i, t))) <= 0.5 * s * (1 + 1e-5));
        }
      }
  }
  // At the float limit the asymmetric grid's end point overflows: OutOfRange, X unchanged.
  const float fmax = std::numeric_limits<float>::max();
  Eigen::MatrixXf X(4, 3);
  X << 1, fmax, 2, 2, -fmax, 3, 3, 0, 4, 4, 1, 5;
  const Eigen::MatrixXf X0 = X;
  const loaq::Report r = loaq::fake_quantize_activations(X, spec_of(4, false));
  CHECK(r.status == loaq::Status::OutOfRange);
  CHECK(r.message.find("token 1") != std::string::npos);
  CHECK(act_test::same_bits(X, X0));
  // The same in double is far from its limit.
  Eigen::MatrixXd Xd = X0.cast<double>();
  CHECK(loaq::fake_quantize_activations(Xd, spec_of(4, false)).ok());
  CHECK(Xd.allFinite());

  // All-zero and subnormal tokens: QuaRot's all-zero handling, no division by zero.
  Eigen::MatrixXf Z(5, 3);
  Z.col(0).setZero();
  Z.col(1) << 1e-45f, -3e-45f, 0, 2e-40f, -1e-41f;
  Z.col(2) << 1e-39f, 0, 0, 0, 0;
  for (bool sym : {false, true}) {
    const auto c = act_test::codes_of(Z, spec_of(4, sym, 0.9));
    const Eigen::MatrixXf Y = act_test::fake(Z, spec_of(4, sym, 0.9));
    CHECK(Y.allFinite());
    CHECK(c.scale.allFinite());
    CHECK(c.scale.minCoeff() >= std::numeric_limits<float>::min());
    CHECK(Y.col(0).isZero(0));
    CHECK((Y - Z).cwiseAbs().maxCoeff() <= 1e-38f);
    if (sym) {
      CHECK(c.scale(0, 0) == 1.0f);  // xmax = 0 → scale 1
    } else {
      CHECK(c.scale(0, 0) == 2.0f / 15.0f);  // [−1, 1]
      CHECK(c.zero(0, 0) == std::nearbyint(1.0f / (2.0f / 15.0f)));  // in float, as torch
    }
  }
  // A clip ratio so small that the scale would be subnormal: everything saturates, finitely.
  Eigen::MatrixXf W = Eigen::MatrixXf::Constant(4, 1, 1.0f);
  W(0, 0) = -2.0f;
  for (bool sym : {false, true}) {
    const Eigen::MatrixXf Y = act_test::fake(W, spec_of(4, sym, 1e-44));
    CHECK(Y.allFinite());
    CHECK(Y.cwiseAbs().maxCoeff() < 1e-36f);
  }
}
