// Signed symmetric grids (QuaRot/GPTAQ convention), bits 2..8, float solver.
#include "solve.hpp"

namespace loaq_py {

loaq::Report solve_signed(const Request<float>& req, int bits, bool full_range, Result<float>& out) {
  switch (bits) {
    case 2: return run(req, loaq::SignedSymmetricGrid<float, 2>(full_range), out);
    case 3: return run(req, loaq::SignedSymmetricGrid<float, 3>(full_range), out);
    case 4: return run(req, loaq::SignedSymmetricGrid<float, 4>(full_range), out);
    case 5: return run(req, loaq::SignedSymmetricGrid<float, 5>(full_range), out);
    case 6: return run(req, loaq::SignedSymmetricGrid<float, 6>(full_range), out);
    case 7: return run(req, loaq::SignedSymmetricGrid<float, 7>(full_range), out);
    case 8: return run(req, loaq::SignedSymmetricGrid<float, 8>(full_range), out);
    default: return bad_bits(bits);
  }
}

}  // namespace loaq_py
