// Coarse tasks on std::threads (one window or one linear per task). No OpenMP: its spinning
// barriers slowed the forward pass ~20x whenever another process shared the cores. Each task is
// computed exactly as on one thread and results are combined in index order, so the output does
// not depend on the thread count.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "../../tasks.hpp"

namespace loaq {
namespace llm {
namespace detail {

// All cores, at least 1.
inline int hardware_threads() { return std::max(1, int(std::thread::hardware_concurrency())); }

// Runs produce(i) for every i in [0, n) on up to `threads` threads (the caller's included) and
// consume(i) on the calling thread in order 0, 1, ..., n-1, each after its produce(i) finished.
// While item i is not ready the caller produces pending items itself. The first exception of any
// task is rethrown here after every thread has stopped.
template <class Produce, class Consume>
void ordered_pipeline(std::size_t n, int threads, Produce&& produce, Consume&& consume) {
  if (threads <= 1 || n <= 1) {
    for (std::size_t i = 0; i < n; ++i) {
      produce(i);
      consume(i);
    }
    return;
  }
  Eigen::initParallel();
  std::atomic<std::size_t> next{0};
  std::atomic<bool> failed{false};
  std::vector<char> ready(n, 0);
  std::mutex mu;
  std::condition_variable cv;
  std::exception_ptr error;
  auto fail = [&](std::exception_ptr e) {
    std::lock_guard<std::mutex> lock(mu);
    if (!error) error = e;
    failed = true;
    cv.notify_all();
  };
  // Takes the next unproduced item and produces it; false when none is left.
  auto produce_one = [&]() {
    const std::size_t i = next++;
    if (i >= n || failed) return false;
    try {
      produce(i);
    } catch (...) {
      fail(std::current_exception());
      return false;
    }
    std::lock_guard<std::mutex> lock(mu);
    ready[i] = 1;
    cv.notify_all();
    return true;
  };
  std::vector<std::thread> pool;
  const int workers = int(std::min<std::size_t>(std::size_t(threads) - 1, n));
  for (int t = 0; t < workers; ++t)
    pool.emplace_back([&] {
      while (produce_one()) {
      }
    });
  try {
    for (std::size_t i = 0; i < n && !failed; ++i) {
      for (;;) {
        {
          std::lock_guard<std::mutex> lock(mu);
          if (ready[i] || failed) break;
        }
        if (produce_one()) continue;  // helped with a pending item
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return ready[i] || failed.load(); });
      }
      if (!failed) consume(i);
    }
  } catch (...) {
    fail(std::current_exception());
  }
  next = n;  // stop the workers after their current item
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);
}

// Runs f(i) for every i in [0, n), in any order, on up to `threads` threads.
template <class F>
void parallel_for(std::size_t n, int threads, F&& f) {
  ordered_pipeline(n, threads, f, [](std::size_t) {});
}

// Threads kept for short batches of small tasks (one window's statistics: a few dozen products of
// milliseconds each, thousands of batches per model), where starting threads per batch would
// cost more than the work. The calling thread takes part; idle workers sleep (no spinning).
class TaskPool {
 public:
  explicit TaskPool(int threads) {
    for (int t = 1; t < threads; ++t) workers_.emplace_back([this] { serve(); });
  }
  TaskPool(const TaskPool&) = delete;
  TaskPool& operator=(const TaskPool&) = delete;
  ~TaskPool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
  }

  // Runs task(i) for every i in [0, n), taken in index order by whichever thread is free, and
  // returns when all have finished. A task that throws does not stop the others; the first
  // exception is rethrown here.
  void run(std::size_t n, const std::function<void(std::size_t)>& task) {
    if (n == 0) return;
    // A batch of its own: a worker that wakes late finds this one's counter exhausted and
    // never takes a task of a later batch twice.
    auto batch = std::make_shared<Batch>(n, task);
    if (!workers_.empty() && n > 1) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        current_ = batch;
      }
      wake_.notify_all();
    }
    work(*batch);
    std::unique_lock<std::mutex> lock(mu_);
    done_.wait(lock, [&] { return batch->finished == n; });
    current_.reset();
    if (batch->error) std::rethrow_exception(batch->error);
  }
  // This pool as a loaq::TaskRunner (the statistics' products).
  TaskRunner runner() {
    return [this](Index n, const std::function<void(Index)>& f) {
      run(std::size_t(n), [&](std::size_t i) { f(Index(i)); });
    };
  }

 private:
  struct Batch {
    Batch(std::size_t count, const std::function<void(std::size_t)>& f) : n(count), task(f) {}
    const std::size_t n;
    const std::function<void(std::size_t)>& task;
    std::atomic<std::size_t> next{0};
    std::size_t finished = 0;  // guarded by the pool's mutex
    std::exception_ptr error;  // guarded by the pool's mutex
  };

  void work(Batch& b) {
    for (std::size_t i; (i = b.next++) < b.n;) {
      std::exception_ptr e;
      try {
        b.task(i);
      } catch (...) {
        e = std::current_exception();
      }
      std::lock_guard<std::mutex> lock(mu_);
      if (e && !b.error) b.error = e;
      if (++b.finished == b.n) done_.notify_all();
    }
  }
  void serve() {
    std::shared_ptr<Batch> seen;
    for (;;) {
      std::shared_ptr<Batch> b;
      {
        std::unique_lock<std::mutex> lock(mu_);
        wake_.wait(lock, [&] { return stop_ || (current_ && current_ != seen); });
        if (stop_) return;
        b = seen = current_;
      }
      work(*b);
    }
  }

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable wake_, done_;
  std::shared_ptr<Batch> current_;
  bool stop_ = false;
};

}  // namespace detail
}  // namespace llm
}  // namespace loaq
