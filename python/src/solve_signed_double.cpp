// Signed symmetric grids (QuaRot/GPTAQ convention), bits 2..8, double solver.
#include "solve.hpp"

namespace loaq_py {

loaq::Report solve_signed(const Request<double>& req, int bits, bool full_range, Result<double>& out) {
  switch (bits) {
    case 2: return run(req, loaq::SignedSymmetricGrid<double, 2>(full_range), out);
    case 3: return run(req, loaq::SignedSymmetricGrid<double, 3>(full_range), out);
    case 4: return run(req, loaq::SignedSymmetricGrid<double, 4>(full_range), out);
    case 5: return run(req, loaq::SignedSymmetricGrid<double, 5>(full_range), out);
    case 6: return run(req, loaq::SignedSymmetricGrid<double, 6>(full_range), out);
    case 7: return run(req, loaq::SignedSymmetricGrid<double, 7>(full_range), out);
    case 8: return run(req, loaq::SignedSymmetricGrid<double, 8>(full_range), out);
    default: return bad_bits(bits);
  }
}

}  // namespace loaq_py
