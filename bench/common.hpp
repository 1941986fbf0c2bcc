// Shared helpers of the loaq benchmarks: timing, peak memory, synthetic layers, reference rates.
#pragma once

#include <sys/resource.h>

#include <Eigen/Core>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#ifdef LOAQ_BENCH_BLAS
#include <cblas.h>
extern "C" void openblas_set_num_threads(int) __attribute__((weak));
#endif

namespace bench {

using Index = Eigen::Index;
template <class S>
using Mat = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;

inline double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Best wall time of `reps` runs after one untimed warm-up (skipped when warm = false, for runs
// too long to repeat). The minimum, not the median: on a machine shared with other jobs it is
// the figure least disturbed by them.
inline double time_best(int reps, const std::function<void()>& f, bool warm = true) {
  if (warm) f();
  std::vector<double> t;
  for (int i = 0; i < std::max(reps, 1); ++i) {
    const double t0 = now();
    f();
    t.push_back(now() - t0);
  }
  return *std::min_element(t.begin(), t.end());
}

// Peak resident set size of this process in bytes (ru_maxrss is in KiB on Linux).
inline double peak_rss_bytes() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_maxrss) * 1024.0;
}
inline void set_threads(int threads) {
#ifdef _OPENMP
  omp_set_num_threads(threads);
#endif
  Eigen::setNbThreads(threads);
#ifdef LOAQ_BENCH_BLAS
  if (openblas_set_num_threads) openblas_set_num_threads(threads);
#endif
}

// The layer shapes every bench runs, m × n = rows × columns of W: SmolLM2-135M's, then LLaMA-7B's.
struct Shape {
  const char* name;
  Index m, n;
};
constexpr Shape kSmol[] = {{"smollm2_576x576", 576, 576},  // q_proj, o_proj
                           {"smollm2_192x576", 192, 576},  // k_proj, v_proj (3 KV heads of 64)
                           {"smollm2_1536x576", 1536, 576},  // gate_proj, up_proj
                           {"smollm2_576x1536", 576, 1536}};  // down_proj
constexpr Shape kLlama[] = {{"llama7b_4096x4096", 4096, 4096},
                            {"llama7b_11008x4096", 11008, 4096},
                            {"llama7b_4096x11008", 4096, 11008}};

// Heavy-tailed weights: a normal scaled by 1 + 4·Bernoulli(0.01), like real LLM rows.
template <class S>
Mat<S> synthetic_weight(Index m, Index n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 0.02);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  Mat<S> W(m, n);
  for (Index j = 0; j < n; ++j)
    for (Index i = 0; i < m; ++i) W(i, j) = S(normal(rng) * (u(rng) < 0.01 ? 5.0 : 1.0));
  return W;
}

// Calibration inputs n × T with a few outlier channels (every 97th ×20), as in LLM activations.
template <class S>
Mat<S> synthetic_inputs(Index n, Index T, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  Mat<S> X(n, T);
  for (Index t = 0; t < T; ++t)
    for (Index i = 0; i < n; ++i) X(i, t) = S(normal(rng) * (i % 97 == 0 ? 20.0 : 1.0));
  return X;
}

// Rates of this machine's dense kernels in the same run, in GFLOP/s.
struct MachineRates {
  double gemm_eigen = 0, gemm_blas = 0;  // C += A·B, square
  double syrk_eigen = 0, syrk_blas = 0;  // lower C += A·Aᵀ, the accumulator's shape
};

template <class S>
double eigen_gemm_rate(Index k, int reps) {
  Mat<S> A = Mat<S>::Random(k, k), B = Mat<S>::Random(k, k), C = Mat<S>::Zero(k, k);
  const double t = time_best(reps, [&] { C.noalias() += A * B; });
  return 2.0 * double(k) * double(k) * double(k) / t * 1e-9;
}

// SYRK flops n(n+1)·T: the lower triangle with its diagonal.
inline double syrk_flops(Index n, Index T) { return double(n) * double(n + 1) * double(T); }

template <class S>
double eigen_syrk_rate(Index n, Index T, int reps) {
  Mat<S> X = Mat<S>::Random(n, T), H = Mat<S>::Zero(n, n);
  const double t =
      time_best(reps, [&] { H.template selfadjointView<Eigen::Lower>().rankUpdate(X, S(1)); });
  return syrk_flops(n, T) / t * 1e-9;
}

#ifdef LOAQ_BENCH_BLAS
template <class S>
double blas_gemm_rate(Index k, int reps) {
  Mat<S> A = Mat<S>::Random(k, k), B = Mat<S>::Random(k, k), C = Mat<S>::Zero(k, k);
  const int K = int(k);
  const double t = time_best(reps, [&] {
    if constexpr (std::is_same<S, float>::value)
      cblas_sgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, K, K, K, 1.f, A.data(), K, B.data(), K,
                  1.f, C.data(), K);
    else
      cblas_dgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, K, K, K, 1.0, A.data(), K, B.data(), K,
                  1.0, C.data(), K);
  });
  return 2.0 * double(k) * double(k) * double(k) / t * 1e-9;
}
// H += X·Xᵀ (lower triangle) with OpenBLAS.
template <class S>
void blas_syrk(const Mat<S>& X, Mat<S>& H) {
  const int N = int(X.rows()), K = int(X.cols());
  if constexpr (std::is_same<S, float>::value)
    cblas_ssyrk(CblasColMajor, CblasLower, CblasNoTrans, N, K, 1.f, X.data(), N, 1.f, H.data(), N);
  else
    cblas_dsyrk(CblasColMajor, CblasLower, CblasNoTrans, N, K, 1.0, X.data(), N, 1.0, H.data(), N);
}
template <class S>
double blas_syrk_rate(Index n, Index T, int reps) {
  Mat<S> X = Mat<S>::Random(n, T), H = Mat<S>::Zero(n, n);
  const double t = time_best(reps, [&] { blas_syrk(X, H); });
  return syrk_flops(n, T) / t * 1e-9;
}
#endif

inline std::string pct(double x) {
  char b[32];
  std::snprintf(b, sizeof b, "%.0f%%", 100.0 * x);
  return b;
}

}  // namespace bench
