// Rotation (include/loaq/llm/rotation.hpp) and weight-activation quantization in the model module:
// the rotated network is the same function; in W-A mode every method puts weights on their grid
// and every decoder linear reads activations on theirs.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <set>

#include <loaq/llm/methods.hpp>
#include <loaq/llm/perplexity.hpp>
#include <loaq/llm/rotation.hpp>
#include <loaq/llm/sequential.hpp>

#include "real_model.hpp"
#include "tiny_model.hpp"

namespace llm = loaq::llm;
using loaq_test::random_token_windows;
using loaq_test::relative_difference;
using loaq_test::tiny_model;

namespace {

// The inputs every decoder linear reads in a forward pass of `m` over `window`.
std::vector<Eigen::MatrixXf> linear_inputs(const llm::Model& m, const std::vector<int>& window) {
  std::vector<Eigen::MatrixXf> out;
  Eigen::MatrixXf h = m.embed(window);
  for (const llm::DecoderLayer& L : m.layers) {
    llm::AttnCapture a;
    llm::MlpCapture f;
    h = llm::decoder_layer(m.config, L, h, &a, &f);
    out.insert(out.end(), {a.x_qkv, a.x_o, f.x_gate_up, f.x_down});
  }
  return out;
}

// Most distinct values in one token's column of any linear input.
std::size_t max_levels_per_token(const std::vector<Eigen::MatrixXf>& inputs) {
  std::size_t most = 0;
  for (const Eigen::MatrixXf& x : inputs)
    for (Eigen::Index t = 0; t < x.cols(); ++t) {
      const std::set<float> levels(x.col(t).data(), x.col(t).data() + x.rows());
      most = std::max(most, levels.size());
    }
  return most;
}

}  // namespace

TEST_CASE("rotate_model: the rotated tiny model computes the same function") {
  llm::Model fp = tiny_model(21);
  const auto wins = random_token_windows(2, 20, 22);
  SUBCASE("plain LLaMA, tied embeddings") {}
  SUBCASE("biases on every linear and an untied head") {
    for (auto& L : fp.layers)
      for (int k = 0; k < 7; ++k) L.bias[k] = Eigen::VectorXf::Constant(L.weight(llm::Linear(k)).rows(), 0.05f);
    fp.output = fp.embedding * 0.5f;
    fp.output_norm = Eigen::VectorXf::LinSpaced(fp.config.d_model, 0.5f, 1.5f);
  }
  for (bool randomized : {false, true})
    for (bool online : {false, true})
      for (bool heads : {false, true}) {
        llm::RotationOptions o;
        o.randomized = randomized;
        o.online_down = online;
        o.head_rotation = heads;
        o.seed = 5;
        std::vector<std::string> warnings;
        const llm::Model r = llm::rotate_model(fp, o, &warnings);
        CHECK(warnings.empty());  // 32, 48 = 12·4 and 8 all have Hadamard constructions
        CHECK(bool(r.config.down_rotation) == online);
        CHECK(r.output.size() > 0);  // untied
        CHECK(r.output_norm == Eigen::VectorXf::Ones(fp.config.d_model));
        for (const auto& L : r.layers) {
          CHECK(L.attn_norm == Eigen::VectorXf::Ones(fp.config.d_model));
          CHECK(L.ffn_norm == Eigen::VectorXf::Ones(fp.config.d_model));
        }
        CHECK((r.embedding - fp.embedding).cwiseAbs().maxCoeff() > 0.1f);  // really rotated
        for (const auto& w : wins) CHECK(relative_difference(fp.forward(w), r.forward(w)) < 2e-6);
      }
  // A model that already quantizes activations cannot be rotated (its γ and Q would disagree).
  llm::Model a = fp;
  a.config.act.bits = 4;
  CHECK_THROWS_AS(llm::rotate_model(a), std::invalid_argument);
}

TEST_CASE("rotate_model: an order with no Hadamard construction falls back with a warning, still exact") {
  llm::Model fp = tiny_model(23);
  // An FFN width of 46 = 2·23: no Hadamard matrix has an order ≡ 2 mod 4 above 2.
  for (auto& L : fp.layers) {
    L.gate = L.gate.topRows(46).eval();
    L.up = L.up.topRows(46).eval();
    L.down = L.down.leftCols(46).eval();
  }
  fp.config.d_ff = 46;
  std::vector<std::string> warnings;
  const llm::Model r = llm::rotate_model(fp, {}, &warnings);
  REQUIRE(warnings.size() == 1);
  CHECK(warnings[0].find("down_proj") != std::string::npos);
  CHECK(r.config.down_rotation->kind() == loaq::RotationKind::RandomOrthogonal);
  for (const auto& w : random_token_windows(2, 16, 24))
    CHECK(relative_difference(fp.forward(w), r.forward(w)) < 2e-6);
}

TEST_CASE("W-A mode: every method runs with quantized activations; weights and activations on their grids") {
  const llm::Model fp = llm::rotate_model(tiny_model(31));
  const auto calib = random_token_windows(6, 24, 32);
  const auto evals = random_token_windows(2, 24, 33);
  const loaq::UniformGrid<float, 3> grid(false);
  llm::SequentialOptions o;
  o.solver.group_size = 16;
  o.activations.bits = 4;
  o.activations.clip_ratio = 0.9f;
  SUBCASE("asymmetric") {}
  SUBCASE("symmetric") { o.activations.symmetric = true; }
  std::vector<llm::Model> qs;
  qs.push_back(llm::quantize_rtn(fp, grid, 16));
  qs.back().config.act = o.activations;
  qs.push_back(llm::quantize_sequential(fp, calib, llm::Gptq{}, grid, o));
  qs.push_back(llm::quantize_sequential(fp, calib, llm::Gptaq{}, grid, o));
  qs.push_back(llm::quantize_sequential(fp, calib, llm::qep(), grid, o));
  qs.push_back(llm::quantize_sequential(fp, calib, llm::loaq_normalized(), grid, o));
  // FP activations take (almost) every value; 4-bit ones at most 16 per token.
  CHECK(max_levels_per_token(linear_inputs(fp, evals[0])) > 16);
  for (const llm::Model& q : qs) {
    CHECK(q.config.act.bits == 4);
    CHECK(q.config.down_rotation == fp.config.down_rotation);
    for (std::size_t l = 0; l < q.layers.size(); ++l)
      for (int k = 0; k < 7; ++k) {
        const Eigen::MatrixXf& W = q.layers[l].weight(llm::Linear(k));
        REQUIRE(W.allFinite());
        for (Eigen::Index r = 0; r < W.rows(); ++r) {  // first group of 16 columns: ≤ 8 levels
          std::set<float> g;
          for (Eigen::Index j = 0; j < 16; ++j) g.insert(W(r, j));
          CHECK(g.size() <= 8);
        }
      }
    CHECK(max_levels_per_token(linear_inputs(q, evals[0])) <= 16);
    CHECK(std::isfinite(llm::window_nll(q, evals[0])));
  }
  // Calibration saw the quantized activations: weight-only GPTQ solves a different problem.
  llm::SequentialOptions weight_only = o;
  weight_only.activations = {};
  const llm::Model w = llm::quantize_sequential(fp, calib, llm::Gptq{}, grid, weight_only);
  CHECK(w.config.act.enabled() == false);
  CHECK(w.layers[1].down != qs[1].layers[1].down);
}

TEST_CASE("W-A mode: bad activation settings are errors, not crashes") {
  const llm::Model fp = tiny_model(41);
  const auto calib = random_token_windows(2, 16, 42);
  const loaq::UniformGrid<float, 4> grid(false);
  llm::SequentialOptions o;
  o.activations.bits = 9;
  CHECK_THROWS_AS(llm::quantize_sequential(fp, calib, llm::Gptq{}, grid, o), std::runtime_error);
  o.activations.bits = 4;
  o.activations.group_size = 5;  // does not divide 32
  CHECK_THROWS_AS(llm::quantize_sequential(fp, calib, llm::Gptq{}, grid, o), std::runtime_error);
  // A non-finite activation is reported, not quantized into a finite-looking value.
  llm::Model bad = fp;
  bad.config.act.bits = 4;
  bad.layers[0].q(0, 0) = std::numeric_limits<float>::infinity();
  CHECK_THROWS_AS(bad.forward(calib[0]), std::runtime_error);
}

TEST_CASE("real SmolLM2: the rotated model gives the same logits and perplexity") {
  if (loaq_test::skip_without_model()) return;
  const loaq_test::Loaded& m = *loaq_test::real_model();
  std::vector<std::string> warnings;
  const llm::Model r = llm::rotate_model(m.model, {}, &warnings);
  CHECK(warnings.empty());  // 576 = 36·16, 1536 = 12·128, 64: all Hadamard
  const auto ids = m.tok.encode(loaq_test::eval_text().substr(0, 20000));
  const auto wins = llm::windows(ids, 128, 2);
  REQUIRE(wins.size() == 2);
  double nll = 0, nll_r = 0;
  for (const auto& w : wins) {
    const Eigen::MatrixXf a = m.model.forward(w), b = r.forward(w);
    CHECK(relative_difference(a, b) <= 1e-4);
    nll += llm::next_token_nll(a, w);
    nll_r += llm::next_token_nll(b, w);
  }
  CHECK(std::exp(nll_r / 2) == doctest::Approx(std::exp(nll / 2)).epsilon(1e-3));
}
