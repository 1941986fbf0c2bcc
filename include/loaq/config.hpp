// loaq configuration: version, assertion hook, scalar checks.
#pragma once

#include <Eigen/Core>
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

namespace loaq {

template <class Scalar>
using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
template <class Scalar>
using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
using CodeMatrix = Eigen::Matrix<std::uint8_t, Eigen::Dynamic, Eigen::Dynamic>;
using Index = Eigen::Index;

namespace internal {
template <class Scalar>
constexpr void check_scalar() {
  static_assert(std::is_floating_point<Scalar>::value,
                "loaq solvers need a floating-point scalar (float or double)");
}
}  // namespace internal

}  // namespace loaq
