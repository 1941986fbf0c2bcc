// Per-token activation quantization (W4A4: QuaRot's ActQuantizer, which GPTAQ's W4A4 code uses).
// Activations are n × T, one column per token; each token (and, with group_size > 0, each group
// of group_size contiguous channels of it) gets its own scale, recomputed on every call.
//
// Per slice x (a token, or one channel group of it), in the scalar S (float or double):
//   symmetric:  m = 2^(b−1) − 1, xmax = clip·max|x|, s = xmax/m (1 when xmax = 0),
//               q = clamp(round(x/s), −(m+1), m), x̂ = s·q
//   asymmetric: m = 2^b − 1, xmin = clip·min(min x, 0), xmax = clip·max(max x, 0)
//               (both 0: −1, +1), s = (xmax − xmin)/m, z = round(−xmin/s),
//               q = clamp(round(x/s) + z, 0, m), x̂ = s·(q − z)
// round is half to even (torch.round); x/s is a division, as in the reference.
//
// Deliberate differences from QuaRot's fake_quant/quant_utils.py (each only where the reference
// gives NaN, Inf or a scale below the normal range; elsewhere the results are the same):
// - Channel groups include 0 in the range as whole tokens do. QuaRot's groupwise path does not,
//   which gives s = 0 and NaN for a constant non-zero group (asymmetric).
// - (xmax − xmin) that overflows S is computed as xmax/m − xmin/m (QuaRot: s = Inf, x̂ = NaN).
// - s is floored at the smallest normal number of S (a clipped range below about m·1e-38 in
//   float): QuaRot divides by a subnormal or zero scale and gives Inf or NaN.
// - A dequantized value that would overflow S (ranges within a few percent of the largest
//   float) fails with OutOfRange instead of returning Inf.
// - Zeros come out as +0 (QuaRot keeps the sign of a −0 rounding in the symmetric case).
// Symmetric codes are stored offset by 2^(b−1), as SignedSymmetricGrid does: code = q + 2^(b−1),
// so x̂ = s·(code − zero) for both modes, with zero = 2^(b−1) when symmetric.
#pragma once

#include <cmath>
#include <cstdio>
#include <limits>
#include <string>

#include "../config.hpp"
#include "../simd/activation.hpp"
#include "../status.hpp"
#include "uniform.hpp"

namespace loaq {

// Run-time options of the activation quantizer (QuaRot's ActQuantizer.configure).
struct ActivationQuantSpec {
  int bits = 16;             // 16: off (activations stay in floating point); 2..8: quantize
  bool symmetric = false;
  double clip_ratio = 1.0;   // (0, 1]; QuaRot and GPTAQ use 0.9 (applied in S, as torch does)
  Index group_size = -1;     // −1: one scale per token; > 0: per token and group of channels

  bool enabled() const { return bits < 16; }
  // Channels per scale for n channels.
  Index group(Index channels) const { return group_size > 0 ? group_size : channels; }
  // bits ∈ {2..8, 16}, clip ∈ (0, 1], channels ≥ 1, group_size −1 or a divisor of channels.
  Report validate(Index channels) const;
};

// Integer activations: x̂(i, t) = scale(g, t)·(codes(i, t) − zero(g, t)), g = i / group_size.
// Symmetric: zero = 2^(b−1) and the signed code is codes − 2^(b−1) ∈ [−2^(b−1), 2^(b−1) − 1].
template <class Scalar>
struct ActivationCodes {
  CodeMatrix codes;              // n × T
  Matrix<Scalar> scale, zero;    // groups × T
  Index group_size = 0;          // channels per scale (n with one scale per token)

  Matrix<Scalar> dequantize() const {
    Matrix<Scalar> x(codes.rows(), codes.cols());
    for (Index t = 0; t < codes.cols(); ++t)
      for (Index i = 0; i < codes.rows(); ++i) {
        const Index g = i / group_size;
        x(i, t) = scale(g, t) * (Scalar(codes(i, t)) - zero(g, t));
      }
    return x;
  }
};

namespace internal {

inline std::string act_number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

// (s, zero) of a slice whose values span [lo, hi], lo and hi finite; see the header comment.
template <class S>
void activation_params(const ActivationQuantSpec& spec, S lo, S hi, S& scale, S& zero) {
  const S clip = S(spec.clip_ratio);
  const S tiny = std::numeric_limits<S>::min();
  if (spec.symmetric) {
    const S m = S((1 << (spec.bits - 1)) - 1);
    const S xmax = std::max(-std::min(lo, S(0)), std::max(hi, S(0))) * clip;
    scale = xmax == 0 ? S(1) : std::max(xmax / m, tiny);
    zero = S(1 << (spec.bits - 1));
  } else {
    const S m = S((1 << spec.bits) - 1);
    S xmin = std::min(lo, S(0)) * clip, xmax = std::max(hi, S(0)) * clip;
    if (xmin == 0 && xmax == 0) {
      xmin = -1;
      xmax = 1;
    }
    scale = (xmax - xmin) / m;
    if (!std::isfinite(scale)) scale = xmax / m - xmin / m;  // the range overflowed S
    scale = std::max(scale, tiny);
    zero = round_half_even(-xmin / scale) + S(0);  // + 0: no −0 zero point
  }
}

// Pass 1: every slice's range and parameters, before anything is written. scale and zero are
// groups × T. Fails on a non-finite entry (naming its channel and token) or on a dequantized
// value that overflows S.
template <class Kernels, class S>
Report activation_pass1(const Eigen::Ref<const Matrix<S>>& X, const ActivationQuantSpec& spec,
                        Matrix<S>& scale, Matrix<S>& zero) {
  const Index n = X.rows(), T = X.cols(), gs = spec.group(n), groups = n / gs;
  const S hi_code = S((1 << spec.bits) - 1);
  scale.resize(groups, T);
  zero.resize(groups, T);
  for (Index t = 0; t < T; ++t) {
    const S* col = X.data() + t * X.outerStride();
    for (Index g = 0; g < groups; ++g) {
      const S* x = col + g * gs;
      S lo, hi;
      if (!Kernels::range(x, gs, lo, hi)) {
        Index i = 0;
        while (i < gs && std::isfinite(x[i])) ++i;
        return Report::fail(Status::NonFiniteInput,
                            "activation at channel " + std::to_string(g * gs + i) + ", token " +
                                std::to_string(t) + " is " + act_number(double(x[i])) +
                                "; the layer input must be finite (check the previous layer)");
      }
      S s, z;
      activation_params(spec, lo, hi, s, z);
      // Codes and values are monotone in x: the slice's extremes bound every x̂.
      const S a = s * (simd::ActivationGeneric::code(lo, s, z, hi_code) - z);
      const S b = s * (simd::ActivationGeneric::code(hi, s, z, hi_code) - z);
      if (!std::isfinite(a) || !std::isfinite(b))
        return Report::fail(Status::OutOfRange,
                            "token " + std::to_string(t) + " (channels " + std::to_string(g * gs) +
                                ".." + std::to_string(g * gs + gs - 1) + ") spans [" +
                                act_number(double(lo)) + ", " + act_number(double(hi)) +
                                "]: its quantization grid overflows the scalar type; scale the "
                                "activations down or quantize in double");
      scale(g, t) = s;
      zero(g, t) = z;
    }
  }
  return Report::success();
}

template <class Kernels, class S>
Report fake_quantize_activations_impl(Eigen::Ref<Matrix<S>> X, const ActivationQuantSpec& spec) {
  if (auto r = spec.validate(X.rows()); !r.ok()) return r;
  if (!spec.enabled() || X.cols() == 0) return Report::success();
  Matrix<S> scale, zero;
  if (auto r = activation_pass1<Kernels, S>(X, spec, scale, zero); !r.ok()) return r;
  const Index n = X.rows(), gs = spec.group(n), groups = n / gs;
  const S hi_code = S((1 << spec.bits) - 1);
  for (Index t = 0; t < X.cols(); ++t) {
    S* col = X.data() + t * X.outerStride();
    for (Index g = 0; g < groups; ++g)
      Kernels::fake_quantize(col + g * gs, gs, scale(g, t), zero(g, t), hi_code);
  }
  return Report::success();
}

template <class Kernels, class S>
Report quantize_activations_impl(const Eigen::Ref<const Matrix<S>>& X,
                                 const ActivationQuantSpec& spec, ActivationCodes<S>& out) {
  out = ActivationCodes<S>{};
  if (auto r = spec.validate(X.rows()); !r.ok()) return r;
  if (!spec.enabled())
    return Report::fail(Status::InvalidArgument,
                        "activation bits = 16 means no quantization, so there are no codes; set "
                        "bits to 2..8 (or call fake_quantize_activations, which leaves X as is)");
  ActivationCodes<S> res;
  if (auto r = activation_pass1<Kernels, S>(X, spec, res.scale, res.zero); !r.ok()) return r;
  const Index n = X.rows(), gs = spec.group(n), groups = n / gs;
  const S hi_code = S((1 << spec.bits) - 1);
  res.group_size = gs;
  res.codes.resize(n, X.cols());
  for (Index t = 0; t < X.cols(); ++t) {
    const S* col = X.data() + t * X.outerStride();
    for (Index g = 0; g < groups; ++g)
      Kernels::encode(col + g * gs, gs, res.scale(g, t), res.zero(g, t), hi_code,
                      &res.codes(g * gs, t));
  }
  out = std::move(res);
  return Report::success();
}

}  // namespace internal

inline Report ActivationQuantSpec::validate(Index channels) const {
  if (!(bits == 16 || (bits >= 2 && bits <= 8)))
    return Report::fail(Status::InvalidArgument,
                        "activation bits = " + std::to_string(bits) +
                            ": use 2..8 to quantize, or 16 to leave activations in floating point");
  if (!(clip_ratio > 0 && clip_ratio <= 1))
    return Report::fail(Status::InvalidArgument,
                        "activation clip_ratio = " + internal::act_number(clip_ratio) +
                            " must be in (0, 1]: 1 keeps the full range, QuaRot and GPTAQ use 0.9");
  if (channels < 1)
    return Report::fail(Status::InvalidArgument,
                        "activations have no channels (0 rows): pass an n × T matrix, n ≥ 1, "
                        "one column per token");
  if (group_size == 0 || group_size < -1)
    return Report::fail(Status::InvalidArgument,
                        "activation group_size = " + std::to_string(group_size) +
                            ": use −1 for one scale per token, or a divisor of the channel count");
  if (group_size > 0 && channels % group_size != 0)
    return Report::fail(Status::InvalidArgument,
                        "activation group_size = " + std::to_string(group_size) +
                            " does not divide the " + std::to_string(channels) +
                            " channels: use a divisor of " + std::to_string(channels) +
                            ", or −1 for one scale per token");
  return Report::success();
}

// Kernels: simd::ActivationSimd (xsimd where the build has it) or simd::ActivationGeneric; both
// give bit-identical results.

// Fake quantization in place: each token (column) of X (n × T) replaced by its dequantized value.
// Bits 16 and T = 0 leave X as is. On failure X is unchanged.
template <class Kernels = simd::ActivationSimd>
Report fake_quantize_activations(Eigen::Ref<Eigen::MatrixXf> X, const ActivationQuantSpec& spec) {
  return internal::fake_quantize_activations_impl<Kernels, float>(X, spec);
}
template <class Kernels = simd::ActivationSimd>
Report fake_quantize_activations(Eigen::Ref<Eigen::MatrixXd> X, const ActivationQuantSpec& spec) {
  return internal::fake_quantize_activations_impl<Kernels, double>(X, spec);
}

// Codes and per-(group, token) scale and zero of X; out.dequantize() equals what
// fake_quantize_activations writes, bit for bit. Needs bits in 2..8; on failure out is empty.
template <class Kernels = simd::ActivationSimd>
Report quantize_activations(const Eigen::Ref<const Eigen::MatrixXf>& X,
                            const ActivationQuantSpec& spec, ActivationCodes<float>& out) {
  return internal::quantize_activations_impl<Kernels, float>(X, spec, out);
}
template <class Kernels = simd::ActivationSimd>
Report quantize_activations(const Eigen::Ref<const Eigen::MatrixXd>& X,
                            const ActivationQuantSpec& spec, ActivationCodes<double>& out) {
  return internal::quantize_activations_impl<Kernels, double>(X, spec, out);
}

}  // namespace loaq
