// A solve on one of llama.cpp's block grids (grid/ggml.hpp) as the bytes of a GGUF tensor:
// Q4_0 (fp16 d, 16 bytes of nibbles), Q4_1 (fp16 d, fp16 m, 16 bytes), Q8_0 (fp16 d, 32 int8).
// In a Q4 block, byte j holds element j in its low nibble and element j + 16 in its high one.
// Packing checks that the solve really is in the format (blocks are its groups, every parameter
// an fp16 value, every code in range), so what a reader dequantizes is the solver's x̂ exactly.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <Eigen/Core>

#include "../config.hpp"
#include "../grid/ggml.hpp"
#include "../solve/options.hpp"
#include "error.hpp"

namespace loaq {
namespace io {

namespace detail {
inline void put_fp16(std::uint8_t* p, double value) {
  const std::uint16_t bits = Eigen::numext::bit_cast<std::uint16_t>(Eigen::half(float(value)));
  p[0] = std::uint8_t(bits & 0xff);
  p[1] = std::uint8_t(bits >> 8);
}

// What one grid's blocks look like in the file.
template <class Grid>
struct BlockLayout;
template <class S>
struct BlockLayout<GgmlQ4_0Grid<S>> {
  static constexpr std::size_t bytes = 18, header = 2;
  static constexpr int min_code = 0, max_code = 15, fixed_zero = 8;
};
template <class S>
struct BlockLayout<GgmlQ4_1Grid<S>> {
  static constexpr std::size_t bytes = 20, header = 4;
  static constexpr int min_code = 0, max_code = 15, fixed_zero = -1;  // zero is m, stored
};
template <class S>
struct BlockLayout<GgmlQ8_0Grid<S>> {
  static constexpr std::size_t bytes = 34, header = 2;
  static constexpr int min_code = 1, max_code = 255, fixed_zero = 128;
};
}  // namespace detail

// The tensor bytes of `q`, a solve of an m × n weight on `grid` (group size 32). Row r of the
// file is row row_order[r] of q (empty: the same order), e.g. to restore a converter's row
// permutation. Throws format_error naming the first row and block that the format cannot hold.
template <class Grid>
std::vector<std::uint8_t> pack_ggml_blocks(const Grid& /*grid*/,
                                           const QuantizedWeight<typename Grid::Scalar>& q,
                                           const std::vector<Index>& row_order = {}) {
  using Layout = detail::BlockLayout<Grid>;
  constexpr Index B = Grid::block_size;
  const Index m = q.codes.rows(), n = q.codes.cols(), blocks = n / B;
  auto fail = [](const std::string& what) -> void {
    throw format_error("ggml blocks: " + what);
  };
  if (n % B != 0)
    fail("rows of " + std::to_string(n) + " weights are not whole blocks of " + std::to_string(B));
  if (q.scales.rows() != m || q.scales.cols() != blocks || q.zeros.rows() != m ||
      q.zeros.cols() != blocks || q.g_idx.size() != n)
    fail("the solve has " + std::to_string(q.scales.cols()) + " groups per row, the format " +
         std::to_string(blocks) + " blocks: solve with group size " + std::to_string(B));
  for (Index j = 0; j < n; ++j)
    if (q.g_idx[j] != j / B)
      fail("column " + std::to_string(j) + " is in group " + std::to_string(q.g_idx[j]) +
           ", not block " + std::to_string(j / B) + ": with act-order, solve with static groups");
  if (!row_order.empty() && Index(row_order.size()) != m) fail("row order has the wrong length");

  std::vector<std::uint8_t> out(std::size_t(m * blocks) * Layout::bytes);
  std::uint8_t* p = out.data();
  for (Index fr = 0; fr < m; ++fr) {
    const Index r = row_order.empty() ? fr : row_order[std::size_t(fr)];
    if (r < 0 || r >= m) fail("row order names row " + std::to_string(r));
    for (Index b = 0; b < blocks; ++b, p += Layout::bytes) {
      auto where = [&] { return "row " + std::to_string(r) + ", block " + std::to_string(b); };
      const double d = double(q.scales(r, b)), z = double(q.zeros(r, b));
      if (!internal::is_fp16_value(d)) fail(where() + ": scale " + std::to_string(d) + " is not an fp16 value");
      detail::put_fp16(p, d);
      if (Layout::fixed_zero >= 0) {
        if (z != Layout::fixed_zero) fail(where() + ": zero " + std::to_string(z) + " is not the format's");
      } else {
        if (!internal::is_fp16_value(z)) fail(where() + ": minimum " + std::to_string(z) + " is not an fp16 value");
        detail::put_fp16(p + 2, z);
      }
      std::uint8_t* data = p + Layout::header;
      for (Index j = 0; j < B; ++j) {
        const int c = q.codes(r, b * B + j);
        if (c < Layout::min_code || c > Layout::max_code)
          fail(where() + ": code " + std::to_string(c) + " is outside the format's range");
        if (Grid::bits == 8)
          data[j] = std::uint8_t(c - 128);  // two's complement int8
        else if (j < B / 2)
          data[j] = std::uint8_t(c);
        else
          data[j - B / 2] = std::uint8_t(data[j - B / 2] | (c << 4));
      }
    }
  }
  return out;
}

}  // namespace io
}  // namespace loaq
