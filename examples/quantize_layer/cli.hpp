// loaq-quantize's argument handling and run, separate from main() so the tests and the fuzzer
// drive exactly what the program does. Every argument is validated before any file is read;
// usage errors and input errors are exceptions carrying the message the program prints.
#pragma once

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <set>
#include <stdexcept>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include <loaq/io/safetensors.hpp>
#include <loaq/loaq.hpp>

namespace loaq_cli {

inline const char* kUsage = R"(usage: loaq-quantize --in FILE --out FILE [options]

input (safetensors): weight [m,n] (F32/F16/BF16) and either hessian [n,n] or inputs [T,n]
  (the quantized-model input x̂; all T tokens are one sequence, H = 2·Σ x̂x̂ᵀ).
  gptaq/qep/loaq also read fp_inputs [T,n] (the FP model's input x); the residual and
  normalized objectives also read residual [T,m] (r̂) and fp_residual [T,m] (r).
output: weight (dequantized, F32 [m,n]), codes (U8 [m,n]), scales and zeros (F32 [m,groups]),
  g_idx (I32 [n]); with --emit-target also target (F32 [m,n], the continuous W*).
  Written to a temporary file in the same folder and renamed on success.

options (--flag VALUE or --flag=VALUE):
  --method rtn|gptq|gptaq|qep|loaq   (default gptq)
  --bits B            2..8 (default 4)
  --group G           columns per group, -1 = per row (default -1)
  --grid KIND         uniform (default) | signed | nf4 | e2m1 (codebooks need --bits 4)
  --sym               unsigned-symmetric uniform grid (GPTQ reference 'sym')
  --act-order         walk columns by descending diag(H)            (not rtn)
  --static-groups     group parameters from the unpermuted weight   (needs --group)
  --mse               MSE shrink search for grid parameters
  --damp D            percdamp, finite and >= 0 (default 0.01)      (not rtn)
  --block B           lazy-batch block size (default 128)           (not rtn)
  --scalar float|double  solver scalar (default float)
  --factor-double     factor in double even for a float solve (default: the solver's scalar,
                      falling back to double when the float factor is inaccurate)
  --alpha A           >= 0; gptaq default 0.25, qep 0.5, loaq 1     (gptaq, qep, loaq)
  --beta B            >= 0, residual correction weight (default 1)  (loaq residual/normalized)
  --objective linear|residual|normalized   (loaq; default residual)
  --unweighted        normalized objective with output-matching factors instead of Ĥ_N
  --rms-eps E         the next RMSNorm's epsilon (default 1e-5)     (loaq normalized)
  --emit-target       also write the continuous target W*
  --report-errors     also print the proxy error tr((W-Q)H(W-Q)ᵀ) and, when the file has the
                      token streams, the output and sub-block errors (each costs a GEMM)
  --threads N         OpenMP threads (default: the OpenMP default)
  --help              this text
)";

// Bad command line: exit status 2.
struct usage_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// Bad input data or a failed solve: exit status 1.
struct input_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Args {
  std::string in, out, method = "gptq", grid = "uniform", scalar = "float", objective = "residual";
  int bits = 4, threads = 0;
  loaq::GptqOptions opt;
  bool sym = false, unweighted = false, emit_target = false, report_errors = false, help = false;
  double alpha = 0, beta = 1, rms_eps = 1e-5;
};

namespace detail {

inline double to_number(const std::string& flag, const std::string& v) {
  double d = 0;
  try {
    std::size_t used = 0;
    d = std::stod(v, &used);
    if (used != v.size()) throw std::invalid_argument(v);
  } catch (const std::exception&) {
    throw usage_error(flag + " needs a number, got '" + v + "'");
  }
  if (!std::isfinite(d)) throw usage_error(flag + " needs a finite number, got '" + v + "'");
  return d;
}

inline int to_int(const std::string& flag, const std::string& v, int lo, int hi) {
  const double d = to_number(flag, v);
  if (d != std::floor(d)) throw usage_error(flag + " needs an integer, got '" + v + "'");
  if (d < lo || d > hi)
    throw usage_error(flag + " must be in " + std::to_string(lo) + ".." + std::to_string(hi) +
                      ", got '" + v + "'");
  return int(d);
}

inline std::string parent_dir(const std::string& path) {
  const auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

// Same file: same path, or (when both exist) the same device and inode.
inline bool same_file(const std::string& a, const std::string& b) {
  if (a == b) return true;
  struct stat sa {}, sb {};
  return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev &&
         sa.st_ino == sb.st_ino;
}

// Bytes the machine can still give this process (MemAvailable), or 0 if unknown;
// LOAQ_MEMORY_LIMIT (bytes) caps it, e.g. for the fuzzer.
inline double available_memory() {
  if (const char* cap = std::getenv("LOAQ_MEMORY_LIMIT")) return std::atof(cap);
  std::ifstream f("/proc/meminfo");
  std::string key;
  double kb = 0;
  std::string unit;
  while (f >> key >> kb >> unit)
    if (key == "MemAvailable:") return kb * 1024.0;
  const long pages = ::sysconf(_SC_AVPHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? double(pages) * double(page) : 0.0;
}

inline std::string gib(double bytes) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f GiB", bytes / double(1u << 30));
  return b;
}

}  // namespace detail

// Parses and validates every argument; throws usage_error with what is wrong.
inline Args parse(const std::vector<std::string>& argv) {
  Args a;
  if (argv.empty()) throw usage_error("no arguments\n\n" + std::string(kUsage));
  std::set<std::string> seen;
  std::map<std::string, std::string> values;
  static const std::set<std::string> switches = {
      "--sym", "--act-order", "--static-groups", "--mse", "--unweighted", "--emit-target",
      "--report-errors", "--factor-double", "--help", "-h"};
  static const std::set<std::string> valued = {
      "--in", "--out", "--method", "--bits", "--group", "--grid", "--damp", "--block", "--scalar",
      "--alpha", "--beta", "--objective", "--rms-eps", "--threads"};
  for (std::size_t i = 0; i < argv.size(); ++i) {
    std::string flag = argv[i], value;
    bool inline_value = false;
    if (const auto eq = flag.find('='); flag.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
      inline_value = true;
    }
    if (switches.count(flag)) {
      if (inline_value) throw usage_error(flag + " takes no value");
    } else if (valued.count(flag)) {
      if (!inline_value) {
        if (i + 1 >= argv.size()) throw usage_error(flag + " needs a value");
        value = argv[++i];
      }
      values[flag] = value;
    } else {
      throw usage_error("unknown option " + flag);
    }
    if (!seen.insert(flag).second) throw usage_error(flag + " given twice");
  }
  if (seen.count("--help") || seen.count("-h")) {
    a.help = true;
    return a;
  }
  auto has = [&](const char* f) { return seen.count(f) > 0; };
  auto get = [&](const char* f, const std::string& def) {
    return values.count(f) ? values.at(f) : def;
  };

  a.in = get("--in", "");
  a.out = get("--out", "");
  if (a.in.empty() || a.out.empty()) throw usage_error("--in and --out are required");
  a.method = get("--method", "gptq");
  static const std::map<std::string, double> default_alpha = {
      {"rtn", 0}, {"gptq", 0}, {"gptaq", 0.25}, {"qep", 0.5}, {"loaq", 1.0}};
  if (!default_alpha.count(a.method))
    throw usage_error("unknown --method " + a.method + " (rtn, gptq, gptaq, qep, loaq)");
  a.bits = detail::to_int("--bits", get("--bits", "4"), 2, 8);
  a.opt.group_size = detail::to_int("--group", get("--group", "-1"), -1,
                                    std::numeric_limits<int>::max());
  if (a.opt.group_size == 0) throw usage_error("--group must be -1 (per row) or >= 1");
  a.grid = get("--grid", "uniform");
  if (a.grid != "uniform" && a.grid != "signed" && a.grid != "nf4" && a.grid != "e2m1")
    throw usage_error("unknown --grid " + a.grid + " (uniform, signed, nf4, e2m1)");
  if ((a.grid == "nf4" || a.grid == "e2m1") && a.bits != 4)
    throw usage_error("--grid " + a.grid + " is a 4-bit codebook; use --bits 4");
  a.sym = has("--sym");
  if (a.sym && a.grid != "uniform")
    throw usage_error("--sym applies to the uniform grid only (--grid " + a.grid +
                      " is symmetric already)");
  a.scalar = get("--scalar", "float");
  if (a.scalar != "float" && a.scalar != "double")
    throw usage_error("--scalar must be float or double");
  a.opt.search.mse = has("--mse");
  a.opt.static_groups = has("--static-groups");
  if (a.opt.static_groups && a.opt.group_size < 0)
    throw usage_error("--static-groups needs --group G (per-row parameters have no groups)");
  a.opt.act_order = has("--act-order");
  a.opt.damping.percdamp = detail::to_number("--damp", get("--damp", "0.01"));
  if (a.opt.damping.percdamp < 0) throw usage_error("--damp must be >= 0");
  a.opt.block_size = detail::to_int("--block", get("--block", "128"), 1,
                                    std::numeric_limits<int>::max());
  if (has("--factor-double")) a.opt.factor = loaq::FactorPrecision::Double;
  if (a.method == "rtn")
    for (const char* f : {"--act-order", "--damp", "--block", "--factor-double"})
      if (has(f)) throw usage_error(std::string(f) + " does not apply to --method rtn (no solve)");

  const bool uses_alpha = a.method == "gptaq" || a.method == "qep" || a.method == "loaq";
  if (has("--alpha") && !uses_alpha)
    throw usage_error("--alpha applies to gptaq, qep and loaq, not --method " + a.method);
  a.alpha = has("--alpha") ? detail::to_number("--alpha", get("--alpha", "")) : default_alpha.at(a.method);
  if (a.alpha < 0) throw usage_error("--alpha must be >= 0");
  if (has("--objective") && a.method != "loaq")
    throw usage_error("--objective applies to --method loaq only");
  a.objective = get("--objective", "residual");
  if (a.objective != "linear" && a.objective != "residual" && a.objective != "normalized")
    throw usage_error("unknown --objective " + a.objective + " (linear, residual, normalized)");
  const bool residual_like = a.method == "loaq" && a.objective != "linear";
  if (has("--beta") && !residual_like)
    throw usage_error("--beta applies to --method loaq with --objective residual or normalized");
  a.beta = detail::to_number("--beta", get("--beta", "1"));
  if (a.beta < 0) throw usage_error("--beta must be >= 0");
  const bool normalized = a.method == "loaq" && a.objective == "normalized";
  for (const char* f : {"--unweighted", "--rms-eps"})
    if (has(f) && !normalized)
      throw usage_error(std::string(f) + " applies to --method loaq --objective normalized only");
  a.unweighted = has("--unweighted");
  a.rms_eps = detail::to_number("--rms-eps", get("--rms-eps", "1e-5"));
  if (a.rms_eps < 0) throw usage_error("--rms-eps must be >= 0");
  a.emit_target = has("--emit-target");
  a.report_errors = has("--report-errors");
  a.threads = detail::to_int("--threads", get("--threads", "0"), 0, 4096);

  // The output: never the input, and a folder we can write to (checked now, not after the solve).
  if (detail::same_file(a.in, a.out))
    throw usage_error("--out is the same file as --in; the input would be overwritten");
  const std::string dir = detail::parent_dir(a.out);
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    throw usage_error("--out: folder '" + dir + "' does not exist");
  if (::access(dir.c_str(), W_OK) != 0)
    throw usage_error("--out: cannot open for writing in folder '" + dir + "' (permission)");
  if (::stat(a.out.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
    throw usage_error("--out: '" + a.out + "' is a folder");
  return a;
}

// Everything the solve needs, read and validated once. W is read straight into the solver's
// scalar when the file's values are exact in it (so a float solve holds no double copy of W);
// an F64 weight for a float solve stays double, so magnitudes beyond float's range reach the
// solver's row rescaling instead of turning into 0 or Inf on the way in.
template <class WScalar>
struct Problem {
  loaq::Matrix<WScalar> W;
  Eigen::MatrixXd H;                    // the (plain) Hessian of x̂, accumulated or from an F64 file
  loaq::Matrix<float> H_float;          // or the file's Hessian where float holds it exactly
                                        // (F32/F16/BF16): no n × n double copy is made
  Eigen::MatrixXd Xhat, X, Rhat, R;     // token streams, when the file has them (width × T)
  const Eigen::MatrixXd* C = nullptr;   // input cross term
  const Eigen::MatrixXd* G = nullptr;   // residual cross term
  std::unique_ptr<loaq::CalibrationAccumulator<double>> acc;
};

namespace detail {

inline std::int64_t dim(const loaq::io::SafetensorsReader& st, const std::string& name, int axis) {
  const auto& s = st.info(name).shape;
  if (s.size() != 2)
    throw loaq::io::format_error("tensor '" + name + "' must be 2-D, has " +
                                 std::to_string(s.size()) + " dimensions");
  return s[std::size_t(axis)];
}

inline Eigen::MatrixXd tokens(const loaq::io::SafetensorsReader& st, const std::string& name,
                              std::int64_t T, std::int64_t width) {
  if (!st.contains(name))
    throw input_error("tensor '" + name + "' is missing from the input file; this method needs it");
  return st.matrix<double>(name, T, width).transpose();  // [T, width] → width × T
}

// Refuses a problem that would not fit in memory before anything large is allocated.
inline void check_memory(double m, double n, double T, bool streams, bool residual) {
  const double doubles = m * n * 3 + n * n * 4 + (streams ? T * n * 4 : 0) +
                         (residual ? T * m * 4 + m * n : 0);
  const double bytes = doubles * 8 + m * n * 6;  // + the float solve and its codes
  const double avail = available_memory();
  if (avail > 0 && bytes > avail)
    throw input_error("this layer needs about " + gib(bytes) + " of memory (m = " +
                      std::to_string(std::int64_t(m)) + ", n = " + std::to_string(std::int64_t(n)) +
                      (streams ? ", T = " + std::to_string(std::int64_t(T)) : "") +
                      ") but only " + gib(avail) + " is available; pass a Hessian instead of "
                      "token streams, or use a larger machine");
}

}  // namespace detail

template <class Scalar>
Problem<Scalar> load(const Args& a, const loaq::io::SafetensorsReader& st) {
  Problem<Scalar> p;
  if (!st.contains("weight"))
    throw input_error("the input file has no 'weight' tensor (have: " + st.names() + ")");
  const std::int64_t m = detail::dim(st, "weight", 0), n = detail::dim(st, "weight", 1);
  if (m < 1 || n < 1)
    throw input_error("weight is " + std::to_string(m) + "×" + std::to_string(n) +
                      "; a layer needs at least one row and one column");
  const bool needs_fp = a.method == "gptaq" || a.method == "qep" || a.method == "loaq";
  const bool needs_residual = a.method == "loaq" && a.objective != "linear";
  const bool use_hessian = !needs_fp && st.contains("hessian");
  if (a.method == "rtn" && !a.report_errors) {  // RTN needs no statistics unless asked to report
    detail::check_memory(double(m), double(n), 0, false, false);
    p.W = st.matrix<Scalar>("weight");
    return p;
  }
  if (use_hessian) {
    detail::check_memory(double(m), double(n), 0, false, false);
    p.W = st.matrix<Scalar>("weight");
    if (st.info("hessian").dtype == loaq::io::DType::F64)
      p.H = st.matrix<double>("hessian", n, n);
    else
      p.H_float = st.matrix<float>("hessian", n, n);
    return p;
  }
  if (!st.contains("inputs"))
    throw input_error(needs_fp ? "method " + a.method + " needs 'inputs' (x̂, [T," +
                                     std::to_string(n) + "])"
                               : "the input file needs 'hessian' [n,n] or 'inputs' [T,n]");
  const std::int64_t T = detail::dim(st, "inputs", 0);
  if (T == 0)
    throw input_error("'inputs' holds 0 tokens; collect calibration tokens for this layer");
  detail::check_memory(double(m), double(n), double(T), true, needs_residual);
  p.W = st.matrix<Scalar>("weight");
  p.Xhat = detail::tokens(st, "inputs", T, n);
  if (needs_fp || st.contains("fp_inputs")) p.X = detail::tokens(st, "fp_inputs", T, n);
  if (needs_residual || (st.contains("residual") && st.contains("fp_residual"))) {
    p.Rhat = detail::tokens(st, "residual", T, m);
    p.R = detail::tokens(st, "fp_residual", T, m);
  }
  p.acc = std::make_unique<loaq::CalibrationAccumulator<double>>(n, needs_residual ? m : 0);
  loaq::Report r;
  if (!needs_fp) {
    r = p.acc->add_batch(p.Xhat);
  } else if (!needs_residual) {
    r = p.acc->add_batch(p.Xhat, p.X);
  } else if (a.objective == "residual") {
    r = p.acc->add_batch(p.Xhat, p.X, p.Rhat, p.R);
  } else {
    loaq::ObjectiveStats<loaq::NormalizedOutput> ns(
        p.W.template cast<double>(),
        loaq::NormalizedOutput{a.alpha, a.beta, a.rms_eps, !a.unweighted});
    r = ns.add(p.Xhat, p.X, p.Rhat, p.R);
    if (r.ok()) *p.acc = ns.stats();
  }
  if (!r.ok()) throw input_error(std::string(loaq::to_string(r.status)) + ": " + r.message);
  p.H = p.acc->hessian();
  if (p.acc->has_cross()) p.C = &p.acc->cross();
  if (p.acc->has_residual_cross()) p.G = &p.acc->residual_cross();
  return p;
}

template <class Grid, class WScalar>
void solve_and_write(const Args& a, Problem<WScalar>& p, const Grid& grid, std::ostream& log) {
  using Scalar = typename Grid::Scalar;
  loaq::QuantizedWeight<Scalar> out;
  loaq::SolveDiagnostics diag;
  loaq::Matrix<Scalar> target;
  const Eigen::Index m = p.W.rows(), n = p.W.cols();
  // Unless W is needed afterwards, GPTQ and GPTAQ solve in its storage (one m × n copy fewer).
  const bool keep_weight =
      a.emit_target || a.report_errors || !std::is_same<WScalar, Scalar>::value;
  const auto t0 = std::chrono::steady_clock::now();
  loaq::Report r;
  if (a.method == "rtn") {
    r = loaq::rtn(p.W, grid, a.opt.group_size, a.opt.search, out);
  } else if (a.method == "gptq") {
    // H is handed over too unless the errors are reported: the solve releases it once it is
    // factored, and the result reuses its memory instead of touching n² fresh entries.
    auto solve = [&](auto& H) {
      if (a.report_errors) return loaq::gptq(p.W, H, grid, a.opt, out, &diag);
      if constexpr (std::is_same<WScalar, Scalar>::value)
        if (!keep_weight) return loaq::gptq(std::move(p.W), std::move(H), grid, a.opt, out, &diag);
      return loaq::gptq(p.W, std::move(H), grid, a.opt, out, &diag);
    };
    r = p.H_float.size() ? solve(p.H_float) : solve(p.H);
  } else if (a.method == "gptaq") {
    if constexpr (std::is_same<WScalar, Scalar>::value)
      if (!keep_weight) r = loaq::gptaq(std::move(p.W), p.H, *p.C, grid, a.opt, a.alpha, out, &diag);
    if (keep_weight) r = loaq::gptaq(p.W, p.H, *p.C, grid, a.opt, a.alpha, out, &diag);
  } else {
    const loaq::TargetWeights tw{a.alpha, a.method == "qep" ? 0.0 : a.beta};
    r = loaq::solve_target(p.W, p.H, p.C, a.method == "qep" ? nullptr : p.G, tw, grid, a.opt, out,
                           &diag, a.emit_target || a.report_errors ? &target : nullptr);
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!r.ok()) throw input_error(std::string(loaq::to_string(r.status)) + ": " + r.message);

  char line[256];
  std::snprintf(line, sizeof line, "method %s  bits %d  group %d  m %ld  n %ld  solve %.4f s\n",
                a.method.c_str(), a.bits, a.opt.group_size, long(m), long(n), secs);
  log << line;
  if (a.method != "rtn") {
    std::snprintf(line, sizeof line, "loss %.6g  (= ½·tr((W−Q)(H+λI)(W−Q)ᵀ) for gptq)\n", out.loss);
    log << line;
    if (diag.factor_attempts > 1) {
      std::snprintf(line, sizeof line, "note: Cholesky failed at pivot %ld; succeeded with percdamp %g\n",
                    long(diag.failed_pivot), diag.relative_damping);
      log << line;
    }
    if (diag.double_fallback) log << "note: the float factor was inaccurate; factored in double\n";
  }
  if (a.report_errors) {
    const Eigen::MatrixXd Wd = p.W.template cast<double>(), Qd = out.weight.template cast<double>();
    if (p.H.size() || p.H_float.size()) {
      const Eigen::MatrixXd D = Wd - Qd;
      auto trace = [&](const auto& H) { return (D * H.template cast<double>()).cwiseProduct(D).sum(); };
      const double proxy = p.H.size() ? trace(p.H) : trace(p.H_float);
      std::snprintf(line, sizeof line, "proxy_error tr((W-Q)H(W-Q)^T) %.6g\n", proxy);
      log << line;
    }
    // What the layer really outputs against the FP model, when the token streams are known.
    if (p.X.size()) {
      const double T = double(p.X.cols());
      std::snprintf(line, sizeof line, "output_error |WX - QX^|^2/T %.6g\n",
                    (Wd * p.X - Qd * p.Xhat).squaredNorm() / T);
      log << line;
      if (p.R.size()) {
        std::snprintf(line, sizeof line, "subblock_error |(R+WX) - (R^+QX^)|^2/T %.6g\n",
                      ((p.R + Wd * p.X) - (p.Rhat + Qd * p.Xhat)).squaredNorm() / T);
        log << line;
      }
    }
    if (target.size() && p.H.size()) {
      const Eigen::MatrixXd Dt = target.template cast<double>() - Qd;
      std::snprintf(line, sizeof line, "target_proxy_error tr((W*-Q)H(W*-Q)^T) %.6g\n",
                    (Dt * p.H).cwiseProduct(Dt).sum());
      log << line;
    }
  }

  // The file holds F32: a double solve whose values exceed float's range is refused, never
  // written as Inf.
  auto fits_f32 = [](const char* name, const auto& x) {
    if (x.size() && !(double(x.cwiseAbs().maxCoeff()) <= double(std::numeric_limits<float>::max())))
      throw input_error(std::string(name) + " reaches " + std::to_string(double(x.cwiseAbs().maxCoeff())) +
                        ", beyond the F32 output file's range; rescale the layer");
  };
  // (A float result fits by construction: the solvers never return a non-finite value, so the
  // pass over the m × n weight is only needed for a double solve.)
  if constexpr (!std::is_same<Scalar, float>::value) fits_f32("the quantized weight", out.weight);
  fits_f32("a scale", out.scales);
  fits_f32("a zero", out.zeros);
  if (a.emit_target && target.size()) fits_f32("the target W*", target);
  loaq::io::SafetensorsWriter w;
  // Views: the m × n outputs are turned row-major a chunk at a time as the file is written,
  // instead of into whole copies (for 4096 × 4096, 80 MB of fresh memory fewer).
  w.add_matrix_view("weight", out.weight, loaq::io::DType::F32);
  w.add_matrix_view("codes", out.codes, loaq::io::DType::U8);
  w.add_matrix("scales", out.scales, loaq::io::DType::F32);
  w.add_matrix("zeros", out.zeros, loaq::io::DType::F32);
  w.add_vector("g_idx", out.g_idx, loaq::io::DType::I32);
  if (a.emit_target) {
    if (!target.size()) target = p.W.template cast<Scalar>();  // rtn/gptq/gptaq quantize W itself
    w.add_matrix_view("target", target, loaq::io::DType::F32);
  }
  w.set_metadata("method", a.method);
  w.write(a.out);
}

template <class Scalar, int Bits, class WScalar>
void run_bits(const Args& a, Problem<WScalar>& p, std::ostream& log) {
  if (a.grid == "signed") return solve_and_write(a, p, loaq::SignedSymmetricGrid<Scalar, Bits>(), log);
  if constexpr (Bits == 4)
    if (a.grid == "nf4" || a.grid == "e2m1")
      return solve_and_write(a, p, a.grid == "nf4" ? loaq::nf4_grid<Scalar>() : loaq::e2m1_grid<Scalar>(), log);
  solve_and_write(a, p, loaq::UniformGrid<Scalar, Bits>(a.sym), log);
}

template <class Scalar, class WScalar>
void run_problem(const Args& a, Problem<WScalar>& p, std::ostream& log) {
  switch (a.bits) {
    case 2: return run_bits<Scalar, 2>(a, p, log);
    case 3: return run_bits<Scalar, 3>(a, p, log);
    case 4: return run_bits<Scalar, 4>(a, p, log);
    case 5: return run_bits<Scalar, 5>(a, p, log);
    case 6: return run_bits<Scalar, 6>(a, p, log);
    case 7: return run_bits<Scalar, 7>(a, p, log);
    default: return run_bits<Scalar, 8>(a, p, log);
  }
}

template <class Scalar>
void run_scalar(const Args& a, const loaq::io::SafetensorsReader& st, std::ostream& log) {
  const bool f64_weight =
      st.contains("weight") && st.info("weight").dtype == loaq::io::DType::F64;
  if (!std::is_same<Scalar, double>::value && f64_weight) {
    Problem<double> p = load<double>(a, st);
    return run_problem<Scalar>(a, p, log);
  }
  Problem<Scalar> p = load<Scalar>(a, st);
  run_problem<Scalar>(a, p, log);
}

// Reads, solves, writes; throws usage_error, input_error or loaq::io::format_error.
inline void run(const Args& a, std::ostream& log) {
#ifdef _OPENMP
  if (a.threads > 0) omp_set_num_threads(a.threads);
#endif
  const auto t0 = std::chrono::steady_clock::now();
  const loaq::io::SafetensorsReader st(a.in);
  if (a.scalar == "double") run_scalar<double>(a, st, log);
  else run_scalar<float>(a, st, log);
  char line[64];
  std::snprintf(line, sizeof line, "total %.4f s\n",
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  log << line;
}

// The whole program: exit status 0 (done), 1 (bad input or failed solve), 2 (bad command line).
inline int main(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  try {
    const Args a = parse(args);
    if (a.help) {
      out << kUsage;
      return 0;
    }
    run(a, out);
    return 0;
  } catch (const usage_error& e) {
    err << "loaq-quantize: " << e.what() << "\n(run with --help for usage)\n";
    return 2;
  } catch (const input_error& e) {
    err << "loaq-quantize: error: " << e.what() << "\n";
    return 1;
  } catch (const loaq::io::format_error& e) {
    err << "loaq-quantize: error: " << e.what() << "\n";
    return 1;
  } catch (const std::bad_alloc&) {
    err << "loaq-quantize: error: out of memory; the layer is too large for this machine\n";
    return 1;
  }
}

}  // namespace loaq_cli
