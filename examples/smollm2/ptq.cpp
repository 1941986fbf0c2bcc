// smollm2-ptq: quantize SmolLM2-135M layer by layer with each method and print a perplexity table.
//
//   smollm2-ptq [--model M.gguf] [--methods fp,rtn,gptq,gptaq,qep,loaq] [--settings 3:128,...]
//               [--calib-text F] [--eval-text F] [--calib-windows N] [--eval-windows E]
//               [--seq-len L] [--seed S] [--sym] [--act-order] [--alpha A] [--beta B]
//               [--loaq-objective normalized|residual] [--table-out FILE]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "paths.hpp"
#include "pipeline.hpp"
#include "tokenizer.hpp"

namespace {

struct Options {
  std::string model, calib_text, eval_text, table_out;
  std::vector<smollm2::Method> methods;
  std::vector<std::pair<int, int>> settings;  // (bits, group)
  int calib_windows = 32, eval_windows = 32, seq_len = 256;
  unsigned seed = 0;
  smollm2::QuantConfig base;
};

[[noreturn]] void die(const std::string& msg, int code = 2) {
  std::fprintf(stderr, "smollm2-ptq: %s\n", msg.c_str());
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
  o.model = smollm2::default_model_path();
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
          "usage: smollm2-ptq [--model M.gguf] [--methods fp,rtn,gptq,gptaq,qep,loaq]\n"
          "  [--settings BITS:GROUP,...  (default 3:128; group -1 = per row)]\n"
          "  [--calib-text F] [--eval-text F] [--calib-windows N (32)] [--eval-windows E (32, -1 all)]\n"
          "  [--seq-len L (256)] [--seed S (0)] [--sym] [--act-order] [--alpha A] [--beta B]\n"
          "  [--loaq-objective normalized|residual] [--table-out FILE]\n"
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
    else if (f == "--sym") o.base.sym = true;
    else if (f == "--act-order") o.base.act_order = true;
    else if (f == "--alpha") o.base.alpha = std::atof(value().c_str());
    else if (f == "--beta") o.base.beta = std::atof(value().c_str());
    else if (f == "--loaq-objective") {
      const std::string v = value();
      if (v != "normalized" && v != "residual") die("--loaq-objective is normalized or residual");
      o.base.loaq_normalized = v == "normalized";
    } else if (f == "--table-out") o.table_out = value();
    else die("unknown option " + f + " (see --help)");
  }
  try {
    for (const auto& m : split(methods, ',')) o.methods.push_back(smollm2::parse_method(m));
  } catch (const std::exception& e) {
    die(e.what());
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
  return o;
}

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) die("cannot read " + path, 1);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

// GPTQ's calibration sampler: random windows of L tokens from the tokenized text (seeded).
std::vector<std::vector<int>> random_windows(const std::vector<int>& ids, int n, int L, unsigned seed) {
  if (ids.size() < std::size_t(L) + 2) die("calibration text has fewer than seq-len tokens", 1);
  std::mt19937 rng(seed);
  std::uniform_int_distribution<std::size_t> start(0, ids.size() - std::size_t(L) - 1);
  std::vector<std::vector<int>> out;
  for (int i = 0; i < n; ++i) {
    const std::size_t b = start(rng);
    out.emplace_back(ids.begin() + std::ptrdiff_t(b), ids.begin() + std::ptrdiff_t(b) + L);
  }
  return out;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  try {
    const auto t_start = std::chrono::steady_clock::now();
    if (!smollm2::file_exists(o.model))
      die("model not found at " + o.model + "\n  fetch it with: bash scripts/fetch_model.sh"
          "\n  or pass --model PATH / set LOAQ_MODEL", 1);
    const loaq::io::GgufReader gguf(o.model);
    const smollm2::Model fp = smollm2::Model::load(gguf);
    const smollm2::Tokenizer tok = smollm2::Tokenizer::from_gguf(gguf);
    std::printf("model %s: %d layers, d %d, ff %d (%.1f s)\n", o.model.c_str(), fp.config.n_layers,
                fp.config.d_model, fp.config.d_ff, seconds_since(t_start));

    const std::vector<int> calib_ids = tok.encode(read_text(o.calib_text), false);
    const std::vector<int> eval_ids = tok.encode(read_text(o.eval_text), false);
    const auto calib = random_windows(calib_ids, o.calib_windows, o.seq_len, o.seed);
    const auto evals = smollm2::windows(eval_ids, o.seq_len, o.eval_windows);
    if (evals.empty()) die("evaluation text has fewer than seq-len tokens", 1);
    std::printf("calibration: %d windows x %d tokens from %s (%zu tokens)\n", o.calib_windows,
                o.seq_len, o.calib_text.c_str(), calib_ids.size());
    std::printf("evaluation: %zu windows x %d tokens from %s (%zu tokens)\n", evals.size(), o.seq_len,
                o.eval_text.c_str(), eval_ids.size());
    std::fflush(stdout);

    struct Row {
      std::string method, setting;
      double ppl, quant_s;
    };
    std::vector<Row> rows;
    double fp_ppl = -1;
    for (const auto& [bits, group] : o.settings) {
      for (smollm2::Method m : o.methods) {
        if (m == smollm2::Method::fp && fp_ppl >= 0) continue;  // one FP row is enough
        smollm2::QuantConfig c = o.base;
        c.method = m;
        c.bits = bits;
        c.group = group;
        const std::string setting = m == smollm2::Method::fp ? "-" : c.label();
        const auto t0 = std::chrono::steady_clock::now();
        const smollm2::Model q = smollm2::quantize_model(fp, calib, c, [&](const smollm2::Progress& p) {
          if (p.stage == "q,k,v" || p.stage == "rtn") {
            std::printf("  [%s %s] layer %d/%d %s  %.1f s\n", smollm2::method_name(m), setting.c_str(),
                        p.layer, p.layers, p.stage.c_str(), p.elapsed_s);
            std::fflush(stdout);
          }
        });
        const double quant_s = seconds_since(t0);
        const auto ppl = smollm2::perplexity(evals, [&](const std::vector<int>& w) { return q.nll(w); });
        if (m == smollm2::Method::fp) fp_ppl = ppl.ppl;
        std::printf("%-6s %-12s ppl %.3f  (quantize %.1f s, eval %.1f s)\n", smollm2::method_name(m),
                    setting.c_str(), ppl.ppl, quant_s, seconds_since(t0) - quant_s);
        std::fflush(stdout);
        rows.push_back({smollm2::method_name(m), setting, ppl.ppl, quant_s});
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
