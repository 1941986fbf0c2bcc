// A tiny random LLaMA-style model (2 layers, width 32, grouped kv heads) and random token
// windows, for tests that need no download.
#pragma once

#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <vector>

#include <loaq/llm/decoder.hpp>

namespace loaq_test {

inline loaq::llm::Model tiny_model(unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.f, 1.f);
  auto mat = [&](int r, int c, float s) {
    Eigen::MatrixXf M(r, c);
    for (int j = 0; j < c; ++j)
      for (int i = 0; i < r; ++i) M(i, j) = s * g(rng);
    return M;
  };
  loaq::llm::Model m;
  loaq::llm::Config& c = m.config;
  c.n_layers = 2; c.d_model = 32; c.n_heads = 4; c.n_kv_heads = 2; c.head_dim = 8; c.d_ff = 48;
  c.vocab_size = 40; c.context_length = 64;
  m.embedding = mat(c.vocab_size, c.d_model, 1.f);
  m.output_norm = Eigen::VectorXf::Ones(c.d_model);
  for (int l = 0; l < c.n_layers; ++l) {
    loaq::llm::DecoderLayer L;
    L.attn_norm = Eigen::VectorXf::Ones(c.d_model) + 0.1f * mat(c.d_model, 1, 1.f);
    L.ffn_norm = Eigen::VectorXf::Ones(c.d_model) + 0.1f * mat(c.d_model, 1, 1.f);
    const float s = 1.f / std::sqrt(float(c.d_model));
    L.q = mat(32, 32, s); L.k = mat(16, 32, s); L.v = mat(16, 32, s); L.o = mat(32, 32, s);
    L.gate = mat(48, 32, s); L.up = mat(48, 32, s); L.down = mat(32, 48, 1.f / std::sqrt(48.f));
    m.layers.push_back(L);
  }
  return m;
}

// max |a − b| / max |a|: two models' logits compared relative to their scale.
inline double relative_difference(const Eigen::MatrixXf& a, const Eigen::MatrixXf& b) {
  REQUIRE(a.rows() == b.rows());
  REQUIRE(a.cols() == b.cols());
  return double((a - b).cwiseAbs().maxCoeff()) / double(a.cwiseAbs().maxCoeff());
}

inline std::vector<std::vector<int>> random_token_windows(int n, int L, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> tok(0, 39);
  std::vector<std::vector<int>> w(std::size_t(n), std::vector<int>(std::size_t(L), 0));
  for (auto& win : w)
    for (int& t : win) t = tok(rng);
  return w;
}

}  // namespace loaq_test
