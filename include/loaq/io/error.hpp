// The one exception type of loaq's optional file readers (safetensors, GGUF), so callers can
// catch every malformed-input failure in one place.
#pragma once

#include <stdexcept>

namespace loaq {
namespace io {

// Thrown for any malformed, truncated or mismatching file; the message says what and where.
struct format_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace io
}  // namespace loaq
