// LLaMA-family decoder (include/loaq/llm/decoder.hpp): the real SmolLM2 and Qwen2.5 forwards
// against the numpy reference of scripts/check_forward.py and the sub-block captures (when the
// GGUF files are present), and on a tiny random model the optional biases.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include <loaq/llm/decoder.hpp>
#include <loaq/llm/perplexity.hpp>

#include "real_model.hpp"
#include "tiny_model.hpp"

TEST_CASE("real SmolLM2: forward matches the numpy reference; sub-block captures are consistent") {
  if (loaq_test::skip_without_model()) return;
  const loaq_test::Loaded& m = *loaq_test::real_model();
  const loaq::llm::Config& c = m.model.config;
  std::vector<int> ids = m.tok.encode(loaq_test::eval_text().substr(0, 4000));
  REQUIRE(ids.size() >= 64);
  ids.resize(64);
  // scripts/check_forward.py: float64 numpy forward over the gguf package gives 3.844394.
  CHECK(loaq::llm::window_nll(m.model, ids) == doctest::Approx(3.844394).epsilon(2e-5));

  // Run the layers by hand with captures; the result must be the plain forward.
  const std::vector<int> w(ids.begin(), ids.begin() + 16);
  Eigen::MatrixXf h = m.model.embed(w);
  for (std::size_t i = 0; i < m.model.layers.size(); ++i) {
    const loaq::llm::DecoderLayer& L = m.model.layers[i];
    loaq::llm::AttnCapture ac;
    loaq::llm::MlpCapture mc;
    const Eigen::MatrixXf mid = loaq::llm::attention_block(c, L, h, &ac);
    const Eigen::MatrixXf out = loaq::llm::mlp_block(c, L, mid, &mc);
    if (i == 0 || i + 1 == m.model.layers.size()) {
      CHECK(ac.x_qkv.isApprox(loaq::llm::rms_norm(h, L.attn_norm, c.rms_eps)));
      CHECK((mid - h).isApprox(L.o * ac.x_o, 1e-4f));
      CHECK(mc.x_gate_up.isApprox(loaq::llm::rms_norm(mid, L.ffn_norm, c.rms_eps)));
      CHECK((out - mid).isApprox(L.down * mc.x_down, 1e-4f));
      CHECK(ac.x_o.rows() == 576);
      CHECK(mc.x_down.rows() == 1536);
      CHECK(ac.x_qkv.cols() == 16);
    }
    h = out;
  }
  CHECK(loaq::llm::window_nll_from_hidden(m.model, h, w) == doctest::Approx(loaq::llm::window_nll(m.model, w)).epsilon(1e-6));

  // Replacing a weight changes exactly that linear: with down_proj = 0 the MLP is the identity.
  loaq::llm::DecoderLayer L = m.model.layers[3];
  L.weight(loaq::llm::Linear::down).setZero();
  const Eigen::MatrixXf h0 = m.model.embed(w);
  CHECK(loaq::llm::mlp_block(c, L, h0) == h0);
  CHECK(&L.weight(loaq::llm::Linear::gate) == &L.gate);
  CHECK(std::string(loaq::llm::linear_name(loaq::llm::Linear::o)) == "o_proj");

  CHECK_THROWS_AS(m.model.embed({0, 49152}), std::out_of_range);
  CHECK_THROWS_AS(loaq::llm::window_nll(m.model, {5}), std::invalid_argument);
}

TEST_CASE("real Qwen2.5: configuration, biases, own head; forward matches the numpy reference") {
  if (loaq_test::skip_without_qwen()) return;
  const loaq::io::GgufReader g(loaq_examples::qwen_model_path());
  const loaq::llm::Model m = loaq::llm::Model::load(g);
  const loaq::llm::Config& c = m.config;
  CHECK(c.architecture == "qwen2");
  CHECK_FALSE(c.rope_rows_permuted);
  loaq_test::check_config(c, {24, 896, 4864, 14, 2, 64, 151936, 1e6f});
  CHECK(c.rms_eps == doctest::Approx(1e-6));
  for (const auto& L : m.layers) {
    CHECK(L.bias_of(loaq::llm::Linear::q).size() == 896);
    CHECK(L.bias_of(loaq::llm::Linear::k).size() == 128);
    CHECK(L.bias_of(loaq::llm::Linear::v).size() == 128);
    CHECK(L.bias_of(loaq::llm::Linear::o).size() == 0);
  }
  CHECK(m.output.rows() == 151936);  // output.weight, not the embedding
  std::vector<int> ids = loaq_test::qwen_tokenizer()->encode(loaq_test::eval_text().substr(0, 4000));
  REQUIRE(ids.size() >= 64);
  ids.resize(64);
  // scripts/check_forward.py: float64 numpy forward (NEOX RoPE, biases) over the gguf package's
  // dequantization of the Q5_0/Q8_0/Q4_K/Q6_K tensors gives 4.273434.
  CHECK(loaq::llm::window_nll(m, ids) == doctest::Approx(4.273434).epsilon(2e-5));
}

TEST_CASE("decoder: optional biases (Qwen2-style q/k/v, o, MLP) are added where the file has them") {
  const loaq::llm::Model m = loaq_test::tiny_model(11);
  const loaq::llm::Config& c = m.config;
  const Eigen::MatrixXf h = m.embed({1, 5, 7, 2, 9});
  loaq::llm::DecoderLayer L = m.layers[0];
  const Eigen::MatrixXf attn = loaq::llm::attention_block(c, L, h), mlp = loaq::llm::mlp_block(c, L, h);
  // Zero biases change nothing; an output bias is added to every token.
  for (auto k : {loaq::llm::Linear::q, loaq::llm::Linear::k, loaq::llm::Linear::v})
    L.bias[int(k)] = Eigen::VectorXf::Zero(L.weight(k).rows());
  CHECK(loaq::llm::attention_block(c, L, h) == attn);
  const Eigen::VectorXf b = Eigen::VectorXf::LinSpaced(c.d_model, -1.f, 1.f);
  L.bias[int(loaq::llm::Linear::o)] = b;
  CHECK(loaq::llm::attention_block(c, L, h).isApprox(attn + b.replicate(1, h.cols())));
  L.bias[int(loaq::llm::Linear::down)] = b;
  CHECK(loaq::llm::mlp_block(c, L, h).isApprox(mlp + b.replicate(1, h.cols())));
  // A v bias shifts every context vector by the same amount (softmax weights sum to 1).
  loaq::llm::DecoderLayer V = m.layers[0];
  V.bias[int(loaq::llm::Linear::v)] = Eigen::VectorXf::Constant(V.v.rows(), 0.5f);
  loaq::llm::AttnCapture a0, a1;
  loaq::llm::attention_block(c, m.layers[0], h, &a0);
  loaq::llm::attention_block(c, V, h, &a1);
  CHECK((a1.x_o - a0.x_o).isApprox(Eigen::MatrixXf::Constant(a0.x_o.rows(), a0.x_o.cols(), 0.5f), 1e-4f));
  CHECK(loaq::llm::linear(L.o, Eigen::VectorXf(), h) == L.o * h);
}

TEST_CASE("causal_attention: query blocks agree with dense softmax attention in double; no query sees a later key") {
  loaq::llm::Config c;
  c.n_heads = 4; c.n_kv_heads = 2; c.head_dim = 8;
  const Eigen::Index T = 2 * loaq::llm::kAttentionQueryBlock + 88;  // two whole blocks and a partial one
  std::mt19937 rng(5);
  std::normal_distribution<float> g(0.f, 2.f);
  auto random = [&](Eigen::Index rows) {
    Eigen::MatrixXf M(rows, T);
    for (Eigen::Index i = 0; i < M.size(); ++i) M.data()[i] = g(rng);
    return M;
  };
  const Eigen::MatrixXf Q = random(32), K = random(16), V = random(16);
  const Eigen::MatrixXf ctx = loaq::llm::causal_attention(c, Q, K, V);
  REQUIRE(ctx.rows() == 32);
  REQUIRE(ctx.cols() == T);
  double worst = 0;
  for (int h = 0; h < c.n_heads; ++h) {
    const int kv = h / 2;
    for (Eigen::Index t = 0; t < T; ++t) {
      const Eigen::MatrixXd k = K.block(kv * 8, 0, 8, t + 1).cast<double>();
      Eigen::VectorXd s = k.transpose() * Q.block(h * 8, t, 8, 1).cast<double>() / std::sqrt(8.0);
      s = (s.array() - s.maxCoeff()).exp().matrix();
      const Eigen::VectorXd want = V.block(kv * 8, 0, 8, t + 1).cast<double>() * s / s.sum();
      worst = std::max(worst, (ctx.block(h * 8, t, 8, 1).cast<double>() - want).cwiseAbs().maxCoeff());
    }
  }
  CHECK(worst < 1e-5);
  // Keys and values after the first block change nothing before it.
  Eigen::MatrixXf K2 = K, V2 = V;
  const Eigen::Index B = loaq::llm::kAttentionQueryBlock;
  K2.rightCols(T - B).setConstant(30.f);
  V2.rightCols(T - B).setConstant(-7.f);
  const Eigen::MatrixXf ctx2 = loaq::llm::causal_attention(c, Q, K2, V2);
  CHECK(ctx2.leftCols(B) == ctx.leftCols(B));
  CHECK_FALSE(ctx2.rightCols(T - B).isApprox(ctx.rightCols(T - B)));
}
