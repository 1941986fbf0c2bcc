// Kernels of the per-token activation quantizer (grid/activation.hpp) on one contiguous slice of a
// token (a column, or one channel group of it): its range, and its fake quantization or codes with
// one (scale, zero) pair. ActivationGeneric is plain C++; ActivationSimd overrides it with xsimd
// kernels for the architecture chosen at compile time, and is ActivationGeneric itself when
// LOAQ_HAS_SIMD is 0 (no SIMD architecture, or LOAQ_NO_SIMD). Both give identical ranges, codes
// and values: the same IEEE operations per element, and min/max are exact in any order.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>

#include "../config.hpp"
#include "../grid/uniform.hpp"
#include "quantize.hpp"  // LOAQ_HAS_SIMD, uniform_codes

namespace loaq {
namespace simd {

struct ActivationGeneric {
  // lo = min x, hi = max x over x[0..n), n ≥ 1; false when an entry is NaN or ±Inf.
  template <class S>
  static bool range(const S* x, Index n, S& lo, S& hi) {
    S l = x[0], h = x[0];
    bool nan = false;
    for (Index i = 0; i < n; ++i) {
      nan |= x[i] != x[i];
      l = std::min(l, x[i]);
      h = std::max(h, x[i]);
    }
    lo = l;
    hi = h;
    return !nan && l != -std::numeric_limits<S>::infinity() &&
           h != std::numeric_limits<S>::infinity();
  }

  // code = clamp(round(x/s) + z, 0, hi): UniformGrid::encode with a run-time hi.
  template <class S>
  static S code(S x, S s, S z, S hi) {
    const S c = internal::round_half_even(x / s) + z;
    return c > 0 ? std::min(c, hi) : S(0);
  }

  // x[i] ← s·(code(x[i]) − z), in place.
  template <class S>
  static void fake_quantize(S* x, Index n, S s, S z, S hi) {
    for (Index i = 0; i < n; ++i) x[i] = s * (code(x[i], s, z, hi) - z);
  }

  // codes[i] = code(x[i]).
  template <class S>
  static void encode(const S* x, Index n, S s, S z, S hi, std::uint8_t* codes) {
    for (Index i = 0; i < n; ++i) codes[i] = static_cast<std::uint8_t>(code(x[i], s, z, hi));
  }
};

#if LOAQ_HAS_SIMD
struct ActivationSimd : ActivationGeneric {
  template <class S>
  static bool range(const S* x, Index n, S& lo, S& hi) {
    using batch = xsimd::batch<S>;
    constexpr Index lanes = Index(batch::size);
    if (n < 2 * lanes) return ActivationGeneric::range(x, n, lo, hi);
    // Two accumulator sets hide the latency of min/max.
    batch l0 = batch::load_unaligned(x), h0 = l0, l1 = batch::load_unaligned(x + lanes), h1 = l1;
    // isnan, not a != a: x86's ordered not-equal (AVX-512's _CMP_NEQ_OQ) is false for NaN.
    xsimd::batch_bool<S> nan = xsimd::isnan(l0) | xsimd::isnan(l1);
    Index i = 2 * lanes;
    for (; i + 2 * lanes <= n; i += 2 * lanes) {
      const batch a = batch::load_unaligned(x + i), b = batch::load_unaligned(x + i + lanes);
      nan = nan | xsimd::isnan(a) | xsimd::isnan(b);
      l0 = xsimd::min(l0, a);
      h0 = xsimd::max(h0, a);
      l1 = xsimd::min(l1, b);
      h1 = xsimd::max(h1, b);
    }
    alignas(64) S lb[lanes], hb[lanes];
    xsimd::min(l0, l1).store_aligned(lb);
    xsimd::max(h0, h1).store_aligned(hb);
    S l = lb[0], h = hb[0];
    for (Index k = 1; k < lanes; ++k) {
      l = std::min(l, lb[k]);
      h = std::max(h, hb[k]);
    }
    bool ok = !xsimd::any(nan);
    if (i < n) {
      S tl, th;
      ok &= ActivationGeneric::range(x + i, n - i, tl, th);
      l = std::min(l, tl);
      h = std::max(h, th);
    }
    lo = l;
    hi = h;
    return ok && l != -std::numeric_limits<S>::infinity() &&
           h != std::numeric_limits<S>::infinity();
  }

  template <class S>
  static void fake_quantize(S* x, Index n, S s, S z, S hi) {
    using batch = xsimd::batch<S>;
    constexpr Index lanes = Index(batch::size);
    const batch bs(s), bz(z), blo(S(0)), bhi(hi);
    Index i = 0;
    for (; i + lanes <= n; i += lanes) {
      const batch c = uniform_codes(batch::load_unaligned(x + i), bs, bz, blo, bhi);
      (bs * (c - bz)).store_unaligned(x + i);
    }
    ActivationGeneric::fake_quantize(x + i, n - i, s, z, hi);
  }

  template <class S>
  static void encode(const S* x, Index n, S s, S z, S hi, std::uint8_t* codes) {
    using batch = xsimd::batch<S>;
    constexpr Index lanes = Index(batch::size);
    const batch bs(s), bz(z), blo(S(0)), bhi(hi);
    alignas(64) S buf[lanes];
    Index i = 0;
    for (; i + lanes <= n; i += lanes) {
      uniform_codes(batch::load_unaligned(x + i), bs, bz, blo, bhi).store_aligned(buf);
      for (Index k = 0; k < lanes; ++k) codes[i + k] = static_cast<std::uint8_t>(buf[k]);
    }
    ActivationGeneric::encode(x + i, n - i, s, z, hi, codes + i);
  }
};
#else
using ActivationSimd = ActivationGeneric;
#endif

}  // namespace simd
}  // namespace loaq
