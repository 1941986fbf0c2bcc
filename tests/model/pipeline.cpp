// The sequential PTQ pipeline on a tiny random LLaMA-style model (no download needed).
#include <doctest/doctest.h>

#include <random>
#include <set>

#include "smollm2/pipeline.hpp"

namespace {

smollm2::Model tiny_model(unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.f, 1.f);
  auto mat = [&](int r, int c, float s) {
    Eigen::MatrixXf M(r, c);
    for (int j = 0; j < c; ++j)
      for (int i = 0; i < r; ++i) M(i, j) = s * g(rng);
    return M;
  };
  smollm2::Model m;
  smollm2::Config& c = m.config;
  c.n_layers = 2; c.d_model = 32; c.n_heads = 4; c.n_kv_heads = 2; c.head_dim = 8; c.d_ff = 48;
  c.vocab_size = 40; c.context_length = 64;
  m.embedding = mat(c.vocab_size, c.d_model, 1.f);
  m.output_norm = Eigen::VectorXf::Ones(c.d_model);
  for (int l = 0; l < c.n_layers; ++l) {
    smollm2::DecoderLayer L;
    L.attn_norm = Eigen::VectorXf::Ones(c.d_model) + 0.1f * mat(c.d_model, 1, 1.f);
    L.ffn_norm = Eigen::VectorXf::Ones(c.d_model) + 0.1f * mat(c.d_model, 1, 1.f);
    const float s = 1.f / std::sqrt(float(c.d_model));
    L.q = mat(32, 32, s); L.k = mat(16, 32, s); L.v = mat(16, 32, s); L.o = mat(32, 32, s);
    L.gate = mat(48, 32, s); L.up = mat(48, 32, s); L.down = mat(32, 48, 1.f / std::sqrt(48.f));
    m.layers.push_back(L);
  }
  return m;
}

std::vector<std::vector<int>> random_windows(int n, int L, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> tok(0, 39);
  std::vector<std::vector<int>> w(std::size_t(n), std::vector<int>(std::size_t(L), 0));
  for (auto& win : w)
    for (int& t : win) t = tok(rng);
  return w;
}

double mean_nll(const smollm2::Model& m, const std::vector<std::vector<int>>& wins) {
  double s = 0;
  for (const auto& w : wins) s += m.nll(w);
  return s / double(wins.size());
}

}  // namespace

TEST_CASE("pipeline: every method quantizes every decoder linear onto its grid") {
  const smollm2::Model fp = tiny_model(1);
  const auto calib = random_windows(6, 24, 2);
  for (auto method : {smollm2::Method::rtn, smollm2::Method::gptq, smollm2::Method::gptaq,
                      smollm2::Method::qep, smollm2::Method::loaq}) {
    CAPTURE(smollm2::method_name(method));
    smollm2::QuantConfig c;
    c.method = method;
    c.bits = 3;
    c.group = 16;
    int progress_calls = 0;
    const smollm2::Model q = smollm2::quantize_model(fp, calib, c, [&](const smollm2::Progress&) { ++progress_calls; });
    CHECK(progress_calls > 0);
    for (std::size_t l = 0; l < q.layers.size(); ++l)
      for (auto k : {smollm2::Linear::q, smollm2::Linear::k, smollm2::Linear::v, smollm2::Linear::o,
                     smollm2::Linear::gate, smollm2::Linear::up, smollm2::Linear::down}) {
        const Eigen::MatrixXf& W = q.layers[l].weight(k);
        REQUIRE(W.allFinite());
        CHECK(W != fp.layers[l].weight(k));
        // A 3-bit group holds at most 8 distinct values per row.
        for (Eigen::Index r = 0; r < W.rows(); ++r) {
          std::set<float> levels;
          for (Eigen::Index j = 0; j < 16; ++j) levels.insert(W(r, j));
          CHECK(levels.size() <= 8);
        }
      }
    CHECK(q.embedding == fp.embedding);  // embeddings and head stay FP
  }
}

TEST_CASE("pipeline: FP is the identity, 8-bit GPTQ is near FP, residual LoaQ at alpha=beta=0 is GPTQ") {
  const smollm2::Model fp = tiny_model(3);
  const auto calib = random_windows(6, 24, 4);
  const auto evals = random_windows(4, 24, 5);
  smollm2::QuantConfig c;
  c.method = smollm2::Method::fp;
  const smollm2::Model same = smollm2::quantize_model(fp, calib, c);
  CHECK(mean_nll(same, evals) == mean_nll(fp, evals));

  c.method = smollm2::Method::gptq;
  c.bits = 8;
  const double fp_nll = mean_nll(fp, evals), q8 = mean_nll(smollm2::quantize_model(fp, calib, c), evals);
  CHECK(std::abs(q8 - fp_nll) < 0.01 * fp_nll);

  c.bits = 3;
  const smollm2::Model gptq = smollm2::quantize_model(fp, calib, c);
  c.method = smollm2::Method::loaq;
  c.alpha = 0;
  c.beta = 0;
  c.loaq_normalized = false;  // the normalized objective reweights Ĥ by ŝ², so only SLOA reduces to GPTQ
  const smollm2::Model loaq0 = smollm2::quantize_model(fp, calib, c);
  for (std::size_t l = 0; l < fp.layers.size(); ++l) {
    CHECK(loaq0.layers[l].q == gptq.layers[l].q);
    CHECK(loaq0.layers[l].down == gptq.layers[l].down);
  }
}

TEST_CASE("pipeline: bad settings are errors, not crashes") {
  const smollm2::Model fp = tiny_model(5);
  smollm2::QuantConfig c;
  c.method = smollm2::Method::gptq;
  CHECK_THROWS_AS(smollm2::quantize_model(fp, {}, c), std::invalid_argument);
  c.bits = 9;
  CHECK_THROWS_AS(smollm2::quantize_model(fp, random_windows(2, 8, 1), c), std::invalid_argument);
  c.bits = 4;
  c.group = 0;
  CHECK_THROWS_AS(smollm2::quantize_model(fp, random_windows(2, 8, 1), c), std::runtime_error);
  CHECK_THROWS_AS(smollm2::parse_method("awq"), std::invalid_argument);
}
