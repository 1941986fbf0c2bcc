// llama.cpp's block grids (grid/ggml.hpp) and their packing (io/ggml_blocks.hpp): parameters are
// fp16 values fitted as llama.cpp fits them, RTN lands on the nearest point of each block, GPTQ on
// these grids beats RTN, and what the GGUF reader dequantizes from the packed bytes is the
// solver's x̂ bit for bit, for every format, with act-order, row orders and extreme magnitudes.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <loaq/io/ggml_blocks.hpp>
#include <loaq/io/gguf.hpp>
#include <loaq/io/gguf_writer.hpp>
#include <loaq/loaq.hpp>

using loaq::Index;

namespace {

Eigen::MatrixXf random_weights(Index m, Index n, std::mt19937& rng, float scale = 0.05f) {
  std::normal_distribution<float> g(0.f, scale);
  Eigen::MatrixXf W(m, n);
  for (Index j = 0; j < n; ++j)
    for (Index i = 0; i < m; ++i) W(i, j) = g(rng);
  return W;
}

// H = XXᵀ/T of correlated inputs (n × T), as a calibration set gives.
Eigen::MatrixXd random_hessian(Index n, std::mt19937& rng) {
  std::normal_distribution<double> g(0.0, 1.0);
  Eigen::MatrixXd mix(n, n), Z(n, 4 * n);
  for (Index j = 0; j < n; ++j)
    for (Index i = 0; i < n; ++i) mix(i, j) = g(rng) * (i == j ? 1.0 : 0.3);
  for (Index j = 0; j < Z.cols(); ++j)
    for (Index i = 0; i < n; ++i) Z(i, j) = g(rng);
  const Eigen::MatrixXd X = mix * Z;
  return X * X.transpose() / double(X.cols());
}

// The packed tensor through a GGUF file and the reader's own dequantization (m × n, row-major).
template <class Grid>
Eigen::MatrixXf through_gguf(const Grid& grid, const loaq::QuantizedWeight<float>& q,
                             const std::vector<Index>& order = {}) {
  loaq::io::GgufWriter w;
  w.add_tensor("w", {std::uint64_t(q.codes.cols()), std::uint64_t(q.codes.rows())}, Grid::ggml_type,
               loaq::io::pack_ggml_blocks(grid, q, order));
  const loaq::io::GgufReader r(w.bytes(), "packed");
  return r.matrix("w", q.codes.rows(), q.codes.cols());
}

bool bit_equal(const Eigen::MatrixXf& a, const Eigen::MatrixXf& b) {
  return a.rows() == b.rows() && a.cols() == b.cols() &&
         std::memcmp(a.data(), b.data(), sizeof(float) * std::size_t(a.size())) == 0;
}

// Every x̂ is the nearest of its block's 16 or 255 points (ties: either neighbour).
template <class Grid>
int nearest_violations(const Grid& grid, const Eigen::MatrixXf& W, const loaq::QuantizedWeight<float>& q) {
  int bad = 0;
  const int codes = Grid::bits == 8 ? 256 : 16;
  for (Index i = 0; i < W.rows(); ++i)
    for (Index j = 0; j < W.cols(); ++j) {
      const float s = q.scales(i, j / 32), z = q.zeros(i, j / 32);
      const float err = std::abs(W(i, j) - q.weight(i, j));
      for (int c = Grid::bits == 8 ? 1 : 0; c < codes; ++c)
        if (std::abs(W(i, j) - grid.decode(std::uint8_t(c), s, z)) < err * (1 - 1e-6f) - 1e-30f) {
          ++bad;
          break;
        }
    }
  return bad;
}

double proxy_error(const Eigen::MatrixXf& W, const Eigen::MatrixXf& Q, const Eigen::MatrixXd& H) {
  const Eigen::MatrixXd D = (W - Q).cast<double>();
  return (D * H * D.transpose()).trace();
}

}  // namespace

TEST_CASE("ggml grids: parameters are fp16 values fitted as llama.cpp fits them") {
  std::mt19937 rng(1);
  const Eigen::MatrixXf W = random_weights(8, 64, rng);
  loaq::QuantizedWeight<float> q0, q1, q8;
  REQUIRE(loaq::rtn(W, loaq::GgmlQ4_0Grid<float>(), 32, {}, q0).ok());
  REQUIRE(loaq::rtn(W, loaq::GgmlQ4_1Grid<float>(), 32, {}, q1).ok());
  REQUIRE(loaq::rtn(W, loaq::GgmlQ8_0Grid<float>(), 32, {}, q8).ok());
  for (Index i = 0; i < W.rows(); ++i)
    for (Index b = 0; b < 2; ++b) {
      const auto blk = W.row(i).segment(32 * b, 32);
      const float lo = blk.minCoeff(), hi = blk.maxCoeff(), amax = std::max(-lo, hi);
      const float max = -lo > hi ? lo : hi;  // llama.cpp: the value of largest magnitude, signed
      CHECK(q0.scales(i, b) == float(Eigen::half(max / -8.f)));
      CHECK(q0.zeros(i, b) == 8.f);
      CHECK(q1.scales(i, b) == float(Eigen::half((hi - lo) / 15.f)));
      CHECK(q1.zeros(i, b) == float(Eigen::half(lo)));
      CHECK(q8.scales(i, b) == float(Eigen::half(amax / 127.f)));
      for (const auto* q : {&q0, &q1, &q8}) {
        CHECK(loaq::internal::is_fp16_value(q->scales(i, b)));
        CHECK(loaq::internal::is_fp16_value(q->zeros(i, b)));
      }
    }
  // The signed extreme of a Q4_0 block sits on code 0 (q − 8 = −8).
  for (Index i = 0; i < W.rows(); ++i) {
    const auto blk = W.row(i).segment(0, 32);
    Index arg;
    blk.cwiseAbs().maxCoeff(&arg);
    CHECK(q0.codes(i, arg) == 0);
  }
}

TEST_CASE("ggml grids: RTN is the nearest point of every block, and the file holds it exactly") {
  std::mt19937 rng(2);
  const Eigen::MatrixXf W = random_weights(24, 96, rng);
  auto check = [&](const auto& grid) {
    loaq::QuantizedWeight<float> q;
    REQUIRE(loaq::rtn(W, grid, 32, {}, q).ok());
    CHECK(nearest_violations(grid, W, q) == 0);
    CHECK(bit_equal(through_gguf(grid, q), q.weight));
  };
  check(loaq::GgmlQ4_0Grid<float>());
  check(loaq::GgmlQ4_1Grid<float>());
  check(loaq::GgmlQ8_0Grid<float>());
}

TEST_CASE_TEMPLATE("ggml grids: GPTQ beats RTN and its x̂ is what the file dequantizes to", Grid,
                   loaq::GgmlQ4_0Grid<float>, loaq::GgmlQ4_1Grid<float>, loaq::GgmlQ8_0Grid<float>) {
  std::mt19937 rng(3);
  const Index m = 48, n = 128;
  const Eigen::MatrixXf W = random_weights(m, n, rng);
  const Eigen::MatrixXd H = random_hessian(n, rng);
  const Grid grid;
  loaq::QuantizedWeight<float> r;
  REQUIRE(loaq::rtn(W, grid, 32, {}, r).ok());
  for (bool act : {false, true}) {
    CAPTURE(act);
    loaq::GptqOptions opt;
    opt.group_size = 32;
    opt.act_order = act;
    opt.static_groups = act;  // blocks in the original column order
    loaq::QuantizedWeight<float> q;
    REQUIRE(loaq::gptq(W, H, grid, opt, q).ok());
    CHECK(proxy_error(W, q.weight, H) < 0.9 * proxy_error(W, r.weight, H));
    CHECK(bit_equal(through_gguf(grid, q), q.weight));
    // Every x̂ decodes from its code and its block's stored parameters.
    for (Index i = 0; i < m; ++i)
      for (Index j = 0; j < n; ++j)
        REQUIRE(grid.decode(q.codes(i, j), q.scales(i, j / 32), q.zeros(i, j / 32)) == q.weight(i, j));
  }
  // The same in double: the parameters are still fp16 values, x̂ is computed as llama.cpp does.
  using Double = std::conditional_t<std::is_same_v<Grid, loaq::GgmlQ4_0Grid<float>>, loaq::GgmlQ4_0Grid<double>,
                 std::conditional_t<std::is_same_v<Grid, loaq::GgmlQ4_1Grid<float>>, loaq::GgmlQ4_1Grid<double>,
                                    loaq::GgmlQ8_0Grid<double>>>;
  loaq::GptqOptions opt;
  opt.group_size = 32;
  loaq::QuantizedWeight<double> qd;
  REQUIRE(loaq::gptq(W.cast<double>(), H, Double(), opt, qd).ok());
  loaq::QuantizedWeight<float> qf{qd.weight.cast<float>(), qd.codes, qd.scales.cast<float>(),
                                  qd.zeros.cast<float>(), qd.g_idx, qd.loss};
  CHECK(qf.weight.cast<double>() == qd.weight);
  CHECK(bit_equal(through_gguf(grid, qf), qf.weight));
}

TEST_CASE("ggml blocks: a row order writes row order[r] as file row r") {
  std::mt19937 rng(4);
  const Eigen::MatrixXf W = random_weights(6, 64, rng);
  const loaq::GgmlQ4_1Grid<float> grid;
  loaq::QuantizedWeight<float> q;
  REQUIRE(loaq::rtn(W, grid, 32, {}, q).ok());
  const std::vector<Index> order = {3, 0, 5, 1, 4, 2};
  const Eigen::MatrixXf file = through_gguf(grid, q, order);
  for (Index r = 0; r < 6; ++r) CHECK(file.row(r) == q.weight.row(order[std::size_t(r)]));
  CHECK_THROWS_AS(loaq::io::pack_ggml_blocks(grid, q, {0, 1}), loaq::io::format_error);
  CHECK_THROWS_AS(loaq::io::pack_ggml_blocks(grid, q, {0, 1, 2, 3, 4, 6}), loaq::io::format_error);
}

TEST_CASE("ggml grids: zero, constant, huge and tiny blocks stay finite and exact in the file") {
  Eigen::MatrixXf W(4, 64);
  std::mt19937 rng(5);
  W.row(0).setZero();                          // d ≠ 0 for Q4_0/Q8_0, every x̂ = 0
  W.row(1).setConstant(0.3f);                  // Q4_1: d = 0, x̂ = fp16(0.3)
  W.row(2) = random_weights(1, 64, rng, 1e6f);  // beyond fp16: d saturates at 65504, x̂ clips
  W.row(3) = random_weights(1, 64, rng, 1e-9f); // below fp16: d underflows to 0 or a subnormal
  auto check = [&](const auto& grid, const char* name) {
    CAPTURE(name);
    loaq::QuantizedWeight<float> q;
    REQUIRE(loaq::rtn(W, grid, 32, {}, q).ok());
    CHECK(q.weight.allFinite());
    CHECK(q.weight.row(0).isZero(0));
    CHECK(bit_equal(through_gguf(grid, q), q.weight));
    CHECK(q.weight.row(2).cwiseAbs().maxCoeff() <= 65504.f * 127.f);
  };
  check(loaq::GgmlQ4_0Grid<float>(), "Q4_0");
  check(loaq::GgmlQ4_1Grid<float>(), "Q4_1");
  check(loaq::GgmlQ8_0Grid<float>(), "Q8_0");
  loaq::QuantizedWeight<float> q;
  REQUIRE(loaq::rtn(W, loaq::GgmlQ4_1Grid<float>(), 32, {}, q).ok());
  CHECK(q.weight.row(1).isConstant(float(Eigen::half(0.3f)), 0));
}

TEST_CASE("ggml grids: rows solved at a power-of-two rescale keep Q4_1's minimum consistent") {
  // Rows near 2^70 are solved rescaled (solve/row_scaling.hpp): the minimum m is in value units,
  // so it must be scaled back with the scale, or decode(code, d, m) would disagree with x̂.
  std::mt19937 rng(6);
  Eigen::MatrixXf W = random_weights(4, 32, rng);
  W.row(1) *= std::ldexp(1.f, 70);
  W.row(2).array() += 1.f;  // an offset block, so m matters
  W.row(2) *= std::ldexp(1.f, 70);
  const loaq::GgmlQ4_1Grid<float> grid;
  loaq::QuantizedWeight<float> q;
  REQUIRE(loaq::rtn(W, grid, 32, {}, q).ok());
  for (Index i = 0; i < 4; ++i)
    for (Index j = 0; j < 32; ++j)
      CHECK(grid.decode(q.codes(i, j), q.scales(i, 0), q.zeros(i, 0)) == q.weight(i, j));
  // Such values are beyond fp16: the packer refuses them instead of writing something else.
  CHECK_THROWS_WITH_AS(loaq::io::pack_ggml_blocks(grid, q), doctest::Contains("not an fp16 value"),
                       loaq::io::format_error);
}

TEST_CASE("ggml blocks: a solve that is not in the format is refused, naming why") {
  std::mt19937 rng(7);
  const Eigen::MatrixXf W = random_weights(8, 64, rng);
  const Eigen::MatrixXd H = random_hessian(64, rng);
  const loaq::GgmlQ4_0Grid<float> grid;
  auto refused = [&](const loaq::QuantizedWeight<float>& q, const char* why) {
    CAPTURE(why);
    CHECK_THROWS_WITH_AS(loaq::io::pack_ggml_blocks(grid, q), doctest::Contains(why), loaq::io::format_error);
  };
  loaq::GptqOptions opt;
  opt.group_size = 64;
  loaq::QuantizedWeight<float> q;
  REQUIRE(loaq::gptq(W, H, grid, opt, q).ok());
  refused(q, "group size 32");
  opt.group_size = 32;
  opt.act_order = true;  // dynamic groups follow the solve order, not the blocks
  REQUIRE(loaq::gptq(W, H, grid, opt, q).ok());
  refused(q, "static groups");
  opt.act_order = false;
  REQUIRE(loaq::gptq(W, H, grid, opt, q).ok());
  CHECK_NOTHROW(loaq::io::pack_ggml_blocks(grid, q));
  auto bad = q;
  bad.scales(3, 1) = 0.1f;  // not an fp16 value
  refused(bad, "not an fp16 value");
  bad = q;
  bad.codes(2, 5) = 16;
  refused(bad, "outside the format's range");
  bad = q;
  bad.zeros(0, 0) = 7;
  refused(bad, "not the format's");
  const Eigen::MatrixXf W40 = random_weights(8, 40, rng);
  REQUIRE(loaq::rtn(W40, grid, 32, {}, q).ok());
  refused(q, "not whole blocks");
}
