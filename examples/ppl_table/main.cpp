// loaq-ppl-table: quantize a LLaMA-family GGUF model (default SmolLM2-135M) layer by layer with
// each method and print a perplexity table.
//
//   loaq-ppl-table [--model M.gguf] [--methods fp,rtn,gptq,gptaq,qep,loaq] [--settings 3:128,...]
//               [--calib-text F] [--eval-text F] [--calib-windows N] [--eval-windows E]
//               [--seq-len L] [--seed S] [--sym] [--act-order] [--alpha A] [--beta B]
//               [--loaq-objective normalized|residual] [--table-out FILE]
//               [--act-bits A] [--act-clip R] [--act-sym] [--act-group G] [--rotate none|hadamard]
//               [--scales none|awq|faq]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include <loaq/llm/decoder.hpp>
#include <loaq/llm/methods.hpp>
#include <loaq/llm/perplexity.hpp>
#include <loaq/llm/rotation.hpp>
#include <loaq/llm/scaling.hpp>
#include <loaq/llm/sequential.hpp>
#include <loaq/llm/tokenizer.hpp>

#include "../common/model_path.hpp"

namespace llm = loaq::llm;

namespace {

const char* const kMethods[] = {"fp", "rtn", "gptq", "gptaq", "qep", "loaq"};

struct Options {
  std::string model, calib_text, eval_text, table_out;
  std::vector<std::string> methods;
  std::vector<std::pair<int, int>> settings;  // (bits, group)
  int calib_windows = 32, eval_windows = 32, seq_len = 256;
  int threads = loaq::llm::detail::hardware_threads();  // results do not depend on it
  unsigned seed = 0;
  bool sym = false, act_order = false;
  double alpha = -1;            // < 0: the method's default (GPTAQ 0.25, QEP 0.5, LoaQ 1)
  double beta = 1;              // LoaQ residual-drift weight
  bool loaq_normalized = true;  // LoaQ output linears: normalized (true) or residual objective
  loaq::ActivationQuantSpec act;  // bits 16: weight-only
  std::string rotate;             // none | hadamard; empty: hadamard when activations are quantized
  std::string scales = "none";    // none | awq | faq: equivalent channel scaling before every method
};

[[noreturn]] void die(const std::string& msg, int code = 2) {
  std::fprintf(stderr, "loaq-ppl-table: %s\n", msg.c_str());
  std::exit(code);
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, sep);)
    if (!item.empty()) out.push_back(item);
  return out;
}

int to_int(const std::string& flag, const std::string& v) {
  try {
    std::size_t used = 0;
    const int x = std::stoi(v, &used);
    if (used == v.size()) return x;
  } catch (const std::exception&) {
  }
  die(flag + " needs an integer, got '" + v + "'");
}

Options parse(int argc, char** argv) {
  Options o;
  o.act.clip_ratio = 0.9;  // QuaRot's and GPTAQ's activation clip
  o.model = loaq_examples::default_model_path();
  o.calib_text = std::string(LOAQ_SOURCE_DIR) + "/data/sotu/calib_1790_1981.txt";
  o.eval_text = std::string(LOAQ_SOURCE_DIR) + "/data/sotu/eval_1982_2021.txt";
  std::string methods = "fp,rtn,gptq,gptaq,qep,loaq", settings = "3:128";
  for (int i = 1; i < argc; ++i) {
    const std::string f = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) die(f + " needs a value");
      return argv[++i];
    };
    if (f == "--help" || f == "-h") {
      std::printf(
          "usage: loaq-ppl-table [--model M.gguf] [--methods fp,rtn,gptq,gptaq,qep,loaq]\n"
          "  [--settings BITS:GROUP,...  (default 3:128; group -1 = per row)]\n"
          "  [--calib-text F] [--eval-text F] [--calib-windows N (32)] [--eval-windows E (32, -1 all)]\n"
          "  [--seq-len L (256)] [--seed S (0)] [--sym] [--act-order] [--alpha A] [--beta B]\n"
          "  [--loaq-objective normalized|residual] [--table-out FILE] [--threads N (all cores)]\n"
          "  [--act-bits A (16 = weight-only)] [--act-clip R (0.9)] [--act-sym] [--act-group G (-1 per token)]\n"
          "  [--rotate none|hadamard (hadamard when A < 16)]\n"
          "  [--scales none|awq|faq (channel scales, after the rotation, before every method)]\n"
          "Fetch the model first with scripts/fetch_model.sh (or pass --model / set LOAQ_MODEL).\n");
      std::exit(0);
    } else if (f == "--model") o.model = value();
    else if (f == "--methods") methods = value();
    else if (f == "--settings") settings = value();
    else if (f == "--calib-text") o.calib_text = value();
    else if (f == "--eval-text") o.eval_text = value();
    else if (f == "--calib-windows") o.calib_windows = to_int(f, value());
    else if (f == "--eval-windows") o.eval_windows = to_int(f, value());
    else if (f == "--seq-len") o.seq_len = to_int(f, value());
    else if (f == "--seed") o.seed = unsigned(to_int(f, value()));
    else if (f == "--sym") o.sym = true;
    else if (f == "--act-order") o.act_order = true;
    else if (f == "--alpha") o.alpha = std::atof(value().c_str());
    else if (f == "--beta") o.beta = std::atof(value().c_str());
    else if (f == "--loaq-objective") {
      const std::string v = value();
      if (v != "normalized" && v != "residual") die("--loaq-objective is normalized or residual");
      o.loaq_normalized = v == "normalized";
    } else if (f == "--table-out") o.table_out = value();
    else if (f == "--threads") o.threads = to_int(f, value());
    else if (f == "--act-bits") o.act.bits = to_int(f, value());
    else if (f == "--act-clip") o.act.clip_ratio = float(std::atof(value().c_str()));
    else if (f == "--act-sym") o.act.symmetric = true;
    else if (f == "--act-group") o.act.group_size = to_int(f, value());
    else if (f == "--rotate") {
      o.rotate = value();
      if (o.rotate != "none" && o.rotate != "hadamard") die("--rotate is none or hadamard");
    } else if (f == "--scales") {
      o.scales = value();
      if (o.scales != "none" && o.scales != "awq" && o.scales != "faq") die("--scales is none, awq or faq");
    } else die("unknown option " + f + " (see --help)");
  }
  for (const auto& m : split(methods, ',')) {
    if (std::find(std::begin(kMethods), std::end(kMethods), m) == std::end(kMethods))
      die("unknown method '" + m + "' (fp, rtn, gptq, gptaq, qep, loaq)");
    o.methods.push_back(m);
  }
  for (const auto& s : split(settings, ',')) {
    const auto p = split(s, ':');
    if (p.size() != 2) die("--settings takes BITS:GROUP pairs, got '" + s + "'");
    const int bits = to_int("--settings", p[0]), group = to_int("--settings", p[1]);
    if (bits < 2 || bits > 8) die("bits must be in 2..8, got " + p[0]);
    if (group == 0 || group < -1) die("group must be -1 or positive, got " + p[1]);
    o.settings.emplace_back(bits, group);
  }
  if (o.methods.empty() || o.settings.empty()) die("nothing to run");
  if (o.seq_len < 2 || o.calib_windows < 1 || o.eval_windows == 0 || o.eval_windows < -1)
    die("--seq-len ≥ 2, --calib-windows ≥ 1, --eval-windows ≥ 1 or -1");
  if (o.threads < 1) die("--threads must be at least 1");
  if (o.act.bits != 16 && (o.act.bits < 2 || o.act.bits > 8)) die("--act-bits must be in 2..8, or 16 for none");
  if (!(o.act.clip_ratio > 0.f && o.act.clip_ratio <= 1.f)) die("--act-clip must be in (0, 1]");
  if (o.act.group_size == 0 || o.act.group_size < -1) die("--act-group must be -1 or positive");
  if (o.rotate.empty()) o.rotate = o.act.enabled() ? "hadamard" : "none";
  return o;
}

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) die("cannot read " + path, 1);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

std::string label(const Options& o, int bits, int group) {
  std::string s = "W" + std::to_string(bits);
  if (o.act.enabled()) s += "A" + std::to_string(o.act.bits);
  s += group > 0 ? " g" + std::to_string(group) : " per-row";
  if (o.sym) s += " sym";
  if (o.act_order) s += " act";
  if (o.rotate == "hadamard") s += " rot";
  if (o.scales != "none") s += " " + o.scales;
  return s;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Quantizes `fp` with one method: the name picks a policy type, the pipeline does the rest.
llm::Model quantize(const llm::Model& fp, const std::vector<std::vector<int>>& calib,
                    const std::string& m, const Options& o, int bits, int group,
                    const std::function<void(const llm::Progress&)>& progress, llm::SequentialTimes& times) {
  if (m == "fp") return fp;
  auto alpha = [&](double def) { return o.alpha >= 0 ? o.alpha : def; };
  llm::SequentialOptions so;
  so.solver.block_size = 128;
  so.solver.group_size = group;
  so.solver.act_order = o.act_order;
  so.solver.damping.percdamp = 0.01;
  // The precise path (factor, LoaQ targets and GPTAQ's P in double): the solves are a small part
  // of this program's time, and the README's tables were measured with it.
  so.solver.factor = loaq::FactorPrecision::Double;
  so.progress = progress;
  so.threads = o.threads;
  so.activations = o.act;
  llm::Model q;
  llm::with_uniform_grid(bits, o.sym, [&](const auto& grid) {
    const auto t0 = std::chrono::steady_clock::now();
    if (m == "rtn") {
      q = llm::quantize_rtn(fp, grid, group, loaq::ParamSearch{}, progress);
      q.config.act = o.act;
      times.solve_s += seconds_since(t0);
    } else if (m == "gptq") q = llm::quantize_sequential(fp, calib, llm::Gptq{}, grid, so, &times);
    else if (m == "gptaq") q = llm::quantize_sequential(fp, calib, llm::Gptaq{alpha(0.25)}, grid, so, &times);
    else if (m == "qep") q = llm::quantize_sequential(fp, calib, llm::qep(alpha(0.5)), grid, so, &times);
    else if (o.loaq_normalized)
      q = llm::quantize_sequential(fp, calib, llm::loaq_normalized(alpha(1), o.beta), grid, so, &times);
    else
      q = llm::quantize_sequential(fp, calib, llm::loaq_residual(alpha(1), o.beta), grid, so, &times);
  });
  return q;
}


}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  try {
    const auto t_start = std::chrono::steady_clock::now();
    if (!loaq_examples::file_exists(o.model))
      die("model not found at " + o.model + "\n  fetch it with: bash scripts/fetch_model.sh"
          "\n  or pass --model PATH / set LOAQ_MODEL", 1);
    const loaq::io::GgufReader gguf(o.model);
    const llm::Model original = llm::Model::load(gguf);
    // Every method quantizes the same FP model: rotated (an equivalent network) or as loaded.
    std::vector<std::string> warnings;
    const llm::Model fp = o.rotate == "hadamard" ? llm::rotate_model(original, {}, &warnings) : original;
    for (const std::string& w : warnings) std::printf("warning: %s\n", w.c_str());
    const llm::Tokenizer tok = llm::Tokenizer::from_gguf(gguf);
    std::printf("model %s: %d layers, d %d, ff %d (%.1f s)\n", o.model.c_str(), fp.config.n_layers,
                fp.config.d_model, fp.config.d_ff, seconds_since(t_start));

    const std::vector<int> calib_ids = tok.encode(read_text(o.calib_text), false);
    const std::vector<int> eval_ids = tok.encode(read_text(o.eval_text), false);
    if (calib_ids.size() < std::size_t(o.seq_len) + 2) die("calibration text has fewer than seq-len tokens", 1);
    const auto calib = llm::random_windows(calib_ids, o.calib_windows, o.seq_len, o.seed);
    const auto evals = llm::windows(eval_ids, o.seq_len, o.eval_windows);
    if (evals.empty()) die("evaluation text has fewer than seq-len tokens", 1);
    std::printf("calibration: %d windows x %d tokens from %s (%zu tokens)\n", o.calib_windows,
                o.seq_len, o.calib_text.c_str(), calib_ids.size());
    std::printf("evaluation: %zu windows x %d tokens from %s (%zu tokens)\n", evals.size(), o.seq_len,
                o.eval_text.c_str(), eval_ids.size());
    std::fflush(stdout);

    struct Row {
      std::string method, setting;
      double ppl, quant_s, eval_s;
      llm::SequentialTimes split;
    };
    std::vector<Row> rows;
    double fp_ppl = -1;
    // FAQ's scales do not depend on the setting; AWQ's search quantizes with the setting's grid.
    llm::FaqStatistics faq_stats;
    if (o.scales == "faq") {
      const auto t0 = std::chrono::steady_clock::now();
      faq_stats = llm::faq_statistics(fp, calib, o.threads);
      std::printf("FAQ statistics: %.1f s\n", seconds_since(t0));
    }
    for (const auto& [bits, group] : o.settings) {
      // The FP model every method of this setting quantizes: scaled (the same function) or `fp`.
      llm::Model scaled;
      if (o.scales != "none") {
        const auto t0 = std::chrono::steady_clock::now();
        if (o.scales == "faq") scaled = llm::faq_scale(fp, faq_stats);
        else
          llm::with_uniform_grid(bits, o.sym, [&](const auto& grid) {
            llm::AwqOptions ao;
            ao.threads = o.threads;
            scaled = llm::awq_scale(fp, calib, grid, group, ao);
          });
        std::printf("scales %s for %s: %.1f s\n", o.scales.c_str(), label(o, bits, group).c_str(), seconds_since(t0));
        std::fflush(stdout);
      }
      const llm::Model& base = o.scales != "none" ? scaled : fp;
      for (const std::string& m : o.methods) {
        if (m == "fp" && fp_ppl >= 0) continue;  // one FP row is enough
        // FP: the model every method starts from (rotated: the same network, float rounding aside).
        const std::string setting = m == "fp" ? (o.rotate == "hadamard" ? "rot" : "-") : label(o, bits, group);
        const auto t0 = std::chrono::steady_clock::now();
        llm::SequentialTimes split;
        const llm::Model q = quantize(m == "fp" ? fp : base, calib, m, o, bits, group, [&](const llm::Progress& p) {
          if (p.stage == "q,k,v" || p.stage == "rtn") {
            std::printf("  [%s %s] layer %d/%d %s  %.1f s\n", m.c_str(), setting.c_str(), p.layer,
                        p.layers, p.stage.c_str(), p.elapsed_s);
            std::fflush(stdout);
          }
        }, split);
        const double quant_s = seconds_since(t0);
        const auto ppl = llm::perplexity(q, evals, o.threads);
        const double eval_s = seconds_since(t0) - quant_s;
        if (m == "fp") fp_ppl = ppl.ppl;
        std::printf("%-6s %-12s ppl %.3f  (quantize %.1f s, eval %.1f s)\n", m.c_str(), setting.c_str(),
                    ppl.ppl, quant_s, eval_s);
        std::fflush(stdout);
        rows.push_back({m, setting, ppl.ppl, quant_s, eval_s, split});
      }
    }
    std::ostringstream table;
    table << "| method | setting | perplexity | quantization time (s) |\n|---|---|---|---|\n";
    char buf[256];
    for (const Row& r : rows) {
      std::snprintf(buf, sizeof buf, "| %s | %s | %.3f | %.1f |\n", r.method.c_str(), r.setting.c_str(),
                    r.ppl, r.quant_s);
      table << buf;
    }
    std::printf("\n%s", table.str().c_str());
    // Where the time went (wall clock, s): forward passes of both streams, statistics, solves,
    // and the evaluation's forward passes.
    std::printf("\ntime split with %d thread(s), s:\n| method | setting | forward | statistics | solve | evaluation |\n"
                "|---|---|---|---|---|---|\n", o.threads);
    llm::SequentialTimes sum;
    double eval_sum = 0;
    for (const Row& r : rows) {
      std::printf("| %s | %s | %.1f | %.1f | %.1f | %.1f |\n", r.method.c_str(), r.setting.c_str(),
                  r.split.forward_s, r.split.stats_s, r.split.solve_s, r.eval_s);
      sum.forward_s += r.split.forward_s;
      sum.stats_s += r.split.stats_s;
      sum.solve_s += r.split.solve_s;
      eval_sum += r.eval_s;
    }
    std::printf("| all | | %.1f | %.1f | %.1f | %.1f |\n", sum.forward_s, sum.stats_s, sum.solve_s, eval_sum);
    std::printf("\ntotal %.1f s\n", seconds_since(t_start));
    if (!o.table_out.empty()) {
      std::ofstream f(o.table_out);
      f << table.str();
      if (!f) die("cannot write " + o.table_out, 1);
    }
  } catch (const std::exception& e) {
    die(e.what(), 1);
  }
  return 0;
}
