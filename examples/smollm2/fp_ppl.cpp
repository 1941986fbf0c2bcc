// Perplexity of the float SmolLM2 model on the first N windows of L tokens of a text, with the
// GPTQ reference semantics (tokenize the whole text once, non-overlapping windows,
// ppl = exp(mean window nll)).
//
//   smollm2-fp-ppl [--model M.gguf] [--eval-text FILE] [--windows 16] [--seq-len 256]
//
// --windows 0 uses every full window. The model defaults to $LOAQ_MODEL or the cache of
// scripts/fetch_model.sh; the text to data/sotu/eval_1982_2021.txt of the source tree.
#include <chrono>
#include <cstdio>
#include <exception>
#include <fstream>
#include <iterator>
#include <string>

#include "model.hpp"
#include "paths.hpp"
#include "tokenizer.hpp"

#ifndef LOAQ_SOURCE_DIR
#define LOAQ_SOURCE_DIR "."
#endif

namespace {
int parse_int(const std::string& flag, const std::string& v) {
  std::size_t used = 0;
  int x = 0;
  try {
    x = std::stoi(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != v.size()) throw std::invalid_argument(flag + " needs an integer, got '" + v + "'");
  return x;
}
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

int main(int argc, char** argv) {
  std::string model_path = smollm2::default_model_path();
  std::string text_path = std::string(LOAQ_SOURCE_DIR) + "/data/sotu/eval_1982_2021.txt";
  int n_windows = 16, seq_len = 256;
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "--help" || a == "-h") throw std::invalid_argument("help");
      if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
      const std::string v = argv[++i];
      if (a == "--model") model_path = v;
      else if (a == "--eval-text") text_path = v;
      else if (a == "--windows") n_windows = parse_int(a, v);
      else if (a == "--seq-len") seq_len = parse_int(a, v);
      else throw std::invalid_argument("unknown argument " + a);
    }
    if (n_windows < 0 || seq_len < 2) throw std::invalid_argument("need --windows >= 0, --seq-len >= 2");
  } catch (const std::exception& e) {
    if (std::string(e.what()) != "help") std::fprintf(stderr, "smollm2-fp-ppl: %s\n", e.what());
    std::fprintf(stderr, "usage: smollm2-fp-ppl [--model M.gguf] [--eval-text FILE] "
                         "[--windows 16 (0 = all)] [--seq-len 256]\n");
    return 2;
  }
  if (!smollm2::file_exists(model_path)) {
    std::fprintf(stderr, "smollm2-fp-ppl: model %s not found; run scripts/fetch_model.sh or pass "
                         "--model / set LOAQ_MODEL\n", model_path.c_str());
    return 1;
  }
  try {
    auto t0 = std::chrono::steady_clock::now();
    const loaq::io::GgufReader gguf(model_path);
    const smollm2::Tokenizer tok = smollm2::Tokenizer::from_gguf(gguf);
    const smollm2::Model model = smollm2::Model::load(gguf);
    std::printf("model %s: %d layers, d %d, load %.2f s\n", model_path.c_str(),
                model.config.n_layers, model.config.d_model, seconds_since(t0));

    t0 = std::chrono::steady_clock::now();
    std::ifstream f(text_path, std::ios::binary);
    if (!f) throw std::runtime_error("cannot open " + text_path);
    const std::string text{std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
    const std::vector<int> ids = tok.encode(text);
    std::printf("text %s: %zu bytes, %zu tokens, tokenize %.2f s\n", text_path.c_str(),
                text.size(), ids.size(), seconds_since(t0));

    const auto wins = smollm2::windows(ids, seq_len, n_windows == 0 ? -1 : n_windows);
    if (n_windows > 0 && int(wins.size()) < n_windows)
      std::printf("note: the text holds only %zu windows of %d tokens\n", wins.size(), seq_len);
    t0 = std::chrono::steady_clock::now();
    const smollm2::Perplexity r = smollm2::perplexity(
        wins, [&](const std::vector<int>& w) { return model.nll(w); },
        [&](int done, int total) {
          std::fprintf(stderr, "\r  window %d/%d (%.1f s)", done, total, seconds_since(t0));
          if (done == total) std::fprintf(stderr, "\n");
        });
    const double s = seconds_since(t0);
    std::printf("FP perplexity %.4f (mean nll %.5f) over %d windows x %d tokens; %.2f s, "
                "%.0f tokens/s\n", r.ppl, r.mean_nll, r.windows, seq_len, s,
                double(r.windows) * seq_len / s);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "smollm2-fp-ppl: %s\n", e.what());
    return 1;
  }
  return 0;
}
