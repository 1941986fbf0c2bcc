// loaq-ppl-table: quantize a LLaMA-family GGUF model (default SmolLM2-135M) layer by layer with
// each method and print a perplexity table.
//
//   loaq-ppl-table [--model M.gguf] [--methods fp,rtn,gptq,gptaq,qep,loaq] [--settings 3:128,...]
//               [--calib-text F] [--eval-text F] [--calib-windows N] [--eval-windows E]
//               [--seq-len L] [--seed S] [--sym] [--act-order] [--alpha A] [--beta B]
//               [--loaq-objective normalized|residual] [--table-out FILE]
//               [--act-bits A] [--act-clip R] [--act-sym] [--act-group G] [--rotate none|hadamard]
//               [--scales none|awq|faq] [--gguf-type q4_0|q4_1|q8_0|f32] [--export-gguf FILE]
//               [--export-reference FILE] [--select-hparams] [--heldout-windows V]
#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iterator>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <loaq/llm/decoder.hpp>
#include <loaq/llm/gguf_export.hpp>
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

// --select-hparams: the held-out tail of the calibration text and the candidates per method.
// Each grid brackets the method's published default (GPTAQ 0.25, QEP 0.5, LoaQ α = β = 1).
constexpr double kHeldoutFraction = 0.1;
struct Hparams {
  double alpha, beta;
};
// --select-grid "A[:B],...": α and (LoaQ's) β of each candidate; β defaults to 1.
std::vector<Hparams> parse_grid(const std::string& text) {
  std::vector<Hparams> out;
  std::stringstream ss(text);
  for (std::string item; std::getline(ss, item, ',');) {
    const std::size_t colon = item.find(':');
    char* end = nullptr;
    Hparams h{std::strtod(item.c_str(), &end), 1};
    bool ok = end != item.c_str() && (colon == std::string::npos ? *end == 0 : end == item.c_str() + colon);
    if (ok && colon != std::string::npos) {
      const char* b = item.c_str() + colon + 1;
      h.beta = std::strtod(b, &end);
      ok = end != b && *end == 0;
    }
    if (!ok || !std::isfinite(h.alpha) || !std::isfinite(h.beta) || h.alpha < 0 || h.beta < 0) return {};
    out.push_back(h);
  }
  return out;
}
std::vector<Hparams> hparam_grid(const std::string& method, const std::string& select_grid) {
  if (method != "gptaq" && method != "qep" && method != "loaq") return {};
  if (!select_grid.empty()) return parse_grid(select_grid);
  if (method == "gptaq") return {{0.125, 1}, {0.25, 1}, {0.5, 1}, {1, 1}};
  if (method == "qep") return {{0.25, 1}, {0.5, 1}, {0.75, 1}, {1, 1}};
  if (method == "loaq")
    return {{0.5, 0.25}, {0.5, 0.5}, {0.5, 1}, {1, 0.25}, {1, 0.5}, {1, 1}};
  return {};
}
// The hyper-parameters a run uses when none are given. The default ones were chosen by
// --select-hparams on held-out SmolLM2 calibration text at W3 g128 with the default float
// products (README, "Choosing them without the evaluation text"); --paper-hparams gives the
// published ones.
Hparams default_hparams(const std::string& method, bool paper) {
  if (method == "gptaq") return {paper ? 0.25 : 0.5, 1};
  if (method == "qep") return {0.5, 1};  // selected and published alike
  if (method == "loaq") return paper ? Hparams{1, 1} : Hparams{0.5, 0.25};
  return {0, 0};
}
// The methods that take alpha (and beta): rows and messages name the values they ran with.
bool has_hparams(const std::string& method) {
  return method == "gptaq" || method == "qep" || method == "loaq";
}
std::string hparam_text(const std::string& method, const Hparams& h) {
  char buf[64];
  if (method == "loaq") std::snprintf(buf, sizeof buf, "alpha %g, beta %g", h.alpha, h.beta);
  else std::snprintf(buf, sizeof buf, "alpha %g", h.alpha);
  return buf;
}

struct Options {
  std::string model, calib_text, eval_text, table_out;
  std::vector<std::string> methods;
  std::vector<std::pair<int, int>> settings;  // (bits, group)
  int calib_windows = 32, eval_windows = 32, seq_len = 256;
  int threads = loaq::llm::detail::hardware_threads();  // results do not depend on it
  unsigned seed = 0;
  // The L1 size Eigen's product blocking plans with (pin_eigen_blocking): fixed, so results are
  // the same on any CPU; another value changes only the rounding order of long sums.
  int blocking_l1_kib = 32;
  // Each window's statistics products in float, summed over windows in double (the reference
  // GPTQ accumulates its Hessian in float32 throughout): about 1.6x faster than double products,
  // and the seed study measured the difference as rounding noise. --stats-products double.
  bool float_products = true;
  bool sym = false, act_order = false;
  bool mse = false;  // GPTQ's MSE shrink search for every group's parameters (RTN's too)
  double alpha = -1;            // < 0: default_hparams
  double beta = -1;             // LoaQ residual-drift weight; < 0: default_hparams
  bool paper_hparams = false;   // defaults: the published values instead of the selected ones
  bool loaq_normalized = true;  // LoaQ output linears: normalized (true) or residual objective
  loaq::ActivationQuantSpec act;  // bits 16: weight-only
  std::string rotate;             // none | hadamard; empty: hadamard when activations are quantized
  std::string scales = "none";    // none | awq | faq: equivalent channel scaling before every method
  // llama.cpp block format: q4_0 | q4_1 | q8_0 put every method on that format's grid (the
  // setting follows: 4:32 or 8:32); f32 only names the format of an FP export. Empty: uniform.
  std::string gguf_type;
  std::string export_gguf;       // write the one quantized model (one method, one setting) here
  std::string export_reference;  // and the same model with every tensor in F32 here
  // Choose GPTAQ's, QEP's and LoaQ's α (and LoaQ's β) on held-out calibration text: the last
  // kHeldoutFraction of the calibration tokens is never used for statistics; each candidate is
  // scored by its perplexity on heldout_windows windows of it.
  bool select_hparams = false;
  int heldout_windows = 16;
  std::string select_grid;  // "A[:B],..." replaces every method's candidates (empty: hparam_grid)
  bool block_grid() const { return gguf_type == "q4_0" || gguf_type == "q4_1" || gguf_type == "q8_0"; }
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
  bool settings_given = false, alpha_given = false, beta_given = false;
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
          "  [--seq-len L (256)] [--seed S (0)] [--sym] [--act-order] [--mse] [--alpha A] [--beta B]\n"
          "   (defaults chosen by --select-hparams on held-out SmolLM2 calibration text: GPTAQ alpha 0.5,\n"
          "   QEP alpha 0.5, LoaQ alpha 0.5, beta 0.25) [--paper-hparams (GPTAQ 0.25, QEP 0.5, LoaQ 1, 1)]\n"
          "  [--loaq-objective normalized|residual] [--table-out FILE] [--threads N (all cores)]\n"
          "  [--act-bits A (16 = weight-only)] [--act-clip R (0.9)] [--act-sym] [--act-group G (-1 per token)]\n"
          "  [--rotate none|hadamard (hadamard when A < 16)]\n"
          "  [--scales none|awq|faq (channel scales, after the rotation, before every method)]\n"
          "  [--gguf-type q4_0|q4_1|q8_0 (llama.cpp's block grid for every method; sets the setting)|f32]\n"
          "  [--export-gguf FILE (one method: the quantized model for llama.cpp; fp with f32: the FP model)]\n"
          "  [--export-reference FILE (with --export-gguf: the same weights, every tensor F32)]\n"
          "  [--select-hparams (gptaq/qep/loaq: alpha, beta chosen by perplexity on the held-out last\n"
          "   10%% of the calibration text, never used for statistics)] [--heldout-windows V (16)]\n"
          "  [--select-grid A[:B],... (the candidates instead of each method's built-in grid)]\n"
          "  [--blocking-l1 KIB (32: the L1 size Eigen's blocking assumes on every CPU; another value\n"
          "   changes only the rounding order of long sums, to see what numerical noise alone moves)]\n"
          "  [--stats-products float|double (float, the default: each window's statistics products in\n"
          "   float, summed in double over windows; double is about 1.6x slower)]\n"
          "Fetch the model first with scripts/fetch_model.sh (or pass --model / set LOAQ_MODEL).\n");
      std::exit(0);
    } else if (f == "--model") o.model = value();
    else if (f == "--methods") methods = value();
    else if (f == "--settings") {
      settings = value();
      settings_given = true;
    }
    else if (f == "--calib-text") o.calib_text = value();
    else if (f == "--eval-text") o.eval_text = value();
    else if (f == "--calib-windows") o.calib_windows = to_int(f, value());
    else if (f == "--eval-windows") o.eval_windows = to_int(f, value());
    else if (f == "--seq-len") o.seq_len = to_int(f, value());
    else if (f == "--seed") o.seed = unsigned(to_int(f, value()));
    else if (f == "--sym") o.sym = true;
    else if (f == "--act-order") o.act_order = true;
    else if (f == "--mse") o.mse = true;
    else if (f == "--alpha") o.alpha = std::atof(value().c_str()), alpha_given = true;
    else if (f == "--beta") o.beta = std::atof(value().c_str()), beta_given = true;
    else if (f == "--paper-hparams") o.paper_hparams = true;
    else if (f == "--loaq-objective") {
      const std::string v = value();
      if (v != "normalized" && v != "residual") die("--loaq-objective is normalized or residual");
      o.loaq_normalized = v == "normalized";
    } else if (f == "--table-out") o.table_out = value();
    else if (f == "--select-hparams") o.select_hparams = true;
    else if (f == "--heldout-windows") o.heldout_windows = to_int(f, value());
    else if (f == "--select-grid") o.select_grid = value();
    else if (f == "--threads") o.threads = to_int(f, value());
    else if (f == "--blocking-l1") o.blocking_l1_kib = to_int(f, value());
    else if (f == "--stats-products") {
      const std::string v = value();
      if (v != "double" && v != "float") die("--stats-products is double or float");
      o.float_products = v == "float";
    }
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
    } else if (f == "--gguf-type") {
      o.gguf_type = value();
      if (!o.block_grid() && o.gguf_type != "f32") die("--gguf-type is q4_0, q4_1, q8_0 or f32");
    } else if (f == "--export-gguf") o.export_gguf = value();
    else if (f == "--export-reference") o.export_reference = value();
    else die("unknown option " + f + " (see --help)");
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
  if (o.block_grid()) {  // the format fixes bits and block
    if (settings_given) die("--gguf-type " + o.gguf_type + " sets the setting; drop --settings");
    o.settings = {{o.gguf_type == "q8_0" ? 8 : 4, 32}};
  }
  if (!o.export_gguf.empty()) {
    if (o.gguf_type.empty()) die("--export-gguf needs --gguf-type");
    if (o.methods.size() != 1 || o.settings.size() != 1) die("--export-gguf writes one model: give one method");
    if ((o.methods[0] == "fp") != (o.gguf_type == "f32"))
      die("--export-gguf: the fp model is written as f32, a quantized one as q4_0, q4_1 or q8_0");
  }
  if (!o.export_reference.empty() && o.export_gguf.empty()) die("--export-reference needs --export-gguf");
  if (o.gguf_type == "f32" && o.export_gguf.empty()) die("--gguf-type f32 only names an FP export's format");
  if (o.methods.empty() || o.settings.empty()) die("nothing to run");
  if (o.seq_len < 2 || o.calib_windows < 1 || o.eval_windows == 0 || o.eval_windows < -1)
    die("--seq-len ≥ 2, --calib-windows ≥ 1, --eval-windows ≥ 1 or -1");
  if (o.threads < 1) die("--threads must be at least 1");
  if (o.blocking_l1_kib < 8 || o.blocking_l1_kib > 1024) die("--blocking-l1 is in 8..1024 KiB");
  if (o.select_hparams && (alpha_given || beta_given || o.paper_hparams))
    die("--select-hparams chooses alpha and beta; drop --alpha/--beta/--paper-hparams");
  if ((alpha_given && !(o.alpha >= 0 && std::isfinite(o.alpha))) || (beta_given && !(o.beta >= 0 && std::isfinite(o.beta))))
    die("--alpha and --beta must be finite numbers >= 0");
  if (o.heldout_windows < 1) die("--heldout-windows must be at least 1");
  if (!o.select_grid.empty() && !o.select_hparams) die("--select-grid needs --select-hparams");
  if (!o.select_grid.empty() && parse_grid(o.select_grid).empty())
    die("--select-grid takes ALPHA[:BETA],... with finite values >= 0, got '" + o.select_grid + "'");
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
  std::string s;
  if (o.block_grid()) {
    for (char c : o.gguf_type) s += char(std::toupper(static_cast<unsigned char>(c)));
  } else {
    s = "W" + std::to_string(bits);
    if (o.act.enabled()) s += "A" + std::to_string(o.act.bits);
    s += group > 0 ? " g" + std::to_string(group) : " per-row";
    if (o.sym) s += " sym";
  }
  if (o.act_order) s += " act";
  if (o.mse) s += " mse";
  if (o.rotate == "hadamard") s += " rot";
  if (o.scales != "none") s += " " + o.scales;
  return s;
}

template <class G, class = void>
struct is_ggml_grid : std::false_type {};
template <class G>
struct is_ggml_grid<G, std::void_t<decltype(G::ggml_type)>> : std::true_type {};

// Runs f(grid): the llama.cpp block grid of --gguf-type, else the uniform grid of the setting.
template <class F>
void with_grid(const Options& o, int bits, F&& f) {
  if (o.gguf_type == "q4_0") return f(loaq::GgmlQ4_0Grid<float>());
  if (o.gguf_type == "q4_1") return f(loaq::GgmlQ4_1Grid<float>());
  if (o.gguf_type == "q8_0") return f(loaq::GgmlQ8_0Grid<float>());
  llm::with_uniform_grid(bits, o.sym, std::forward<F>(f));
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Quantizes `fp` with one method: the name picks a policy type, the pipeline does the rest.
// What method m runs with: --alpha/--beta where given, else its default.
Hparams hparams_of(const Options& o, const std::string& m) {
  const Hparams d = default_hparams(m, o.paper_hparams);
  return {o.alpha >= 0 ? o.alpha : d.alpha, o.beta >= 0 ? o.beta : d.beta};
}

llm::Model quantize(const llm::Model& fp, const std::vector<std::vector<int>>& calib,
                    const std::string& m, const Options& o, int bits, int group,
                    const std::function<void(const llm::Progress&)>& progress, llm::SequentialTimes& times,
                    llm::PackedLinears* packed = nullptr) {
  if (m == "fp") return fp;
  const Hparams h = hparams_of(o, m);
  llm::SequentialOptions so;
  so.solver.block_size = 128;
  so.solver.group_size = group;
  so.solver.act_order = o.act_order;
  so.solver.static_groups = o.act_order && o.block_grid();  // blocks are groups in column order
  so.solver.search.mse = o.mse;
  so.solver.damping.percdamp = 0.01;
  // The precise path (factor, LoaQ targets and GPTAQ's P in double): the solves are a small part
  // of this program's time, and the README's tables were measured with it.
  so.solver.factor = loaq::FactorPrecision::Double;
  so.progress = progress;
  so.threads = o.threads;
  so.activations = o.act;
  so.float_products = o.float_products;
  llm::Model q;
  with_grid(o, bits, [&](const auto& grid) {
    using Grid = std::decay_t<decltype(grid)>;
    std::function<void(int, llm::Linear, const loaq::QuantizedWeight<float>&)> on_solved;
    if constexpr (is_ggml_grid<Grid>::value) {
      if (packed) {
        packed->assign(fp.layers.size(), {});
        on_solved = [&, packed](int l, llm::Linear k, const loaq::QuantizedWeight<float>& qw) {
          (*packed)[std::size_t(l)][std::size_t(k)] = llm::pack_linear(fp.config, k, grid, qw);
        };
      }
    }
    so.on_solved = on_solved;
    const auto t0 = std::chrono::steady_clock::now();
    if (m == "rtn") {
      q = llm::quantize_rtn(fp, grid, group, so.solver.search, progress, on_solved);
      q.config.act = o.act;
      times.solve_s += seconds_since(t0);
    } else if (m == "gptq") q = llm::quantize_sequential(fp, calib, llm::Gptq{}, grid, so, &times);
    else if (m == "gptaq") q = llm::quantize_sequential(fp, calib, llm::Gptaq{h.alpha}, grid, so, &times);
    else if (m == "qep") q = llm::quantize_sequential(fp, calib, llm::qep(h.alpha), grid, so, &times);
    else if (o.loaq_normalized)
      q = llm::quantize_sequential(fp, calib, llm::loaq_normalized(h.alpha, h.beta), grid, so, &times);
    else
      q = llm::quantize_sequential(fp, calib, llm::loaq_residual(h.alpha, h.beta), grid, so, &times);
  });
  return q;
}


std::string file_name(const std::string& path) { return path.substr(path.find_last_of('/') + 1); }

// --export-gguf (and --export-reference): the model just evaluated, with a record of how it was
// made; llama.cpp's ftype: 0 all F32, 2 Q4_0, 3 Q4_1, 7 Q8_0.
void export_model(const loaq::io::GgufReader& source, const llm::Model& q, const llm::PackedLinears& packed,
                  const Options& o, const std::string& method, const std::string& setting, double ppl) {
  using loaq::io::GgufValue;
  const auto t0 = std::chrono::steady_clock::now();
  llm::GgufExportOptions eo;
  eo.file_type = o.gguf_type == "q4_0" ? 2 : o.gguf_type == "q4_1" ? 3 : o.gguf_type == "q8_0" ? 7 : 0;
  eo.all_f32 = o.gguf_type == "f32";
  char buf[512];
  std::snprintf(buf, sizeof buf, "%d windows x %d tokens of %s, seed %u", o.calib_windows, o.seq_len,
                file_name(o.calib_text).c_str(), o.seed);
  std::string how = method == "fp" ? "none" : buf;
  std::snprintf(buf, sizeof buf, "%.3f on %d windows x %d tokens of %s", ppl, o.eval_windows, o.seq_len,
                file_name(o.eval_text).c_str());
  auto text = [](const std::string& v) { return GgufValue::string_value(v); };
  eo.metadata = {{"loaq.version", text(std::to_string(LOAQ_VERSION_MAJOR) + "." + std::to_string(LOAQ_VERSION_MINOR) +
                                       "." + std::to_string(LOAQ_VERSION_PATCH))},
                 {"loaq.quantization.method", text(method)},
                 {"loaq.quantization.format", text(setting == "-" ? "F32" : setting)},
                 {"loaq.quantization.calibration", text(how)},
                 {"loaq.quantization.perplexity", text(buf)}};
  if (method != "fp" && method != "rtn") {
    std::snprintf(buf, sizeof buf, "%s, act-order %s, scales %s, percdamp 0.01, block 128",
                  method == "gptq" ? "-" : hparam_text(method, hparams_of(o, method)).c_str(),
                  o.act_order ? "on" : "off", o.scales.c_str());
    eo.metadata.emplace_back("loaq.quantization.options", text(buf));
  }
  llm::export_gguf(source, q, packed, eo, o.export_gguf);
  std::printf("wrote %s (%s, %.1f s)\n", o.export_gguf.c_str(), o.gguf_type.c_str(), seconds_since(t0));
  if (!o.export_reference.empty()) {
    eo.all_f32 = true;
    eo.file_type = 0;
    llm::export_gguf(source, q, {}, eo, o.export_reference);
    std::printf("wrote %s (every tensor F32)\n", o.export_reference.c_str());
  }
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  loaq::pin_eigen_blocking(std::ptrdiff_t(o.blocking_l1_kib) << 10);  // the same results on any CPU
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
    // With --select-hparams the last kHeldoutFraction of the calibration tokens is held out:
    // statistics come from the rest, candidates are scored on it, the evaluation text is read
    // only for the chosen model.
    const std::size_t stats_tokens =
        o.select_hparams ? std::size_t(double(calib_ids.size()) * (1 - kHeldoutFraction)) : calib_ids.size();
    const std::vector<int> stats_ids(calib_ids.begin(), calib_ids.begin() + std::ptrdiff_t(stats_tokens));
    const std::vector<int> heldout_ids(calib_ids.begin() + std::ptrdiff_t(stats_tokens), calib_ids.end());
    if (stats_ids.size() < std::size_t(o.seq_len) + 2) die("calibration text has fewer than seq-len tokens", 1);
    const auto calib = llm::random_windows(stats_ids, o.calib_windows, o.seq_len, o.seed);
    const auto heldout = o.select_hparams ? llm::windows(heldout_ids, o.seq_len, o.heldout_windows)
                                          : std::vector<std::vector<int>>{};
    if (o.select_hparams && int(heldout.size()) < o.heldout_windows)
      die("--heldout-windows " + std::to_string(o.heldout_windows) + ": the held-out tenth of the "
          "calibration text has only " + std::to_string(heldout.size()) + " windows of seq-len tokens", 1);
    const auto evals = llm::windows(eval_ids, o.seq_len, o.eval_windows);
    if (evals.empty()) die("evaluation text has fewer than seq-len tokens", 1);
    std::printf("calibration: %d windows x %d tokens from %s (%zu tokens)\n", o.calib_windows,
                o.seq_len, o.calib_text.c_str(), stats_ids.size());
    if (o.select_hparams)
      std::printf("held out for --select-hparams: %zu windows x %d tokens of the last %zu calibration tokens\n",
                  heldout.size(), o.seq_len, heldout_ids.size());
    std::printf("evaluation: %zu windows x %d tokens from %s (%zu tokens)\n", evals.size(), o.seq_len,
                o.eval_text.c_str(), eval_ids.size());
    std::printf(o.float_products
                    ? "statistics: each window's products in float, summed in double (--stats-products float)\n"
                    : "statistics: each window's products in double (--stats-products double)\n");
    if (o.blocking_l1_kib != 32)
      std::printf("rounding: Eigen's products blocked for a %d KiB L1 (--blocking-l1; 32 by default)\n",
                  o.blocking_l1_kib);
    if (!o.select_hparams)
      for (const std::string& m : o.methods)
        if (has_hparams(m))
          std::printf("%s: %s (%s)\n", m.c_str(), hparam_text(m, hparams_of(o, m)).c_str(),
                      o.alpha >= 0 || o.beta >= 0 ? "given" : o.paper_hparams ? "published defaults" : "selected defaults");
    std::fflush(stdout);

    struct Row {
      std::string method, setting;  // method with its chosen hyper-parameters under --select-hparams
      double ppl, quant_s, eval_s;
      llm::SequentialTimes split;
    };
    std::vector<Row> rows;
    struct Selection {
      std::string method, setting, hparams;
      double heldout_ppl;
      bool chosen;
    };
    std::vector<Selection> selections;
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
          with_grid(o, bits, [&](const auto& grid) {
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
        auto run = [&](const Options& oc, llm::SequentialTimes& split, llm::PackedLinears* packed) {
          return quantize(m == "fp" ? fp : base, calib, m, oc, bits, group, [&](const llm::Progress& p) {
            if (p.stage == "q,k,v" || p.stage == "rtn") {
              std::printf("  [%s %s] layer %d/%d %s  %.1f s\n", m.c_str(), setting.c_str(), p.layer,
                          p.layers, p.stage.c_str(), p.elapsed_s);
              std::fflush(stdout);
            }
          }, split, packed);
        };
        llm::SequentialTimes split;
        llm::PackedLinears packed;
        llm::PackedLinears* want_packed = o.export_gguf.empty() ? nullptr : &packed;
        // Rows name the hyper-parameters they ran with, so tables of different runs stay comparable;
        // LoaQ with the residual objective is a method of its own (scripts/plot_ppl.py keeps it apart).
        const std::string method_name = m == "loaq" && !o.loaq_normalized ? "loaq-residual" : m;
        std::string method_label =
            has_hparams(m) ? method_name + " (" + hparam_text(m, hparams_of(o, m)) + ")" : method_name;
        Options used = o;  // the options of the model that is evaluated (the chosen candidate's)
        double quant_s = 0;
        llm::Model q;
        const std::vector<Hparams> grid = o.select_hparams ? hparam_grid(m, o.select_grid) : std::vector<Hparams>{};
        if (grid.empty()) {
          const auto t0 = std::chrono::steady_clock::now();
          q = run(o, split, want_packed);
          quant_s = seconds_since(t0);
        } else {  // every candidate on the held-out calibration windows; keep the best
          double best = 0;
          std::size_t chosen = 0;
          for (std::size_t i = 0; i < grid.size(); ++i) {
            Options oc = o;
            oc.alpha = grid[i].alpha, oc.beta = grid[i].beta;
            llm::SequentialTimes split_c;
            llm::PackedLinears packed_c;
            const auto t0 = std::chrono::steady_clock::now();
            llm::Model qc = run(oc, split_c, want_packed ? &packed_c : nullptr);
            const double quant_c = seconds_since(t0);
            const double held = llm::perplexity(qc, heldout, o.threads).ppl;
            std::printf("select %-6s %-12s %-20s held-out calibration ppl %.3f\n", m.c_str(),
                        setting.c_str(), hparam_text(m, grid[i]).c_str(), held);
            std::fflush(stdout);
            selections.push_back({m, setting, hparam_text(m, grid[i]), held, false});
            if (i == 0 || held < best) {
              best = held, chosen = i, used = oc, q = std::move(qc), split = split_c, quant_s = quant_c;
              packed = std::move(packed_c);
            }
          }
          selections[selections.size() - grid.size() + chosen].chosen = true;
          method_label = method_name + " (" + hparam_text(m, grid[chosen]) + ")";
        }
        const auto t_eval = std::chrono::steady_clock::now();
        const auto ppl = llm::perplexity(q, evals, o.threads);
        const double eval_s = seconds_since(t_eval);
        if (m == "fp") fp_ppl = ppl.ppl;
        std::printf("%-6s %-12s ppl %.3f  (quantize %.1f s, eval %.1f s)\n", method_label.c_str(),
                    setting.c_str(), ppl.ppl, quant_s, eval_s);
        std::fflush(stdout);
        rows.push_back({method_label, setting, ppl.ppl, quant_s, eval_s, split});
        if (!o.export_gguf.empty()) export_model(gguf, q, packed, used, m, setting, ppl.ppl);
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
    if (!selections.empty()) {
      table << "\nhyper-parameters chosen on held-out calibration text (--select-hparams):\n"
               "| method | setting | candidate | held-out calibration perplexity | chosen |\n|---|---|---|---|---|\n";
      for (const Selection& c : selections) {
        std::snprintf(buf, sizeof buf, "| %s | %s | %s | %.3f | %s |\n", c.method.c_str(), c.setting.c_str(),
                      c.hparams.c_str(), c.heldout_ppl, c.chosen ? "yes" : "");
        table << buf;
      }
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
