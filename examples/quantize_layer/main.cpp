// loaq-quantize: quantize one linear layer dumped from PyTorch (safetensors in, safetensors out).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <string>

#include <loaq/io/safetensors.hpp>
#include <loaq/loaq.hpp>

namespace {

const char* kUsage = R"(usage: loaq-quantize --in FILE --out FILE [options]

input (safetensors): weight [m,n] (F32/F16/BF16) and either hessian [n,n] or inputs [T,n]
  (the quantized-model input x̂; all T tokens are one sequence, H = 2·Σ x̂x̂ᵀ).
  gptaq/qep/loaq also read fp_inputs [T,n] (the FP model's input x); the residual and
  normalized objectives also read residual [T,m] (r̂) and fp_residual [T,m] (r).
output: weight (dequantized, F32 [m,n]), codes (U8 [m,n]), scales and zeros (F32 [m,groups]),
  g_idx (I32 [n]); with --emit-target also target (F32 [m,n], the continuous W*).

options:
  --method rtn|gptq|gptaq|qep|loaq   (default gptq)
  --bits B            2..8 (default 4)
  --group G           columns per group, -1 = per row (default -1)
  --grid KIND         uniform (default) | signed | nf4 | e2m1 (codebooks need --bits 4)
  --sym               unsigned-symmetric uniform grid (GPTQ reference 'sym')
  --act-order         walk columns by descending diag(H)
  --static-groups     group parameters from the unpermuted weight
  --mse               MSE shrink search for grid parameters
  --damp D            percdamp (default 0.01)
  --block B           lazy-batch block size (default 128)
  --scalar float|double  solver scalar (default float)
  --alpha A           gptaq default 0.25, qep 0.5, loaq 1
  --beta B            residual correction weight (default 1)
  --objective linear|residual|normalized   (loaq; default residual)
  --unweighted        normalized objective with output-matching factors instead of Ĥ_N
  --rms-eps E         the next RMSNorm's epsilon (default 1e-5)
  --emit-target       also write the continuous target W*
)";

struct Args {
  std::string in, out, method = "gptq", grid = "uniform", scalar = "float", objective = "residual";
  int bits = 4;
  loaq::GptqOptions opt;
  bool sym = false, unweighted = false, emit_target = false;
  double alpha = -1, beta = 1, rms_eps = 1e-5;
};

[[noreturn]] void usage_error(const std::string& msg) {
  std::cerr << "loaq-quantize: " << msg << "\n(run with --help for usage)\n";
  std::exit(2);
}

double to_number(const std::string& flag, const std::string& v) {
  try {
    std::size_t used = 0;
    const double d = std::stod(v, &used);
    if (used != v.size()) throw std::invalid_argument(v);
    return d;
  } catch (const std::exception&) {
    usage_error(flag + " needs a number, got '" + v + "'");
  }
}
int to_int(const std::string& flag, const std::string& v) {
  const double d = to_number(flag, v);
  if (d != double(int(d))) usage_error(flag + " needs an integer, got '" + v + "'");
  return int(d);
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string f = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage_error(f + " needs a value");
      return argv[++i];
    };
    if (f == "--help" || f == "-h") { std::cout << kUsage; std::exit(0); }
    else if (f == "--in") a.in = value();
    else if (f == "--out") a.out = value();
    else if (f == "--method") a.method = value();
    else if (f == "--bits") a.bits = to_int(f, value());
    else if (f == "--group") a.opt.group_size = to_int(f, value());
    else if (f == "--grid") a.grid = value();
    else if (f == "--sym") a.sym = true;
    else if (f == "--act-order") a.opt.act_order = true;
    else if (f == "--static-groups") a.opt.static_groups = true;
    else if (f == "--mse") a.opt.search.mse = true;
    else if (f == "--damp") a.opt.damping.percdamp = to_number(f, value());
    else if (f == "--block") a.opt.block_size = to_int(f, value());
    else if (f == "--scalar") a.scalar = value();
    else if (f == "--alpha") a.alpha = to_number(f, value());
    else if (f == "--beta") a.beta = to_number(f, value());
    else if (f == "--objective") a.objective = value();
    else if (f == "--unweighted") a.unweighted = true;
    else if (f == "--rms-eps") a.rms_eps = to_number(f, value());
    else if (f == "--emit-target") a.emit_target = true;
    else usage_error("unknown option " + f);
  }
  if (a.in.empty() || a.out.empty()) usage_error("--in and --out are required");
  if (a.bits < 2 || a.bits > 8) usage_error("--bits must be in 2..8, got " + std::to_string(a.bits));
  static const std::map<std::string, double> default_alpha = {
      {"rtn", 0}, {"gptq", 0}, {"gptaq", 0.25}, {"qep", 0.5}, {"loaq", 1.0}};
  if (!default_alpha.count(a.method)) usage_error("unknown --method " + a.method);
  if (a.alpha < 0) a.alpha = default_alpha.at(a.method);
  if (a.scalar != "float" && a.scalar != "double") usage_error("--scalar must be float or double");
  if (a.grid != "uniform" && a.grid != "signed" && a.grid != "nf4" && a.grid != "e2m1")
    usage_error("unknown --grid " + a.grid);
  if ((a.grid == "nf4" || a.grid == "e2m1") && a.bits != 4)
    usage_error("--grid " + a.grid + " is a 4-bit codebook; use --bits 4");
  if (a.objective != "linear" && a.objective != "residual" && a.objective != "normalized")
    usage_error("unknown --objective " + a.objective);
  if (!(a.opt.damping.percdamp >= 0)) usage_error("--damp must be ≥ 0");
  return a;
}

[[noreturn]] void fail(const std::string& msg) {
  std::cerr << "loaq-quantize: error: " << msg << "\n";
  std::exit(1);
}

// Everything the solve needs, read and validated once.
struct Problem {
  Eigen::MatrixXd W, H;                 // H: the (plain) Hessian of x̂
  Eigen::MatrixXd Xhat, X, Rhat, R;     // token streams, when the file has them (width × T)
  const Eigen::MatrixXd* C = nullptr;   // input cross term
  const Eigen::MatrixXd* G = nullptr;   // residual cross term
  std::unique_ptr<loaq::CalibrationAccumulator<double>> acc;
};

Eigen::MatrixXd tokens(const loaq::io::SafetensorsReader& st, const std::string& name,
                       std::int64_t T, std::int64_t width) {
  if (!st.contains(name))
    fail("tensor '" + name + "' is missing from the input file; this method needs it");
  return st.matrix<double>(name, T, width).transpose();  // [T, width] → width × T
}

Problem load(const Args& a, const loaq::io::SafetensorsReader& st) {
  Problem p;
  p.W = st.matrix<double>("weight");
  const auto m = p.W.rows(), n = p.W.cols();
  const bool needs_fp = a.method == "gptaq" || a.method == "qep" || a.method == "loaq";
  const bool needs_residual = a.method == "loaq" && a.objective != "linear";
  if (!needs_fp && st.contains("hessian")) {
    p.H = st.matrix<double>("hessian", n, n);
    return p;
  }
  if (!st.contains("inputs"))
    fail(needs_fp ? "method " + a.method + " needs 'inputs' (x̂, [T," + std::to_string(n) + "])"
                  : "the input file needs 'hessian' [n,n] or 'inputs' [T,n]");
  const std::int64_t T = st.info("inputs").shape.size() == 2 ? st.info("inputs").shape[0] : -1;
  const Eigen::MatrixXd Xhat = tokens(st, "inputs", T, n);
  p.Xhat = Xhat;
  if (st.contains("fp_inputs")) p.X = tokens(st, "fp_inputs", T, n);
  if (st.contains("residual") && st.contains("fp_residual")) {
    p.Rhat = tokens(st, "residual", T, m);
    p.R = tokens(st, "fp_residual", T, m);
  }
  p.acc = std::make_unique<loaq::CalibrationAccumulator<double>>(n, needs_residual ? m : 0);
  loaq::Report r;
  if (!needs_fp) {
    r = p.acc->add_batch(Xhat);
  } else {
    const Eigen::MatrixXd X = tokens(st, "fp_inputs", T, n);
    if (!needs_residual) {
      r = p.acc->add_batch(Xhat, X);
    } else {
      const Eigen::MatrixXd Rhat = tokens(st, "residual", T, m);
      const Eigen::MatrixXd R = tokens(st, "fp_residual", T, m);
      if (a.objective == "residual") {
        r = p.acc->add_batch(Xhat, X, Rhat, R);
      } else {
        loaq::ObjectiveStats<loaq::NormalizedOutput> ns(
            p.W, loaq::NormalizedOutput{a.alpha, a.beta, a.rms_eps, !a.unweighted});
        r = ns.add(Xhat, X, Rhat, R);
        if (r.ok()) *p.acc = ns.stats();
      }
    }
  }
  if (!r.ok()) fail(std::string(loaq::to_string(r.status)) + ": " + r.message);
  p.H = p.acc->hessian();
  if (p.acc->has_cross()) p.C = &p.acc->cross();
  if (p.acc->has_residual_cross()) p.G = &p.acc->residual_cross();
  return p;
}

template <class Grid>
int run(const Args& a, const Problem& p) {
  using Scalar = typename Grid::Scalar;
  Grid grid = [&] {
    if constexpr (std::is_same_v<Grid, loaq::UniformGrid<Scalar, Grid::bits>>) return Grid(a.sym);
    else if constexpr (std::is_same_v<Grid, loaq::SignedSymmetricGrid<Scalar, Grid::bits>>) return Grid();
    else return a.grid == "nf4" ? loaq::nf4_grid<Scalar>() : loaq::e2m1_grid<Scalar>();
  }();
  const Eigen::Matrix<Scalar, -1, -1> W = p.W.cast<Scalar>();
  loaq::QuantizedWeight<Scalar> out;
  loaq::SolveDiagnostics diag;
  loaq::Matrix<Scalar> target;
  const auto t0 = std::chrono::steady_clock::now();
  loaq::Report r;
  if (a.method == "rtn") {
    r = loaq::rtn(W, grid, a.opt.group_size, a.opt.search, out);
  } else if (a.method == "gptq") {
    r = loaq::gptq(W, p.H, grid, a.opt, out, &diag);
  } else if (a.method == "gptaq") {
    r = loaq::gptaq(W, p.H, *p.C, grid, a.opt, a.alpha, out, &diag);
  } else {
    const loaq::TargetWeights tw{a.alpha, a.method == "qep" ? 0.0 : a.beta};
    r = loaq::solve_target(W, p.H, p.C, a.method == "qep" ? nullptr : p.G, tw, grid, a.opt, out,
                           &diag, &target);
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!r.ok()) fail(std::string(loaq::to_string(r.status)) + ": " + r.message);

  const Eigen::MatrixXd D = p.W - out.weight.template cast<double>();
  const double proxy = (D * p.H).cwiseProduct(D).sum();
  std::printf("method %s  bits %d  group %d  m %ld  n %ld  time %.4f s\n", a.method.c_str(), a.bits,
              a.opt.group_size, long(W.rows()), long(W.cols()), secs);
  if (a.method != "rtn") {
    std::printf("loss %.6g\n", out.loss);
    if (diag.factor_attempts > 1)
      std::printf("note: Cholesky failed at pivot %ld; succeeded with percdamp %g\n",
                  long(diag.failed_pivot), diag.relative_damping);
  }
  std::printf("proxy_error tr((W-Q)H(W-Q)^T) %.6g\n", proxy);
  // What the layer really outputs against the FP model, when the token streams are known.
  if (p.X.size()) {
    const Eigen::MatrixXd Qd = out.weight.template cast<double>();
    const double T = double(p.X.cols());
    std::printf("output_error |WX - QX^|^2/T %.6g\n", (p.W * p.X - Qd * p.Xhat).squaredNorm() / T);
    if (p.R.size())
      std::printf("subblock_error |(R+WX) - (R^+QX^)|^2/T %.6g\n",
                  ((p.R + p.W * p.X) - (p.Rhat + Qd * p.Xhat)).squaredNorm() / T);
  }
  if (target.size()) {
    const Eigen::MatrixXd Dt = target.template cast<double>() - out.weight.template cast<double>();
    std::printf("target_proxy_error tr((W*-Q)H(W*-Q)^T) %.6g\n", (Dt * p.H).cwiseProduct(Dt).sum());
  }

  loaq::io::SafetensorsWriter w;
  w.add_matrix("weight", out.weight, loaq::io::DType::F32);
  w.add_matrix("codes", out.codes.template cast<int>(), loaq::io::DType::U8);
  w.add_matrix("scales", out.scales, loaq::io::DType::F32);
  w.add_matrix("zeros", out.zeros, loaq::io::DType::F32);
  w.add_vector("g_idx", out.g_idx, loaq::io::DType::I32);
  if (a.emit_target) {
    if (!target.size()) target = W;  // rtn/gptq/gptaq quantize W itself
    w.add_matrix("target", target, loaq::io::DType::F32);
  }
  w.set_metadata("method", a.method);
  w.write(a.out);
  return 0;
}

template <class Scalar, int Bits>
int run_bits(const Args& a, const Problem& p) {
  if (a.grid == "signed") return run<loaq::SignedSymmetricGrid<Scalar, Bits>>(a, p);
  if constexpr (Bits == 4)
    if (a.grid == "nf4" || a.grid == "e2m1") return run<loaq::CodebookGrid<Scalar, 4>>(a, p);
  return run<loaq::UniformGrid<Scalar, Bits>>(a, p);
}

template <class Scalar>
int run_scalar(const Args& a, const Problem& p) {
  switch (a.bits) {
    case 2: return run_bits<Scalar, 2>(a, p);
    case 3: return run_bits<Scalar, 3>(a, p);
    case 4: return run_bits<Scalar, 4>(a, p);
    case 5: return run_bits<Scalar, 5>(a, p);
    case 6: return run_bits<Scalar, 6>(a, p);
    case 7: return run_bits<Scalar, 7>(a, p);
    default: return run_bits<Scalar, 8>(a, p);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  try {
    const loaq::io::SafetensorsReader st(a.in);
    const Problem p = load(a, st);
    return a.scalar == "double" ? run_scalar<double>(a, p) : run_scalar<float>(a, p);
  } catch (const loaq::io::format_error& e) {
    fail(e.what());
  } catch (const std::exception& e) {
    fail(std::string("unexpected: ") + e.what());
  }
}
