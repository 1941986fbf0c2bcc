// Shared by the reader fuzz targets: run one accessor, where format_error is the allowed outcome
// and anything else escapes to libFuzzer as a finding.
#pragma once

#include <loaq/io/error.hpp>

namespace loaq_fuzz {

template <class F>
void attempt(F&& f) {
  try {
    f();
  } catch (const loaq::io::format_error&) {
  }
}

}  // namespace loaq_fuzz
