// loaq-imatrix: the diagonal "importance matrix" llama.cpp's quantizer weights its rounding with
// (mean x_j² of every linear's input channel j over calibration tokens, llama-imatrix's
// quantity), computed on the FP model from the same calibration windows loaq-ppl-table uses.
// Written as GGUF: one F32 vector per linear, named like its weight, for
// `scripts/llama_cpp_check.py quantize --imatrix FILE`.
//
//   loaq-imatrix [--model M.gguf] [--calib-text F] [--calib-windows N (32)] [--seq-len L (256)]
//                [--seed S (0)] [--threads T] --out IMATRIX.gguf
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <loaq/io/gguf_writer.hpp>
#include <loaq/llm/decoder.hpp>
#include <loaq/llm/detail/parallel.hpp>
#include <loaq/llm/gguf_export.hpp>
#include <loaq/llm/perplexity.hpp>
#include <loaq/llm/tokenizer.hpp>

#include "../common/model_path.hpp"

namespace llm = loaq::llm;

namespace {

[[noreturn]] void die(const std::string& msg) {
  std::fprintf(stderr, "loaq-imatrix: %s\n", msg.c_str());
  std::exit(2);
}

// Σ_t x_jt² of one window, per layer and per input (q,k,v · o · gate,up · down).
using Sums = std::vector<std::array<Eigen::VectorXd, 4>>;

}  // namespace

int main(int argc, char** argv) {
  loaq::pin_eigen_blocking();  // the same results on any CPU (loaq/config.hpp)
  std::string model = loaq_examples::default_model_path(), out;
  std::string calib_text = std::string(LOAQ_SOURCE_DIR) + "/data/sotu/calib_1790_1981.txt";
  int windows = 32, seq_len = 256, threads = llm::detail::hardware_threads();
  unsigned seed = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) die(a + " needs a value");
      return argv[++i];
    };
    if (a == "--model") model = value();
    else if (a == "--calib-text") calib_text = value();
    else if (a == "--calib-windows") windows = std::atoi(value().c_str());
    else if (a == "--seq-len") seq_len = std::atoi(value().c_str());
    else if (a == "--seed") seed = unsigned(std::atoi(value().c_str()));
    else if (a == "--threads") threads = std::atoi(value().c_str());
    else if (a == "--out") out = value();
    else die("unknown argument " + a);
  }
  if (out.empty()) die("--out FILE is required");
  if (windows < 1 || seq_len < 2 || threads < 1) die("--calib-windows, --seq-len and --threads must be positive");
  try {
    const auto t0 = std::chrono::steady_clock::now();
    const loaq::io::GgufReader gguf(model);
    const llm::Model m = llm::Model::load(gguf);
    const llm::Tokenizer tok = llm::Tokenizer::from_gguf(gguf);
    std::ifstream f(calib_text, std::ios::binary);
    if (!f) die("cannot read " + calib_text);
    const std::string text{std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
    const auto calib = llm::random_windows(tok.encode(text, false), windows, seq_len, seed);

    // One task per window; the windows' sums are added in window order (thread-count independent).
    std::vector<Sums> per_window(calib.size());
    llm::detail::parallel_for(calib.size(), threads, [&](std::size_t w) {
      Sums& s = per_window[w];
      Eigen::MatrixXf h = m.embed(calib[w]);
      for (const llm::DecoderLayer& L : m.layers) {
        llm::AttnCapture a;
        llm::MlpCapture c;
        const Eigen::MatrixXf mid = llm::attention_block(m.config, L, h, &a);
        h = llm::mlp_block(m.config, L, mid, &c);
        auto sq = [](const Eigen::MatrixXf& x) { return x.cast<double>().array().square().rowwise().sum().matrix().eval(); };
        s.push_back({sq(a.x_qkv), sq(a.x_o), sq(c.x_gate_up), sq(c.x_down)});
      }
    });
    Sums total = per_window[0];
    for (std::size_t w = 1; w < per_window.size(); ++w)
      for (std::size_t l = 0; l < total.size(); ++l)
        for (int k = 0; k < 4; ++k) total[l][std::size_t(k)] += per_window[w][l][std::size_t(k)];

    loaq::io::GgufWriter w;
    w.set("general.type", loaq::io::GgufValue::string("imatrix"));
    w.set("loaq.imatrix.calibration",
          loaq::io::GgufValue::string(std::to_string(windows) + " windows x " + std::to_string(seq_len) +
                                      " tokens of " + calib_text + ", seed " + std::to_string(seed)));
    const double tokens = double(calib.size()) * double(seq_len);
    const int input_of[7] = {0, 0, 0, 1, 2, 2, 3};  // q,k,v · o · gate,up · down
    for (std::size_t l = 0; l < total.size(); ++l)
      for (int k = 0; k < 7; ++k) {
        const Eigen::VectorXf mean = (total[l][std::size_t(input_of[k])] / tokens).cast<float>();
        std::vector<std::uint8_t> bytes(std::size_t(mean.size()) * 4);
        std::memcpy(bytes.data(), mean.data(), bytes.size());
        w.add_tensor("blk." + std::to_string(l) + "." + llm::gguf_linear_name(llm::Linear(k)) + ".weight",
                     {std::uint64_t(mean.size())}, loaq::io::ggml_type::F32, std::move(bytes));
      }
    w.write(out);
    std::printf("wrote %s: mean x^2 of %zu linears' inputs over %zu windows x %d tokens (%.1f s)\n", out.c_str(),
                total.size() * 7, calib.size(), seq_len,
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  } catch (const std::exception& e) {
    die(e.what());
  }
  return 0;
}
