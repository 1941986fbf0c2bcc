// Tokenizes a text file with the GGUF file's tokenizer and writes the ids, one per line (for
// scripts/check_tokenizer.py, which compares them with Hugging Face `tokenizers`).
//
//   loaq-tokenize --model M.gguf --text FILE [--out IDS.txt] [--no-special]
#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <fstream>
#include <iterator>
#include <string>

#include <loaq/llm/tokenizer.hpp>

int main(int argc, char** argv) {
  std::string model, text_path, out_path;
  bool special = true;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
      return argv[++i];
    };
    try {
      if (a == "--model") model = value();
      else if (a == "--text") text_path = value();
      else if (a == "--out") out_path = value();
      else if (a == "--no-special") special = false;
      else throw std::invalid_argument("unknown argument " + a);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "loaq-tokenize: %s\n", e.what());
      return 2;
    }
  }
  if (model.empty() || text_path.empty()) {
    std::fprintf(stderr, "usage: loaq-tokenize --model M.gguf --text FILE [--out IDS.txt] [--no-special]\n");
    return 2;
  }
  try {
    const loaq::llm::Tokenizer tok = loaq::llm::Tokenizer::from_gguf(loaq::io::GgufReader(model));
    std::ifstream f(text_path, std::ios::binary);
    if (!f) throw std::runtime_error("cannot open " + text_path);
    const std::string text{std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
    const auto t0 = std::chrono::steady_clock::now();
    const std::vector<int> ids = tok.encode(text, special);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::fprintf(stderr, "%zu bytes -> %zu tokens in %.2f s; decode round trip %s\n", text.size(),
                 ids.size(), s, tok.decode(ids) == text ? "exact" : "DIFFERS");
    std::FILE* out = out_path.empty() ? stdout : std::fopen(out_path.c_str(), "w");
    if (!out) throw std::runtime_error("cannot write " + out_path);
    for (int id : ids) std::fprintf(out, "%d\n", id);
    if (out != stdout && std::fclose(out) != 0) throw std::runtime_error("write failed: " + out_path);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "loaq-tokenize: %s\n", e.what());
    return 1;
  }
  return 0;
}
