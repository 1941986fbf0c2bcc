// Where the example programs and the model tests look for the GGUF file: $LOAQ_MODEL, else the
// cache that scripts/fetch_model.sh fills ($LOAQ_CACHE or ~/.cache/loaq) with SmolLM2-135M.
#pragma once

#include <cstdlib>
#include <fstream>
#include <string>

namespace loaq_examples {

inline const char* kModelFile = "SmolLM2-135M-Instruct.Q4_1.gguf";

// The path the model should be at (it may not exist).
inline std::string default_model_path() {
  if (const char* p = std::getenv("LOAQ_MODEL"); p && *p) return p;
  if (const char* c = std::getenv("LOAQ_CACHE"); c && *c) return std::string(c) + "/" + kModelFile;
  if (const char* h = std::getenv("HOME"); h && *h)
    return std::string(h) + "/.cache/loaq/" + kModelFile;
  return kModelFile;
}

inline bool file_exists(const std::string& path) { return std::ifstream(path).good(); }

}  // namespace loaq_examples
