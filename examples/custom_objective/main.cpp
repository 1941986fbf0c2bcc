// A researcher's experiment in one file: a new method for the sequential pipeline, tried on
// SmolLM2 (or any LLaMA-family GGUF) against the installed package, next to GPTQ.
//
// The method: plain GPTQ (Ĥ only) on the input linears q,k,v and gate,up, and the RMSNorm-aware
// sub-block target of LoaQ on the output linears o and down, so that only the linears that write
// the residual stream correct the drift of the quantized model.
//
//   loaq-custom-objective --model M.gguf [--bits 3] [--group 128] [--windows 8] [--text-dir data/sotu]
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>

#include <loaq/llm/decoder.hpp>
#include <loaq/llm/methods.hpp>
#include <loaq/llm/perplexity.hpp>
#include <loaq/llm/sequential.hpp>
#include <loaq/llm/tokenizer.hpp>

namespace llm = loaq::llm;

// The new method: statistics and solver per group role; the pipeline's loop is untouched.
struct GptqInLoaqOut {
  double alpha = 0.5, beta = 0.25;

  // Input groups: GPTQ's Ĥ.
  loaq::CalibrationAccumulator<double> stats(const llm::InputGroup& g) const {
    return loaq::CalibrationAccumulator<double>(g.inputs());
  }
  loaq::Report add(loaq::CalibrationAccumulator<double>& s, const llm::Batch& b) const {
    return s.add_batch(b.x_hat);
  }
  template <class Grid>
  loaq::Report solve(const loaq::CalibrationAccumulator<double>& s, const Eigen::MatrixXf& W,
                     const Grid& grid, const loaq::GptqOptions& opt, loaq::QuantizedWeight<float>& out) const {
    return loaq::gptq(W, s.hessian(), grid, opt, out);
  }

  // Output groups: match after the next RMSNorm (weighted Ĥ, α, β).
  loaq::ObjectiveStats<loaq::NormalizedOutput> stats(const llm::OutputGroup& g) const {
    return loaq::ObjectiveStats<loaq::NormalizedOutput>(*g.fp_weight, {alpha, beta, double(g.norm_eps), true});
  }
  loaq::Report add(loaq::ObjectiveStats<loaq::NormalizedOutput>& s, const llm::Batch& b) const {
    return s.add(b.x_hat, b.x, *b.r_hat, *b.r);
  }
  template <class Grid>
  loaq::Report solve(const loaq::ObjectiveStats<loaq::NormalizedOutput>& s, const Eigen::MatrixXf& W,
                     const Grid& grid, const loaq::GptqOptions& opt, loaq::QuantizedWeight<float>& out) const {
    return loaq::solve_objective(W, s, grid, opt, out);
  }
};

static std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

int main(int argc, char** argv) {
  loaq::pin_eigen_blocking();  // the same results on any CPU (loaq/config.hpp)
  std::string model_path, text_dir = "data/sotu";
  int bits = 3, group = 128, n_windows = 8;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string f = argv[i], v = argv[i + 1];
    if (f == "--model") model_path = v;
    else if (f == "--bits") bits = std::stoi(v);
    else if (f == "--group") group = std::stoi(v);
    else if (f == "--windows") n_windows = std::stoi(v);
    else if (f == "--text-dir") text_dir = v;
  }
  if (model_path.empty()) {
    std::fprintf(stderr, "usage: loaq-custom-objective --model M.gguf [--bits 3] [--group 128] "
                         "[--windows 8] [--text-dir data/sotu]\n");
    return 2;
  }
  try {
    const loaq::io::GgufReader gguf(model_path);
    const llm::Model fp = llm::Model::load(gguf);
    const llm::Tokenizer tok = llm::Tokenizer::from_gguf(gguf);
    const auto calib = llm::random_windows(tok.encode(read_text(text_dir + "/calib_1790_1981.txt"), false),
                                           n_windows, 256, 0);
    const auto evals = llm::windows(tok.encode(read_text(text_dir + "/eval_1982_2021.txt"), false), 256, n_windows);

    llm::SequentialOptions opt;
    opt.solver.group_size = group;
    llm::with_uniform_grid(bits, false, [&](const auto& grid) {
      const llm::Model gptq = llm::quantize_sequential(fp, calib, llm::Gptq{}, grid, opt);
      const llm::Model mine = llm::quantize_sequential(fp, calib, GptqInLoaqOut{}, grid, opt);
      std::printf("W%d g%d, %d windows x 256 tokens: fp %.3f  gptq %.3f  gptq-in/loaq-out %.3f\n", bits,
                  group, n_windows, llm::perplexity(fp, evals).ppl, llm::perplexity(gptq, evals).ppl,
                  llm::perplexity(mine, evals).ppl);
    });
  } catch (const std::exception& e) {
    std::fprintf(stderr, "loaq-custom-objective: %s\n", e.what());
    return 1;
  }
  return 0;
}
