// Shared helpers for the test suite: reference-vector loading, random problems, code matching.
#pragma once

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>

#include <loaq/io/safetensors.hpp>
#include <loaq/loaq.hpp>

namespace loaq_test {

// The checkout's tests/data, or $LOAQ_TEST_DATA_DIR (a test binary run from another checkout).
inline std::string data_path(const std::string& rel) {
  const char* dir = std::getenv("LOAQ_TEST_DATA_DIR");
  return std::string(dir && *dir ? dir : LOAQ_TEST_DATA_DIR) + "/" + rel;
}

inline nlohmann::json reference_cases() {
  std::ifstream f(data_path("reference/cases.json"));
  return nlohmann::json::parse(f);
}

// The solver options of one reference case (cases.json).
inline loaq::GptqOptions reference_options(const nlohmann::json& c) {
  loaq::GptqOptions opt;
  opt.block_size = c["blocksize"];
  opt.group_size = c["group"];
  opt.act_order = c["act_order"];
  opt.static_groups = c["static_groups"];
  opt.search.mse = c["mse"];
  opt.damping.percdamp = c["percdamp"];
  return opt;
}

// Calls f with the float grid of one reference case (bits and sym from cases.json); false for
// bits the suite does not instantiate.
template <class F>
bool with_reference_grid(const nlohmann::json& c, F&& f) {
  const bool sym = c["sym"];
  switch (int(c["bits"])) {
    case 2: f(loaq::UniformGrid<float, 2>(sym)); return true;
    case 3: f(loaq::UniformGrid<float, 3>(sym)); return true;
    case 4: f(loaq::UniformGrid<float, 4>(sym)); return true;
    case 8: f(loaq::UniformGrid<float, 8>(sym)); return true;
    default: return false;
  }
}

// Heavy-tailed weights and inputs with outlier channels, like real LLM layers.
template <class Scalar>
loaq::Matrix<Scalar> random_matrix(loaq::Index rows, loaq::Index cols, std::mt19937& rng,
                                   double tail = 0.0) {
  std::normal_distribution<double> g(0.0, 1.0);
  std::student_t_distribution<double> t(3.0);
  loaq::Matrix<Scalar> M(rows, cols);
  for (loaq::Index j = 0; j < cols; ++j)
    for (loaq::Index i = 0; i < rows; ++i) M(i, j) = Scalar(tail > 0 ? tail * t(rng) : g(rng));
  return M;
}

// GPTQ options for comparing the left-looking loop with the right-looking one, case by case.
inline loaq::GptqOptions blocked_options(int block, int group, bool act_order, bool static_groups) {
  loaq::GptqOptions opt;
  opt.block_size = block;
  opt.group_size = group;
  opt.act_order = act_order;
  opt.static_groups = static_groups;
  return opt;
}

// Inputs n × T with a few outlier channels; H = 2 Σ x xᵀ (one sequence).
inline Eigen::MatrixXd random_inputs(loaq::Index n, loaq::Index T, std::mt19937& rng) {
  Eigen::MatrixXd X = random_matrix<double>(n, T, rng);
  std::normal_distribution<double> g(0.0, 1.0);
  Eigen::MatrixXd mix = Eigen::MatrixXd::Identity(n, n) + 0.3 * random_matrix<double>(n, n, rng) / std::sqrt(double(n));
  X = mix * X;
  for (loaq::Index i = 0; i < n; i += 7) X.row(i) *= 5.0;  // outlier channels
  return X;
}

// A layer with its statistics: W (heavy-tailed), Ĥ, C = Σ(x − x̂)x̂ᵀ and G = Σ(r − r̂)x̂ᵀ from
// tokens_per_feature·n tokens of correlated inputs; `dead` input channels no token reaches.
struct Problem {
  Eigen::MatrixXd W, H, C, G;
};
inline Problem make_problem(loaq::Index m, loaq::Index n, std::mt19937& rng, loaq::Index tokens_per_feature = 4,
                     loaq::Index dead = 0) {
  const loaq::Index T = tokens_per_feature * n;
  Eigen::MatrixXd Xh = random_inputs(n, T, rng);
  for (loaq::Index j = 0; j < dead; ++j) Xh.row(3 + 5 * j).setZero();
  const Eigen::MatrixXd X = Xh + 0.2 * random_matrix<double>(n, T, rng);
  const Eigen::MatrixXd R = random_matrix<double>(m, T, rng);
  const Eigen::MatrixXd Rh = R + 0.3 * random_matrix<double>(m, T, rng);
  loaq::CalibrationAccumulator<double> acc(n, m);
  if (!acc.add_batch(Xh, X, Rh, R).ok()) return {};
  return {random_matrix<double>(m, n, rng, 0.5), acc.hessian(), acc.cross(), acc.residual_cross()};
}

// Fraction of entries whose dequantized values agree (to a quarter of the local step).
template <class A, class B, class S>
double agreement(const A& ours, const B& expected, const S& scale_of_entry) {
  loaq::Index same = 0;
  for (loaq::Index j = 0; j < ours.cols(); ++j)
    for (loaq::Index i = 0; i < ours.rows(); ++i)
      if (std::abs(double(ours(i, j)) - double(expected(i, j))) <= 0.25 * std::abs(double(scale_of_entry(i, j))))
        ++same;
  return double(same) / double(ours.size());
}

// Eigen's products on one thread while in scope. In a build with OpenMP Eigen splits one GEMM over
// its threads, which rounds differently; the library's tasks never let it (tasks.hpp).
struct SerialEigen {
  int before = Eigen::nbThreads();
  SerialEigen() { Eigen::setNbThreads(1); }
  ~SerialEigen() { Eigen::setNbThreads(before); }
  SerialEigen(const SerialEigen&) = delete;
  SerialEigen& operator=(const SerialEigen&) = delete;
};

}  // namespace loaq_test
