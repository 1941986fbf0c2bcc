// Layout copies and the fast finiteness check behind every large input and output.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "../support.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

using loaq::Index;

TEST_CASE_TEMPLATE("row-major to column-major copy matches the element-by-element copy", To,
                   float, double) {
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-1, 1);
  // Shapes inside one tile, on tile and block edges, ragged in either direction and across
  // the blocks; a row stride wider than the row, a destination stride taller than the column.
  // The last four are large enough for the threaded path: several column blocks of 128 and
  // row blocks of 256, or (as the safetensors writer's few rows of a wide matrix) one column
  // block over many row blocks.
  const Index shapes[][2] = {{1, 1}, {1, 9}, {9, 1}, {8, 8}, {7, 13}, {16, 24}, {64, 3},
                             {300, 268}, {257, 511}, {129, 1030}, {4100, 29}};
  for (const auto& s : shapes) {
    const Index rows = s[0], cols = s[1], src_stride = cols + 5, dst_stride = rows + 3;
    CAPTURE(rows);
    CAPTURE(cols);
    std::vector<float> src(std::size_t(rows * src_stride));
    for (float& x : src) x = u(rng);
    const To sentinel = To(1234.5);
    std::vector<To> dst(std::size_t(cols * dst_stride), sentinel);
    loaq::copy_row_major_to_column_major(src.data(), rows, cols, src_stride, dst.data(),
                                         dst_stride);
    bool exact = true, padding_untouched = true;
    for (Index j = 0; j < cols; ++j)
      for (Index i = 0; i < dst_stride; ++i) {
        const To got = dst[std::size_t(j * dst_stride + i)];
        if (i < rows) exact &= got == To(src[std::size_t(i * src_stride + j)]);
        else padding_untouched &= got == sentinel;
      }
    CHECK(exact);
    CHECK(padding_untouched);
  }
}

TEST_CASE("a column-major matrix copied as its transpose gives row-major bytes") {
  loaq::CodeMatrix codes(37, 270);
  for (Index j = 0; j < codes.cols(); ++j)
    for (Index i = 0; i < codes.rows(); ++i) codes(i, j) = std::uint8_t((3 * i + 7 * j) % 256);
  std::vector<std::uint8_t> row_major(std::size_t(codes.size()));
  loaq::copy_row_major_to_column_major(codes.data(), codes.cols(), codes.rows(), codes.rows(),
                                       row_major.data(), codes.cols());
  bool exact = true;
  for (Index i = 0; i < codes.rows(); ++i)
    for (Index j = 0; j < codes.cols(); ++j)
      exact &= row_major[std::size_t(i * codes.cols() + j)] == codes(i, j);
  CHECK(exact);
}

TEST_CASE_TEMPLATE("all_finite agrees with allFinite on every kind of entry", Scalar, float,
                   double) {
  using Lim = std::numeric_limits<Scalar>;
  loaq::Matrix<Scalar> M = loaq::Matrix<Scalar>::Ones(33, 17);
  CHECK(loaq::internal::all_finite(M));
  CHECK(loaq::internal::all_finite(loaq::Matrix<Scalar>(0, 5)));
  M(3, 4) = -Scalar(0);
  M(5, 6) = Lim::max();  // finite extremes: x·0 stays 0
  M(7, 8) = Lim::lowest();
  M(9, 10) = Lim::denorm_min();
  CHECK(loaq::internal::all_finite(M));
  for (Scalar bad : {Lim::quiet_NaN(), Lim::infinity(), -Lim::infinity()})
    for (Index k : {Index(0), Index(200), M.size() - 1}) {
      loaq::Matrix<Scalar> B = M;
      B(k % B.rows(), k / B.rows()) = bad;
      CHECK(!loaq::internal::all_finite(B));
      CHECK(!loaq::internal::all_finite(B.block(0, 0, B.rows(), B.cols())));
      CHECK(B.allFinite() == loaq::internal::all_finite(B));
    }
  // Large enough to be split over the threads (by columns, or by rows when row-major): one bad
  // entry anywhere is found on any number of threads.
  loaq::Matrix<Scalar> L = loaq::Matrix<Scalar>::Ones(1100, 1000);
  L(17, 3) = Lim::max();
  using RowMajor = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  for (int threads : {1, 2, 3}) {
    CAPTURE(threads);
#ifdef _OPENMP
    const int before = omp_get_max_threads();
    omp_set_num_threads(threads);
#endif
    CHECK(loaq::internal::all_finite(L));
    CHECK(loaq::internal::all_finite(RowMajor(L)));
    for (Index k : {Index(0), L.size() / 2 + 7, L.size() - 1}) {
      loaq::Matrix<Scalar> B = L;
      B(k % B.rows(), k / B.rows()) = Lim::quiet_NaN();
      CHECK(!loaq::internal::all_finite(B));
      CHECK(!loaq::internal::all_finite(RowMajor(B)));
      CHECK(!loaq::internal::all_finite(B.block(1, 1, B.rows() - 1, B.cols() - 1)) ==
            (k % B.rows() != 0 && k / B.rows() != 0));
    }
#ifdef _OPENMP
    omp_set_num_threads(before);
#endif
  }
}
