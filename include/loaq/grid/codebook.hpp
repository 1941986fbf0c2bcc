// Non-uniform codebook grids with a per-group scale: x̂ = s·level[code], nearest-level rounding.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "../config.hpp"
#include "../status.hpp"

namespace loaq {

// Bits bounds the table size (≤ 2^Bits levels); the table is sorted on construction.
// Construction never throws (the library's numerical rule): a bad table leaves status() failed,
// and every solver given this grid returns that Report.
template <class Scalar_, int Bits>
class CodebookGrid {
 public:
  using Scalar = Scalar_;
  static constexpr int bits = Bits;
  static_assert(Bits >= 2 && Bits <= 8, "bits must be in [2, 8]");

  explicit CodebookGrid(std::vector<double> levels) {
    internal::check_scalar<Scalar>();
    if (levels.empty() || levels.size() > (std::size_t(1) << Bits)) {
      reject(Status::InvalidArgument, "codebook needs 1 .. 2^" + std::to_string(Bits) +
                                          " levels, got " + std::to_string(levels.size()));
      return;
    }
    for (double v : levels)
      if (!std::isfinite(v) || std::abs(v) > double(std::numeric_limits<Scalar>::max())) {
        reject(Status::NonFiniteInput, "codebook level is not a finite value");
        return;
      }
    std::sort(levels.begin(), levels.end());
    levels.erase(std::unique(levels.begin(), levels.end()), levels.end());
    for (double v : levels) levels_.push_back(Scalar(v));
    absmax_ = std::max(std::abs(levels_.front()), std::abs(levels_.back()));
    if (absmax_ == 0) {
      status_.status = Status::InvalidArgument;
      status_.message = "codebook levels are all zero";
      absmax_ = 1;
    }
  }

  // Success, or what is wrong with the table.
  const Report& status() const { return status_; }
  const std::vector<Scalar>& levels() const { return levels_; }

  void adjust_range(Scalar& xmin, Scalar& xmax) const {
    xmax = std::max(std::abs(xmin), std::abs(xmax));
    if (xmax == 0) xmax = 1;
    xmin = -xmax;
  }
  // s = max|x| / max|level|; zero is unused (kept 0).
  void params(Scalar /*xmin*/, Scalar xmax, Scalar& scale, Scalar& zero) const {
    scale = xmax / absmax_;
    zero = 0;
  }
  std::uint8_t encode(Scalar x, Scalar scale, Scalar /*zero*/) const {
    const Scalar v = x / scale;
    auto it = std::lower_bound(levels_.begin(), levels_.end(), v);
    if (it == levels_.end()) return static_cast<std::uint8_t>(levels_.size() - 1);
    if (it == levels_.begin()) return 0;
    auto below = it - 1;  // ties go to the lower level
    return static_cast<std::uint8_t>((v - *below <= *it - v ? below : it) - levels_.begin());
  }
  Scalar decode(std::uint8_t code, Scalar scale, Scalar /*zero*/) const {
    return scale * levels_[code];
  }

 private:
  std::vector<Scalar> levels_;
  Scalar absmax_ = 1;
  // A table that cannot be a grid: the reason, and the levels {−1, 1} so that nothing divides by
  // zero. (Members set one by one: nvcc warns on discarding Report's operator= result.)
  void reject(Status s, std::string why) {
    status_.status = s;
    status_.message = std::move(why);
    levels_ = {Scalar(-1), Scalar(1)};
  }

  Report status_;
};

// NF4 (QLoRA): quantiles of N(0,1) normalised to [-1, 1].
template <class Scalar>
CodebookGrid<Scalar, 4> nf4_grid() {
  return CodebookGrid<Scalar, 4>(
      {-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
       -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
       0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
       0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0});
}

// FP4 E2M1: {0, .5, 1, 1.5, 2, 3, 4, 6}·±1 (15 distinct values).
template <class Scalar>
CodebookGrid<Scalar, 4> e2m1_grid() {
  return CodebookGrid<Scalar, 4>({-6, -4, -3, -2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2, 3, 4, 6});
}

}  // namespace loaq
