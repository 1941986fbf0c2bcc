// llama.cpp's block formats as grids: Q4_0, Q4_1 and Q8_0 (ggml-quants.c), one block of 32
// weights along a row per group. The parameters are fitted and applied as the fp16 values the
// format stores, so a solve on these grids dequantizes, value for value, to what llama.cpp
// computes from the exported blocks (io/ggml_blocks.hpp packs them). Use them with group size 32;
// with act-order, with static groups, so that groups are blocks in the original column order.
//
// Where llama.cpp's own quantizer (RTN) differs: it rounds x·(1/d) half away from zero with the
// unrounded d; these grids round x/d half to even with the stored fp16 d, the choice that keeps
// every solver's x̂ the nearest grid point of the block as the file holds it.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "../config.hpp"
#include "uniform.hpp"

namespace loaq {

namespace internal {
constexpr float kFp16Max = 65504.f;

// x rounded to the nearest fp16 value (ties to even, as ggml's F16C and scalar paths do),
// saturated at ±65504 so that an oversized block clips instead of storing Inf. A double goes
// through float first (llama.cpp computes its parameters in float).
inline float round_to_fp16(double x) {
  const float f = float(std::clamp(x, double(-kFp16Max), double(kFp16Max)));
  return float(Eigen::half(f));
}
inline bool is_fp16_value(double x) {
  return std::isfinite(x) && std::abs(x) <= kFp16Max && double(round_to_fp16(x)) == x;
}

// clamp(round(v) + offset, lo, hi) as a code; NaN (an overflowed solve) gives lo, without UB.
template <class Scalar>
std::uint8_t clamped_code(Scalar v, int offset, int lo, int hi) {
  const Scalar q = round_half_even(v) + Scalar(offset);
  return static_cast<std::uint8_t>(q > Scalar(lo) ? std::min(q, Scalar(hi)) : Scalar(lo));
}
}  // namespace internal

// Q4_0: x̂ = d·(q − 8), q ∈ 0..15. d = fp16(max / −8) with max the block's value of largest
// magnitude, sign kept, so that value is exactly representable (q = 0) and the other side
// reaches 7·|d|. `zero` is the code offset 8.
template <class Scalar_>
class GgmlQ4_0Grid {
 public:
  using Scalar = Scalar_;
  static constexpr int bits = 4;
  static constexpr int block_size = 32;
  static constexpr std::uint32_t ggml_type = 2;

  GgmlQ4_0Grid() { internal::check_scalar<Scalar>(); }

  // An all-zero block is exact with any d; d ≠ 0 still lets a solver's later columns move.
  void adjust_range(Scalar& xmin, Scalar& xmax) const {
    if (xmin == 0 && xmax == 0) xmax = 1;
  }
  void params(Scalar xmin, Scalar xmax, Scalar& scale, Scalar& zero) const {
    const Scalar max = -xmin > xmax ? xmin : xmax;
    scale = Scalar(internal::round_to_fp16(max / Scalar(-8)));
    zero = 8;
  }
  std::uint8_t encode(Scalar x, Scalar scale, Scalar /*zero*/) const {
    if (scale == 0) return 8;  // d underflowed fp16: every code decodes to 0
    return internal::clamped_code(x / scale, 8, 0, 15);
  }
  // In float, as llama.cpp dequantizes (exact: |q − 8| ≤ 8 times an fp16 value).
  Scalar decode(std::uint8_t code, Scalar scale, Scalar /*zero*/) const {
    return Scalar(float(int(code) - 8) * float(scale));
  }
};

// Q4_1: x̂ = d·q + m, q ∈ 0..15, d = fp16((max − min)/15) and m = fp16(min): a real-valued
// minimum, not an integer zero point. `zero` holds m, in value units.
template <class Scalar_>
class GgmlQ4_1Grid {
 public:
  using Scalar = Scalar_;
  static constexpr int bits = 4;
  static constexpr int block_size = 32;
  static constexpr std::uint32_t ggml_type = 3;
  static constexpr bool zero_is_offset = true;  // m scales with its row (solve/row_scaling.hpp)

  GgmlQ4_1Grid() { internal::check_scalar<Scalar>(); }

  void adjust_range(Scalar&, Scalar&) const {}  // the range need not contain 0
  void params(Scalar xmin, Scalar xmax, Scalar& scale, Scalar& zero) const {
    Scalar d = (xmax - xmin) / Scalar(15);                        // in Scalar, as llama.cpp
    if (!std::isfinite(d)) d = xmax / Scalar(15) - xmin / Scalar(15);  // the difference overflowed
    scale = Scalar(internal::round_to_fp16(d));
    zero = Scalar(internal::round_to_fp16(xmin));
  }
  std::uint8_t encode(Scalar x, Scalar scale, Scalar zero) const {
    if (scale == 0) return 0;  // a constant block: every code decodes to m
    return internal::clamped_code((x - zero) / scale, 0, 0, 15);
  }
  // q·d is exact in float, so llama.cpp's q·d + m rounds once, fused or not.
  Scalar decode(std::uint8_t code, Scalar scale, Scalar zero) const {
    return Scalar(float(code) * float(scale) + float(zero));
  }
};

// Q8_0: x̂ = d·q, q ∈ −127..127, d = fp16(max|x| / 127). Codes are q + 128 (−128 is left out as
// llama.cpp does: its integer dot products take |q| in int8). `zero` is the offset 128.
template <class Scalar_>
class GgmlQ8_0Grid {
 public:
  using Scalar = Scalar_;
  static constexpr int bits = 8;
  static constexpr int block_size = 32;
  static constexpr std::uint32_t ggml_type = 8;

  GgmlQ8_0Grid() { internal::check_scalar<Scalar>(); }

  void adjust_range(Scalar& xmin, Scalar& xmax) const {
    xmax = std::max(std::abs(xmin), std::abs(xmax));
    if (xmax == 0) xmax = 1;
    xmin = -xmax;
  }
  void params(Scalar /*xmin*/, Scalar xmax, Scalar& scale, Scalar& zero) const {
    scale = Scalar(internal::round_to_fp16(xmax / Scalar(127)));
    zero = 128;
  }
  std::uint8_t encode(Scalar x, Scalar scale, Scalar /*zero*/) const {
    if (scale == 0) return 128;
    return internal::clamped_code(x / scale, 128, 1, 255);
  }
  Scalar decode(std::uint8_t code, Scalar scale, Scalar /*zero*/) const {
    return Scalar(float(int(code) - 128) * float(scale));
  }
};

}  // namespace loaq
