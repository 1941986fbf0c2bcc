// Grids and parameter search: GPTQ Quantizer semantics, signed and codebook grids.
#include <doctest/doctest.h>

#include "../support.hpp"

using loaq::Index;

TEST_CASE_TEMPLATE("uniform grid rounds half to even and clamps", Scalar, float, double) {
  loaq::UniformGrid<Scalar, 4> grid(false);
  // x/s = 2.5 → 2 (even), 3.5 → 4, −0.5 → −0 → code z.
  CHECK(grid.encode(Scalar(2.5), 1, 0) == 2);
  CHECK(grid.encode(Scalar(3.5), 1, 0) == 4);
  CHECK(grid.encode(Scalar(-0.5), 1, 3) == 3);
  CHECK(grid.encode(Scalar(100), 1, 3) == 15);
  CHECK(grid.encode(Scalar(-100), 1, 3) == 0);
  CHECK(grid.decode(5, Scalar(0.5), 3) == Scalar(1.0));
}

TEST_CASE_TEMPLATE("min-max parameters follow find_params", Scalar, float, double) {
  loaq::Matrix<Scalar> x(4, 3);
  x << -1, 2, 0.5,   // asym: range [−1, 2]
      1, 2, 3,       // all positive: xmin → 0
      0, 0, 0,       // all zero: widened to [−1, 1]
      -4, -2, -1;    // all negative: xmax → 0
  loaq::RowParams<Scalar> p;
  loaq::fit_params(loaq::UniformGrid<Scalar, 2>(false), x, loaq::ParamSearch{}, p);
  CHECK(p.scale[0] == doctest::Approx(1.0));
  CHECK(p.zero[0] == 1);
  CHECK(p.scale[1] == doctest::Approx(1.0));
  CHECK(p.zero[1] == 0);
  CHECK(p.scale[2] == doctest::Approx(2.0 / 3.0));
  CHECK(p.zero[2] == 2);  // round(1.5) = 2 (half to even)
  CHECK(p.zero[3] == 3);
  loaq::fit_params(loaq::UniformGrid<Scalar, 2>(true), x, loaq::ParamSearch{}, p);
  CHECK(p.scale[0] == doctest::Approx(4.0 / 3.0));  // [−2, 2]
  CHECK(p.zero[0] == 2);                            // (maxq + 1)/2
  CHECK(p.scale[1] == doctest::Approx(1.0));        // xmin = 0 stays: [0, 3] (reference quirk)
  CHECK(p.scale[3] == doctest::Approx(8.0 / 3.0));  // [−4, 4]
}

TEST_CASE_TEMPLATE("MSE search keeps the best shrink and never does worse than min-max", Scalar,
                   float, double) {
  std::mt19937 rng(29);
  const loaq::Matrix<Scalar> x = loaq_test::random_matrix<Scalar>(20, 64, rng, 1.0);
  loaq::UniformGrid<Scalar, 3> grid(false);
  loaq::RowParams<Scalar> mm, mse;
  loaq::ParamSearch search;
  loaq::fit_params(grid, x, search, mm);
  search.mse = true;
  loaq::fit_params(grid, x, search, mse);
  auto err = [&](Index r, Scalar s, Scalar z) {
    double e = 0;
    for (Index c = 0; c < x.cols(); ++c)
      e += std::pow(std::abs(double(loaq::quantize(grid, x(r, c), s, z) - x(r, c))), 2.4);
    return e;
  };
  int shrunk = 0;
  for (Index r = 0; r < x.rows(); ++r) {
    const double best = err(r, mse.scale[r], mse.zero[r]);
    CHECK(best <= err(r, mm.scale[r], mm.zero[r]));
    // No candidate of the 80-step grid is strictly better than the chosen one.
    for (int i = 0; i < 80; ++i) {
      const Scalar f = Scalar(1.0 - i / 100.0);
      Scalar lo = x.row(r).minCoeff(), hi = x.row(r).maxCoeff(), s, z;
      grid.adjust_range(lo, hi);
      grid.params(f * lo, f * hi, s, z);
      CHECK(err(r, s, z) >= best * (1 - 1e-6));
    }
    shrunk += mse.scale[r] < mm.scale[r];
  }
  CHECK(shrunk > 0);  // heavy tails: clipping pays on some rows
}

TEST_CASE_TEMPLATE("signed symmetric grid is s·q with q in [-qmax, qmax]", Scalar, float, double) {
  loaq::SignedSymmetricGrid<Scalar, 4> grid;
  loaq::Matrix<Scalar> x(1, 3);
  x << -0.7, 0.2, 1.4;
  loaq::RowParams<Scalar> p;
  loaq::fit_params(grid, x, loaq::ParamSearch{}, p);
  CHECK(p.scale[0] == doctest::Approx(1.4 / 7));
  CHECK(loaq::quantize(grid, Scalar(1.4), p.scale[0], p.zero[0]) == doctest::Approx(1.4));
  CHECK(loaq::quantize(grid, Scalar(-5), p.scale[0], p.zero[0]) == doctest::Approx(-1.4));
  loaq::SignedSymmetricGrid<Scalar, 4> full(true);
  CHECK(loaq::quantize(full, Scalar(-5), p.scale[0], p.zero[0]) == doctest::Approx(-1.6));
}

TEST_CASE_TEMPLATE("codebook grids round to the nearest level of the scaled table", Scalar, float,
                   double) {
  const auto e2m1 = loaq::e2m1_grid<Scalar>();
  CHECK(e2m1.levels().size() == 15);
  loaq::Matrix<Scalar> x(1, 4);
  x << -3, 0.3, 2.4, 6;  // absmax 6 → scale 1
  loaq::RowParams<Scalar> p;
  loaq::fit_params(e2m1, x, loaq::ParamSearch{}, p);
  CHECK(p.scale[0] == doctest::Approx(1.0));
  CHECK(loaq::quantize(e2m1, Scalar(2.4), p.scale[0], p.zero[0]) == doctest::Approx(2.0));
  CHECK(loaq::quantize(e2m1, Scalar(2.6), p.scale[0], p.zero[0]) == doctest::Approx(3.0));
  CHECK(loaq::quantize(e2m1, Scalar(0.3), p.scale[0], p.zero[0]) == doctest::Approx(0.5));
  CHECK(loaq::quantize(e2m1, Scalar(-100), p.scale[0], p.zero[0]) == doctest::Approx(-6.0));
  const auto nf4 = loaq::nf4_grid<Scalar>();
  CHECK(nf4.levels().size() == 16);
  // Brute force: the encoded level is the nearest one.
  std::mt19937 rng(31);
  std::uniform_real_distribution<double> u(-1.2, 1.2);
  for (int k = 0; k < 500; ++k) {
    const Scalar v = Scalar(u(rng));
    const Scalar got = nf4.decode(nf4.encode(v, 1, 0), 1, 0);
    for (Scalar l : nf4.levels()) CHECK(std::abs(got - v) <= std::abs(l - v));
  }
  using Book2 = loaq::CodebookGrid<Scalar, 2>;
  // Bad tables never throw: the grid reports them and every solver returns that status.
  CHECK(nf4.status().ok());
  CHECK(Book2({0, 1, 2, 3, 4}).status().status == loaq::Status::InvalidArgument);
  CHECK(Book2({0.0, NAN}).status().status == loaq::Status::NonFiniteInput);
  CHECK(Book2({0.0, 0.0}).status().status == loaq::Status::InvalidArgument);
  const Eigen::MatrixXd W = loaq_test::random_matrix<double>(4, 8, rng);
  const Eigen::MatrixXd H = Eigen::MatrixXd::Identity(8, 8);
  loaq::QuantizedWeight<Scalar> out;
  const loaq::Report r = loaq::gptq(W.cast<Scalar>(), H, Book2({0, 1, 2, 3, 4}), loaq::GptqOptions{}, out);
  CHECK(r.status == loaq::Status::InvalidArgument);
  CHECK(r.message.find("levels") != std::string::npos);
  CHECK(loaq::rtn(W.cast<Scalar>(), Book2({0.0, NAN}), -1, {}, out).status == loaq::Status::NonFiniteInput);
  CHECK(out.weight.size() == 0);
}
