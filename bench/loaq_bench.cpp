// loaq speed benchmark (issue 5): every stage of a per-layer solve on LLM shapes, as GFLOP/s and
// as a fraction of this machine's own GEMM / SYRK rate measured in the same run.
//
//   loaq_bench [--quick | --full] [--threads N] [--scalar float|double|both] [--export DIR]
//              [--only accumulate,factor,loop,gptq,mse,gptaq,loaq,memory,hadamard,attention,
//                      correction]
//              [--shape NAME|ROWSxCOLS] [--reps N]
//
// --quick: SmolLM2-135M shapes (576×576, 192×576, 1536×576, 576×1536); --full adds LLaMA-7B
// shapes (4096×4096, 11008×4096, 4096×11008). Shapes are m × n = rows × columns of W.
// --shape runs one of them, or any other m × n given as ROWSxCOLS (named layer_ROWSxCOLS).
// --reps N times each stage of a shape N times (best counts; default 7, or 2 on the 7B shapes):
// the SmolLM2 stages take milliseconds, and on a noisy machine 7 runs may not find a quiet one.
// --export DIR writes DIR/<shape>.safetensors (weight, hessian, loaq's float result and its time)
// for bench/reference_gptq.py, the side-by-side against the PyTorch reference.
// The hadamard stage times the fast rotation Q·X against a float GEMM with the dense Q (quick:
// n ∈ {576, 1536, 4096}, T = 256; full adds 4864, 11008, the fallback order 2752 and T = 2048).
// The attention stage times the model module's causal attention (query blocks) against the dense
// formula it replaced (all T × T scores formed), SmolLM2's and Qwen2.5-0.5B's heads, T = 256, 2048.
// The correction stage times GPTAQ's P = triu₁(d·Uᵀ)·U in row panels (both triangles exploited,
// panels as threads' tasks) against the two full-width triangular products it replaced, in the
// solver's scalar (quick: n ∈ {576, 896, 1536, 4864}; full adds 4096 and 11008).
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <loaq/io/safetensors.hpp>
#include <loaq/llm/decoder.hpp>
#include <loaq/loaq.hpp>
#include <string>
#include <vector>

#include "common.hpp"
#include "memory_model.hpp"

#ifdef LOAQ_BENCH_BLAS
#include <lapacke.h>
#endif

namespace {

using bench::Index;
using bench::Mat;

using bench::kLlama;
using bench::kSmol;
using bench::Shape;

struct Config {
  bool full = false;
  int threads = 1;
  bool run_float = true, run_double = true;
  std::string export_dir;
  std::string only;   // comma-separated stage names; empty: every stage
  std::string shape;  // run only the shape of this name (any mode)
  int reps = 0;       // timed runs per shape stage; 0: 7, or 2 on the 7B shapes
  bool runs(const char* stage) const {
    return only.empty() ||
           ("," + only + ",").find("," + std::string(stage) + ",") != std::string::npos;
  }
  bool runs_shape_stages() const {
    for (const char* s : {"accumulate", "factor", "loop", "gptq", "mse", "gptaq", "loaq", "memory"})
      if (runs(s)) return true;
    return false;
  }
  Index tokens = 2048;  // tokens per calibration batch (one 2048-token sequence)
  int batches = 2;      // batches accumulated into the Hessian used by the solvers
};

// The GPTQ configuration every figure uses: 4-bit asymmetric, groups of 128, blocks of 128.
loaq::GptqOptions solver_options() {
  loaq::GptqOptions o;
  o.block_size = 128;
  o.group_size = 128;
  return o;
}

void row(const char* stage, double seconds, double gflop, double ref_rate, const char* ref_name,
         const std::string& note = "") {
  const double rate = gflop / seconds;
  std::printf("  %-28s %10.1f ms %8.1f GFLOP/s %6s of %-12s %s\n", stage, seconds * 1e3, rate,
              bench::pct(rate / ref_rate).c_str(), ref_name, note.c_str());
}
void row_plain(const char* stage, double seconds, const std::string& note) {
  std::printf("  %-28s %10.1f ms %s\n", stage, seconds * 1e3, note.c_str());
}

struct Rates {
  bench::MachineRates f, d;
};

Rates measure_machine(int reps) {
  Rates r;
  const Index k = 2048;
  r.f.gemm_eigen = bench::eigen_gemm_rate<float>(k, reps);
  r.d.gemm_eigen = bench::eigen_gemm_rate<double>(k, reps);
  r.f.syrk_eigen = bench::eigen_syrk_rate<float>(k, k, reps);
  r.d.syrk_eigen = bench::eigen_syrk_rate<double>(k, k, reps);
#ifdef LOAQ_BENCH_BLAS
  r.f.gemm_blas = bench::blas_gemm_rate<float>(k, reps);
  r.d.gemm_blas = bench::blas_gemm_rate<double>(k, reps);
  r.f.syrk_blas = bench::blas_syrk_rate<float>(k, k, reps);
  r.d.syrk_blas = bench::blas_syrk_rate<double>(k, k, reps);
#endif
  return r;
}

// Peak RSS above the starting RSS of one whole gptq() call on fresh inputs (what
// `loaq_bench --memory-probe M N float|double` prints).
template <class S>
double gptq_peak_in_this_process(Index m, Index n) {
  const double base = bench::peak_rss_bytes();
  const Mat<S> W = bench::synthetic_weight<S>(m, n, 1);
  Mat<S> H = Mat<S>::Identity(n, n);  // the values do not change the footprint
  H.diagonal().array() += S(1);
  loaq::QuantizedWeight<S> out;
  (void)loaq::gptq(W, H, loaq::UniformGrid<S, 4>(false), solver_options(), out);
  return bench::peak_rss_bytes() - base;
}

// The same, in a fresh process of this program, so that nothing this one allocated counts.
template <class S>
double measured_gptq_peak(const Shape& s, int threads) {
  char self[4096];
  const ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
  if (len <= 0) return -1;
  self[len] = 0;
  const std::string cmd = std::string("'") + self + "' --threads " + std::to_string(threads) +
                          " --memory-probe " + std::to_string(s.m) + " " + std::to_string(s.n) +
                          (std::is_same<S, float>::value ? " float" : " double");
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return -1;
  double peak = -1;
  if (std::fscanf(p, "%lf", &peak) != 1) peak = -1;
  pclose(p);
  return peak;
}

struct ShapeData {
  Mat<double> H, C;  // accumulated statistics (double, the library's default)
  Mat<double> G;     // residual cross term, m × n
};

// Statistics used by every solver of one shape: Ĥ, C and G from `batches` synthetic batches.
ShapeData make_statistics(const Shape& s, const Config& cfg) {
  loaq::CalibrationAccumulator<double> acc(s.n, s.m);
  for (int b = 0; b < cfg.batches; ++b) {
    const Mat<double> Xhat = bench::synthetic_inputs<double>(s.n, cfg.tokens, 100 + b);
    const Mat<double> X = Xhat + 0.05 * bench::synthetic_inputs<double>(s.n, cfg.tokens, 200 + b);
    const Mat<double> Rhat = bench::synthetic_inputs<double>(s.m, cfg.tokens, 300 + b);
    const Mat<double> R = Rhat + 0.05 * bench::synthetic_inputs<double>(s.m, cfg.tokens, 400 + b);
    (void)acc.add_batch(Xhat, X, Rhat, R);
  }
  return {acc.hessian(), acc.cross(), acc.residual_cross()};
}

template <class S>
double bench_accumulation(const Shape& s, const Config& cfg, const bench::MachineRates& mr,
                          int reps) {
  const Mat<S> X = bench::synthetic_inputs<S>(s.n, cfg.tokens, 7);
  loaq::CalibrationAccumulator<S> acc(s.n);
  const double t = bench::time_best(reps, [&] {
    if (!acc.add_batch(X).ok()) std::abort();
  });
  // Reference: the bare SYRK kernels on the same shape.
  Mat<S> H = Mat<S>::Zero(s.n, s.n);
  const double t_eigen = bench::time_best(
      reps, [&] { H.template selfadjointView<Eigen::Lower>().rankUpdate(X, S(1)); });
  const double gflop = bench::syrk_flops(s.n, cfg.tokens) * 1e-9;
  std::string note = "bare Eigen SYRK same shape: " + bench::pct(t_eigen / t);
#ifdef LOAQ_BENCH_BLAS
  {
    const double t_blas = bench::time_best(reps, [&] { bench::blas_syrk<S>(X, H); });
    note += ", OpenBLAS SYRK same shape: " + bench::pct(t_blas / t);
  }
#endif
  row("hessian accumulation", t, gflop, mr.syrk_eigen, "Eigen SYRK", note);
  return t;
}

// The inverse factor in the solver's scalar (float solves factor in float, as the reference).
template <class S>
void bench_factor(const Shape& s, const Mat<double>& H, const bench::MachineRates& mr, int reps,
                  bool warm) {
  loaq::InverseFactor<S> f;
  const double t = bench::time_best(
      reps, [&] { f.compute(H); }, warm);
  const double gflop = 2.0 / 3.0 * double(s.n) * double(s.n) * double(s.n) * 1e-9;
  std::string note;
#ifdef LOAQ_BENCH_BLAS
  // OpenBLAS potrf + trtri on the same damped, reversed matrix, in the same precision.
  Mat<S> A;
  const double lambda = f.damping();
  const int N = int(s.n);
  const double t_lapack = bench::time_best(
      reps,
      [&] {
        A = H.reverse().cast<S>();
        A.diagonal().array() += S(lambda);
        if constexpr (std::is_same<S, float>::value) {
          LAPACKE_spotrf(LAPACK_COL_MAJOR, 'L', N, A.data(), N);
          LAPACKE_strtri(LAPACK_COL_MAJOR, 'L', 'N', N, A.data(), N);
        } else {
          LAPACKE_dpotrf(LAPACK_COL_MAJOR, 'L', N, A.data(), N);
          LAPACKE_dtrtri(LAPACK_COL_MAJOR, 'L', 'N', N, A.data(), N);
        }
      },
      warm);
  char b[96];
  std::snprintf(b, sizeof b, "OpenBLAS potrf+trtri %.1f ms: loaq takes %.2f× its time",
                t_lapack * 1e3, t / t_lapack);
  note = b;
#endif
  row(std::is_same<S, float>::value ? "inverse factor (float)" : "inverse factor (double)", t,
      gflop, mr.gemm_eigen, std::is_same<S, float>::value ? "Eigen sgemm" : "Eigen dgemm", note);

  // What plain GPTQ factors instead: R (no inversion) and the inverses of its 128-column
  // diagonal blocks (PreparedHessian's left-looking form). Rated on the 2n³/3 flops it replaces.
  Mat<S> R;
  const double t_left = bench::time_best(
      reps,
      [&] {
        f.compute(H, loaq::DampingPolicy{}, loaq::internal::CheckedHessian{},
                  loaq::internal::FactorForm::Cholesky);
        R = f.take_upper();
        (void)loaq::internal::to_left_looking(R, solver_options().block_size);
      },
      warm);
#ifdef LOAQ_BENCH_BLAS
  std::snprintf(b, sizeof b, "%.2f× OpenBLAS potrf+trtri", t_left / t_lapack);
  note = b;
#endif
  row("factor, left-looking form", t_left, gflop, mr.gemm_eigen,
      std::is_same<S, float>::value ? "Eigen sgemm" : "Eigen dgemm", note);
}

// The float layer, its Hessian and loaq's result for bench/reference_gptq.py.
template <class S>
void export_layer(const Shape& s, const Config& cfg, const Mat<S>& W, const Mat<S>& H,
                  const loaq::QuantizedWeight<S>& out, const loaq::GptqOptions& opt,
                  double seconds) {
  loaq::io::SafetensorsWriter wr;
  wr.add_matrix("weight", W, loaq::io::DType::F32);
  wr.add_matrix("hessian", H, loaq::io::DType::F32);
  wr.add_matrix("loaq_weight", out.weight, loaq::io::DType::F32);
  wr.set_metadata("loaq_seconds", std::to_string(seconds));
  wr.set_metadata("threads", std::to_string(cfg.threads));
  wr.set_metadata("bits", "4");
  wr.set_metadata("group", std::to_string(opt.group_size));
  wr.set_metadata("blocksize", std::to_string(opt.block_size));
  wr.set_metadata("percdamp", std::to_string(opt.damping.percdamp));
  wr.write(cfg.export_dir + "/" + s.name + ".safetensors");
}

std::string over(double t, double base) {
  char b[48];
  std::snprintf(b, sizeof b, "+%.0f%% over gptq", 100.0 * (t / base - 1));
  return b;
}

template <class S>
void bench_shape(const Shape& s, const ShapeData& st, const Config& cfg,
                 const bench::MachineRates& mr, const bench::MachineRates& md) {
  // The 7B shapes: best of two cold runs (a warm-up would add a third).
  const bool big = s.m * s.n > 4'000'000;
  const int reps = cfg.reps > 0 ? cfg.reps : big ? 2 : 7;
  const bool warm = !big;
  const char* gemm_name = std::is_same<S, float>::value ? "Eigen sgemm" : "Eigen dgemm";
  const double m = double(s.m), n = double(s.n);
  std::printf("%s  %s  m=%ld n=%ld, %ld tokens/batch, %d thread(s)\n", s.name,
              std::is_same<S, float>::value ? "float" : "double", long(s.m), long(s.n),
              long(cfg.tokens), cfg.threads);

  if (cfg.runs("accumulate")) bench_accumulation<S>(s, cfg, mr, big ? 2 : 5);
  if (cfg.runs("factor")) bench_factor<S>(s, st.H, mr, reps, warm);

  const Mat<S> W = bench::synthetic_weight<S>(s.m, s.n, 1);
  const Mat<S> H = st.H.cast<S>();
  const loaq::UniformGrid<S, 4> grid(false);
  const loaq::GptqOptions opt = solver_options();
  loaq::QuantizedWeight<S> out;
  loaq::PreparedHessian<S> prep;
  if (!loaq::prepare_hessian(H, opt.act_order, opt.damping, prep).ok()) std::abort();
  auto best = [&](auto&& f) { return bench::time_best(reps, f, warm); };

  if (cfg.runs("loop")) {
    const double t =
        best([&] { (void)loaq::internal::solve_columns(W, prep, grid, opt, nullptr, out, nullptr); });
    row("column loop", t, m * n * n * 1e-9, mr.gemm_eigen, gemm_name);
    loaq::PreparedHessian<S> left;  // plain GPTQ's loop, on the left-looking form
    if (!loaq::internal::prepare_hessian_as(H, opt.act_order, opt.damping, left, opt.factor,
                                            Index(opt.block_size)).ok())
      std::abort();
    const double t_left =
        best([&] { (void)loaq::internal::solve_columns(W, left, grid, opt, nullptr, out, nullptr); });
    row("column loop, left-looking", t_left, m * n * n * 1e-9, mr.gemm_eigen, gemm_name);
  }

  if (cfg.runs("gptq") || cfg.runs("mse") || cfg.runs("gptaq") || cfg.runs("loaq")) {
    const double t_gptq = best([&] { (void)loaq::gptq(W, H, grid, opt, out); });
    row("gptq (whole solve)", t_gptq, (m * n * n + 2.0 / 3.0 * n * n * n) * 1e-9, mr.gemm_eigen,
        gemm_name);
    if (!cfg.export_dir.empty() && std::is_same<S, float>::value)
      export_layer(s, cfg, W, H, out, opt, t_gptq);

    if (cfg.runs("mse")) {  // the MSE shrink search: 80 candidate grids per group and row
      loaq::GptqOptions mse = opt;
      mse.search.mse = true;
      const double t = best([&] { (void)loaq::gptq(W, H, grid, mse, out); });
      row_plain("gptq with MSE search", t, over(t, t_gptq));
    }
    if (cfg.runs("gptaq")) {
      const Mat<S> C = st.C.cast<S>();
      const double t = best([&] { (void)loaq::gptaq(W, H, C, grid, opt, 0.25, out); });
      row_plain("gptaq (whole solve)", t, over(t, t_gptq));
    }
    // LoaQ: W* = W + α·W·C·Ĥ⁻¹ + β·G·Ĥ⁻¹ with Ĥ⁻¹ = UᵀU (one GEMM, two triangular multiplies:
    // 4mn² flops), then the same GPTQ solve. solve_target itself never forms W* with dynamic
    // groups: it needs B·R⁻ᵀ on the left-looking form (the GEMM and one pass: 3mn² flops).
    if (cfg.runs("loaq")) {
      const loaq::TargetWeights tw;
      Mat<S> target;
      const double t_target =
          best([&] { target = loaq::closed_form_target<S>(W, &st.C, &st.G, prep, tw); });
      row("loaq target W* on U", t_target, 4.0 * m * n * n * 1e-9, mr.gemm_eigen, gemm_name,
          over(t_gptq + t_target, t_gptq));
      loaq::PreparedHessian<S> left;
      if (!loaq::internal::prepare_hessian_as(H, opt.act_order, opt.damping, left, opt.factor,
                                              Index(opt.block_size)).ok())
        std::abort();
      const double t_drift = best([&] {
        target = loaq::internal::target_drift<S>(W, &st.C, &st.G, left.perm, left.permuted(),
                                                 left.log4_scale, tw);
        loaq::internal::left_target_drift(target, left.left_factor, left.left_block);
      });
      row("loaq drift, left-looking", t_drift, 3.0 * m * n * n * 1e-9, mr.gemm_eigen, gemm_name,
          over(t_gptq + t_drift, t_gptq));
      const double t = best([&] { (void)loaq::solve_target(W, H, &st.C, &st.G, tw, grid, opt, out); });
      row_plain("loaq (whole solve)", t, over(t, t_gptq));
      const double t_qep = best([&] {
        (void)loaq::solve_target(W, H, &st.C, nullptr, {0.5, 0.0}, grid, opt, out);
      });
      row_plain("qep (whole solve)", t_qep, over(t_qep, t_gptq));
    }
  }

  if (cfg.runs("memory")) {
    const double peak = measured_gptq_peak<S>(s, cfg.threads);
    const double model = bench::gptq_peak_bytes(s.m, s.n, opt.group_size, sizeof(S));
    if (peak < 0)
      std::printf("  %-28s measurement failed (the probe process did not report)\n",
                  "gptq peak memory");
    else
      std::printf("  %-28s measured %.1f MiB, formula %.1f MiB (%+.1f%%)\n", "gptq peak memory",
                  peak / 1048576.0, model / 1048576.0, 100.0 * (peak / model - 1));
  }
}

// Rotation throughput: OrthogonalTransform::apply on an n × T float matrix against the dense
// float GEMM Q·X it replaces (O(n·(b + log n)) against O(n²) per column).
void bench_hadamard(const Config& cfg) {
  std::vector<Index> orders = {576, 1536, 4096};
  std::vector<Index> tokens = {256};
  if (cfg.full) {
    orders.insert(orders.end(), {4864, 11008, 2752});  // 2752 = 43·64: the random fallback
    tokens.push_back(2048);
  }
  std::printf("\nhadamard rotation, float, Q·X with X n × T, %d thread(s)\n", cfg.threads);
  std::printf("  %-6s %-22s %6s %12s %12s %9s %10s\n", "n", "construction", "T", "transform",
              "dense sgemm", "speedup", "build");
  for (const Index n : orders) {
    double t_build = bench::now();
    const loaq::OrthogonalTransform q = loaq::OrthogonalTransform::hadamard(n, true, 1);
    t_build = bench::now() - t_build;
    const Mat<float> Qf = q.dense().cast<float>();
    char what[64];
    if (q.kind() == loaq::RotationKind::Hadamard)
      std::snprintf(what, sizeof what, "H%ld (x) H%ld", long(n / q.core_order()),
                    long(q.core_order()));
    else
      std::snprintf(what, sizeof what, "random orthogonal");
    for (const Index T : tokens) {
      Mat<float> X = bench::synthetic_inputs<float>(n, T, 5), Y(n, T);
      const bool big = double(n) * double(n) * double(T) > 2e10;
      const int reps = big ? 2 : 5;
      const double t_fast = bench::time_best(reps, [&] { q.apply(X); }, !big);
      const double t_gemm = bench::time_best(reps, [&] { Y.noalias() = Qf * X; }, !big);
      std::printf("  %-6ld %-22s %6ld %9.2f ms %9.2f ms %8.1fx %7.1f ms\n", long(n), what, long(T),
                  t_fast * 1e3, t_gemm * 1e3, t_gemm / t_fast, t_build * 1e3);
    }
    std::fflush(stdout);
  }
}

// The causal attention of the model module before query blocks: every T × T score formed, the
// upper triangle zeroed, V times all of S. The peer of the attention stage.
Mat<float> dense_causal_attention(const loaq::llm::Config& cfg, const Mat<float>& Q, const Mat<float>& K,
                                  const Mat<float>& V) {
  const int hd = cfg.head_dim, group = cfg.n_heads / cfg.n_kv_heads;
  const Index T = Q.cols();
  const float scale = 1.f / std::sqrt(float(hd));
  Mat<float> ctx(Q.rows(), T), S(T, T);
  for (int h = 0; h < cfg.n_heads; ++h) {
    const int kv = h / group;
    S.noalias() = K.middleRows(kv * hd, hd).transpose() * Q.middleRows(h * hd, hd);
    for (Index t = 0; t < T; ++t) {
      auto col = S.col(t).head(t + 1);
      col *= scale;
      col = (col.array() - col.maxCoeff()).exp().matrix();
      col /= col.sum();
      S.col(t).tail(T - t - 1).setZero();
    }
    ctx.middleRows(h * hd, hd).noalias() = V.middleRows(kv * hd, hd) * S;
  }
  return ctx;
}

void bench_attention(const Config& cfg) {
  struct Heads {
    const char* model;
    int heads, kv_heads, head_dim;
  };
  const Heads models[] = {{"SmolLM2-135M", 9, 3, 64}, {"Qwen2.5-0.5B", 14, 2, 64}};
  std::printf("\ncausal attention, float, one window, %d thread(s): query blocks of %ld against all "
              "T x T scores\n", cfg.threads, long(loaq::llm::kAttentionQueryBlock));
  std::printf("  %-14s %6s %12s %12s %9s %12s\n", "model", "T", "blocks", "dense", "speedup",
              "max |diff|");
  for (const Heads& m : models) {
    loaq::llm::Config c;
    c.n_heads = m.heads;
    c.n_kv_heads = m.kv_heads;
    c.head_dim = m.head_dim;
    for (const Index T : {Index(256), Index(2048)}) {
      const Mat<float> Q = bench::synthetic_inputs<float>(m.heads * m.head_dim, T, 7),
                       K = bench::synthetic_inputs<float>(m.kv_heads * m.head_dim, T, 8),
                       V = bench::synthetic_inputs<float>(m.kv_heads * m.head_dim, T, 9);
      Mat<float> blocked, dense;
      const double t_blocks = bench::time_best(3, [&] { blocked = loaq::llm::causal_attention(c, Q, K, V); });
      const double t_dense = bench::time_best(3, [&] { dense = dense_causal_attention(c, Q, K, V); });
      std::printf("  %-14s %6ld %9.2f ms %9.2f ms %8.2fx %12.2e\n", m.model, long(T), t_blocks * 1e3,
                  t_dense * 1e3, t_dense / t_blocks, double((blocked - dense).cwiseAbs().maxCoeff()));
    }
    std::fflush(stdout);
  }
}

// GPTAQ's P = triu₁(d·Uᵀ)·U as gptaq_correction formed it before row panels: two full-width
// products of a dense and a triangular matrix. The peer of the correction stage.
template <class S>
Mat<S> full_width_correction(const Mat<S>& d, const Mat<S>& U) {
  const Mat<S> A = d * U.transpose().template triangularView<Eigen::Lower>();
  return A.template triangularView<Eigen::StrictlyUpper>() * U;
}

template <class S>
void bench_correction_scalar(const Config& cfg, const char* scalar) {
  std::vector<Index> sizes = {576, 896, 1536, 4864};
  if (cfg.full) sizes.insert(sizes.end(), {4096, 11008});
  for (const Index n : sizes) {
    const Mat<S> d = bench::synthetic_inputs<S>(n, n, 11);
    // Any upper-triangular U with a positive diagonal times the same as an inverse factor.
    Mat<S> U = bench::synthetic_inputs<S>(n, n, 12).template triangularView<Eigen::Upper>();
    U.diagonal() = U.diagonal().cwiseAbs().array() + S(1);
    Mat<S> panels, full;
    const int reps = n > 4096 ? 1 : 3;
    const double t_panels =
        bench::time_best(reps, [&] { panels = loaq::internal::strictly_upper_product(d, U); }, n <= 4096);
    const double t_full = bench::time_best(reps, [&] { full = full_width_correction(d, U); }, n <= 4096);
    const double flops = 2.0 * double(n) * double(n) * double(n) / 3.0;  // the panels' count
    std::printf("  %-6s %6ld %10.1f ms %7.1f GFLOP/s %10.1f ms %8.2fx %12.2e\n", scalar, long(n),
                t_panels * 1e3, flops / t_panels * 1e-9, t_full * 1e3, t_full / t_panels,
                double((panels - full).norm() / full.norm()));
    std::fflush(stdout);
  }
}

void bench_correction(const Config& cfg) {
  std::printf("\nGPTAQ correction P = triu1(d U^T) U, %d thread(s): row panels of %ld against the "
              "full-width triangular products\n", cfg.threads, long(loaq::internal::kCorrectionPanel));
  std::printf("  %-6s %6s %13s %15s %13s %9s %12s\n", "scalar", "n", "panels", "rate", "full width",
              "speedup", "rel. diff");
  if (cfg.run_float) bench_correction_scalar<float>(cfg, "float");
  if (cfg.run_double) bench_correction_scalar<double>(cfg, "double");
}

int usage() {
  std::fprintf(
      stderr,
      "usage: loaq_bench [--quick|--full] [--threads N] [--scalar float|double|both] "
      "[--export DIR]\n"
      "       [--only accumulate,factor,loop,gptq,mse,gptaq,loaq,memory,hadamard,attention,"
      "correction]\n"
      "       [--shape NAME|ROWSxCOLS] [--reps N]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  loaq::pin_eigen_blocking();  // the same results on any CPU (loaq/config.hpp)
  Config cfg;
  std::string scalar = "both";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick")
      cfg.full = false;
    else if (a == "--full")
      cfg.full = true;
    else if (a == "--threads" && i + 1 < argc)
      cfg.threads = std::atoi(argv[++i]);
    else if (a == "--scalar" && i + 1 < argc)
      scalar = argv[++i];
    else if (a == "--export" && i + 1 < argc)
      cfg.export_dir = argv[++i];
    else if (a == "--only" && i + 1 < argc)
      cfg.only = argv[++i];
    else if (a == "--shape" && i + 1 < argc)
      cfg.shape = argv[++i];
    else if (a == "--reps" && i + 1 < argc)
      cfg.reps = std::atoi(argv[++i]);
    else if (a == "--memory-probe" && i + 3 < argc) {
      bench::set_threads(cfg.threads);
      const Index m = std::atol(argv[i + 1]), n = std::atol(argv[i + 2]);
      const bool f = std::string(argv[i + 3]) == "float";
      std::printf("%.0f\n", f ? gptq_peak_in_this_process<float>(m, n)
                              : gptq_peak_in_this_process<double>(m, n));
      return 0;
    } else
      return usage();
  }
  if (cfg.threads < 1 || cfg.reps < 0 || (scalar != "float" && scalar != "double" && scalar != "both"))
    return usage();
  if (!cfg.export_dir.empty() && !std::filesystem::is_directory(cfg.export_dir)) {
    // Checked now, not after the first shape's minutes of timing.
    std::fprintf(stderr, "loaq_bench: --export %s: no such folder (create it first)\n",
                 cfg.export_dir.c_str());
    return 2;
  }
  // The shapes to run, checked before any stage runs: --shape names one of the tables' or gives
  // any other layer as ROWSxCOLS (e.g. another model's).
  std::string custom_name;  // a ROWSxCOLS shape's name; `shapes` points into it
  std::vector<Shape> shapes(std::begin(kSmol), std::end(kSmol));
  if (cfg.full || !cfg.shape.empty())
    shapes.insert(shapes.end(), std::begin(kLlama), std::end(kLlama));
  if (!cfg.shape.empty()) {
    const auto named = [&](const Shape& s) { return cfg.shape == s.name; };
    long m = 0, n = 0;
    char tail = 0;
    if (std::find_if(shapes.begin(), shapes.end(), named) != shapes.end())
      shapes.erase(std::remove_if(shapes.begin(), shapes.end(), std::not_fn(named)), shapes.end());
    else if (std::sscanf(cfg.shape.c_str(), "%ldx%ld%c", &m, &n, &tail) == 2 && m > 0 && n > 0 &&
             m <= 65536 && n <= 65536) {
      custom_name = "layer_" + cfg.shape;
      shapes = {Shape{custom_name.c_str(), m, n}};
    } else {
      std::fprintf(stderr, "loaq_bench: unknown shape '%s': a name from the tables (smollm2_576x576, "
                           "llama7b_4096x4096, ...) or ROWSxCOLS up to 65536x65536\n",
                   cfg.shape.c_str());
      return 2;
    }
  }
  cfg.run_float = scalar != "double";
  cfg.run_double = scalar != "float";
  bench::set_threads(cfg.threads);

#ifdef _OPENMP
  const char* omp = "OpenMP on";
#else
  const char* omp = "OpenMP off";
#endif
#ifdef LOAQ_USE_LAPACK
  const char* lapack = "factor: LAPACK potrf+trtri";
#else
  const char* lapack = "factor: Eigen";
#endif
  std::printf("loaq_bench %s mode, %d thread(s), %s, %s, SIMD: %s\n", cfg.full ? "full" : "quick",
              cfg.threads, omp, lapack, Eigen::SimdInstructionSetsInUse());
  std::printf("GPTQ settings: 4-bit asymmetric, group 128, block 128, percdamp 0.01\n");

  if (cfg.runs("hadamard")) bench_hadamard(cfg);
  if (cfg.runs("attention")) bench_attention(cfg);
  if (cfg.runs("correction")) bench_correction(cfg);
  if (!cfg.runs_shape_stages()) return 0;

  for (const Shape& s : shapes) {
    const ShapeData st = make_statistics(s, cfg);
    // Reference rates again for every shape: on a shared machine the load drifts.
    const Rates rates = measure_machine(3);
    std::printf(
        "\nmachine rates now (2048³ GEMM, SYRK n=T=2048), GFLOP/s: sgemm %.1f, dgemm %.1f, "
        "ssyrk %.1f, dsyrk %.1f (Eigen)",
        rates.f.gemm_eigen, rates.d.gemm_eigen, rates.f.syrk_eigen, rates.d.syrk_eigen);
#ifdef LOAQ_BENCH_BLAS
    std::printf("; sgemm %.1f, dgemm %.1f, ssyrk %.1f, dsyrk %.1f (OpenBLAS)", rates.f.gemm_blas,
                rates.d.gemm_blas, rates.f.syrk_blas, rates.d.syrk_blas);
#endif
    std::printf("\n");
    if (cfg.run_float) bench_shape<float>(s, st, cfg, rates.f, rates.d);
    if (cfg.run_double) bench_shape<double>(s, st, cfg, rates.d, rates.d);
    std::fflush(stdout);
  }
  return 0;
}
