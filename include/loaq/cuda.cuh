// loaq's CUDA backend: the solvers, the inverse factor and the calibration statistics on an
// NVIDIA GPU, with the CPU API's semantics (same options, grids, statuses; results equal up to
// floating-point summation order). Opt-in: include this from a .cu file compiled by nvcc with
// --expt-relaxed-constexpr and link cuBLAS and cuSOLVER (CMake: target_link_libraries(... loaq::cuda)).
// Nothing in the CPU headers depends on it.
#pragma once

#include "cuda/accumulator.cuh"
#include "cuda/blas.cuh"
#include "cuda/column_loop.cuh"
#include "cuda/factor.cuh"
#include "cuda/kernels.cuh"
#include "cuda/runtime.cuh"
#include "cuda/solvers.cuh"
#include "loaq.hpp"
