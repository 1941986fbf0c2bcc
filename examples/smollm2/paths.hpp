// Where the SmolLM2 GGUF file is expected: $LOAQ_MODEL, else the cache that
// scripts/fetch_model.sh fills ($LOAQ_CACHE or ~/.cache/loaq).
#pragma once

#include <cstdlib>
#include <fstream>
#include <string>

namespace smollm2 {

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

}  // namespace smollm2
