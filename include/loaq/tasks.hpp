// Independent tasks of one computation, and who runs them. The statistics split each batch's
// products into tasks whose boundaries depend on the shapes only; every task is one serial Eigen
// kernel writing memory no other task touches. So the result is bit-identical in any order and on
// any number of threads, and a program can hand the tasks to its own threads (a TaskRunner)
// instead of OpenMP's.
#pragma once

#include <functional>

#include "config.hpp"

namespace loaq {

// Runs task(i) for every i in [0, count), in any order and on any threads, and returns when all
// have finished. Tasks come longest first, so a runner that takes them in index order balances
// its threads. An empty runner means the default: OpenMP's threads in a build with OpenMP, else
// one after the other on the calling thread. In a build with OpenMP, a runner on threads of its
// own should first call Eigen::setNbThreads(1): Eigen would otherwise split each task's product
// over OpenMP threads, and that rounds differently.
using TaskRunner = std::function<void(Index count, const std::function<void(Index)>& task)>;

namespace internal {

// Rows per task of a row-blocked product. A multiple of the row count of every GEMM micro-kernel
// Eigen uses (48 = three AVX-512 float packets; 24, 16, 12 and 8 elsewhere), so each entry of a
// block is summed exactly as in the unsplit product (tests/stats/accumulator.cpp checks it).
constexpr Index kTaskRows = 192;

inline void run_tasks(const TaskRunner& runner, Index count, const std::function<void(Index)>& task) {
  if (count <= 0) return;
  if (runner) return runner(count, task);
  // Always a parallel region, even for one task: inside it Eigen runs each product on one thread,
  // so no result depends on OMP_NUM_THREADS.
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1)
#endif
  for (Index i = 0; i < count; ++i) task(i);
}

}  // namespace internal
}  // namespace loaq
