// The C++ side of python/bench/bench_binding.py: the same GPTQ solve on the same layer, timed
// around the same call (loaq::gptq), compiled with the extension's flags.
//   gptq_cpp W.bin H.bin m n bits group reps  → prints one line per rep: "seconds codesum"
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <vector>

#include <loaq/loaq.hpp>

template <class T>
std::vector<T> read(const char* path, size_t count) {
  std::vector<T> v(count);
  std::ifstream f(path, std::ios::binary);
  f.read(reinterpret_cast<char*>(v.data()), std::streamsize(count * sizeof(T)));
  if (!f) { std::fprintf(stderr, "cannot read %s\n", path); std::exit(1); }
  return v;
}

int main(int argc, char** argv) {
  loaq::pin_eigen_blocking();  // the same results on any CPU (loaq/config.hpp)
  if (argc != 8) { std::fprintf(stderr, "usage: gptq_cpp W.bin H.bin m n bits group reps\n"); return 2; }
  const long m = std::atol(argv[3]), n = std::atol(argv[4]);
  const int bits = std::atoi(argv[5]), group = std::atoi(argv[6]), reps = std::atoi(argv[7]);
  // W.bin is row-major [m, n] float32 (PyTorch layout), H.bin is [n, n] float64.
  const auto w = read<float>(argv[1], size_t(m * n));
  const auto h = read<double>(argv[2], size_t(n * n));
  const Eigen::MatrixXf W = Eigen::Map<const Eigen::Matrix<float, -1, -1, Eigen::RowMajor>>(w.data(), m, n);
  const Eigen::MatrixXd H = Eigen::Map<const Eigen::MatrixXd>(h.data(), n, n);
  loaq::GptqOptions opt;
  opt.group_size = group;
  for (int r = 0; r < reps; ++r) {
    loaq::QuantizedWeight<float> q;
    loaq::SolveDiagnostics diag;
    const auto t0 = std::chrono::steady_clock::now();
    loaq::Report rep;
    if (bits == 4) rep = loaq::gptq(W, H, loaq::UniformGrid<float, 4>(false), opt, q, &diag);
    else rep = loaq::gptq(W, H, loaq::UniformGrid<float, 3>(false), opt, q, &diag);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!rep.ok()) { std::fprintf(stderr, "%s\n", rep.message.c_str()); return 1; }
    std::printf("%.4f %lld\n", s, (long long)q.codes.cast<long long>().sum());
    std::fflush(stdout);
  }
  return 0;
}
