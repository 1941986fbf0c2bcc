// loaq-faq-presearch: the one pre-search behind FaqOptions' defaults (llm/scaling.hpp). Splits the
// calibration text: FAQ's statistics come from random windows of its first part, and every
// configuration (window K, decay, exponent r) is scored by the perplexity of FAQ+RTN on windows
// of its held-out last part. Evaluation text is never read.
//
//   loaq-faq-presearch [--model M.gguf] [--calib-text F] [--stats-windows N (8)]
//                      [--heldout-windows E (4)] [--seq-len L (256)] [--bits B (3)] [--group G (128)]
//                      [--windows 0,1,2,4] [--ratios 0.25,0.5] [--decays 0.5] [--threads T]
// Symmetric weights (FAQ's setting).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include <loaq/llm/decoder.hpp>
#include <loaq/llm/perplexity.hpp>
#include <loaq/llm/scaling.hpp>
#include <loaq/llm/sequential.hpp>
#include <loaq/llm/tokenizer.hpp>

#include "../common/model_path.hpp"

namespace llm = loaq::llm;

namespace {

[[noreturn]] void die(const std::string& msg) {
  std::fprintf(stderr, "loaq-faq-presearch: %s\n", msg.c_str());
  std::exit(2);
}

std::vector<double> numbers(const std::string& s) {
  std::vector<double> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');)
    if (!item.empty()) out.push_back(std::atof(item.c_str()));
  if (out.empty()) die("empty list '" + s + "'");
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  loaq::pin_eigen_blocking();  // the same results on any CPU (loaq/config.hpp)
  std::string model = loaq_examples::default_model_path();
  std::string calib_text = std::string(LOAQ_SOURCE_DIR) + "/data/sotu/calib_1790_1981.txt";
  int stats_windows = 8, heldout_windows = 4, seq_len = 256, bits = 3, group = 128;
  int threads = llm::detail::hardware_threads();
  std::vector<double> ks = {0, 1, 2, 4}, ratios = {0.25, 0.5}, decays = {0.5};
  for (int i = 1; i < argc; ++i) {
    const std::string f = argv[i];
    if (i + 1 >= argc) die(f + " needs a value (see the header comment)");
    const std::string v = argv[++i];
    if (f == "--model") model = v;
    else if (f == "--calib-text") calib_text = v;
    else if (f == "--stats-windows") stats_windows = std::atoi(v.c_str());
    else if (f == "--heldout-windows") heldout_windows = std::atoi(v.c_str());
    else if (f == "--seq-len") seq_len = std::atoi(v.c_str());
    else if (f == "--bits") bits = std::atoi(v.c_str());
    else if (f == "--group") group = std::atoi(v.c_str());
    else if (f == "--windows") ks = numbers(v);
    else if (f == "--ratios") ratios = numbers(v);
    else if (f == "--decays") decays = numbers(v);
    else if (f == "--threads") threads = std::atoi(v.c_str());
    else die("unknown option " + f);
  }
  if (stats_windows < 1 || heldout_windows < 1 || seq_len < 2 || threads < 1) die("bad window settings");
  try {
    const auto t0 = std::chrono::steady_clock::now();
    auto seconds = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
    const loaq::io::GgufReader gguf(model);
    const llm::Model fp = llm::Model::load(gguf);
    const llm::Tokenizer tok = llm::Tokenizer::from_gguf(gguf);
    std::ifstream in(calib_text, std::ios::binary);
    if (!in) die("cannot read " + calib_text);
    const std::vector<int> ids =
        tok.encode(std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()), false);
    // Held out: the last heldout_windows·seq_len tokens; statistics: random windows before them.
    const std::size_t tail = std::size_t(heldout_windows) * std::size_t(seq_len);
    if (ids.size() < tail + std::size_t(seq_len) + 2) die("calibration text too short");
    const std::vector<int> head(ids.begin(), ids.end() - std::ptrdiff_t(tail));
    const std::vector<int> rest(ids.end() - std::ptrdiff_t(tail), ids.end());
    const auto calib = llm::random_windows(head, stats_windows, seq_len, 0);
    const auto heldout = llm::windows(rest, seq_len, heldout_windows);
    const llm::FaqStatistics st = llm::faq_statistics(fp, calib, threads);
    std::printf("statistics: %d windows, held out: %zu windows of %d tokens (%.1f s)\n", stats_windows,
                heldout.size(), seq_len, seconds());
    std::printf("| K | decay | r | held-out ppl W%d g%d sym |\n|---|---|---|---|\n", bits, group);
    llm::with_uniform_grid(bits, true, [&](const auto& grid) {
      std::printf("| RTN | - | - | %.3f |\n", llm::perplexity(llm::quantize_rtn(fp, grid, group), heldout, threads).ppl);
      std::fflush(stdout);
      for (double k : ks)
        for (double d : decays)
          for (double r : ratios) {
            if (k == 0 && d != decays.front()) continue;  // the decay does not matter at K = 0
            llm::FaqOptions o;
            o.window = int(k);
            o.decay = d;
            o.ratio = r;
            const llm::Model q = llm::quantize_rtn(llm::faq_scale(fp, st, o), grid, group);
            std::printf("| %d | %.2f | %.2f | %.3f |\n", o.window, d, r, llm::perplexity(q, heldout, threads).ppl);
            std::fflush(stdout);
          }
    });
    std::printf("total %.1f s\n", seconds());
  } catch (const std::exception& e) {
    die(e.what());
  }
  return 0;
}
