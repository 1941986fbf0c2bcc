// Uniform (asymmetric / unsigned-symmetric) grids, bits 2..8, double solver.
#include "solve.hpp"

namespace loaq_py {

loaq::Report solve_uniform(const Request<double>& req, int bits, bool sym, Result<double>& out) {
  switch (bits) {
    case 2: return run(req, loaq::UniformGrid<double, 2>(sym), out);
    case 3: return run(req, loaq::UniformGrid<double, 3>(sym), out);
    case 4: return run(req, loaq::UniformGrid<double, 4>(sym), out);
    case 5: return run(req, loaq::UniformGrid<double, 5>(sym), out);
    case 6: return run(req, loaq::UniformGrid<double, 6>(sym), out);
    case 7: return run(req, loaq::UniformGrid<double, 7>(sym), out);
    case 8: return run(req, loaq::UniformGrid<double, 8>(sym), out);
    default: return bad_bits(bits);
  }
}

}  // namespace loaq_py
