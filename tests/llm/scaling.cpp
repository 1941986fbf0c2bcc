// Equivalent channel scaling, AWQ and FAQ (include/loaq/llm/scaling.hpp): every scaled model is
// the same FP function; AWQ's choice is the grid's best; FAQ's aggregate is its formula; both
// compose with every method.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <random>
#include <set>

#include <loaq/llm/methods.hpp>
#include <loaq/llm/perplexity.hpp>
#include <loaq/llm/rotation.hpp>
#include <loaq/llm/scaling.hpp>
#include <loaq/llm/sequential.hpp>

#include "real_model.hpp"
#include "tiny_model.hpp"

namespace llm = loaq::llm;
using llm::ScaleGroup;
using loaq_test::random_token_windows;
using loaq_test::relative_difference;
using loaq_test::tiny_model;

namespace {

double max_relative_difference(const llm::Model& a, const llm::Model& b,
                               const std::vector<std::vector<int>>& wins) {
  double d = 0;
  for (const auto& w : wins) d = std::max(d, relative_difference(a.forward(w), b.forward(w)));
  return d;
}

// The tiny model without grouped-query attention (4 heads, 4 kv heads), so v → o can be scaled.
llm::Model tiny_mha(unsigned seed) {
  llm::Model m = tiny_model(seed);
  m.config.n_kv_heads = m.config.n_heads;
  std::mt19937 rng(seed + 1000);
  std::normal_distribution<float> g(0.f, 1.f / std::sqrt(32.f));
  for (auto& L : m.layers)
    for (Eigen::MatrixXf* W : {&L.k, &L.v}) {
      W->resize(32, 32);
      for (Eigen::Index i = 0; i < W->size(); ++i) W->data()[i] = g(rng);
    }
  return m;
}

// Positive scales over about e^±1.
Eigen::VectorXf random_scales(Eigen::Index n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  Eigen::VectorXf s(n);
  for (Eigen::Index i = 0; i < n; ++i) s(i) = std::exp(u(rng));
  return s;
}

Eigen::Index group_width(const llm::Config& c, ScaleGroup g) {
  return g == ScaleGroup::down ? c.d_ff : c.n_heads * c.head_dim;
}

// Mean squared logit difference to the FP model over some windows.
double logit_mse(const llm::Model& fp, const llm::Model& q, const std::vector<std::vector<int>>& wins) {
  double s = 0;
  for (const auto& w : wins) s += double((q.forward(w) - fp.forward(w)).squaredNorm());
  return s / double(wins.size());
}

void check_on_grid(const llm::Model& q) {
  for (const auto& L : q.layers)
    for (int k = 0; k < 7; ++k) {
      const Eigen::MatrixXf& W = L.weight(llm::Linear(k));
      REQUIRE(W.allFinite());
      for (Eigen::Index r = 0; r < W.rows(); ++r) {  // first group of 16 columns: ≤ 8 levels
        std::set<float> levels;
        for (Eigen::Index j = 0; j < 16; ++j) levels.insert(W(r, j));
        CHECK(levels.size() <= 8);
      }
    }
}

}  // namespace

TEST_CASE("scale_group: every group leaves the FP tiny model's logits unchanged") {
  const auto wins = random_token_windows(2, 20, 3);
  llm::Model fp = tiny_mha(1);
  SUBCASE("no biases") {}
  SUBCASE("biases on every linear") {
    for (auto& L : fp.layers)
      for (int k = 0; k < 7; ++k)
        L.bias[k] = Eigen::VectorXf::LinSpaced(L.weight(llm::Linear(k)).rows(), -0.1f, 0.1f);
  }
  SUBCASE("rotated (γ folded to ones), no online rotation of down's input") {
    llm::RotationOptions o;
    o.online_down = false;
    fp = llm::rotate_model(fp, o);
  }
  unsigned seed = 10;
  for (ScaleGroup g : llm::kScaleGroups) {
    CAPTURE(llm::scale_group_name(g));
    REQUIRE(llm::can_scale(fp.config, g));
    llm::Model m = fp;
    for (auto& L : m.layers) llm::scale_group(m.config, L, g, random_scales(group_width(m.config, g), ++seed));
    CHECK(m.layers[0].weight(llm::scaled_linears(g).front()) != fp.layers[0].weight(llm::scaled_linears(g).front()));
    CHECK(max_relative_difference(fp, m, wins) <= 1e-5);
  }
}

TEST_CASE("scale_group: v → o is skipped with grouped-query attention, up → down with an online rotation") {
  const llm::Model gqa = tiny_model(2);  // 4 heads, 2 kv heads
  CHECK_FALSE(llm::can_scale(gqa.config, ScaleGroup::o));
  CHECK(llm::can_scale(gqa.config, ScaleGroup::qkv));
  llm::DecoderLayer L = gqa.layers[0];
  CHECK_THROWS_AS(llm::scale_group(gqa.config, L, ScaleGroup::o, Eigen::VectorXf::Ones(32)),
                  std::invalid_argument);
  const llm::Model rot = llm::rotate_model(tiny_mha(2));  // online Hadamard before down_proj
  CHECK_FALSE(llm::can_scale(rot.config, ScaleGroup::down));
  CHECK(llm::can_scale(rot.config, ScaleGroup::o));  // the per-head rotation commutes with it
  llm::Config act = gqa.config;
  act.act.bits = 4;
  for (ScaleGroup g : llm::kScaleGroups) CHECK_FALSE(llm::can_scale(act, g));
  // Bad scales are errors.
  CHECK_THROWS_AS(llm::scale_group(gqa.config, L, ScaleGroup::qkv, Eigen::VectorXf::Ones(31)), std::invalid_argument);
  Eigen::VectorXf s = Eigen::VectorXf::Ones(32);
  s(3) = 0;
  CHECK_THROWS_AS(llm::scale_group(gqa.config, L, ScaleGroup::qkv, s), std::invalid_argument);
  s(3) = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_AS(llm::scale_group(gqa.config, L, ScaleGroup::gate_up, s), std::invalid_argument);
  CHECK(L.q == gqa.layers[0].q);  // nothing changed by the failed calls
  // A zero-activation channel is clamped as AWQ does, a non-finite one is an error.
  Eigen::VectorXf a = Eigen::VectorXf::Ones(4);
  a(1) = 0;
  const Eigen::VectorXf p = llm::power_scales(a, 0.5);
  CHECK(p.allFinite());
  CHECK(p.minCoeff() > 0);
  CHECK(p(1) < p(0));
  a(1) = std::numeric_limits<float>::infinity();
  CHECK_THROWS_AS(llm::power_scales(a, 0.5), std::invalid_argument);
}

TEST_CASE("power_scales: AWQ's form, normalized by sqrt(max·min)") {
  const Eigen::VectorXf a = (Eigen::VectorXf(3) << 1.f, 4.f, 16.f).finished();
  const Eigen::VectorXf s = llm::power_scales(a, 0.5);  // (1, 2, 4) / sqrt(4·1)
  CHECK(s(0) == doctest::Approx(0.5));
  CHECK(s(1) == doctest::Approx(1.0));
  CHECK(s(2) == doctest::Approx(2.0));
  CHECK(llm::power_scales(a, 0) == Eigen::VectorXf::Ones(3));
}

TEST_CASE("awq_scale: chooses the grid's best ratio, stays FP-equivalent, beats RTN with an outlier channel") {
  // A tiny model with one outlier channel in every linear input of the residual stream.
  llm::Model fp = tiny_model(5);
  for (auto& L : fp.layers) {
    L.attn_norm(7) = 12.f;
    L.ffn_norm(7) = 12.f;
    L.attn_norm(20) = 6.f;
    L.ffn_norm(20) = 6.f;
  }
  const auto calib = random_token_windows(6, 24, 6);
  const auto evals = random_token_windows(4, 24, 7);
  const loaq::UniformGrid<float, 3> grid(true);
  const int group = 16;
  llm::AwqOptions o;
  std::vector<llm::ScaleChoice> choices;
  const llm::Model s = llm::awq_scale(fp, calib, grid, group, o, &choices);
  REQUIRE(choices.size() == 2 * 3);  // q,k,v; gate,up; down per layer (no v → o with GQA)
  CHECK(max_relative_difference(fp, s, evals) <= 1e-5);

  // Recompute every group's error over the grid on the FP layers (the search runs on the
  // unscaled layer with the FP stream, which scaling does not change).
  std::vector<Eigen::MatrixXf> h;
  for (const auto& w : calib) h.push_back(fp.embed(w));
  std::size_t i = 0;
  bool some_nonzero = false;
  for (std::size_t l = 0; l < fp.layers.size(); ++l) {
    llm::LayerCalibration k = llm::calibrate_layer(fp.config, fp.layers[l], h);
    for (; i < choices.size() && choices[i].layer == int(l); ++i) {
      const llm::ScaleChoice& c = choices[i];
      CAPTURE(l);
      CAPTURE(llm::scale_group_name(c.group));
      const Eigen::VectorXf a = llm::mean_abs(k.inputs(c.group));
      auto error = [&](double r) {
        return llm::scaled_rtn_error(fp.config, fp.layers[l], c.group, k, llm::power_scales(a, r), grid, group);
      };
      CHECK(error(c.ratio) == doctest::Approx(c.error).epsilon(1e-12));
      CHECK(error(0) == doctest::Approx(c.error_at_zero).epsilon(1e-12));
      CHECK(c.error <= c.error_at_zero);
      for (int j = 0; j < o.grid_points; ++j) CHECK(c.error <= error(double(j) / o.grid_points));
      some_nonzero = some_nonzero || c.ratio > 0;
    }
    h = std::move(k.next);
  }
  CHECK(i == choices.size());
  CHECK(some_nonzero);

  // Results do not depend on the thread count.
  o.threads = 3;
  const llm::Model s3 = llm::awq_scale(fp, calib, grid, group, o);
  for (std::size_t l = 0; l < fp.layers.size(); ++l) CHECK(s3.layers[l].q == s.layers[l].q);

  // AWQ + RTN is closer to the FP model than plain RTN, in logits and in NLL.
  const llm::Model rtn = llm::quantize_rtn(fp, grid, group);
  const llm::Model awq = llm::quantize_rtn(s, grid, group);
  check_on_grid(awq);
  const double e_rtn = logit_mse(fp, rtn, evals), e_awq = logit_mse(fp, awq, evals);
  MESSAGE("logit MSE: RTN " << e_rtn << ", AWQ+RTN " << e_awq);
  CHECK(e_awq < e_rtn);
  double nll_fp = 0, nll_rtn = 0, nll_awq = 0;
  for (const auto& w : evals) {
    nll_fp += llm::window_nll(fp, w);
    nll_rtn += llm::window_nll(rtn, w);
    nll_awq += llm::window_nll(awq, w);
  }
  MESSAGE("NLL: FP " << nll_fp / 4 << ", RTN " << nll_rtn / 4 << ", AWQ+RTN " << nll_awq / 4);
  CHECK(std::abs(nll_awq - nll_fp) < std::abs(nll_rtn - nll_fp));
}

TEST_CASE("awq_scale: scales v → o without grouped-query attention; bad input is an error") {
  const llm::Model fp = tiny_mha(8);
  const auto calib = random_token_windows(3, 16, 9);
  const loaq::UniformGrid<float, 3> grid(true);
  std::vector<llm::ScaleChoice> choices;
  const llm::Model s = llm::awq_scale(fp, calib, grid, 16, {}, &choices);
  CHECK(choices.size() == 2 * 4);
  CHECK(max_relative_difference(fp, s, random_token_windows(2, 16, 10)) <= 1e-5);
  CHECK_THROWS_AS(llm::awq_scale(fp, {}, grid, 16), std::invalid_argument);
  llm::Model bad = fp;
  bad.layers[0].attn_norm(0) = std::numeric_limits<float>::infinity();
  CHECK_THROWS_AS(llm::awq_scale(bad, calib, grid, 16), std::runtime_error);
  llm::Model act = fp;
  act.config.act.bits = 4;
  CHECK_THROWS_AS(llm::awq_scale(act, calib, grid, 16), std::invalid_argument);
}

TEST_CASE("faq_aggregate: the windowed, decaying average of mean-normalized statistics") {
  std::vector<Eigen::VectorXf> a = {(Eigen::VectorXf(2) << 1.f, 2.f).finished(),
                                    (Eigen::VectorXf(2) << 2.f, 2.f).finished(),
                                    (Eigen::VectorXf(2) << 4.f, 0.f).finished()};
  // p = 0, K = 1, decay 0.5: (1·(2/3, 4/3) + 0.5·(1, 1)) / 1.5.
  Eigen::VectorXf s = llm::faq_aggregate(a, 0, 1, 0.5);
  CHECK(s(0) == doctest::Approx((2.0 / 3 + 0.5) / 1.5));
  CHECK(s(1) == doctest::Approx((4.0 / 3 + 0.5) / 1.5));
  // p = 0, K = 2, decay 0.25: weights 1, 1/4, 1/16 over (2/3, 4/3), (1, 1), (2, 0).
  s = llm::faq_aggregate(a, 0, 2, 0.25);
  const double w = 1 + 0.25 + 0.0625;
  CHECK(s(0) == doctest::Approx((2.0 / 3 + 0.25 + 0.0625 * 2) / w));
  CHECK(s(1) == doctest::Approx((4.0 / 3 + 0.25) / w));
  // Truncated at the last point: p = 1, K = 5 uses points 1 and 2 only.
  s = llm::faq_aggregate(a, 1, 5, 0.5);
  CHECK(s(0) == doctest::Approx((1 + 0.5 * 2) / 1.5));
  CHECK(s(1) == doctest::Approx(1 / 1.5));
  s = llm::faq_aggregate(a, 2, 3, 0.5);
  CHECK(s(0) == doctest::Approx(2));
  CHECK(s(1) == doctest::Approx(0));
  // K = 0: the current statistic (up to its mean, which power_scales normalizes away).
  CHECK(llm::faq_aggregate(a, 0, 0, 0.5).isApprox(a[0] / 1.5f));
  CHECK_THROWS_AS(llm::faq_aggregate(a, 3, 1, 0.5), std::invalid_argument);
  CHECK_THROWS_AS(llm::faq_aggregate(a, 0, -1, 0.5), std::invalid_argument);
  CHECK_THROWS_AS(llm::faq_aggregate(a, 0, 1, 0), std::invalid_argument);
}

TEST_CASE("faq_scale: K = 0 is the current statistic at the fixed r; FP-equivalent; every method runs on it") {
  const llm::Model fp = tiny_model(11);
  const auto calib = random_token_windows(4, 24, 12);
  const auto evals = random_token_windows(2, 24, 13);
  const llm::FaqStatistics st = llm::faq_statistics(fp, calib);
  REQUIRE(st.stream.size() == 4);
  REQUIRE(st.down.size() == 2);
  CHECK(st.down[0].size() == fp.config.d_ff);

  llm::FaqOptions o;
  o.window = 0;
  o.ratio = 0.4;
  const llm::Model k0 = llm::faq_scale(fp, st, o);
  llm::Model manual = fp;
  for (std::size_t l = 0; l < fp.layers.size(); ++l) {
    llm::DecoderLayer& L = manual.layers[l];
    llm::scale_group(fp.config, L, ScaleGroup::qkv, llm::power_scales(st.stream[2 * l], o.ratio));
    llm::scale_group(fp.config, L, ScaleGroup::gate_up, llm::power_scales(st.stream[2 * l + 1], o.ratio));
    llm::scale_group(fp.config, L, ScaleGroup::down, llm::power_scales(st.down[l], o.ratio));
  }
  for (std::size_t l = 0; l < fp.layers.size(); ++l)
    for (int k = 0; k < 7; ++k)
      CHECK(k0.layers[l].weight(llm::Linear(k)).isApprox(manual.layers[l].weight(llm::Linear(k)), 1e-6f));

  const llm::Model faq = llm::faq_scale(fp, calib);  // the fixed defaults
  CHECK(faq.layers[0].q != k0.layers[0].q);           // the window changes the input groups' scales
  CHECK(faq.layers[0].down.isApprox(llm::faq_scale(fp, st, {0, 0.5, llm::FaqOptions{}.ratio}).layers[0].down));  // not down's
  CHECK(max_relative_difference(fp, faq, evals) <= 1e-5);
  CHECK(max_relative_difference(fp, k0, evals) <= 1e-5);

  const loaq::UniformGrid<float, 3> grid(true);
  llm::SequentialOptions so;
  so.solver.group_size = 16;
  std::vector<llm::Model> qs;
  qs.push_back(llm::quantize_rtn(faq, grid, 16));
  qs.push_back(llm::quantize_sequential(faq, calib, llm::Gptq{}, grid, so));
  qs.push_back(llm::quantize_sequential(faq, calib, llm::loaq_normalized(), grid, so));
  for (const llm::Model& q : qs) {
    check_on_grid(q);
    CHECK(std::isfinite(llm::window_nll(q, evals[0])));
  }
  CHECK_THROWS_AS(llm::faq_scale(tiny_model(12), llm::FaqStatistics{}, o), std::invalid_argument);
}

TEST_CASE("real SmolLM2: AWQ-style and FAQ scales leave the logits unchanged") {
  if (loaq_test::skip_without_model()) return;
  const loaq_test::Loaded& m = *loaq_test::real_model();
  const auto ids = m.tok.encode(loaq_test::eval_text().substr(0, 20000));
  const auto wins = llm::windows(ids, 64, 2);
  REQUIRE(wins.size() == 2);
  CHECK_FALSE(llm::can_scale(m.model.config, ScaleGroup::o));  // 9 heads, 3 kv heads
  const llm::Model faq = llm::faq_scale(m.model, std::vector<std::vector<int>>{wins[0]});
  CHECK(faq.layers[3].gate != m.model.layers[3].gate);
  for (const auto& w : wins) CHECK(relative_difference(m.model.forward(w), faq.forward(w)) <= 1e-4);
}
