// Status codes returned by every solver (Eigen ComputationInfo style: no exceptions).
#pragma once

#include <string>

namespace loaq {

enum class Status {
  Success = 0,
  NonFiniteInput,      // a NaN or Inf in the weights, Hessian or statistics
  ShapeMismatch,       // matrix sizes disagree
  InvalidArgument,     // an option out of range (bits, group size, block size, damping)
  NotPositiveDefinite  // the damped Hessian could not be factored even after retries
};

inline const char* to_string(Status s) {
  switch (s) {
    case Status::Success: return "success";
    case Status::NonFiniteInput: return "non-finite input";
    case Status::ShapeMismatch: return "shape mismatch";
    case Status::InvalidArgument: return "invalid argument";
    case Status::NotPositiveDefinite: return "not positive definite";
  }
  return "unknown";
}

// A status with a message that says what was wrong and what to do.
struct Report {
  Status status = Status::Success;
  std::string message;
  bool ok() const { return status == Status::Success; }
  static Report success() { return {}; }
  static Report fail(Status s, std::string m) { return {s, std::move(m)}; }
};

}  // namespace loaq
