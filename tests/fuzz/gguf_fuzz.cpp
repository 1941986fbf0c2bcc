// libFuzzer target: arbitrary bytes into the GGUF reader, then every metadata accessor and every
// tensor dequantized. The reader's contract is that bad input only ever throws
// loaq::io::format_error; any other exception, crash, leak or sanitizer report is a finding.
#include <cstddef>
#include <cstdint>
#include <vector>

#include <loaq/io/gguf.hpp>

#include "attempt.hpp"

using loaq::io::format_error;
using loaq::io::GgufReader;
using loaq::io::GgufValue;

namespace {

using loaq_fuzz::attempt;

void touch(const GgufValue& v, int depth) {
  attempt([&] { (void)v.as_uint(); });
  attempt([&] { (void)v.as_int(); });
  attempt([&] { (void)v.as_double(); });
  attempt([&] { (void)v.as_bool(); });
  attempt([&] { (void)v.as_string(); });
  if (!v.is_array()) return;
  attempt([&] { (void)v.as_strings(); });
  attempt([&] { (void)v.as_ints(); });
  attempt([&] { (void)v.as_doubles(); });
  attempt([&] { (void)v.element(v.size()); });  // one past the end: must be a format_error
  const std::size_t n = v.size() < 64 ? v.size() : 64;
  for (std::size_t i = 0; i < n && depth < 8; ++i) attempt([&] { touch(v.element(i), depth + 1); });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const GgufReader r(std::vector<std::uint8_t>(data, data + size), "fuzz.gguf");
    for (const auto& kv : r.metadata()) {
      touch(kv.second, 0);
      attempt([&] { (void)r.get_uint(kv.first); });
      attempt([&] { (void)r.get_strings(kv.first); });
    }
    attempt([&] { (void)r.get_uint("general.alignment", 32); });
    for (const auto& t : r.tensors()) {
      attempt([&] { (void)r.dequantize(t); });
      attempt([&] { (void)r.matrix(t.name); });
      attempt([&] { (void)r.vector(t.name); });
    }
  } catch (const format_error&) {
  }
  return 0;
}
