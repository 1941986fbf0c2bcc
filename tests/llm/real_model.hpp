// The real SmolLM2 model and the Qwen2.5 tokenizer for the tests, each loaded once; null when its
// GGUF file is absent.
#pragma once

#include <doctest/doctest.h>

#include <fstream>
#include <iterator>
#include <memory>
#include <string>

#include <loaq/llm/decoder.hpp>
#include <loaq/llm/tokenizer.hpp>

#include "common/model_path.hpp"

namespace loaq_test {

struct Loaded {
  loaq::io::GgufReader gguf;
  loaq::llm::Tokenizer tok;
  loaq::llm::Model model;
  explicit Loaded(const std::string& path)
      : gguf(path), tok(loaq::llm::Tokenizer::from_gguf(gguf)), model(loaq::llm::Model::load(gguf)) {}
};

inline const Loaded* real_model() {
  static const std::unique_ptr<Loaded> m = [] {
    const std::string path = loaq_examples::default_model_path();
    if (!loaq_examples::file_exists(path)) return std::unique_ptr<Loaded>();
    return std::make_unique<Loaded>(path);
  }();
  return m.get();
}

inline bool skip_without_model() {
  if (real_model()) return false;
  MESSAGE("skipped: SmolLM2 GGUF not found at " << loaq_examples::default_model_path()
                                                << " (run scripts/fetch_model.sh or set LOAQ_MODEL)");
  return true;
}

// The tokenizer of the optional Qwen2.5 file, without its model (the file's other 490 MB are
// dropped once the vocabulary is read).
inline const loaq::llm::Tokenizer* qwen_tokenizer() {
  static const std::unique_ptr<loaq::llm::Tokenizer> t = [] {
    const std::string path = loaq_examples::qwen_model_path();
    if (!loaq_examples::file_exists(path)) return std::unique_ptr<loaq::llm::Tokenizer>();
    return std::make_unique<loaq::llm::Tokenizer>(
        loaq::llm::Tokenizer::from_gguf(loaq::io::GgufReader(path)));
  }();
  return t.get();
}

inline bool skip_without_qwen() {
  if (qwen_tokenizer()) return false;
  MESSAGE("skipped: Qwen2.5 GGUF not found at "
          << loaq_examples::qwen_model_path()
          << " (run scripts/fetch_model.sh qwen2.5-0.5b or set LOAQ_QWEN_MODEL)");
  return true;
}

// The shape a real model's GGUF metadata must give the decoder.
struct ExpectedConfig {
  int n_layers, d_model, d_ff, n_heads, n_kv_heads, head_dim, vocab_size;
  float rope_theta;
};
inline void check_config(const loaq::llm::Config& c, const ExpectedConfig& e) {
  CHECK(c.n_layers == e.n_layers);
  CHECK(c.d_model == e.d_model);
  CHECK(c.d_ff == e.d_ff);
  CHECK(c.n_heads == e.n_heads);
  CHECK(c.n_kv_heads == e.n_kv_heads);
  CHECK(c.head_dim == e.head_dim);
  CHECK(c.vocab_size == e.vocab_size);
  CHECK(c.rope_theta == e.rope_theta);
}

inline std::string eval_text() {
  std::ifstream f(std::string(LOAQ_SOURCE_DIR) + "/data/sotu/eval_1982_2021.txt", std::ios::binary);
  REQUIRE(f.good());
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

}  // namespace loaq_test
