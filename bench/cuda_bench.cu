// The CUDA backend's speed on LLM shapes (issue 15): every solver on device-resident statistics,
// plus GPTQ from and to host memory, on the SmolLM2-135M and LLaMA-7B shapes (m × n = rows ×
// columns of W), 4-bit asymmetric, groups of 128, block 128, percdamp 0.01.
//
//   loaq_cuda_bench [--quick] [--tokens T] [--export DIR]
//
// --quick: the SmolLM2 shapes only. --export DIR writes DIR/<shape>.safetensors (the float
// weight and Hessian, the GPU result and its time) for the same solve in the GPTQ authors'
// PyTorch code on the same GPU:  python3 bench/reference_gptq.py --device cuda DIR/*.safetensors
#include <cstdio>
#include <cstdlib>
#include <loaq/cuda.cuh>
#include <loaq/io/safetensors.hpp>
#include <string>
#include <vector>

#include "common.hpp"

namespace {

using bench::Index;
using bench::Mat;

using bench::Shape;

void require(const loaq::Report& r, const char* what) {
  if (r.ok()) return;
  std::fprintf(stderr, "%s: %s (%s)\n", what, r.message.c_str(), loaq::to_string(r.status));
  std::exit(1);
}

// Best of `reps` timed runs after a warm-up, each ended by a stream synchronization.
double gpu_time(loaq::cuda::Context& ctx, int reps, const std::function<loaq::Report()>& f) {
  return bench::time_best(reps, [&] {
    require(f(), "solve");
    require(ctx.synchronize(), "synchronize");
  });
}

void row(const char* shape, const char* stage, double seconds, const std::string& note) {
  std::printf("%-20s %-34s %10.2f ms  %s\n", shape, stage, seconds * 1e3, note.c_str());
  std::fflush(stdout);
}

std::string over(double t, double base) {
  char b[48];
  std::snprintf(b, sizeof b, "%+.0f%% over gptq", 100.0 * (t / base - 1));
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  Index tokens = 2048;
  std::string export_dir;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick") quick = true;
    else if (a == "--tokens" && i + 1 < argc) tokens = std::atol(argv[++i]);
    else if (a == "--export" && i + 1 < argc) export_dir = argv[++i];
    else {
      std::fprintf(stderr, "usage: loaq_cuda_bench [--quick] [--tokens T] [--export DIR]\n");
      return 2;
    }
  }
  std::string why;
  if (!loaq::cuda::device_available(&why)) {
    std::printf("loaq_cuda_bench: no usable CUDA device (%s)\n", why.c_str());
    return 77;
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  std::printf("device: %s, %d SMs; float solves, statistics in double; %ld calibration tokens\n",
              prop.name, prop.multiProcessorCount, long(tokens));
  loaq::cuda::Context ctx;
  require(ctx.init(), "init");

  loaq::GptqOptions opt;
  opt.group_size = 128;
  const loaq::UniformGrid<float, 4> grid(false);
  std::vector<Shape> shapes(std::begin(bench::kSmol), std::end(bench::kSmol));
  if (!quick) shapes.insert(shapes.end(), std::begin(bench::kLlama), std::end(bench::kLlama));
  for (const Shape& s : shapes) {
    const bool big = s.m * s.n > 4'000'000;
    const int reps = big ? 3 : 10;
    const Mat<float> W = bench::synthetic_weight<float>(s.m, s.n, 11);
    // Statistics on the GPU from one batch: Ĥ, C = Σ(x − x̂)x̂ᵀ, G = Σ(r − r̂)x̂ᵀ.
    const Mat<double> Xhat = bench::synthetic_inputs<double>(s.n, tokens, 100);
    const Mat<double> X = Xhat + 0.05 * bench::synthetic_inputs<double>(s.n, tokens, 200);
    const Mat<double> Rhat = bench::synthetic_inputs<double>(s.m, tokens, 300);
    const Mat<double> R = Rhat + 0.05 * bench::synthetic_inputs<double>(s.m, tokens, 400);
    loaq::cuda::CalibrationAccumulator<double> acc(ctx, s.n, s.m);
    const double t_acc = bench::time_best(1, [&] { require(acc.add_batch(Xhat, X, Rhat, R), "accumulate"); }, false);
    {
      char b[96];
      std::snprintf(b, sizeof b, "Ĥ, C and G from %ld tokens, host → device included", long(tokens));
      row(s.name, "accumulate (double)", t_acc, b);
    }
    loaq::cuda::DeviceMatrix<float> Wd;
    require(loaq::cuda::upload(ctx, W, Wd), "upload");
    const auto& H = acc.hessian();

    loaq::cuda::DevicePreparedHessian<float> prep;
    const double t_factor = gpu_time(ctx, reps, [&] {
      return loaq::cuda::prepare_hessian(ctx, H, false, opt.damping, prep);
    });
    row(s.name, "inverse factor (float)", t_factor, prep.double_fallback ? "double fallback" : "");

    loaq::cuda::DeviceQuantizedWeight<float> q;
    const double t_gptq = gpu_time(ctx, reps, [&] { return loaq::cuda::gptq(ctx, Wd, H, grid, opt, q); });
    row(s.name, "gptq (device in, device out)", t_gptq, "W copied on the device, Ĥ double");

    loaq::QuantizedWeight<float> host_out;
    Mat<double> H_host;
    require(acc.hessian(H_host), "download H");
    const double t_host = bench::time_best(big ? 1 : 3, [&] {
      require(loaq::cuda::gptq(ctx, W, H_host, grid, opt, host_out), "gptq host");
    });
    row(s.name, "gptq (host in, host out)", t_host, "W float, Ĥ double, copies included");

    const double t_gptaq = gpu_time(ctx, reps, [&] {
      return loaq::cuda::gptaq(ctx, Wd, H, acc.cross(), grid, opt, 0.25, q);
    });
    row(s.name, "gptaq (alpha 0.25)", t_gptaq, over(t_gptaq, t_gptq));
    const double t_qep = gpu_time(ctx, reps, [&] {
      return loaq::cuda::solve_target(ctx, Wd, H, &acc.cross(), nullptr, {0.5, 0}, grid, opt, q);
    });
    row(s.name, "qep target (C)", t_qep, over(t_qep, t_gptq));
    const double t_loaq = gpu_time(ctx, reps, [&] {
      return loaq::cuda::solve_target(ctx, Wd, H, &acc.cross(), &acc.residual_cross(), {1, 1},
                                      grid, opt, q);
    });
    row(s.name, "loaq target (C and G)", t_loaq, over(t_loaq, t_gptq));
    const double t_rtn = gpu_time(ctx, reps, [&] { return loaq::cuda::rtn(ctx, Wd, grid, 128, {}, q); });
    row(s.name, "rtn", t_rtn, "");

    if (!export_dir.empty()) {  // the reference reads a float Ĥ: the exported result uses it too
      const Mat<float> H_float = H_host.cast<float>();
      require(loaq::cuda::gptq(ctx, W, H_float, grid, opt, host_out), "gptq float H");
      loaq::io::SafetensorsWriter wr;
      wr.add_matrix("weight", W, loaq::io::DType::F32);
      wr.add_matrix("hessian", H_float, loaq::io::DType::F32);
      wr.add_matrix("loaq_weight", host_out.weight, loaq::io::DType::F32);
      wr.set_metadata("loaq_seconds", std::to_string(t_gptq));
      wr.set_metadata("threads", "1");
      wr.set_metadata("bits", "4");
      wr.set_metadata("group", std::to_string(opt.group_size));
      wr.set_metadata("blocksize", std::to_string(opt.block_size));
      wr.set_metadata("percdamp", std::to_string(opt.damping.percdamp));
      wr.write(export_dir + "/" + s.name + ".safetensors");
    }
  }
  return 0;
}
