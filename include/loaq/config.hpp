// loaq configuration: version, assertion hook, scalar checks.
#pragma once

#include <Eigen/Core>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#define LOAQ_VERSION_MAJOR 0
#define LOAQ_VERSION_MINOR 1
#define LOAQ_VERSION_PATCH 0

// Users may redirect internal assertions (Sophus-style): define LOAQ_ASSERT before including loaq.
#ifndef LOAQ_ASSERT
#include <cassert>
#define LOAQ_ASSERT(cond) assert(cond)
#endif

// What the CUDA backend (include/loaq/cuda/) also runs on the GPU, the grids' arithmetic, is
// __host__ __device__ under nvcc and plain C++ everywhere else.
#ifdef __CUDACC__
#define LOAQ_HOST_DEVICE __host__ __device__
#else
#define LOAQ_HOST_DEVICE
#endif

namespace loaq {

template <class Scalar>
using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
template <class Scalar>
using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
using CodeMatrix = Eigen::Matrix<std::uint8_t, Eigen::Dynamic, Eigen::Dynamic>;
using Index = Eigen::Index;

// Eigen cuts the long sums of its matrix products into panels whose depth it derives from the L1
// size the CPU reports, so one binary rounds differently on CPUs with different caches: 48 KiB
// instead of 32 KiB moves SmolLM2's GPTQ W3 g128 perplexity from 78.6 to 102.8 (same model,
// same calibration windows). Pinning the sizes Eigen plans with makes results depend on the build
// (compiler, SIMD width) only. It is process-wide: call it at startup, before other threads use
// Eigen. loaq's programs do; the defaults are a common x86 core's (32 KiB L1, 1 MiB L2, 32 MiB L3).
inline void pin_eigen_blocking(std::ptrdiff_t l1 = std::ptrdiff_t(32) << 10,
                               std::ptrdiff_t l2 = std::ptrdiff_t(1) << 20,
                               std::ptrdiff_t l3 = std::ptrdiff_t(32) << 20) {
  Eigen::setCpuCacheSizes(l1, l2, l3);
}

namespace internal {
// M.allFinite() at memory speed: x·0 is 0 for a finite x and NaN for NaN or ±Inf, and a sum
// holding a NaN is NaN. Eigen vectorizes this sum but not allFinite's element-by-element loop,
// which costs a visible part of a 4096 × 4096 solve for each weight-sized check.
// A large matrix (a weight, a Hessian, a factor: each checked before a solve) is split into
// columns (rows, if row-major) over the OpenMP threads; the answer does not depend on the split.
template <class Derived>
bool all_finite(const Eigen::MatrixBase<Derived>& M) {
  using S = typename Derived::Scalar;
  if (M.size() == 0) return true;
#ifdef _OPENMP
  constexpr Index kThreadedEntries = Index(1) << 20;
  constexpr bool by_rows = bool(Derived::IsRowMajor);
  const Index slices = by_rows ? M.rows() : M.cols();
  if (M.size() >= kThreadedEntries && slices >= 2) {
    bool finite = true;
#pragma omp parallel for schedule(static) reduction(&& : finite)
    for (Index k = 0; k < slices; ++k) {
      if constexpr (by_rows) finite = finite && (M.row(k).array() * S(0)).sum() == S(0);
      else finite = finite && (M.col(k).array() * S(0)).sum() == S(0);
    }
    return finite;
  }
#endif
  return (M.array() * S(0)).sum() == S(0);
}

template <class Scalar>
constexpr void check_scalar() {
  static_assert(std::is_floating_point<Scalar>::value,
                "loaq solvers need a floating-point scalar (float or double)");
}
}  // namespace internal

}  // namespace loaq
