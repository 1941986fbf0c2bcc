// Column kernels of the solver loop: quantize and dequantize one column slice with per-row
// parameters. The uniform grid has an xsimd kernel for the architecture chosen at compile time
// (xsimd's default_arch: whatever -m flags the build enables); every other grid, and builds with
// no SIMD architecture or with LOAQ_NO_SIMD defined, use the generic scalar kernel.
// Both give identical codes and values (the same IEEE operations per element); only the
// summation order of the returned loss differs.
#pragma once

#include <cstdint>

#include "../config.hpp"
#include "../grid/uniform.hpp"

#ifndef LOAQ_NO_SIMD
#include <xsimd/xsimd.hpp>
#ifndef XSIMD_NO_SUPPORTED_ARCHITECTURE
#define LOAQ_HAS_SIMD 1
#endif
#endif
#ifndef LOAQ_HAS_SIMD
#define LOAQ_HAS_SIMD 0
#endif

namespace loaq {
namespace simd {

// codes[r] = encode(w[r]), q[r] = decode(codes[r]) for r < rows; returns Σ (w − q)².
template <class Grid, class S = typename Grid::Scalar>
double quantize_column_generic(const Grid& grid, const S* w, const S* scale, const S* zero,
                               std::uint8_t* codes, S* q, Index rows) {
  double loss = 0;
  for (Index r = 0; r < rows; ++r) {
    const std::uint8_t c = grid.encode(w[r], scale[r], zero[r]);
    codes[r] = c;
    q[r] = grid.decode(c, scale[r], zero[r]);
    const double diff = double(w[r] - q[r]);
    loss += diff * diff;
  }
  return loss;
}

template <class Grid, class S = typename Grid::Scalar>
double quantize_column(const Grid& grid, const S* w, const S* scale, const S* zero,
                       std::uint8_t* codes, S* q, Index rows) {
  return quantize_column_generic(grid, w, scale, zero, codes, q, rows);
}

#if LOAQ_HAS_SIMD
// Uniform grid: code = clamp(round(w/s) + z, 0, maxq), q = s·(code − z), a SIMD batch of rows
// at a time. The loss is summed per lane in S (a column slice is a few hundred rows; the loss
// is a diagnostic), then reduced in double.
template <class S, int Bits>
double quantize_column(const UniformGrid<S, Bits>& grid, const S* w, const S* scale,
                       const S* zero, std::uint8_t* codes, S* q, Index rows) {
  using batch = xsimd::batch<S>;
  constexpr Index lanes = Index(batch::size);
  const batch lo(S(0)), hi(S(UniformGrid<S, Bits>::maxq));
  batch acc(S(0));
  alignas(64) S code_buf[lanes];
  Index r = 0;
  for (; r + lanes <= rows; r += lanes) {
    const batch x = batch::load_unaligned(w + r), s = batch::load_unaligned(scale + r),
                z = batch::load_unaligned(zero + r);
    const batch c = xsimd::min(xsimd::max(xsimd::nearbyint(x / s) + z, lo), hi);
    const batch v = s * (c - z);
    v.store_unaligned(q + r);
    c.store_aligned(code_buf);
    for (Index l = 0; l < lanes; ++l) codes[r + l] = static_cast<std::uint8_t>(code_buf[l]);
    const batch diff = x - v;
    acc += diff * diff;
  }
  alignas(64) S acc_buf[lanes];
  acc.store_aligned(acc_buf);
  double loss = 0;
  for (Index l = 0; l < lanes; ++l) loss += double(acc_buf[l]);
  return loss + quantize_column_generic(grid, w + r, scale + r, zero + r, codes + r, q + r,
                                        rows - r);
}
#endif

}  // namespace simd
}  // namespace loaq
