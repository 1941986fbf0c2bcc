// loaq-make-layer: writes a synthetic layer like an LLM's (heavy-tailed weights, inputs with
// outlier channels, a quantized-model stream that has drifted from the FP one) for trying
// loaq-quantize without PyTorch.
#include <cmath>
#include <cstdlib>
#include <iostream>
#include <random>
#include <string>

#include <loaq/io/safetensors.hpp>

int main(int argc, char** argv) {
  loaq::pin_eigen_blocking();  // the same results on any CPU (loaq/config.hpp)
  long m = 256, n = 256, T = 2048;
  unsigned seed = 1;
  double drift = 0.1;
  std::string out;
  for (int i = 1; i < argc; ++i) {
    const std::string f = argv[i];
    if (i + 1 >= argc) { std::cerr << "loaq-make-layer: " << f << " needs a value\n"; return 2; }
    const std::string v = argv[++i];
    if (f == "--out") out = v;
    else if (f == "--rows") m = std::atol(v.c_str());
    else if (f == "--cols") n = std::atol(v.c_str());
    else if (f == "--tokens") T = std::atol(v.c_str());
    else if (f == "--seed") seed = unsigned(std::atol(v.c_str()));
    else if (f == "--drift") drift = std::atof(v.c_str());
    else { std::cerr << "loaq-make-layer: unknown option " << f << "\n"; return 2; }
  }
  if (out.empty() || m < 1 || n < 1 || T < 1) {
    std::cerr << "usage: loaq-make-layer --out FILE [--rows M] [--cols N] [--tokens T] [--seed S] "
                 "[--drift D]\n";
    return 2;
  }
  std::mt19937 rng(seed);
  std::normal_distribution<double> g(0.0, 1.0);
  std::student_t_distribution<double> t(4.0);
  Eigen::MatrixXd W(m, n), X(T, n), R(T, m);
  for (long i = 0; i < m; ++i)
    for (long j = 0; j < n; ++j) W(i, j) = 0.02 * t(rng);
  // Correlated inputs with a few outlier channels, as in transformer activations.
  Eigen::MatrixXd mix(n, n);
  for (long i = 0; i < n; ++i)
    for (long j = 0; j < n; ++j) mix(i, j) = (i == j) + 0.5 * g(rng) / std::sqrt(double(n));
  for (long s = 0; s < T; ++s)
    for (long j = 0; j < n; ++j) X(s, j) = g(rng);
  X = X * mix;
  for (long j = 0; j < n; j += 37) X.col(j) *= 8.0;
  for (long s = 0; s < T; ++s)
    for (long i = 0; i < m; ++i) R(s, i) = g(rng);
  // The quantized model's stream: the FP stream plus a correlated drift.
  Eigen::MatrixXd Xhat = X, Rhat = R;
  for (long s = 0; s < T; ++s) {
    for (long j = 0; j < n; ++j) Xhat(s, j) += drift * (0.5 * X(s, j) * g(rng) + 0.3 * g(rng));
    for (long i = 0; i < m; ++i) Rhat(s, i) += drift * g(rng);
  }
  loaq::io::SafetensorsWriter w;
  w.add_matrix("weight", W, loaq::io::DType::F32);
  w.add_matrix("inputs", Xhat, loaq::io::DType::F32);
  w.add_matrix("fp_inputs", X, loaq::io::DType::F32);
  w.add_matrix("residual", Rhat, loaq::io::DType::F32);
  w.add_matrix("fp_residual", R, loaq::io::DType::F32);
  try {
    w.write(out);
  } catch (const std::exception& e) {
    std::cerr << "loaq-make-layer: " << e.what() << "\n";
    return 1;
  }
  std::cout << "wrote " << out << ": weight " << m << "x" << n << ", " << T << " tokens\n";
  return 0;
}
