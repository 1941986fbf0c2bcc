// Peak memory of one gptq() call as a formula (bench/README.md, "Memory"), checked by the
// benchmark against the measured peak RSS.
#pragma once

#include <Eigen/Core>

namespace bench {

// Bytes at the peak of gptq(W, H) for W m × n and H n × n given in a scalar of `s` bytes,
// group size g (−1: per row), block size B. The factor is built in the solver scalar.
//   inputs   s·(mn + n²)                         the caller's W and H
//   prepare  8·n² + s·n² + 8192·n                double copy of H + the factor being built, and
//                                                the packing buffers of its large products
//   solve    s·n²                                the factor
//            + (2s + 1)·mn                       working W, result weight, codes
//            + 2s·mB + 2s·m·⌈n/g⌉                lazy block W1 and E1, scales and zeros
// peak = inputs + max(prepare, solve)
inline double gptq_peak_bytes(Eigen::Index m, Eigen::Index n, Eigen::Index g, std::size_t s,
                              Eigen::Index B = 128) {
  const double M = double(m), N = double(n), S = double(s);
  const double groups = g > 0 ? double((n + g - 1) / g) : 1.0;
  const double inputs = S * (M * N + N * N);
  const double prepare = 8.0 * N * N + S * N * N + 8192.0 * N;
  const double solve = S * N * N + (2.0 * S + 1.0) * M * N + 2.0 * S * M * double(B) +
                       2.0 * S * M * groups;
  return inputs + (prepare > solve ? prepare : solve);
}

}  // namespace bench
