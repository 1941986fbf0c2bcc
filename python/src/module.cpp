// loaq._core: the nanobind module behind `import loaq`. The Python layer (python/loaq/) turns
// arrays, tensors and keyword options into the plain calls below; this file maps buffers into
// Eigen without copying, releases the GIL for every long computation and turns a failed
// loaq::Report into the matching Python exception (loaq.LoaqError and its subclasses).
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <loaq/linalg/transpose.hpp>

#include "solve.hpp"

namespace nb = nanobind;
using namespace nb::literals;
using loaq::Index;

namespace loaq_py {
namespace {

// Any dtype, any dimension, read-only access, CPU memory (NumPy buffers and DLPack capsules).
using Array = nb::ndarray<nb::ro, nb::device::cpu>;

// A failed Report; translated into loaq._errors' exception for its status.
struct ReportError {
  loaq::Status status;
  std::string message;
};

void check(const loaq::Report& r) {
  if (!r.ok()) throw ReportError{r.status, r.message};
}

template <class S>
bool is(const Array& a) {
  return a.dtype() == nb::dtype<S>();
}

// A 2-D array as a column-major matrix; with tokens_as_columns a [T, n] array is seen as n × T.
// Column-major layouts (unit step down a column) are mapped in place; anything else (C order,
// arbitrary strides) is gathered into `copy` in cache-sized tiles first. A gathered weight is
// handed to GPTQ and GPTAQ as their working matrix (Request::W_owned), so C order costs no more
// copies than F order.
template <class S>
struct Mapped {
  loaq::Matrix<S> copy;  // empty unless the layout needed a copy
  std::optional<View<S>> view;
  const View<S>& operator*() const { return *view; }
  const View<S>* get() const { return &*view; }
};

template <class S>
void map_matrix(const Array& a, const char* name, Mapped<S>& out, bool tokens_as_columns = false) {
  if (a.ndim() != 2) throw nb::value_error((std::string(name) + " must be 2-D").c_str());
  if (!is<S>(a)) throw nb::type_error((std::string(name) + " has the wrong dtype").c_str());
  const auto* data = static_cast<const S*>(a.data());
  Index rows = Index(a.shape(0)), cols = Index(a.shape(1));
  Index rs = Index(a.stride(0)), cs = Index(a.stride(1));
  if (tokens_as_columns) std::swap(rows, cols), std::swap(rs, cs);
  if (rows <= 1) rs = 1;
  if (cols <= 1) cs = rows;
  if (rs == 1 && cs >= rows) {
    out.view.emplace(data, rows, cols, Eigen::OuterStride<>(cs));
    return;
  }
  out.copy.resize(rows, cols);
  loaq::advise_huge_pages(out.copy.data(), size_t(out.copy.size()) * sizeof(S));
  if (cs == 1 && rs >= cols) {  // C order
    loaq::copy_row_major_to_column_major(data, rows, cols, rs, out.copy.data(), rows);
  } else {
    constexpr Index tile = 64;
    for (Index j0 = 0; j0 < cols; j0 += tile)
      for (Index i0 = 0; i0 < rows; i0 += tile) {
        const Index j1 = std::min(cols, j0 + tile), i1 = std::min(rows, i0 + tile);
        for (Index j = j0; j < j1; ++j)
          for (Index i = i0; i < i1; ++i) out.copy(i, j) = data[i * rs + j * cs];
      }
  }
  out.view.emplace(out.copy.data(), rows, cols, Eigen::OuterStride<>(rows));
}

template <class S>
loaq::Vector<S> vector1(const Array& a, const char* name) {
  if (a.ndim() != 1) throw nb::value_error((std::string(name) + " must be 1-D").c_str());
  if (!is<S>(a)) throw nb::type_error((std::string(name) + " has the wrong dtype").c_str());
  const auto* data = static_cast<const S*>(a.data());
  return Eigen::Map<const loaq::Vector<S>, Eigen::Unaligned, Eigen::InnerStride<>>(
      data, Index(a.shape(0)), Eigen::InnerStride<>(Index(a.stride(0))));
}

// Hands an Eigen object to NumPy without copying: the array owns it through a capsule.
// Column-major m × n becomes an F-ordered [m, n] array.
template <class M>
nb::object to_numpy(M&& value) {
  using Plain = std::decay_t<M>;
  using S = typename Plain::Scalar;
  auto* heap = new Plain(std::forward<M>(value));
  nb::capsule owner(heap, [](void* p) noexcept { delete static_cast<Plain*>(p); });
  if constexpr (Plain::ColsAtCompileTime == 1) {
    const size_t shape[1] = {size_t(heap->size())};
    return nb::ndarray<nb::numpy, S>(heap->data(), 1, shape, owner).cast();
  } else {
    const size_t shape[2] = {size_t(heap->rows()), size_t(heap->cols())};
    const int64_t strides[2] = {1, int64_t(heap->rows())};
    return nb::ndarray<nb::numpy, S>(heap->data(), 2, shape, owner, strides).cast();
  }
}

nb::object index_array(const std::vector<Index>& v) {
  Eigen::Matrix<int64_t, Eigen::Dynamic, 1> out(Index(v.size()));
  for (size_t i = 0; i < v.size(); ++i) out[Index(i)] = int64_t(v[i]);
  return to_numpy(std::move(out));
}

// ---- statistics --------------------------------------------------------------------------------

// Each statistics object carries a mutex: solves and batches release the GIL, so two Python
// threads may reach the same object; the lazily symmetrized Ĥ must not be read mid-update.
struct Accumulator {
  explicit Accumulator(Index n, Index residual_rows) : acc(n, residual_rows) {}
  Accumulator(const Accumulator&) = delete;
  loaq::CalibrationAccumulator<double> acc;
  std::mutex mu;
  const loaq::CalibrationAccumulator<double>& stats() const { return acc; }
};

template <class Objective>
struct Stats {
  template <class... A>
  explicit Stats(std::in_place_t, A&&... args) : st(std::forward<A>(args)...) {}
  Stats(const Stats&) = delete;
  loaq::ObjectiveStats<Objective> st;
  std::mutex mu;
  const loaq::CalibrationAccumulator<double>& stats() const { return st.stats(); }
};

// The batch of one add call: x̂ [T, n]; optional x [T, n], r̂ and r [T, m]; all one dtype.
struct Batch {
  Array xh;
  std::optional<Array> x, rh, r;
};

template <class S, class F>
loaq::Report with_views(const Batch& b, F&& f) {
  Mapped<S> xh, x, rh, r;
  map_matrix(b.xh, "x_hat", xh, true);
  if (!b.x) return f(*xh, (const View<S>*)nullptr, (const View<S>*)nullptr, (const View<S>*)nullptr);
  map_matrix(*b.x, "x", x, true);
  if (!b.r) return f(*xh, x.get(), (const View<S>*)nullptr, (const View<S>*)nullptr);
  map_matrix(*b.rh, "r_hat", rh, true);
  map_matrix(*b.r, "r", r, true);
  return f(*xh, x.get(), rh.get(), r.get());
}

template <class F>
void dispatch_batch(const Batch& b, F&& f) {
  loaq::Report rep;
  if (is<float>(b.xh)) {
    nb::gil_scoped_release release;
    rep = with_views<float>(b, f);
  } else {
    nb::gil_scoped_release release;
    rep = with_views<double>(b, f);
  }
  check(rep);
}

void accumulator_add(Accumulator& self, const Batch& b, Index sequences,
                     std::optional<Array> a, std::optional<Array> w) {
  if (a || w) {
    if (!a || !w || !b.x)
      throw nb::value_error("token weights need a, b and the FP inputs x");
    const loaq::Vector<double> av = vector1<double>(*a, "a"), bv = vector1<double>(*w, "b");
    dispatch_batch(b, [&](const auto& xh, const auto* x, const auto* rh, const auto* r) {
      std::lock_guard<std::mutex> lock(self.mu);
      const loaq::Matrix<double> X = x->template cast<double>();
      loaq::Matrix<double> Rh, R;
      if (r) Rh = rh->template cast<double>(), R = r->template cast<double>();
      return self.acc.add_weighted_batch(xh, X, r ? &Rh : nullptr, r ? &R : nullptr, av, bv,
                                         sequences);
    });
    return;
  }
  dispatch_batch(b, [&](const auto& xh, const auto* x, const auto* rh, const auto* r) {
    std::lock_guard<std::mutex> lock(self.mu);
    if (!x) return self.acc.add_batch(xh, sequences);
    if (!r) return self.acc.add_batch(xh, *x, sequences);
    return self.acc.add_batch(xh, *x, *rh, *r, sequences);
  });
}

template <class Holder>
nb::object copy_out(Holder& self, int which) {
  loaq::Matrix<double> m;
  {
    nb::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(self.mu);
    const auto& acc = self.stats();
    m = which == 0 ? acc.hessian() : which == 1 ? acc.cross() : acc.residual_cross();
  }
  return to_numpy(std::move(m));
}

inline void set_float_products(Accumulator& s, bool on) { s.acc.set_float_products(on); }
template <class Objective>
void set_float_products(Stats<Objective>& s, bool on) { s.st.set_float_products(on); }

template <class Holder, class Cls>
void stats_properties(Cls& cls) {
  cls.def_prop_ro("float_products", [](Holder& s) { return s.stats().float_products(); })
      .def("set_float_products", [](Holder& s, bool on) {
        std::lock_guard<std::mutex> lock(s.mu);
        set_float_products(s, on);
      })
      .def_prop_ro("features", [](Holder& s) { return s.stats().features(); })
      .def_prop_ro("sequences", [](Holder& s) { return s.stats().sequences(); })
      .def_prop_ro("tokens", [](Holder& s) { return s.stats().tokens(); })
      .def_prop_ro("has_cross", [](Holder& s) { return s.stats().has_cross(); })
      .def_prop_ro("has_residual_cross", [](Holder& s) { return s.stats().has_residual_cross(); })
      .def("hessian", [](Holder& s) { return copy_out(s, 0); })
      .def("cross", [](Holder& s) { return copy_out(s, 1); })
      .def("residual_cross", [](Holder& s) { return copy_out(s, 2); });
}

// ---- solves ------------------------------------------------------------------------------------

struct SolveArgs {
  int method = 0;
  int grid_kind = 0, bits = 4;
  bool sym = false, full_range = false;
  std::vector<double> levels;
  double alpha = 0.25, beta = 1.0;
  loaq::GptqOptions options;
  bool want_target = false;
};

template <class S>
loaq::Report dispatch_grid(const SolveArgs& a, const Request<S>& req, Result<S>& out) {
  switch (GridKind(a.grid_kind)) {
    case GridKind::Uniform: return solve_uniform(req, a.bits, a.sym, out);
    case GridKind::Signed: return solve_signed(req, a.bits, a.full_range, out);
    case GridKind::Codebook: return solve_codebook(req, a.levels, out);
    case GridKind::NF4: return solve_codebook(req, loaq::nf4_grid<double>().levels(), out);
    case GridKind::E2M1: return solve_codebook(req, loaq::e2m1_grid<double>().levels(), out);
  }
  return loaq::Report::fail(loaq::Status::InvalidArgument, "unknown grid kind");
}

template <class S>
nb::dict result_dict(Result<S>&& res) {
  nb::dict d;
  d["loss"] = res.q.loss;
  d["weight"] = to_numpy(std::move(res.q.weight));
  d["codes"] = to_numpy(std::move(res.q.codes));
  d["scales"] = to_numpy(std::move(res.q.scales));
  d["zeros"] = to_numpy(std::move(res.q.zeros));
  Eigen::Matrix<int32_t, Eigen::Dynamic, 1> g = res.q.g_idx.template cast<int32_t>();
  d["g_idx"] = to_numpy(std::move(g));
  if (res.has_diag) {
    d["damping"] = res.diag.damping;
    d["relative_damping"] = res.diag.relative_damping;
    d["factor_attempts"] = res.diag.factor_attempts;
    d["failed_pivot"] = int64_t(res.diag.failed_pivot);
    d["perm"] = index_array(res.diag.perm);
    d["dead"] = index_array(res.diag.dead);
    d["column_loss"] = to_numpy(std::move(res.diag.column_loss));
  }
  if (res.has_target) d["target"] = to_numpy(std::move(res.target));
  return d;
}

// Locks the statistics object (if any) for the whole solve; the GIL is already released.
template <class S>
nb::dict solve_typed(const SolveArgs& a, const Array& W, const std::optional<Array>& H,
                     const std::optional<Array>& D, const std::optional<Array>& C,
                     const std::optional<Array>& G, nb::handle stats) {
  Request<S> req;
  req.method = Method(a.method);
  Mapped<S> w;
  map_matrix(W, "weight", w);
  req.W = w.get();
  if (w.copy.size() && (req.method == Method::Gptq || req.method == Method::Gptaq))
    req.W_owned = &w.copy;  // the binding's own copy: the solver works in it
  req.options = a.options;
  req.alpha = a.alpha;
  req.weights = {a.alpha, a.beta};
  req.want_target = a.want_target;
  Mapped<double> hm_, dm_, cv, gv;
  Mapped<float> hf_;
  std::optional<View<double>> h, d;
  // GPTQ reads a float32 Hessian where it lies; the other solvers take float64 (the Python side
  // upcasts for them).
  if (H && req.method == Method::Gptq && is<float>(*H))
    map_matrix(*H, "hessian", hf_), req.H_float = hf_.get();
  else if (H)
    map_matrix(*H, "hessian", hm_), req.H = hm_.get();
  if (D) map_matrix(*D, "dXXT", dm_), req.dXXT = dm_.get();
  loaq::Matrix<double> c, g;
  if (C) map_matrix(*C, "C", cv);
  if (G) map_matrix(*G, "G", gv);

  std::mutex* mu = nullptr;
  const loaq::CalibrationAccumulator<double>* acc = nullptr;
  if (stats.is_valid() && !stats.is_none()) {
    if (nb::isinstance<Accumulator>(stats)) {
      auto& s = nb::cast<Accumulator&>(stats);
      mu = &s.mu, acc = &s.acc;
    } else if (nb::isinstance<Stats<loaq::LinearOutput>>(stats)) {
      auto& s = nb::cast<Stats<loaq::LinearOutput>&>(stats);
      mu = &s.mu, req.stats = &s.st;
    } else if (nb::isinstance<Stats<loaq::ResidualOutput>>(stats)) {
      auto& s = nb::cast<Stats<loaq::ResidualOutput>&>(stats);
      mu = &s.mu, req.stats = &s.st;
    } else if (nb::isinstance<Stats<loaq::NormalizedOutput>>(stats)) {
      auto& s = nb::cast<Stats<loaq::NormalizedOutput>&>(stats);
      mu = &s.mu, req.stats = &s.st;
    } else {
      throw nb::type_error("statistics must come from loaq (CalibrationAccumulator, ObjectiveStats)");
    }
  }
  Result<S> res;
  loaq::Report rep;
  {
    nb::gil_scoped_release release;
    std::unique_lock<std::mutex> lock;
    if (mu) lock = std::unique_lock<std::mutex>(*mu);
    if (C) c = *cv, req.C = &c;
    if (G) g = *gv, req.G = &g;
    if (acc) {  // Ĥ (and C) straight from the accumulator, no copy
      if (acc->tokens() == 0) {
        rep = loaq::Report::fail(loaq::Status::InvalidArgument, "no calibration batch was added");
      } else {
        const auto& hm = acc->hessian();
        req.H = &h.emplace(hm.data(), hm.rows(), hm.cols(), Eigen::OuterStride<>(hm.rows()));
        if (req.method == Method::Gptaq) {
          if (!acc->has_cross())
            rep = loaq::Report::fail(loaq::Status::InvalidArgument,
                                     "GPTAQ needs the FP inputs: add batches with x_hat and x");
          else
            req.dXXT = &d.emplace(acc->cross().data(), hm.rows(), hm.cols(),
                                  Eigen::OuterStride<>(hm.rows()));
        }
        if (req.method == Method::Target) {
          if (acc->has_cross() && !req.C) req.C = &acc->cross();
          if (acc->has_residual_cross() && !req.G) req.G = &acc->residual_cross();
        }
      }
    }
    if (rep.ok()) {
      if ((req.method == Method::Gptq || req.method == Method::Gptaq ||
           req.method == Method::Target) && !req.H && !req.H_float)
        rep = loaq::Report::fail(loaq::Status::InvalidArgument, "a Hessian is required");
      else if (req.method == Method::Gptaq && !req.dXXT)
        rep = loaq::Report::fail(loaq::Status::InvalidArgument, "GPTAQ needs dXXT");
      else
        rep = dispatch_grid(a, req, res);
    }
  }
  check(rep);
  return result_dict(std::move(res));
}

nb::dict solve(int method, const Array& W, std::optional<Array> H, std::optional<Array> D,
               std::optional<Array> C, std::optional<Array> G, nb::object stats, int grid_kind,
               int bits, bool sym, bool full_range, std::vector<double> levels, double alpha,
               double beta, int block_size, int group_size, bool act_order, bool static_groups,
               bool mse, double norm, int mse_grid, double maxshrink, double percdamp,
               double growth, int max_attempts, bool want_target) {
  SolveArgs a;
  a.method = method;
  a.grid_kind = grid_kind;
  a.bits = bits;
  a.sym = sym;
  a.full_range = full_range;
  a.levels = std::move(levels);
  a.alpha = alpha;
  a.beta = beta;
  a.options.block_size = block_size;
  a.options.group_size = group_size;
  a.options.act_order = act_order;
  a.options.static_groups = static_groups;
  a.options.search.mse = mse;
  a.options.search.norm = norm;
  a.options.search.grid = mse_grid;
  a.options.search.maxshrink = maxshrink;
  a.options.damping.percdamp = percdamp;
  a.options.damping.growth = growth;
  a.options.damping.max_attempts = max_attempts;
  a.want_target = want_target;
  if (is<float>(W)) return solve_typed<float>(a, W, H, D, C, G, stats);
  if (is<double>(W)) return solve_typed<double>(a, W, H, D, C, G, stats);
  throw nb::type_error("weight must be float32 or float64");
}

}  // namespace
}  // namespace loaq_py

NB_MODULE(_core, m) {
  using namespace loaq_py;
  m.doc() = "loaq's compiled core; use the `loaq` package, not this module";
  loaq::pin_eigen_blocking();  // results as loaq's programs give them, on any CPU

  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const ReportError& e) {
      nb::object errors = nb::module_::import_("loaq._errors");
      nb::object cls = errors.attr("class_for_status")(int(e.status));
      PyErr_SetString(cls.ptr(), e.message.c_str());
    }
  });

  m.attr("version") = std::to_string(LOAQ_VERSION_MAJOR) + "." +
                      std::to_string(LOAQ_VERSION_MINOR) + "." +
                      std::to_string(LOAQ_VERSION_PATCH);
  m.attr("simd") = nb::str(
#if defined(__AVX512F__)
      "avx512"
#elif defined(__AVX2__)
      "avx2"
#elif defined(__SSE2__)
      "sse2"
#else
      "generic"
#endif
  );
#ifdef _OPENMP
  m.attr("openmp") = true;
#else
  m.attr("openmp") = false;
#endif

  m.def("solve", &solve, "method"_a, "weight"_a, "hessian"_a.none(), "dxxt"_a.none(), "c"_a.none(),
        "g"_a.none(), "stats"_a.none(), "grid_kind"_a, "bits"_a, "sym"_a, "full_range"_a,
        "levels"_a, "alpha"_a, "beta"_a, "block_size"_a, "group_size"_a, "act_order"_a,
        "static_groups"_a, "mse"_a, "norm"_a, "mse_grid"_a, "maxshrink"_a, "percdamp"_a,
        "growth"_a, "max_attempts"_a, "want_target"_a);

  auto acc = nb::class_<Accumulator>(m, "Accumulator")
                 .def(nb::init<Index, Index>(), "n"_a, "residual_rows"_a = 0)
                 .def(
                     "add",
                     [](Accumulator& s, Array xh, std::optional<Array> x, std::optional<Array> rh,
                        std::optional<Array> r, Index sequences, std::optional<Array> a,
                        std::optional<Array> b) {
                       accumulator_add(s, Batch{xh, x, rh, r}, sequences, a, b);
                     },
                     "x_hat"_a, "x"_a.none(), "r_hat"_a.none(), "r"_a.none(), "sequences"_a,
                     "a"_a.none(), "b"_a.none());
  stats_properties<Accumulator>(acc);

  auto lin = nb::class_<Stats<loaq::LinearOutput>>(m, "LinearOutputStats")
                 .def("__init__",
                      [](Stats<loaq::LinearOutput>* self, Index n, double alpha) {
                        new (self) Stats<loaq::LinearOutput>(std::in_place, n, loaq::LinearOutput{alpha});
                      })
                 .def("add", [](Stats<loaq::LinearOutput>& s, Array xh, Array x, Index sequences) {
                   dispatch_batch(Batch{xh, x, {}, {}},
                                  [&](const auto& vxh, const auto* vx, const auto*, const auto*) {
                                    std::lock_guard<std::mutex> lock(s.mu);
                                    return s.st.add(vxh, *vx, sequences);
                                  });
                 });
  stats_properties<Stats<loaq::LinearOutput>>(lin);

  auto res = nb::class_<Stats<loaq::ResidualOutput>>(m, "ResidualOutputStats")
                 .def("__init__",
                      [](Stats<loaq::ResidualOutput>* self, Index n, Index rows, double alpha,
                         double beta) {
                        new (self) Stats<loaq::ResidualOutput>(std::in_place, n, rows,
                                                               loaq::ResidualOutput{alpha, beta});
                      })
                 .def("add", [](Stats<loaq::ResidualOutput>& s, Array xh, Array x, Array rh,
                                Array r, Index sequences) {
                   dispatch_batch(Batch{xh, x, rh, r},
                                  [&](const auto& vxh, const auto* vx, const auto* vrh,
                                      const auto* vr) {
                                    std::lock_guard<std::mutex> lock(s.mu);
                                    return s.st.add(vxh, *vx, *vrh, *vr, sequences);
                                  });
                 });
  stats_properties<Stats<loaq::ResidualOutput>>(res);

  auto nrm =
      nb::class_<Stats<loaq::NormalizedOutput>>(m, "NormalizedOutputStats")
          .def("__init__",
               [](Stats<loaq::NormalizedOutput>* self, Array W, double alpha, double beta,
                  double eps, bool weighted) {
                 const loaq::NormalizedOutput obj{alpha, beta, eps, weighted};
                 if (is<float>(W)) {
                   Mapped<float> w;
                   map_matrix(W, "weight", w);
                   new (self) Stats<loaq::NormalizedOutput>(std::in_place, *w, obj);
                 } else {
                   Mapped<double> w;
                   map_matrix(W, "weight", w);
                   new (self) Stats<loaq::NormalizedOutput>(std::in_place, *w, obj);
                 }
               })
          .def("add", [](Stats<loaq::NormalizedOutput>& s, Array xh, Array x, Array rh, Array r,
                         Index sequences, std::optional<Array> y) {
            dispatch_batch(Batch{xh, x, rh, r},
                           [&](const auto& vxh, const auto* vx, const auto* vrh, const auto* vr) {
                             if (!y) {
                               std::lock_guard<std::mutex> lock(s.mu);
                               return s.st.add(vxh, *vx, *vrh, *vr, sequences);
                             }
                             using S = typename std::decay_t<decltype(vxh)>::Scalar;
                             Mapped<S> vy;  // the FP output y = r + W·x, [T, m], the batch's dtype
                             map_matrix(*y, "y", vy, true);
                             std::lock_guard<std::mutex> lock(s.mu);
                             return s.st.add(vxh, *vx, *vrh, *vr, *vy, sequences);
                           });
          }, "x_hat"_a, "x"_a, "r_hat"_a, "r"_a, "sequences"_a, "y"_a.none())
          .def("set_target_only", [](Stats<loaq::NormalizedOutput>& s, bool on) {
            std::lock_guard<std::mutex> lock(s.mu);
            check(s.st.set_target_only(on));
          })
          .def_prop_ro("target_only", [](Stats<loaq::NormalizedOutput>& s) {
            std::lock_guard<std::mutex> lock(s.mu);
            return s.st.target_only();
          });
  stats_properties<Stats<loaq::NormalizedOutput>>(nrm);
}
