// Codebook grids (NF4, E2M1 or a user table of up to 256 levels), float and double solvers.
// The table size, not a template parameter, bounds the levels: one instantiation per scalar.
#include <stdexcept>

#include "solve.hpp"

namespace loaq_py {

template <class S>
static loaq::Report codebook(const Request<S>& req, const std::vector<double>& levels,
                             Result<S>& out) {
  try {
    const loaq::CodebookGrid<S, 8> grid(levels);
    return run(req, grid, out);
  } catch (const std::invalid_argument& e) {
    return loaq::Report::fail(loaq::Status::InvalidArgument, e.what());
  }
}

loaq::Report solve_codebook(const Request<float>& req, const std::vector<double>& levels,
                                   Result<float>& out) {
  return codebook(req, levels, out);
}
loaq::Report solve_codebook(const Request<double>& req, const std::vector<double>& levels,
                                    Result<double>& out) {
  return codebook(req, levels, out);
}

}  // namespace loaq_py
