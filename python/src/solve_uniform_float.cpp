// Uniform (asymmetric / unsigned-symmetric) grids, bits 2..8, float solver.
#include "solve.hpp"

namespace loaq_py {

loaq::Report solve_uniform(const Request<float>& req, int bits, bool sym, Result<float>& out) {
  switch (bits) {
    case 2: return run(req, loaq::UniformGrid<float, 2>(sym), out);
    case 3: return run(req, loaq::UniformGrid<float, 3>(sym), out);
    case 4: return run(req, loaq::UniformGrid<float, 4>(sym), out);
    case 5: return run(req, loaq::UniformGrid<float, 5>(sym), out);
    case 6: return run(req, loaq::UniformGrid<float, 6>(sym), out);
    case 7: return run(req, loaq::UniformGrid<float, 7>(sym), out);
    case 8: return run(req, loaq::UniformGrid<float, 8>(sym), out);
    default: return bad_bits(bits);
  }
}

}  // namespace loaq_py
