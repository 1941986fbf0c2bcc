// Where the example programs and the model tests look for the GGUF files: an environment variable,
// else the cache that scripts/fetch_model.sh fills ($LOAQ_CACHE or ~/.cache/loaq).
#pragma once

#include <cstdlib>
#include <fstream>
#include <string>

namespace loaq_examples {

inline const char* kModelFile = "SmolLM2-135M-Instruct.Q4_1.gguf";
// The optional second model (scripts/fetch_model.sh qwen2.5-0.5b).
inline const char* kQwenModelFile = "Qwen2.5-Coder-0.5B-Instruct.gguf";

// $env_var if set, else `file` in the fetch script's cache folder.
inline std::string cached_model_path(const char* env_var, const std::string& file) {
  if (const char* p = std::getenv(env_var); p && *p) return p;
  if (const char* c = std::getenv("LOAQ_CACHE"); c && *c) return std::string(c) + "/" + file;
  if (const char* h = std::getenv("HOME"); h && *h) return std::string(h) + "/.cache/loaq/" + file;
  return file;
}

// The paths the models should be at (they may not exist): SmolLM2-135M ($LOAQ_MODEL) and
// Qwen2.5-Coder-0.5B-Instruct ($LOAQ_QWEN_MODEL).
inline std::string default_model_path() { return cached_model_path("LOAQ_MODEL", kModelFile); }
inline std::string qwen_model_path() { return cached_model_path("LOAQ_QWEN_MODEL", kQwenModelFile); }

inline bool file_exists(const std::string& path) { return std::ifstream(path).good(); }

}  // namespace loaq_examples
