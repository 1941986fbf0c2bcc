// Uniform integer grids: x̂ = s·(code − z), code ∈ [lo, hi] (GPTQ quant.py semantics).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "../config.hpp"

namespace loaq {

namespace internal {
// Round half to even, as torch.round does (std::nearbyint in the default rounding mode).
template <class Scalar>
LOAQ_HOST_DEVICE inline Scalar round_half_even(Scalar x) { return std::nearbyint(x); }
}  // namespace internal

// Asymmetric (zero point) or the GPTQ reference's unsigned-symmetric grid, bits ∈ [2, 8].
// quantize(x) = s·(clamp(round(x/s) + z, 0, maxq) − z).
template <class Scalar_, int Bits>
class UniformGrid {
 public:
  using Scalar = Scalar_;
  static constexpr int bits = Bits;
  static constexpr int maxq = (1 << Bits) - 1;
  static_assert(Bits >= 2 && Bits <= 8, "bits must be in [2, 8]");

  explicit UniformGrid(bool symmetric = false) : sym_(symmetric) {
    internal::check_scalar<Scalar>();
  }
  bool symmetric() const { return sym_; }

  // find_params' range handling: include 0, mirror for sym, widen an all-zero row to [-1, 1].
  LOAQ_HOST_DEVICE void adjust_range(Scalar& xmin, Scalar& xmax) const {
    xmin = std::min(xmin, Scalar(0));
    xmax = std::max(xmax, Scalar(0));
    if (sym_) {
      xmax = std::max(std::abs(xmin), xmax);
      if (xmin < 0) xmin = -xmax;
    }
    if (xmin == 0 && xmax == 0) {
      xmin = -1;
      xmax = 1;
    }
  }

  // s = (xmax − xmin)/maxq; z = (maxq+1)/2 for sym, round(−xmin/s) otherwise.
  LOAQ_HOST_DEVICE void params(Scalar xmin, Scalar xmax, Scalar& scale, Scalar& zero) const {
    scale = (xmax - xmin) / Scalar(maxq);
    if (!std::isfinite(scale)) scale = xmax / Scalar(maxq) - xmin / Scalar(maxq);  // range overflowed
    zero = sym_ ? Scalar((maxq + 1) / 2) : internal::round_half_even(-xmin / scale);
  }

  // NaN (an overflowed solve) encodes to 0 rather than an undefined conversion; the solvers
  // detect the overflow themselves.
  LOAQ_HOST_DEVICE std::uint8_t encode(Scalar x, Scalar scale, Scalar zero) const {
    const Scalar q = internal::round_half_even(x / scale) + zero;
    return static_cast<std::uint8_t>(q > 0 ? std::min(q, Scalar(maxq)) : Scalar(0));
  }
  LOAQ_HOST_DEVICE Scalar decode(std::uint8_t code, Scalar scale, Scalar zero) const {
    return scale * (Scalar(code) - zero);
  }

 private:
  bool sym_;
};

// Signed symmetric grid (QuaRot/GPTAQ convention): x̂ = s·q, q ∈ [−qmax, qmax] with
// qmax = 2^(b−1) − 1 (or [−2^(b−1), qmax] with full_range), s = max|x| / qmax.
// Codes are stored offset by z = 2^(b−1) so that x̂ = s·(code − z) as for every uniform grid.
template <class Scalar_, int Bits>
class SignedSymmetricGrid {
 public:
  using Scalar = Scalar_;
  static constexpr int bits = Bits;
  static constexpr int maxq = (1 << Bits) - 1;
  static constexpr int qmax = (1 << (Bits - 1)) - 1;
  static constexpr int offset = 1 << (Bits - 1);
  static_assert(Bits >= 2 && Bits <= 8, "bits must be in [2, 8]");

  explicit SignedSymmetricGrid(bool full_range = false) : full_range_(full_range) {
    internal::check_scalar<Scalar>();
  }

  LOAQ_HOST_DEVICE void adjust_range(Scalar& xmin, Scalar& xmax) const {
    xmax = std::max(std::abs(xmin), std::abs(xmax));
    if (xmax == 0) xmax = 1;
    xmin = -xmax;
  }
  LOAQ_HOST_DEVICE void params(Scalar /*xmin*/, Scalar xmax, Scalar& scale, Scalar& zero) const {
    scale = xmax / Scalar(qmax);
    zero = Scalar(offset);
  }
  LOAQ_HOST_DEVICE std::uint8_t encode(Scalar x, Scalar scale, Scalar /*zero*/) const {
    const Scalar lo = full_range_ ? Scalar(-offset) : Scalar(-qmax);
    const Scalar q = internal::round_half_even(x / scale);
    return static_cast<std::uint8_t>((q > lo ? std::min(q, Scalar(qmax)) : lo) + Scalar(offset));
  }
  LOAQ_HOST_DEVICE Scalar decode(std::uint8_t code, Scalar scale, Scalar /*zero*/) const {
    return scale * (Scalar(code) - Scalar(offset));
  }

 private:
  bool full_range_;
};

}  // namespace loaq
