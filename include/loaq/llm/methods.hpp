// The library's methods as policies for quantize_sequential (sequential.hpp describes the
// interface): GPTQ, GPTAQ, and ObjectiveMethod, which gives input and output linears one of the
// sub-block objectives of subblock/objective.hpp each (QEP and LoaQ are two choices of it).
#pragma once

#include <type_traits>

#include "../loaq.hpp"
#include "sequential.hpp"

namespace loaq {
namespace llm {

// Empty statistics for a group: an accumulator of its input width.
inline CalibrationAccumulator<double> input_stats(const GroupInfo& g) {
  CalibrationAccumulator<double> s(g.inputs());
  s.set_float_products(g.float_products);
  s.set_task_runner(g.tasks);
  return s;
}

// GPTQ on Ĥ = Σ x̂ x̂ᵀ, every linear.
struct Gptq {
  CalibrationAccumulator<double> stats(const GroupInfo& g) const { return input_stats(g); }
  Report add(CalibrationAccumulator<double>& s, const Batch& b) const { return s.add_batch(b.x_hat); }
  template <class Grid>
  Report solve(const CalibrationAccumulator<double>& s, const Eigen::MatrixXf& W, const Grid& grid,
               const GptqOptions& opt, QuantizedWeight<float>& out) const {
    return gptq(W, s.hessian(), grid, opt, out);
  }
};

// GPTAQ: GPTQ plus the asymmetric correction α·ΔX X̂ᵀ (Ĥ and C = Σ (x − x̂) x̂ᵀ), every linear.
struct Gptaq {
  double alpha = 0.25;  // the reference's default
  CalibrationAccumulator<double> stats(const GroupInfo& g) const { return input_stats(g); }
  Report add(CalibrationAccumulator<double>& s, const Batch& b) const { return s.add_batch(b.x_hat, b.x); }
  template <class Grid>
  Report solve(const CalibrationAccumulator<double>& s, const Eigen::MatrixXf& W, const Grid& grid,
               const GptqOptions& opt, QuantizedWeight<float>& out) const {
    return gptaq(W, s.hessian(), s.cross(), grid, opt, alpha, out);
  }
};

// Empty statistics of an objective for one group. The normalized objective's ε is the model's
// RMSNorm ε (the group's norm_eps), whatever the objective value says; its statistics are
// target-only (ObjectiveStats<NormalizedOutput>::set_target_only), since the pipeline only solves.
inline ObjectiveStats<LinearOutput> objective_stats(const GroupInfo& g, LinearOutput o) {
  ObjectiveStats<LinearOutput> s(g.inputs(), o);
  s.set_float_products(g.float_products);
  s.set_task_runner(g.tasks);
  return s;
}
inline ObjectiveStats<ResidualOutput> objective_stats(const GroupInfo& g, ResidualOutput o) {
  ObjectiveStats<ResidualOutput> s(g.inputs(), g.outputs(), o);
  s.set_float_products(g.float_products);
  s.set_task_runner(g.tasks);
  return s;
}
inline ObjectiveStats<NormalizedOutput> objective_stats(const GroupInfo& g, NormalizedOutput o) {
  o.eps = double(g.norm_eps);
  ObjectiveStats<NormalizedOutput> s(*g.fp_weight, o);
  (void)s.set_target_only(true);  // no batch yet: always accepted
  s.set_float_products(g.float_products);
  s.set_task_runner(g.tasks);
  return s;
}

// Input linears (q,k,v, gate,up) solved toward `input`'s target, output linears (o, down) toward
// `output`'s. Residual-stream objectives need an output group (they read r̂, r).
template <class InputObjective, class OutputObjective>
struct ObjectiveMethod {
  InputObjective input;
  OutputObjective output;

  ObjectiveStats<InputObjective> stats(const InputGroup& g) const { return objective_stats(g, input); }
  ObjectiveStats<OutputObjective> stats(const OutputGroup& g) const { return objective_stats(g, output); }

  template <class O>
  Report add(ObjectiveStats<O>& s, const Batch& b) const {
    if constexpr (std::is_same_v<O, LinearOutput>) {
      return s.add(b.x_hat, b.x);
    } else {
      if (!b.r_hat || !b.r)
        return Report::fail(Status::InvalidArgument, "residual objective on an input linear");
      if constexpr (std::is_same_v<O, NormalizedOutput>)
        if (b.y) return s.add(b.x_hat, b.x, *b.r_hat, *b.r, *b.y);  // W·x from the FP stream
      return s.add(b.x_hat, b.x, *b.r_hat, *b.r);
    }
  }
  template <class O, class Grid>
  Report solve(const ObjectiveStats<O>& s, const Eigen::MatrixXf& W, const Grid& grid,
               const GptqOptions& opt, QuantizedWeight<float>& out) const {
    return solve_objective(W, s, grid, opt, out);
  }
};

// QEP: the linear-output target Y* = W x̂ + α W (x − x̂) on every linear.
using Qep = ObjectiveMethod<LinearOutput, LinearOutput>;
inline Qep qep(double alpha = 0.5) { return {{alpha}, {alpha}}; }

// LoaQ: the linear-output target on input linears, the RMSNorm-aware sub-block target on output
// linears (weighted, α, β as in the paper's defaults).
using Loaq = ObjectiveMethod<LinearOutput, NormalizedOutput>;
inline Loaq loaq_normalized(double alpha = 1, double beta = 1) {
  return {{alpha}, {alpha, beta, 1e-5, true}};
}
// LoaQ with the plain residual target on output linears (no RMSNorm).
using LoaqResidual = ObjectiveMethod<LinearOutput, ResidualOutput>;
inline LoaqResidual loaq_residual(double alpha = 1, double beta = 1) { return {{alpha}, {alpha, beta}}; }

}  // namespace llm
}  // namespace loaq
