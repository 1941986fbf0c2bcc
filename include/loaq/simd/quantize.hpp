// Column kernels of the solver loop: quantize and dequantize one column slice with per-row
// parameters, and the MSE shrink search's error of one column. The uniform grid has an xsimd kernel
// for the architecture chosen at compile time (xsimd's default_arch: whatever -m flags the build
// enables); every other grid, and builds with no SIMD architecture or with LOAQ_NO_SIMD defined,
// use the generic scalar kernel. Both give identical codes and values (the same IEEE operations per
// element); only the summation order of the returned loss differs.
#pragma once

#include <cmath>
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
// One batch of uniform codes, clamp(round(x/s) + z, lo, hi), in the reference's order of operations.
template <class Batch>
inline Batch uniform_codes(const Batch& x, const Batch& s, const Batch& z, const Batch& lo,
                           const Batch& hi) {
  const Batch c = xsimd::nearbyint(x / s) + z;
  // As the scalar encode: clamp, and NaN (an overflowed solve) to lo, never an undefined cast.
  return xsimd::select(c > lo, xsimd::min(c, hi), lo);
}

// Uniform grid: code = clamp(round(w/s) + z, 0, maxq), q = s·(code − z), a SIMD batch of rows
// at a time. The loss is summed in double, so no representable magnitude overflows it.
template <class S, int Bits>
double quantize_column(const UniformGrid<S, Bits>& grid, const S* w, const S* scale, const S* zero,
                       std::uint8_t* codes, S* q, Index rows) {
  using batch = xsimd::batch<S>;
  constexpr Index lanes = Index(batch::size);
  const batch lo(S(0)), hi(static_cast<S>(UniformGrid<S, Bits>::maxq));  // not S(...): vexing parse
  using integer = xsimd::as_integer_t<S>;
  double loss = 0;
  // Codes leave the lanes as integers, so the narrowing to bytes below is vectorized too (from
  // S lanes it was one scalar conversion per code, a tenth of a small layer's column loop).
  alignas(64) integer code_buf[lanes];
  alignas(64) S diff_buf[lanes];
  Index r = 0;
  for (; r + lanes <= rows; r += lanes) {
    const batch x = batch::load_unaligned(w + r), s = batch::load_unaligned(scale + r),
                z = batch::load_unaligned(zero + r);
    const batch c = uniform_codes(x, s, z, lo, hi);
    const batch v = s * (c - z);
    v.store_unaligned(q + r);
    xsimd::batch_cast<integer>(c).store_aligned(code_buf);  // c is a whole number in [0, maxq]
    for (Index l = 0; l < lanes; ++l) codes[r + l] = static_cast<std::uint8_t>(code_buf[l]);
    (x - v).store_aligned(diff_buf);
    for (Index l = 0; l < lanes; ++l) loss += double(diff_buf[l]) * double(diff_buf[l]);
  }
  return loss +
         quantize_column_generic(grid, w + r, scale + r, zero + r, codes + r, q + r, rows - r);
}
#endif

// Σ w[r]·e[r]² in double: the column loop's loss of one column slice (e the scaled errors, w the
// rows' loss weights). One running sum would wait on every add's latency (a third of the loop's
// own work on small layers); sixteen independent ones, added up in a fixed order at the end, let
// the compiler vectorize the loop and give the same bits with and without SIMD.
template <class S>
double weighted_square_sum(const S* e, const double* w, Index rows) {
  constexpr Index kLanes = 16;
  double acc[kLanes] = {};
  Index r = 0;
  for (; r + kLanes <= rows; r += kLanes)
    for (Index l = 0; l < kLanes; ++l) acc[l] += double(e[r + l]) * double(e[r + l]) * w[r + l];
  for (; r < rows; ++r) acc[0] += double(e[r]) * double(e[r]) * w[r];
  double sum = 0;
  for (Index l = 0; l < kLanes; ++l) sum += acc[l];
  return sum;
}

// The MSE shrink search's error for one column and one candidate grid:
// err[r] += |quantize(x[r]) − x[r]|^p, the power taken in S (as std::pow(S, S)), summed in double.
template <class Grid, class S = typename Grid::Scalar>
void add_pow_error_generic(const Grid& grid, const S* x, const S* scale, const S* zero, S p,
                           double* err, Index rows) {
  for (Index r = 0; r < rows; ++r) {
    const S q = grid.decode(grid.encode(x[r], scale[r], zero[r]), scale[r], zero[r]);
    err[r] += double(std::pow(std::abs(q - x[r]), p));
  }
}

template <class Grid, class S = typename Grid::Scalar>
void add_pow_error(const Grid& grid, const S* x, const S* scale, const S* zero, S p, double* err,
                   Index rows) {
  add_pow_error_generic(grid, x, scale, zero, p, err, rows);
}

#if LOAQ_HAS_SIMD
// Uniform grid: the residuals in S lanes, the power in double lanes (exp(p·log d) loses about
// |p·log d| ulps, which double absorbs), rounded to S as std::pow(S, S) returns it.
template <class S, int Bits>
void add_pow_error(const UniformGrid<S, Bits>& grid, const S* x, const S* scale, const S* zero, S p,
                   double* err, Index rows) {
  using batch = xsimd::batch<S>;
  using dbatch = xsimd::batch<double>;
  constexpr Index lanes = Index(batch::size), dlanes = Index(dbatch::size);
  const batch lo(S(0)), hi(static_cast<S>(UniformGrid<S, Bits>::maxq));  // not S(...): vexing parse
  const dbatch dp = dbatch(double(p)), dzero = dbatch(0.0);
  alignas(64) S diff[lanes];
  alignas(64) double pw[dlanes];
  Index r = 0;
  for (; r + lanes <= rows; r += lanes) {
    const batch v = batch::load_unaligned(x + r), s = batch::load_unaligned(scale + r),
                z = batch::load_unaligned(zero + r);
    const batch c = uniform_codes(v, s, z, lo, hi);
    xsimd::abs(s * (c - z) - v).store_aligned(diff);
    for (Index h = 0; h < lanes; h += dlanes) {
      const dbatch d = dbatch::load_unaligned(diff + h);  // widens float lanes
      xsimd::select(d == dzero, dzero, xsimd::exp(dp * xsimd::log(d))).store_aligned(pw);
      for (Index l = 0; l < dlanes; ++l) err[r + h + l] += double(S(pw[l]));
    }
  }
  add_pow_error_generic(grid, x + r, scale + r, zero + r, p, err + r, rows - r);
}
#endif

}  // namespace simd
}  // namespace loaq
