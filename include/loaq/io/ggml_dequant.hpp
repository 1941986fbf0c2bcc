// Dequantization of llama.cpp's block formats to float, block by block, as ggml's
// dequantize_row_* functions do (the GGUF reader's read side; ggml_blocks.hpp is the write side).
//
// Blocks of 32 (a = element j of the low half, b = element j + 16, j < 16):
//   Q4_0  f16 d,           16 B nibbles (a low, b high)           x = d·(q − 8)
//   Q4_1  f16 d, f16 m,    16 B nibbles                           x = d·q + m
//   Q5_0  f16 d, u32 qh,   16 B nibbles; bit k of qh is bit 4 of element k   x = d·(q − 16)
//   Q5_1  f16 d, f16 m, u32 qh, 16 B nibbles                      x = d·q + m
//   Q8_0  f16 d,           32 int8                                x = d·q
// Super-blocks of 256 (K-quants), in sub-blocks with their own scales:
//   Q4_K  f16 d, f16 dmin, 12 B of 6-bit (scale, min) pairs for 8 sub-blocks of 32,
//         128 B nibbles: each 32 bytes hold sub-block 2i (low) and 2i + 1 (high)
//                                                                 x = d·sc·q − dmin·mn
//   Q5_K  as Q4_K plus 32 B qh before the nibbles: bit i of qh[l] is bit 4 of sub-block i's
//         element l
//   Q6_K  128 B low nibbles, 64 B high 2-bit pairs, 16 int8 scales (one per 16 elements), f16 d
//                                                                 x = d·sc·(q − 32)
// Products are formed in float in ggml's order (d·sc first), so results equal the `gguf` PyPI
// package's dequantization up to fused multiply-add rounding where the compiler contracts.
#pragma once

#include <cstddef>
#include <cstdint>

#include <Eigen/Core>

namespace loaq {
namespace io {

// ggml tensor type ids (ggml.h's enum ggml_type) of the types loaq reads or writes.
namespace ggml_type {
constexpr std::uint32_t F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8,
                        Q4_K = 12, Q5_K = 13, Q6_K = 14, I8 = 24, I16 = 25, I32 = 26, I64 = 27,
                        F64 = 28, BF16 = 30;
}

namespace ggml {

inline float half_at(const std::uint8_t* p) {
  return float(Eigen::numext::bit_cast<Eigen::half>(std::uint16_t(p[0] | (p[1] << 8))));
}
inline std::uint32_t u32_at(const std::uint8_t* p) {
  return std::uint32_t(p[0]) | std::uint32_t(p[1]) << 8 | std::uint32_t(p[2]) << 16 |
         std::uint32_t(p[3]) << 24;
}

// 32-element blocks with 4-bit codes and an optional fifth bit from qh. With a stored minimum m
// x = d·q + m; without one (m null) x = d·(q − offset), whose zero keeps the sign of d as ggml's.
inline void dequantize_nibble_block(const std::uint8_t* nibbles, std::uint32_t qh, float d,
                                    const float* m, int offset, float* out) {
  for (int j = 0; j < 16; ++j) {
    const int a = (nibbles[j] & 0x0f) | int((qh >> j) & 1) << 4;
    const int b = (nibbles[j] >> 4) | int((qh >> (j + 16)) & 1) << 4;
    out[j] = m ? float(a) * d + *m : float(a - offset) * d;
    out[j + 16] = m ? float(b) * d + *m : float(b - offset) * d;
  }
}

// Q4_K/Q5_K: scale and minimum of sub-block i (0..7), 6 bits each, packed in 12 bytes.
inline void k_scale_min(const std::uint8_t* s, int i, int& scale, int& min) {
  if (i < 4) {
    scale = s[i] & 63;
    min = s[i + 4] & 63;
  } else {
    scale = (s[i + 4] & 0x0f) | ((s[i - 4] >> 6) << 4);
    min = (s[i + 4] >> 4) | ((s[i] >> 6) << 4);
  }
}

// Q4_K and Q5_K (fifth_bit) super-blocks of 256.
inline void dequantize_k4_k5_block(const std::uint8_t* block, bool fifth_bit, float* out) {
  const float d = half_at(block), dmin = half_at(block + 2);
  const std::uint8_t* scales = block + 4;
  const std::uint8_t* qh = fifth_bit ? block + 16 : nullptr;
  const std::uint8_t* qs = block + (fifth_bit ? 48 : 16);
  for (int i = 0; i < 8; ++i, out += 32) {
    int sc, mn;
    k_scale_min(scales, i, sc, mn);
    const float dl = d * float(sc), ml = dmin * float(mn);
    const std::uint8_t* q = qs + 32 * (i / 2);
    const int shift = 4 * (i % 2);
    for (int l = 0; l < 32; ++l) {
      const int high = qh ? ((qh[l] >> i) & 1) << 4 : 0;
      out[l] = dl * float(((q[l] >> shift) & 0x0f) | high) - ml;
    }
  }
}

inline void dequantize_q6_k_block(const std::uint8_t* block, float* out) {
  const std::uint8_t* ql = block;
  const std::uint8_t* qh = block + 128;
  const auto* scales = reinterpret_cast<const std::int8_t*>(block + 192);
  const float d = half_at(block + 208);
  // Element e of each half of 128: low nibble from ql[e % 64] (low for e < 64, high after), high
  // two bits from qh[e % 32] at shift 2·(e / 32); one scale per 16 elements.
  for (int half = 0; half < 2; ++half, ql += 64, qh += 32, out += 128)
    for (int e = 0; e < 128; ++e) {
      const int low = (ql[e % 64] >> (4 * (e / 64))) & 0x0f;
      const int high = (qh[e % 32] >> (2 * (e / 32))) & 3;
      const float dl = d * float(scales[8 * half + e / 16]);
      out[e] = dl * float((low | high << 4) - 32);
    }
}

// Dequantizes `blocks` consecutive blocks of ggml type `type` (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
// Q4_K, Q5_K or Q6_K). Returns false for any other type.
inline bool dequantize_blocks(std::uint32_t type, const std::uint8_t* p, std::size_t blocks,
                              float* out) {
  using namespace ggml_type;
  switch (type) {
    case Q4_0:
      for (std::size_t b = 0; b < blocks; ++b, p += 18, out += 32)
        dequantize_nibble_block(p + 2, 0, half_at(p), nullptr, 8, out);
      return true;
    case Q4_1:
      for (std::size_t b = 0; b < blocks; ++b, p += 20, out += 32) {
        const float m = half_at(p + 2);
        dequantize_nibble_block(p + 4, 0, half_at(p), &m, 0, out);
      }
      return true;
    case Q5_0:
      for (std::size_t b = 0; b < blocks; ++b, p += 22, out += 32)
        dequantize_nibble_block(p + 6, u32_at(p + 2), half_at(p), nullptr, 16, out);
      return true;
    case Q5_1:
      for (std::size_t b = 0; b < blocks; ++b, p += 24, out += 32) {
        const float m = half_at(p + 2);
        dequantize_nibble_block(p + 8, u32_at(p + 4), half_at(p), &m, 0, out);
      }
      return true;
    case Q8_0:
      for (std::size_t b = 0; b < blocks; ++b, p += 34, out += 32) {
        const float d = half_at(p);
        for (int j = 0; j < 32; ++j) out[j] = float(std::int8_t(p[2 + j])) * d;
      }
      return true;
    case Q4_K:
    case Q5_K: {
      const std::size_t bytes = type == Q4_K ? 144 : 176;
      for (std::size_t b = 0; b < blocks; ++b, p += bytes, out += 256)
        dequantize_k4_k5_block(p, type == Q5_K, out);
      return true;
    }
    case Q6_K:
      for (std::size_t b = 0; b < blocks; ++b, p += 210, out += 256) dequantize_q6_k_block(p, out);
      return true;
    default:
      return false;
  }
}

}  // namespace ggml
}  // namespace io
}  // namespace loaq
