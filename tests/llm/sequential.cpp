// The sequential PTQ pipeline (include/loaq/llm/sequential.hpp) and the built-in methods
// (methods.hpp) on a tiny random LLaMA-style model (no download needed).
#include <doctest/doctest.h>

#include <atomic>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include <loaq/llm/methods.hpp>
#include <loaq/llm/perplexity.hpp>
#include <loaq/llm/sequential.hpp>

#include "tiny_model.hpp"

namespace llm = loaq::llm;
using loaq_test::random_token_windows;
using loaq_test::tiny_model;

namespace {

const llm::Linear kAll[] = {llm::Linear::q, llm::Linear::k, llm::Linear::v, llm::Linear::o,
                            llm::Linear::gate, llm::Linear::up, llm::Linear::down};

double mean_nll(const llm::Model& m, const std::vector<std::vector<int>>& wins) {
  double s = 0;
  for (const auto& w : wins) s += llm::window_nll(m, w);
  return s / double(wins.size());
}

llm::SequentialOptions options(int group) {
  llm::SequentialOptions o;
  o.solver.group_size = group;
  return o;
}

// Every decoder linear changed, finite, and on a 3-bit grid in its first group of 16 columns.
void check_on_grid(const llm::Model& fp, const llm::Model& q) {
  for (std::size_t l = 0; l < q.layers.size(); ++l)
    for (auto k : kAll) {
      const Eigen::MatrixXf& W = q.layers[l].weight(k);
      REQUIRE(W.allFinite());
      CHECK(W != fp.layers[l].weight(k));
      for (Eigen::Index r = 0; r < W.rows(); ++r) {
        std::set<float> levels;
        for (Eigen::Index j = 0; j < 16; ++j) levels.insert(W(r, j));
        CHECK(levels.size() <= 8);
      }
    }
  CHECK(q.embedding == fp.embedding);  // embeddings and head stay FP
}

// A method written outside the library: GPTQ's Ĥ on input linears, LoaQ's normalized target on
// output linears. It only has to provide stats/add/solve per group role.
struct GptqInNormalizedOut {
  loaq::CalibrationAccumulator<double> stats(const llm::InputGroup& g) const {
    return loaq::CalibrationAccumulator<double>(g.inputs());
  }
  loaq::ObjectiveStats<loaq::NormalizedOutput> stats(const llm::OutputGroup& g) const {
    return loaq::ObjectiveStats<loaq::NormalizedOutput>(*g.fp_weight, {1.0, 1.0, double(g.norm_eps), true});
  }
  loaq::Report add(loaq::CalibrationAccumulator<double>& s, const llm::Batch& b) const {
    return s.add_batch(b.x_hat);
  }
  loaq::Report add(loaq::ObjectiveStats<loaq::NormalizedOutput>& s, const llm::Batch& b) const {
    REQUIRE(b.r_hat);
    return s.add(b.x_hat, b.x, *b.r_hat, *b.r);
  }
  template <class Grid>
  loaq::Report solve(const loaq::CalibrationAccumulator<double>& s, const Eigen::MatrixXf& W, const Grid& grid,
                     const loaq::GptqOptions& opt, loaq::QuantizedWeight<float>& out) const {
    return loaq::gptq(W, s.hessian(), grid, opt, out);
  }
  template <class Grid>
  loaq::Report solve(const loaq::ObjectiveStats<loaq::NormalizedOutput>& s, const Eigen::MatrixXf& W,
                     const Grid& grid, const loaq::GptqOptions& opt, loaq::QuantizedWeight<float>& out) const {
    return loaq::solve_objective(W, s, grid, opt, out);
  }
};

// GPTQ that records every x̂ it is given, per group (its layer and FP weight) and window.
struct RecordingGptq {
  using Key = std::pair<int, const Eigen::MatrixXf*>;
  std::shared_ptr<std::map<Key, std::vector<Eigen::MatrixXf>>> seen =
      std::make_shared<std::map<Key, std::vector<Eigen::MatrixXf>>>();
  struct Stats {
    loaq::CalibrationAccumulator<double> acc;
    Key key;
  };
  Stats stats(const llm::GroupInfo& g) const { return {loaq::CalibrationAccumulator<double>(g.inputs()), {g.layer, g.fp_weight}}; }
  loaq::Report add(Stats& s, const llm::Batch& b) const {
    (*seen)[s.key].push_back(b.x_hat);
    return s.acc.add_batch(b.x_hat);
  }
  template <class Grid>
  loaq::Report solve(const Stats& s, const Eigen::MatrixXf& W, const Grid& grid, const loaq::GptqOptions& opt,
                     loaq::QuantizedWeight<float>& out) const {
    return loaq::gptq(W, s.acc.hessian(), grid, opt, out);
  }
};

// GPTQ that checks, for every output group's window, that y is the FP stream after the sub-block:
// r + W·x with the linear's bias (r already holds it), given exactly when float products are on.
struct CheckingFpOutput {
  std::shared_ptr<std::atomic<int>> seen = std::make_shared<std::atomic<int>>(0);
  bool float_products = false;
  struct Stats {
    loaq::CalibrationAccumulator<double> acc;
    const Eigen::MatrixXf* W;
    bool output;
  };
  template <class G>
  Stats stats(const G& g) const {
    return {loaq::CalibrationAccumulator<double>(g.inputs()), g.fp_weight, G::role == loaq::LinearRole::Output};
  }
  loaq::Report add(Stats& s, const llm::Batch& b) const {
    if (s.output) {
      CHECK(bool(b.y) == float_products);
      if (b.y) {
        const Eigen::MatrixXf want = *b.r + *s.W * b.x;
        CHECK((*b.y - want).norm() <= 1e-5f * want.norm());
        ++*seen;
      }
    } else {
      CHECK(b.y == nullptr);
    }
    return s.acc.add_batch(b.x_hat);
  }
  template <class Grid>
  loaq::Report solve(const Stats& s, const Eigen::MatrixXf& W, const Grid& grid, const loaq::GptqOptions& opt,
                     loaq::QuantizedWeight<float>& out) const {
    return loaq::gptq(W, s.acc.hessian(), grid, opt, out);
  }
};

}  // namespace

TEST_CASE("sequential: each group's x̂ is what the returned model feeds that linear") {
  // The quantized stream is advanced group by group; whatever shortcut it takes, a group's x̂
  // must be its input in the final model (everything before the group is final by then).
  llm::Model fp = tiny_model(14);
  for (auto& L : fp.layers)
    for (auto k : kAll) L.bias[int(k)] = Eigen::VectorXf::Constant(L.weight(k).rows(), 0.1f);
  const auto calib = random_token_windows(3, 24, 15);
  const RecordingGptq method;
  llm::SequentialOptions o = options(16);
  o.threads = 2;
  const llm::Model q = llm::quantize_sequential(fp, calib, method, loaq::UniformGrid<float, 3>(false), o);
  for (std::size_t w = 0; w < calib.size(); ++w) {
    Eigen::MatrixXf h = q.embed(calib[w]);
    for (std::size_t l = 0; l < q.layers.size(); ++l) {
      const llm::DecoderLayer& Lf = fp.layers[l];
      llm::AttnCapture a;
      llm::MlpCapture m;
      const Eigen::MatrixXf mid = llm::attention_block(q.config, q.layers[l], h, &a);
      h = llm::mlp_block(q.config, q.layers[l], mid, &m);
      const auto seen = [&](const Eigen::MatrixXf& W_fp) { return method.seen->at({int(l), &W_fp}).at(w); };
      CAPTURE(l);
      CHECK(seen(Lf.q) == a.x_qkv);
      CHECK(seen(Lf.o) == a.x_o);
      CHECK(seen(Lf.gate) == m.x_gate_up);
      CHECK(seen(Lf.down) == m.x_down);
    }
  }
}

TEST_CASE("sequential: every method quantizes every decoder linear onto its grid") {
  const llm::Model fp = tiny_model(1);
  const auto calib = random_token_windows(6, 24, 2);
  const loaq::UniformGrid<float, 3> grid(false);
  int progress_calls = 0;
  llm::SequentialOptions o = options(16);
  o.progress = [&](const llm::Progress& p) {
    ++progress_calls;
    CHECK(p.layers == 2);
  };
  llm::SequentialTimes t;
  SUBCASE("rtn") { check_on_grid(fp, llm::quantize_rtn(fp, grid, 16, {}, o.progress)); }
  SUBCASE("gptq") { check_on_grid(fp, llm::quantize_sequential(fp, calib, llm::Gptq{}, grid, o, &t)); }
  SUBCASE("gptaq") { check_on_grid(fp, llm::quantize_sequential(fp, calib, llm::Gptaq{}, grid, o, &t)); }
  SUBCASE("qep") { check_on_grid(fp, llm::quantize_sequential(fp, calib, llm::qep(), grid, o, &t)); }
  SUBCASE("loaq") { check_on_grid(fp, llm::quantize_sequential(fp, calib, llm::loaq_normalized(), grid, o, &t)); }
  SUBCASE("loaq residual") {
    check_on_grid(fp, llm::quantize_sequential(fp, calib, llm::loaq_residual(0.5, 0.25), grid, o, &t));
  }
  SUBCASE("a method defined outside the library") {
    check_on_grid(fp, llm::quantize_sequential(fp, calib, GptqInNormalizedOut{}, grid, o, &t));
  }
  CHECK(progress_calls > 0);
  CHECK(t.forward_s >= 0);
  CHECK(t.stats_s >= 0);
  CHECK(t.solve_s >= 0);
}

TEST_CASE("sequential: a model with biases; the output linears' residual includes their bias") {
  llm::Model fp = tiny_model(12);
  for (auto& L : fp.layers)
    for (auto k : kAll) L.bias[int(k)] = Eigen::VectorXf::Constant(L.weight(k).rows(), 0.1f);
  const auto calib = random_token_windows(4, 24, 13);
  const loaq::UniformGrid<float, 3> grid(false);
  check_on_grid(fp, llm::quantize_sequential(fp, calib, llm::loaq_normalized(), grid, options(16)));
  check_on_grid(fp, llm::quantize_sequential(fp, calib, llm::loaq_residual(), grid, options(16)));
  // β = 0 on the residual objective ignores r, r̂: the bias then changes nothing in the o solve's
  // statistics, and layer 0's o equals the one of the same model with the o bias moved away.
  llm::Model shifted = fp;
  for (auto& L : shifted.layers) L.bias[int(llm::Linear::o)] = Eigen::VectorXf::Constant(L.o.rows(), -0.3f);
  const auto a = llm::quantize_sequential(fp, calib, llm::loaq_residual(1, 0), grid, options(16));
  const auto b = llm::quantize_sequential(shifted, calib, llm::loaq_residual(1, 0), grid, options(16));
  CHECK(a.layers[0].o == b.layers[0].o);
}

TEST_CASE("sequential: output groups get the FP stream after the sub-block (bias included) with float products") {
  llm::Model fp = tiny_model(14);
  for (auto& L : fp.layers)
    for (auto k : kAll) L.bias[int(k)] = Eigen::VectorXf::Constant(L.weight(k).rows(), 0.2f);
  const auto calib = random_token_windows(3, 24, 15);
  for (bool float_products : {false, true}) {
    CAPTURE(float_products);
    llm::SequentialOptions o = options(16);
    o.float_products = float_products;
    o.threads = 2;
    CheckingFpOutput method;
    method.float_products = float_products;
    llm::quantize_sequential(fp, calib, method, loaq::UniformGrid<float, 3>(false), o);
    // 2 layers × (o, down) × 3 windows
    CHECK(*method.seen == (float_products ? 12 : 0));
  }
}

TEST_CASE("sequential: 8-bit GPTQ is near FP; methods reduce to each other where the theory says") {
  const llm::Model fp = tiny_model(3);
  const auto calib = random_token_windows(6, 24, 4);
  const auto evals = random_token_windows(4, 24, 5);
  const double fp_nll = mean_nll(fp, evals);
  const double q8 = mean_nll(llm::quantize_sequential(fp, calib, llm::Gptq{}, loaq::UniformGrid<float, 8>(false),
                                                      options(128)), evals);
  CHECK(std::abs(q8 - fp_nll) < 0.01 * fp_nll);

  const loaq::UniformGrid<float, 3> grid(false);
  const llm::Model gptq = llm::quantize_sequential(fp, calib, llm::Gptq{}, grid, options(128));
  // The residual objective at α = β = 0 is GPTQ (the normalized one reweights Ĥ by ŝ²).
  const llm::Model loaq0 = llm::quantize_sequential(fp, calib, llm::loaq_residual(0, 0), grid, options(128));
  for (std::size_t l = 0; l < fp.layers.size(); ++l) {
    CHECK(loaq0.layers[l].q == gptq.layers[l].q);
    CHECK(loaq0.layers[l].down == gptq.layers[l].down);
  }
  // GPTAQ and QEP at α = 0 solve GPTQ's problem (first group: same inputs, up to rounding).
  const llm::Model gptaq0 = llm::quantize_sequential(fp, calib, llm::Gptaq{0.0}, grid, options(128));
  const llm::Model qep0 = llm::quantize_sequential(fp, calib, llm::qep(0), grid, options(128));
  CHECK(gptaq0.layers[0].q.isApprox(gptq.layers[0].q));
  CHECK(qep0.layers[0].q.isApprox(gptq.layers[0].q));
  // The custom method is GPTQ on input linears (identical on layer 0's q), not on output linears.
  const llm::Model custom = llm::quantize_sequential(fp, calib, GptqInNormalizedOut{}, grid, options(128));
  CHECK(custom.layers[0].q == gptq.layers[0].q);
  CHECK(custom.layers[0].o != gptq.layers[0].o);
}

TEST_CASE("sequential: statistics with float products stay within float rounding of the double ones") {
  const llm::Model fp = tiny_model(11);
  const auto calib = random_token_windows(6, 24, 12);
  const auto evals = random_token_windows(4, 24, 13);
  const loaq::UniformGrid<float, 4> grid(false);
  llm::SequentialOptions o = options(16);
  llm::SequentialOptions f = o;
  f.float_products = true;
  for (const bool loaq_method : {false, true}) {
    CAPTURE(loaq_method);
    const auto run = [&](const llm::SequentialOptions& opt) {
      return loaq_method ? llm::quantize_sequential(fp, calib, llm::loaq_normalized(0.5, 0.5), grid, opt)
                         : llm::quantize_sequential(fp, calib, llm::Gptq{}, grid, opt);
    };
    const double exact = mean_nll(run(o), evals), fast = mean_nll(run(f), evals);
    CHECK(std::isfinite(fast));
    CHECK(std::abs(fast - exact) < 0.01 * exact);
  }
}

TEST_CASE("sequential and perplexity: results do not depend on the thread count") {
  const llm::Model fp = tiny_model(7);
  const auto calib = random_token_windows(5, 24, 8);
  const auto evals = random_token_windows(5, 24, 9);
  const loaq::UniformGrid<float, 3> grid(false);
  llm::SequentialOptions o = options(16);
  const llm::Model one = llm::quantize_sequential(fp, calib, llm::loaq_normalized(0.5, 0.25), grid, o);
  for (int threads : {2, 3, 8}) {
    CAPTURE(threads);
    o.threads = threads;
    const llm::Model many = llm::quantize_sequential(fp, calib, llm::loaq_normalized(0.5, 0.25), grid, o);
    for (std::size_t l = 0; l < fp.layers.size(); ++l)
      for (auto k : kAll) CHECK(many.layers[l].weight(k) == one.layers[l].weight(k));
    const auto p1 = llm::perplexity(many, evals, 1), pn = llm::perplexity(many, evals, threads);
    CHECK(p1.mean_nll == pn.mean_nll);
    CHECK(pn.windows == 5);
  }
}

TEST_CASE("TaskPool: every task of every batch runs once; errors reach the caller; the pool goes on") {
  for (int threads : {1, 2, 4}) {
    CAPTURE(threads);
    llm::detail::TaskPool pool(threads);
    // Many short batches: a worker that wakes late for a finished batch must not take a task of
    // the next one (that task would run twice).
    for (std::size_t batch = 0; batch < 300; ++batch) {
      const std::size_t n = 1 + batch % 13;
      std::vector<std::atomic<int>> runs(n);
      pool.run(n, [&](std::size_t i) { ++runs[i]; });
      for (std::size_t i = 0; i < n; ++i) REQUIRE(runs[i].load() == 1);
    }
    std::atomic<int> ran{0};
    CHECK_THROWS_WITH_AS(pool.run(20, [&](std::size_t i) {
                           ++ran;
                           if (i == 7) throw std::runtime_error("task 7 failed");
                         }),
                         "task 7 failed", std::runtime_error);
    CHECK(ran.load() == 20);  // the other tasks still ran
    std::atomic<loaq::Index> sum{0};
    pool.runner()(100, [&](loaq::Index i) { sum += i; });
    CHECK(sum.load() == 4950);
  }
}

TEST_CASE("sequential: bad settings are errors, not crashes") {
  const llm::Model fp = tiny_model(5);
  const loaq::UniformGrid<float, 4> grid(false);
  CHECK_THROWS_AS(llm::quantize_sequential(fp, {}, llm::Gptq{}, grid), std::invalid_argument);
  CHECK_THROWS_AS(llm::with_uniform_grid(9, false, [](const auto&) {}), std::invalid_argument);
  CHECK_THROWS_AS(llm::quantize_sequential(fp, random_token_windows(2, 8, 1), llm::Gptq{}, grid, options(0)),
                  std::runtime_error);
  // A residual objective on an input group has no residual streams to read.
  using Wrong = llm::ObjectiveMethod<loaq::ResidualOutput, loaq::ResidualOutput>;
  CHECK_THROWS_AS(llm::quantize_sequential(fp, random_token_windows(2, 8, 1), Wrong{}, grid, options(8)),
                  std::runtime_error);
  // An error on a worker thread reaches the caller too.
  llm::SequentialOptions o = options(0);
  o.threads = 3;
  CHECK_THROWS_AS(llm::quantize_sequential(fp, random_token_windows(4, 8, 1), llm::Gptq{}, grid, o),
                  std::runtime_error);
  std::vector<std::vector<int>> bad = random_token_windows(4, 8, 2);
  bad[2][3] = 99;  // outside the vocabulary: embed throws inside a task
  CHECK_THROWS_AS(llm::perplexity(fp, bad, 3), std::out_of_range);
}
