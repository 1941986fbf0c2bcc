// Perplexity windows, the calibration sampler and next-token loss (include/loaq/llm/perplexity.hpp).
#include <doctest/doctest.h>

#include <cmath>

#include <loaq/llm/perplexity.hpp>

namespace llm = loaq::llm;

TEST_CASE("perplexity windows follow the GPTQ reference") {
  std::vector<int> ids(10);
  for (int i = 0; i < 10; ++i) ids[std::size_t(i)] = i;
  const auto w = llm::windows(ids, 4);
  REQUIRE(w.size() == 2);  // the 2-token tail is dropped
  CHECK(w[1] == std::vector<int>{4, 5, 6, 7});
  CHECK(llm::windows(ids, 4, 1).size() == 1);
  const auto p = llm::perplexity(w, [](const std::vector<int>& x) { return x[0] == 0 ? 1.0 : 3.0; });
  CHECK(p.mean_nll == doctest::Approx(2.0));
  CHECK(p.ppl == doctest::Approx(std::exp(2.0)));
  CHECK(llm::windows(ids, 11).empty());
  CHECK_THROWS_AS(llm::windows(ids, 1), std::invalid_argument);
  CHECK_THROWS_AS(llm::perplexity({}, [](const std::vector<int>&) { return 0.0; }),
                  std::invalid_argument);
}

TEST_CASE("random_windows: GPTQ's seeded sampler") {
  std::vector<int> ids(100);
  for (int i = 0; i < 100; ++i) ids[std::size_t(i)] = i;
  const auto a = llm::random_windows(ids, 5, 10, 0), b = llm::random_windows(ids, 5, 10, 0);
  REQUIRE(a.size() == 5);
  CHECK(a == b);  // same seed, same windows
  for (const auto& w : a) {
    REQUIRE(w.size() == 10);
    CHECK(w.back() - w.front() == 9);  // contiguous
    CHECK(w.back() <= 98);             // the last start leaves one token after the window
  }
  CHECK(llm::random_windows(ids, 5, 10, 1) != a);
  CHECK_THROWS_AS(llm::random_windows(ids, 1, 99, 0), std::invalid_argument);
}
