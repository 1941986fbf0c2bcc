// Status codes returned by every numerical function (Eigen ComputationInfo style: no exceptions).
// The error rule of the library: the numerical API (grids, statistics, factor, solvers) returns a
// Report and never throws; the optional file readers and writers (io/) throw io::format_error.
#pragma once

#include <string>

namespace loaq {

enum class Status {
  Success = 0,
  NonFiniteInput,       // a NaN or Inf in the weights, Hessian or statistics
  ShapeMismatch,        // matrix sizes disagree
  InvalidArgument,      // an option out of range (bits, group size, block size, damping, grid)
  NotPositiveDefinite,  // the damped Hessian could not be factored even after retries
  NotSymmetric,         // the Hessian differs from its transpose beyond rounding
  OutOfRange,           // a value or a result does not fit the solver's scalar type
  DeviceError           // the GPU backend: no device, out of GPU memory, a CUDA library failed
};

inline const char* to_string(Status s) {
  switch (s) {
    case Status::Success: return "success";
    case Status::NonFiniteInput: return "non-finite input";
    case Status::ShapeMismatch: return "shape mismatch";
    case Status::InvalidArgument: return "invalid argument";
    case Status::NotPositiveDefinite: return "not positive definite";
    case Status::NotSymmetric: return "not symmetric";
    case Status::OutOfRange: return "out of range";
    case Status::DeviceError: return "device error";
  }
  return "unknown";
}

// A status with a message that says what was wrong and what to do. [[nodiscard]]: a dropped
// Report is a dropped error.
struct [[nodiscard]] Report {
  Status status = Status::Success;
  std::string message;
  bool ok() const { return status == Status::Success; }
  static Report success() { return {}; }
  static Report fail(Status s, std::string m) { return {s, std::move(m)}; }
};

}  // namespace loaq
