// Run-time dispatch of the binding's solves onto the templated solvers: one instantiation per
// (scalar, grid, bits), spread over several translation units so they compile in parallel.
#pragma once

#include <vector>

#include <loaq/loaq.hpp>

namespace loaq_py {

// A read-only column-major view: element (i, j) at data[i + j * outer_stride]. F-ordered arrays
// (and C-ordered [T, n] token rows, which are n × T column-major) map in place; the binding copies
// other layouts into this one with a blocked transpose first (see module.cpp), so that the
// solvers' own passes over W and Ĥ (finite checks, the working copy) run at memory speed.
template <class S>
using View = Eigen::Map<const loaq::Matrix<S>, Eigen::Unaligned, Eigen::OuterStride<>>;

enum class Method { Gptq, Gptaq, Target, Rtn, LinearObjective, ResidualObjective, NormalizedObjective };

template <class S>
struct Request {
  Method method = Method::Gptq;
  const View<S>* W = nullptr;
  loaq::Matrix<S>* W_owned = nullptr;    // gptq, gptaq: W's own copy, handed to the solver
  const View<double>* H = nullptr;       // gptq, gptaq, target
  const View<float>* H_float = nullptr;  // gptq: a float32 Ĥ read in place (float holds it exactly)
  const View<double>* dXXT = nullptr;    // gptaq
  const loaq::Matrix<double>* C = nullptr;  // target (may stay null)
  const loaq::Matrix<double>* G = nullptr;  // target (may stay null)
  loaq::TargetWeights weights;           // target
  double alpha = 0.25;                   // gptaq
  loaq::GptqOptions options;             // rtn uses group_size and search only
  const void* stats = nullptr;           // ObjectiveStats<…> of the objective methods
  bool want_target = false;
};

template <class S>
struct Result {
  loaq::QuantizedWeight<S> q;
  loaq::SolveDiagnostics diag;
  loaq::Matrix<S> target;
  bool has_diag = false, has_target = false;
};

// Grid kinds the binding dispatches at run time.
enum class GridKind { Uniform = 0, Signed = 1, Codebook = 2, NF4 = 3, E2M1 = 4 };

// Defined in solve_*.cpp (overloads, one per solver scalar).
#define LOAQ_PY_DECLARE(S)                                                                    \
  loaq::Report solve_uniform(const Request<S>& req, int bits, bool sym, Result<S>& out);        \
  loaq::Report solve_signed(const Request<S>& req, int bits, bool full_range, Result<S>& out);  \
  loaq::Report solve_codebook(const Request<S>& req, const std::vector<double>& levels,         \
                              Result<S>& out);
LOAQ_PY_DECLARE(float)
LOAQ_PY_DECLARE(double)
#undef LOAQ_PY_DECLARE

// The body every instantiation shares: one call into the public API per method.
template <class Grid>
loaq::Report run(const Request<typename Grid::Scalar>& r, const Grid& grid,
                 Result<typename Grid::Scalar>& out) {
  using S = typename Grid::Scalar;
  loaq::Matrix<S>* target = r.want_target ? &out.target : nullptr;
  out.has_diag = r.method != Method::Rtn;
  out.has_target = r.want_target;
  switch (r.method) {
    case Method::Gptq: {
      auto solve = [&](const auto& H) {
        if (r.W_owned) return loaq::gptq(std::move(*r.W_owned), H, grid, r.options, out.q, &out.diag);
        return loaq::gptq(*r.W, H, grid, r.options, out.q, &out.diag);
      };
      return r.H_float ? solve(*r.H_float) : solve(*r.H);
    }
    case Method::Gptaq:
      if (r.W_owned)
        return loaq::gptaq(std::move(*r.W_owned), *r.H, *r.dXXT, grid, r.options, r.alpha, out.q,
                           &out.diag);
      return loaq::gptaq(*r.W, *r.H, *r.dXXT, grid, r.options, r.alpha, out.q, &out.diag);
    case Method::Target:
      return loaq::solve_target(*r.W, *r.H, r.C, r.G, r.weights, grid, r.options, out.q, &out.diag,
                                target);
    case Method::Rtn:
      return loaq::rtn(*r.W, grid, r.options.group_size, r.options.search, out.q);
    case Method::LinearObjective:
      return loaq::solve_objective(
          *r.W, *static_cast<const loaq::ObjectiveStats<loaq::LinearOutput>*>(r.stats), grid,
          r.options, out.q, &out.diag, target);
    case Method::ResidualObjective:
      return loaq::solve_objective(
          *r.W, *static_cast<const loaq::ObjectiveStats<loaq::ResidualOutput>*>(r.stats), grid,
          r.options, out.q, &out.diag, target);
    case Method::NormalizedObjective:
      return loaq::solve_objective(
          *r.W, *static_cast<const loaq::ObjectiveStats<loaq::NormalizedOutput>*>(r.stats), grid,
          r.options, out.q, &out.diag, target);
  }
  return loaq::Report::fail(loaq::Status::InvalidArgument, "unknown method");
}

inline loaq::Report bad_bits(int bits) {
  return loaq::Report::fail(loaq::Status::InvalidArgument,
                            "bits must be in [2, 8], got " + std::to_string(bits));
}

}  // namespace loaq_py
