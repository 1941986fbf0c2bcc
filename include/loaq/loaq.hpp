// loaq umbrella header: grids, statistics, factorization, rotations and every column solver.
// Optional I/O (io/safetensors.hpp, io/gguf.hpp) is included separately.
#pragma once

#include "config.hpp"
#include "status.hpp"
#include "grid/uniform.hpp"
#include "grid/codebook.hpp"
#include "grid/ggml.hpp"
#include "grid/params.hpp"
#include "grid/activation.hpp"
#include "stats/accumulator.hpp"
#include "linalg/inverse_factor.hpp"
#include "linalg/transpose.hpp"
#include "rotate/hadamard.hpp"
#include "solve/options.hpp"
#include "solve/prepare.hpp"
#include "solve/column_solver.hpp"
#include "solve/rtn.hpp"
#include "solve/gptq.hpp"
#include "solve/gptaq.hpp"
#include "solve/targets.hpp"
#include "subblock/rmsnorm.hpp"
#include "subblock/objective.hpp"
