// safetensors reader/writer: round trip, conversions, and every malformed file is an error.
#include <doctest/doctest.h>

#include "../support.hpp"

using loaq::io::DType;
using loaq::io::SafetensorsReader;
using loaq::io::SafetensorsWriter;

TEST_CASE("safetensors round trip with dtype conversion") {
  Eigen::MatrixXf M(2, 3);
  M << 1, -2.5, 3.25, 0.5, 1e-3f, -7;
  SafetensorsWriter w;
  w.add_matrix("f32", M, DType::F32);
  w.add_matrix("f16", M, DType::F16);
  w.add_matrix("bf16", M, DType::BF16);
  w.add_vector("idx", Eigen::VectorXi::LinSpaced(3, 0, 2), DType::I32);
  w.set_metadata("method", "gptq");
  const SafetensorsReader r(w.bytes(), "mem");
  CHECK((r.matrix<float>("f32", 2, 3) == M));
  CHECK(r.matrix<float>("f16").isApprox(M, 1e-3f));
  CHECK(r.matrix<double>("bf16").cast<float>().isApprox(M, 1e-2f));
  CHECK(r.info("idx").dtype == DType::I32);
  CHECK(r.metadata().at("method") == "gptq");
  CHECK_THROWS_WITH_AS(r.matrix<float>("missing"), doctest::Contains("missing"), loaq::io::format_error);
  CHECK_THROWS_WITH_AS(r.matrix<float>("f32", 3, 3), doctest::Contains("expected 3"), loaq::io::format_error);
  CHECK_THROWS_WITH_AS(r.floats<float>("idx"), doctest::Contains("dtype I32"), loaq::io::format_error);
}

TEST_CASE("every truncation and header corruption of a safetensors file is a format_error") {
  SafetensorsWriter w;
  w.add_matrix("weight", Eigen::MatrixXf::Random(3, 4), DType::F32);
  w.add_matrix("hessian", Eigen::MatrixXf::Random(4, 4), DType::F16);
  const std::vector<char> good = w.bytes();
  for (std::size_t len = 0; len < good.size(); ++len) {
    std::vector<char> cut(good.begin(), good.begin() + std::ptrdiff_t(len));
    CHECK_THROWS_AS(SafetensorsReader(cut, "cut"), loaq::io::format_error);
  }
  // Flip every header byte to a few values: either still valid or a clean error, never a crash.
  std::size_t errors = 0;
  for (std::size_t i = 0; i < good.size() - 3 * 4 * 4; ++i) {
    for (char v : {'\0', '9', '"', '}', char(0xff)}) {
      std::vector<char> bad = good;
      bad[i] = v;
      try {
        SafetensorsReader r(bad, "bad");
        if (r.contains("weight")) (void)r.floats<float>("weight");
      } catch (const loaq::io::format_error&) {
        ++errors;
      }
    }
  }
  CHECK(errors > 0);
}
