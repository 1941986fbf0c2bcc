// Runs the float model on the first N tokens of a text and writes the logits, for
// scripts/check_forward.py (an independent numpy forward over the `gguf` package's reader).
//
//   loaq-dump-logits --model M.gguf --text FILE [--tokens 64] --out LOGITS.bin
//
// Output (little-endian): int32 T, int32 V, T × int32 token ids, T × V float32 logits
// (token-major: the V logits of token 0 first).
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <fstream>
#include <iterator>
#include <string>

#include <loaq/llm/decoder.hpp>
#include <loaq/llm/perplexity.hpp>
#include <loaq/llm/tokenizer.hpp>

int main(int argc, char** argv) {
  loaq::pin_eigen_blocking();  // the same results on any CPU (loaq/config.hpp)
  std::string model_path, text_path, out_path;
  int n_tokens = 64;
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
      const std::string v = argv[++i];
      if (a == "--model") model_path = v;
      else if (a == "--text") text_path = v;
      else if (a == "--out") out_path = v;
      else if (a == "--tokens") {
        std::size_t used = 0;
        try {
          n_tokens = std::stoi(v, &used);
        } catch (const std::exception&) {
          used = 0;
        }
        if (used == 0 || used != v.size()) throw std::invalid_argument("--tokens needs an integer");
      }
      else throw std::invalid_argument("unknown argument " + a);
    }
    if (model_path.empty() || text_path.empty() || out_path.empty() || n_tokens < 2)
      throw std::invalid_argument("need --model, --text, --out and --tokens >= 2");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "loaq-dump-logits: %s\nusage: loaq-dump-logits --model M.gguf "
                 "--text FILE [--tokens 64] --out LOGITS.bin\n", e.what());
    return 2;
  }
  try {
    const loaq::io::GgufReader gguf(model_path);
    const loaq::llm::Tokenizer tok = loaq::llm::Tokenizer::from_gguf(gguf);
    const loaq::llm::Model model = loaq::llm::Model::load(gguf);
    std::ifstream f(text_path, std::ios::binary);
    if (!f) throw std::runtime_error("cannot open " + text_path);
    const std::string text{std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
    std::vector<int> ids = tok.encode(text);
    if (ids.size() < std::size_t(n_tokens))
      throw std::runtime_error("text has only " + std::to_string(ids.size()) + " tokens");
    ids.resize(std::size_t(n_tokens));

    const auto t0 = std::chrono::steady_clock::now();
    const Eigen::MatrixXf logits = model.forward(ids);  // V × T, column per token
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::fprintf(stderr, "%d tokens: forward %.3f s, mean next-token nll %.6f\n", n_tokens, s,
                 loaq::llm::next_token_nll(logits, ids));

    std::ofstream out(out_path, std::ios::binary);
    auto put = [&](const void* p, std::size_t n) { out.write(static_cast<const char*>(p), std::streamsize(n)); };
    const std::int32_t T = n_tokens, V = std::int32_t(logits.rows());
    put(&T, 4);
    put(&V, 4);
    for (int id : ids) {
      const std::int32_t x = id;
      put(&x, 4);
    }
    put(logits.data(), sizeof(float) * std::size_t(logits.size()));  // column-major = token-major
    if (!out) throw std::runtime_error("write failed: " + out_path);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "loaq-dump-logits: %s\n", e.what());
    return 1;
  }
  return 0;
}
