// Perplexity with the GPTQ reference's semantics (spec §6): tokenize the text once, cut it into
// non-overlapping windows of L tokens, take each window's mean next-token cross entropy and
// report ppl = exp(mean over windows). Also GPTQ's calibration sampler (random windows, seeded).
#pragma once

#include <Eigen/Core>
#include <cmath>
#include <cstddef>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "decoder.hpp"
#include "detail/parallel.hpp"

namespace loaq {
namespace llm {

// Mean next-token cross entropy (nats) of logits (vocab × T) for tokens[1..T-1].
inline double next_token_nll(const Eigen::MatrixXf& logits, const std::vector<int>& tokens) {
  if (logits.cols() != Eigen::Index(tokens.size()) || tokens.size() < 2)
    throw std::invalid_argument("nll: need logits for every token and at least 2 tokens");
  double sum = 0;
  for (std::size_t t = 0; t + 1 < tokens.size(); ++t) {
    const auto col = logits.col(Eigen::Index(t));
    const double m = col.maxCoeff();
    const double lse = m + std::log((col.cast<double>().array() - m).exp().sum());
    sum += lse - double(col(tokens[t + 1]));
  }
  return sum / double(tokens.size() - 1);
}

// Mean next-token cross entropy of one window (the loss HF reports with labels = inputs).
inline double window_nll(const Model& m, const std::vector<int>& window) {
  return next_token_nll(m.forward(window), window);
}
// Same from the last layer's hidden states (d × T), for callers that run the layers themselves.
inline double window_nll_from_hidden(const Model& m, const Eigen::MatrixXf& h,
                                     const std::vector<int>& window) {
  return next_token_nll(m.logits(h), window);
}

// Non-overlapping windows of L tokens from the start of a tokenized text (the tail that does
// not fill a window is dropped), at most max_windows of them (< 0: all).
inline std::vector<std::vector<int>> windows(const std::vector<int>& tokens, int L,
                                             int max_windows = -1) {
  if (L < 2) throw std::invalid_argument("windows: length must be at least 2");
  std::vector<std::vector<int>> out;
  for (std::size_t b = 0; b + std::size_t(L) <= tokens.size(); b += std::size_t(L)) {
    if (max_windows >= 0 && out.size() >= std::size_t(max_windows)) break;
    out.emplace_back(tokens.begin() + std::ptrdiff_t(b), tokens.begin() + std::ptrdiff_t(b + L));
  }
  return out;
}

// GPTQ's calibration sampler: n windows of L tokens at uniformly random starts (std::mt19937
// seeded with `seed`). Throws std::invalid_argument when the text is shorter than L + 2 tokens.
inline std::vector<std::vector<int>> random_windows(const std::vector<int>& tokens, int n, int L,
                                                    unsigned seed) {
  if (L < 1 || n < 0) throw std::invalid_argument("random_windows: need L >= 1 and n >= 0");
  if (tokens.size() < std::size_t(L) + 2)
    throw std::invalid_argument("random_windows: the text has fewer than L + 2 tokens");
  std::mt19937 rng(seed);
  std::uniform_int_distribution<std::size_t> start(0, tokens.size() - std::size_t(L) - 1);
  std::vector<std::vector<int>> out;
  for (int i = 0; i < n; ++i) {
    const std::size_t b = start(rng);
    out.emplace_back(tokens.begin() + std::ptrdiff_t(b), tokens.begin() + std::ptrdiff_t(b) + L);
  }
  return out;
}

struct Perplexity {
  double ppl = 0, mean_nll = 0;
  int windows = 0;
};

// ppl = exp(mean over windows of nll(window)); `progress` sees (done, total).
inline Perplexity perplexity(const std::vector<std::vector<int>>& wins,
                             const std::function<double(const std::vector<int>&)>& nll,
                             const std::function<void(int, int)>& progress = {}) {
  if (wins.empty()) throw std::invalid_argument("perplexity: no windows (text too short?)");
  Perplexity r;
  double sum = 0;
  for (const auto& w : wins) {
    sum += nll(w);
    ++r.windows;
    if (progress) progress(r.windows, int(wins.size()));
  }
  r.mean_nll = sum / r.windows;
  r.ppl = std::exp(r.mean_nll);
  return r;
}

// Perplexity of a model on windows of a tokenized text, one window per task on up to `threads`
// threads; the windows' nll are summed in window order, so the result does not depend on threads.
inline Perplexity perplexity(const Model& m, const std::vector<std::vector<int>>& wins, int threads = 1,
                             const std::function<void(int, int)>& progress = {}) {
  if (wins.empty()) throw std::invalid_argument("perplexity: no windows (text too short?)");
  std::vector<double> nll(wins.size());
  Perplexity r;
  double sum = 0;
  detail::ordered_pipeline(
      wins.size(), threads, [&](std::size_t w) { nll[w] = window_nll(m, wins[w]); },
      [&](std::size_t w) {
        sum += nll[w];
        ++r.windows;
        if (progress) progress(r.windows, int(wins.size()));
      });
  r.mean_nll = sum / r.windows;
  r.ppl = std::exp(r.mean_nll);
  return r;
}

}  // namespace llm
}  // namespace loaq
