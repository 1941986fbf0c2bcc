// Reproduction of the GPTQ and GPTAQ authors' own code on the shipped reference layers.
#include <doctest/doctest.h>

#include "../support.hpp"

TEST_CASE("GPTQ and GPTAQ reproduce the reference implementations on float32 layers") {
  for (const auto& c : loaq_test::reference_cases()) {
    const std::string file = c["file"];
    CAPTURE(file);
    loaq::io::SafetensorsReader st(loaq_test::data_path("reference/" + file));
    const Eigen::MatrixXf W = st.matrix<float>("weight");
    const Eigen::MatrixXf expected = st.matrix<float>("expected", W.rows(), W.cols());
    const loaq::GptqOptions opt = loaq_test::reference_options(c);
    const bool known_bits = loaq_test::with_reference_grid(c, [&](const auto& grid) {
      loaq::QuantizedWeight<float> out;
      loaq::Report r;
      if (c["method"] == "gptq") {
        const Eigen::MatrixXf H = st.matrix<float>("hessian", W.cols(), W.cols());
        r = loaq::gptq(W, H, grid, opt, out);
      } else {
        // Inputs are stored [T, n]; the accumulator takes n × T.
        const Eigen::MatrixXd Xhat = st.matrix<double>("inputs").transpose();
        const Eigen::MatrixXd X = st.matrix<double>("fp_inputs").transpose();
        loaq::CalibrationAccumulator<double> acc(W.cols());
        REQUIRE(acc.add_batch(Xhat, X).ok());
        r = loaq::gptaq(W, acc.hessian(), acc.cross(), grid, opt, double(c["alpha"]), out);
      }
      REQUIRE(r.ok());
      auto step = [&](loaq::Index i, loaq::Index j) { return out.scales(i, out.g_idx[j]); };
      const double agree = loaq_test::agreement(out.weight, expected, step);
      MESSAGE(file << ": " << agree * 100 << "% of codes identical");
      CHECK(agree >= 0.999);
    });
    CHECK(known_bits);  // false: bits outside the suite's grids
  }
}
