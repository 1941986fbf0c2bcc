// Options, results and diagnostics shared by every column solver (GPTQ, GPTAQ, LoaQ targets).
#pragma once

#include <vector>

#include "../config.hpp"
#include "../grid/params.hpp"
#include "../linalg/inverse_factor.hpp"

namespace loaq {

// Run-time options; defaults are the GPTQ reference's (blocksize 128, percdamp 0.01).
struct GptqOptions {
  int block_size = 128;       // lazy-batch width B
  int group_size = -1;        // columns per group; −1: one group per row
  bool act_order = false;     // walk columns by descending diag(H)
  bool static_groups = false; // group parameters from the unpermuted W, before any update
  ParamSearch search;         // min-max or MSE parameter search
  DampingPolicy damping;      // percdamp and the retry policy
  FactorPrecision factor = FactorPrecision::Solver;  // float solves factor in float (double fallback)
};

// A quantized weight: x̂ = decode(codes) with the group of column j given by g_idx[j].
// After a failed solve every member is empty (0 × 0, loss 0): nothing of an earlier call remains.
template <class Scalar>
struct QuantizedWeight {
  Matrix<Scalar> weight;          // dequantized, m × n
  CodeMatrix codes;               // m × n
  Matrix<Scalar> scales, zeros;   // m × groups
  Eigen::VectorXi g_idx;          // n: group of each column
  double loss = 0;                // reference loss Σ (w − q)² / d² / 2
};

// Optional diagnostics: only filled when a pointer is passed.
struct SolveDiagnostics {
  double damping = 0;             // absolute λ added to diag(H)
  double relative_damping = 0;    // percdamp that succeeded (≥ the requested one)
  int factor_attempts = 0;
  Index failed_pivot = -1;        // first failing Cholesky pivot, −1 if none failed
  bool double_fallback = false;   // the float factor failed or was inaccurate: factored in double
  std::vector<Index> perm;        // column order walked (identity without act-order)
  std::vector<Index> dead;        // columns whose H_ii was 0
  Eigen::VectorXd column_loss;    // per original column
};

}  // namespace loaq
