// Quantizes a small layer through the installed headers and checks GPTQ beats RTN.
#include <cstdio>
#include <loaq/loaq.hpp>

int main() {
  const Eigen::Index m = 16, n = 32;
  Eigen::MatrixXd X = Eigen::MatrixXd::Random(n, 256);
  X.row(0) *= 10;
  X += 0.5 * Eigen::MatrixXd::Random(n, n) * X / double(n);
  loaq::CalibrationAccumulator<double> acc(n);
  if (!acc.add_batch(X).ok()) return 1;
  const Eigen::MatrixXf W = Eigen::MatrixXf::Random(m, n);
  loaq::UniformGrid<float, 3> grid(false);
  loaq::QuantizedWeight<float> q, r;
  const loaq::Report rep = loaq::gptq(W, acc.hessian(), grid, loaq::GptqOptions{}, q);
  if (!rep.ok()) return std::printf("gptq failed: %s\n", rep.message.c_str()), 1;
  if (!loaq::rtn(W, grid, -1, loaq::ParamSearch{}, r).ok()) return 1;
  auto err = [&](const Eigen::MatrixXf& Q) {
    const Eigen::MatrixXd D = (W - Q).cast<double>();
    return (D * acc.hessian()).cwiseProduct(D).sum();
  };
  std::printf("consumer: RTN %.4g, GPTQ %.4g\n", err(r.weight), err(q.weight));
  return err(q.weight) < err(r.weight) ? 0 : 1;
}
