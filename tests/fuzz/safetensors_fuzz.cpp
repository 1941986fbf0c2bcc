// libFuzzer target: arbitrary bytes into the safetensors reader, then every tensor read as
// floats, and as a matrix or vector where its shape allows. The reader's contract is that bad
// input only ever throws loaq::io::format_error; any other exception, crash, leak or sanitizer
// report is a finding. Valid files also go through the writer and must read back identically.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include <loaq/io/safetensors.hpp>

#include "attempt.hpp"

using loaq::io::format_error;
using loaq::io::SafetensorsReader;

using loaq_fuzz::attempt;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const SafetensorsReader r(std::vector<char>(data, data + size), "fuzz.safetensors");
    (void)r.names();
    (void)r.metadata();
    loaq::io::SafetensorsWriter w;
    for (const auto& name : r.tensor_names()) {
      const auto& t = r.info(name);
      attempt([&] { (void)r.floats<float>(name); });
      attempt([&] { (void)r.floats<double>(name); });
      if (t.shape.size() == 2) attempt([&] { (void)r.matrix<float>(name); });
      if (t.shape.size() == 1) attempt([&] { (void)r.vector<double>(name); });
      attempt([&] { (void)r.matrix<float>(name, 1, 1); });
      w.add_raw(name, t.dtype, t.shape, r.raw(name));
    }
    for (const auto& kv : r.metadata()) w.set_metadata(kv.first, kv.second);
    // Round trip: what the reader accepted, the writer writes and the reader reads back the same.
    const SafetensorsReader back(w.bytes(), "roundtrip");
    for (const auto& name : r.tensor_names())
      if (back.raw(name) != r.raw(name) || back.info(name).shape != r.info(name).shape)
        std::abort();
    if (back.metadata() != r.metadata()) std::abort();
  } catch (const format_error&) {
  }
  return 0;
}
