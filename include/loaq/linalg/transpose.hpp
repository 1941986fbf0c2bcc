// Row-major ↔ column-major copies at memory speed. Files and NumPy hold matrices row by row and
// the solvers work column by column, so every large input and output crosses layouts once; an
// element-by-element transposing copy of a 4096 × 4096 matrix misses the cache on every write
// and costs more than reading the file.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "../config.hpp"

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace loaq {

// dst(i, j) = To(src(i, j)) for a rows × cols matrix that src holds row by row (element (i, j) at
// src[i·src_stride + j]) and dst column by column (at dst[j·dst_stride + i]). 8 × 8 register
// tiles, which Eigen transposes (and converts) in registers, walked in blocks of 256 rows × 128
// columns that stay in L2; a large matrix's blocks are spread over the OpenMP threads, column
// block by column block (a copy: the same bytes on any number of threads). The same call turns
// a column-major matrix into row-major bytes: a column-major m × n matrix read row by row is its
// n × m transpose (a few of its rows at a time, as the safetensors writer does, make a matrix of
// one column block and many row blocks).
template <class From, class To>
void copy_row_major_to_column_major(const From* src, Index rows, Index cols, Index src_stride,
                                    To* dst, Index dst_stride) {
  constexpr Index kTile = 8, kRowBlock = 256, kColBlock = 128;
  constexpr Index kThreadedEntries = Index(1) << 16;  // below this a parallel region costs more
  using SrcTile = Eigen::Matrix<From, kTile, kTile, Eigen::RowMajor>;
  using DstTile = Eigen::Matrix<To, kTile, kTile>;
  using Stride = Eigen::OuterStride<>;
  const Index rows_tiled = rows / kTile * kTile, cols_tiled = cols / kTile * kTile;
  const Index col_blocks = (cols_tiled + kColBlock - 1) / kColBlock;
  const Index row_blocks = (rows_tiled + kRowBlock - 1) / kRowBlock;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (rows * cols >= kThreadedEntries)
#endif
  for (Index b = 0; b < col_blocks * row_blocks; ++b) {  // column-block major: b / row_blocks
    const Index J = b / row_blocks * kColBlock, J_end = std::min(cols_tiled, J + kColBlock);
    const Index I = b % row_blocks * kRowBlock, I_end = std::min(rows_tiled, I + kRowBlock);
    for (Index j = J; j < J_end; j += kTile)
      for (Index i = I; i < I_end; i += kTile)
        Eigen::Map<DstTile, 0, Stride>(dst + j * dst_stride + i, Stride(dst_stride)) =
            Eigen::Map<const SrcTile, 0, Stride>(src + i * src_stride + j, Stride(src_stride))
                .template cast<To>();
  }
  // The ragged right and bottom edges, element by element.
  for (Index j = 0; j < cols; ++j)
    for (Index i = j < cols_tiled ? rows_tiled : 0; i < rows; ++i)
      dst[j * dst_stride + i] = To(src[i * src_stride + j]);
}

// Asks for transparent huge pages on a fresh, untouched allocation, so filling it costs a few
// hundred page faults instead of one per 4 KiB (a visible part of a large copy). A hint only.
inline void advise_huge_pages(void* data, std::size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr std::uintptr_t huge = std::uintptr_t(2) << 20;
  const std::uintptr_t begin = (reinterpret_cast<std::uintptr_t>(data) + huge - 1) / huge * huge;
  const std::uintptr_t end = (reinterpret_cast<std::uintptr_t>(data) + bytes) / huge * huge;
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)data, (void)bytes;
#endif
}

}  // namespace loaq
