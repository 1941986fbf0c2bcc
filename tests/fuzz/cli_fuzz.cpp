// libFuzzer target: loaq-quantize's argument and file handling (examples/quantize_layer/cli.hpp).
// The input is split at the first NUL: before it, newline-separated arguments; after it, the
// bytes of the --in file. Whatever they hold, the program must end with exit status 0, 1 or 2
// (a message), never a crash, a sanitizer report or an escaping exception.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

#include "quantize_layer/cli.hpp"

namespace {
const std::string& scratch() {
  static const std::string dir = [] {
    char tmpl[] = "/tmp/loaq_cli_fuzz.XXXXXX";
    const char* d = ::mkdtemp(tmpl);
    ::setenv("LOAQ_MEMORY_LIMIT", "268435456", 1);  // 256 MiB: stay inside the fuzzer's RSS limit
    return std::string(d ? d : "/tmp");
  }();
  return dir;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  const auto cut = bytes.find('\0');
  const std::string arg_text = bytes.substr(0, cut);
  const std::string file = cut == std::string::npos ? std::string() : bytes.substr(cut + 1);
  const std::string in = scratch() + "/in.st", out = scratch() + "/out.st";
  std::ofstream(in, std::ios::binary).write(file.data(), std::streamsize(file.size()));
  std::vector<std::string> args = {"--in", in, "--out", out};
  std::istringstream lines(arg_text);
  for (std::string a; std::getline(lines, a) && args.size() < 40;)
    if (a != "--in" && a != "--out" && a.rfind("--in=", 0) != 0 && a.rfind("--out=", 0) != 0 &&
        a.rfind("--threads", 0) != 0)
      args.push_back(a);  // the paths stay ours; threads stay the default
  std::ostringstream log, err;
  const int status = loaq_cli::main(args, log, err);
  if (status < 0 || status > 2) std::abort();
  return 0;
}
