// The installed loaq::cuda target: a GPTQ solve on the GPU, or the CPU's where there is none.
#include <cstdio>
#include <random>

#include <loaq/cuda.cuh>

int main() {
  std::mt19937 rng(3);
  std::normal_distribution<double> gauss;
  const Eigen::MatrixXd X = Eigen::MatrixXd::NullaryExpr(64, 256, [&] { return gauss(rng); });
  const Eigen::MatrixXf W = Eigen::MatrixXf::NullaryExpr(16, 64, [&] { return float(gauss(rng)); });
  const Eigen::MatrixXd H = 2.0 / 256 * X * X.transpose();
  loaq::QuantizedWeight<float> out;
  std::string why;
  const bool gpu = loaq::cuda::device_available(&why);
  loaq::cuda::Context ctx;
  const loaq::Report r = gpu ? loaq::cuda::gptq(ctx, W, H, loaq::UniformGrid<float, 4>(), {}, out)
                             : loaq::gptq(W, H, loaq::UniformGrid<float, 4>(), {}, out);
  if (!r.ok()) {
    std::fprintf(stderr, "consumer_cuda: %s\n", r.message.c_str());
    return 1;
  }
  std::printf("consumer_cuda (%s): loss %.4f\n", gpu ? "GPU" : ("CPU fallback: " + why).c_str(),
              out.loss);
  return 0;
}
