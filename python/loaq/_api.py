"""The public API of ``loaq``: statistics, objectives and solvers over NumPy/PyTorch arrays.

Layouts follow PyTorch: a weight is ``[m, n]`` (out × in, ``nn.Linear.weight``); calibration
inputs are token rows ``[T, n]`` (or ``[batch, seq, n]``), residual streams ``[T, m]``.
The C++ library sees inputs as n × T; a C-ordered ``[T, n]`` array *is* that matrix, so no
transpose or copy is made. Arrays with any positive strides (C order, F order, slices) are mapped
in place; only a dtype conversion (float16 → float32, a weight whose dtype differs from the
solver's, a float32 Hessian for a solver other than GPTQ → float64) copies.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence, Union

import numpy as np

from . import _core
from ._arrays import common_dtype, matrix, tokens, vector
from ._errors import InvalidArgumentError

__all__ = [
    "CalibrationAccumulator", "LinearOutput", "ResidualOutput", "NormalizedOutput",
    "ObjectiveStats", "QuantizedWeight", "SolveDiagnostics", "gptq", "gptaq", "rtn",
    "solve_target", "solve_objective", "llama_linear_role",
]

_GRIDS = {"uniform": 0, "signed": 1, "codebook": 2, "nf4": 3, "e2m1": 4}
_METHOD = {"gptq": 0, "gptaq": 1, "target": 2, "rtn": 3, "linear": 4, "residual": 5,
           "normalized": 6}


# ---- results -------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SolveDiagnostics:
    """What the column solver did (C++ ``loaq::SolveDiagnostics``)."""

    damping: float
    """Absolute λ added to diag(Ĥ): ``relative_damping · mean(diag Ĥ)``."""
    relative_damping: float
    """The percdamp that succeeded (≥ the requested one after retries)."""
    factor_attempts: int
    """Cholesky factorizations tried (1 unless the damping had to grow)."""
    failed_pivot: int
    """First failing Cholesky pivot in Ĥ's indexing, −1 if none failed."""
    perm: np.ndarray
    """int64 [n]: the column order walked (identity without act-order)."""
    dead: np.ndarray
    """int64: columns whose Ĥ_ii was 0 (their weights are zeroed, as the reference does)."""
    column_loss: np.ndarray
    """float64 [n]: Σ_rows (w − q)² / d² / 2 per original column (d = U_jj)."""


class QuantizedWeight:
    """A quantized weight: ``weight[i, j] = decode(codes[i, j], scales[i, g], zeros[i, g])`` with
    ``g = g_idx[j]``; for uniform grids ``weight = scales[:, g] · (codes − zeros[:, g])``, for
    codebooks ``weight = scales[:, g] · levels[codes]``.

    Attributes: ``weight`` [m, n] (the solver's dtype), ``codes`` uint8 [m, n], ``scales`` and
    ``zeros`` [m, groups], ``g_idx`` int32 [n], ``loss`` (the reference's Σ (w − q)² / d² / 2),
    ``diagnostics`` (:class:`SolveDiagnostics`, ``None`` for RTN) and ``target`` (the continuous
    target W* when asked for with ``return_target=True``, else ``None``). The matrices are
    Fortran-ordered NumPy arrays owning the solver's memory (no copy was made).
    """

    __slots__ = ("weight", "codes", "scales", "zeros", "g_idx", "loss", "diagnostics", "target")

    def __init__(self, d: dict):
        self.weight: np.ndarray = d["weight"]
        self.codes: np.ndarray = d["codes"]
        self.scales: np.ndarray = d["scales"]
        self.zeros: np.ndarray = d["zeros"]
        self.g_idx: np.ndarray = d["g_idx"]
        self.loss: float = float(d["loss"])
        self.diagnostics: Optional[SolveDiagnostics] = None
        if "perm" in d:
            self.diagnostics = SolveDiagnostics(
                damping=d["damping"], relative_damping=d["relative_damping"],
                factor_attempts=d["factor_attempts"], failed_pivot=d["failed_pivot"],
                perm=d["perm"], dead=d["dead"], column_loss=d["column_loss"])
        self.target: Optional[np.ndarray] = d.get("target")

    def __repr__(self) -> str:
        m, n = self.weight.shape
        return (f"QuantizedWeight(shape=({m}, {n}), groups={self.scales.shape[1]}, "
                f"dtype={self.weight.dtype}, loss={self.loss:.6g})")


# ---- statistics ----------------------------------------------------------------------------------

def _batch(x_hat, x, r_hat, r, sequences, y=None):
    xh, batch = tokens(x_hat, "x_hat")
    arrays = [xh]
    for value, name in ((x, "x"), (r_hat, "r_hat"), (r, "r"), (y, "y")):
        arrays.append(None if value is None else tokens(value, name)[0])
    arrays = common_dtype(arrays)
    if sequences is None:
        sequences = batch if batch is not None else 1
    return arrays, int(sequences)


def _stats_properties(cls):
    """Shared read-only views of the accumulated statistics (copies, float64)."""

    def hessian(self) -> np.ndarray:
        """Ĥ = (2/n_seq) Σ_t a_t² x̂_t x̂_tᵀ, n × n (a copy)."""
        return self._core.hessian()

    def cross(self) -> np.ndarray:
        """C = (2/n_seq) Σ_t a_t (b_t x_t − a_t x̂_t) x̂_tᵀ, n × n (a copy; empty if no x was given)."""
        return self._core.cross()

    def residual_cross(self) -> np.ndarray:
        """G = (2/n_seq) Σ_t a_t (b_t r_t − a_t r̂_t) x̂_tᵀ, m × n (a copy; empty without r)."""
        return self._core.residual_cross()

    cls.hessian = property(hessian)
    cls.cross = property(cross)
    cls.residual_cross = property(residual_cross)
    cls.features = property(lambda self: self._core.features, doc="n, the input features.")
    cls.sequences = property(lambda self: self._core.sequences, doc="Sequences added so far.")
    cls.tokens = property(lambda self: self._core.tokens, doc="Tokens added so far.")
    cls.has_cross = property(lambda self: self._core.has_cross, doc="Whether C is tracked.")
    cls.has_residual_cross = property(lambda self: self._core.has_residual_cross,
                                      doc="Whether G is tracked.")
    cls.float_products = property(lambda self: self._core.float_products,
                                  doc="Whether each batch's products are computed in float.")
    return cls


@_stats_properties
class CalibrationAccumulator:
    """Streaming calibration statistics with the GPTQ reference's running scaling
    (C++ ``loaq::CalibrationAccumulator<double>``). For every batch of b sequences::

        S ← S · n_seq / (n_seq + b);   n_seq ← n_seq + b;   S ← S + (2 / n_seq) · Σ_t (batch term)

    so that ``Ĥ = (2/n_seq) Σ_t x̂_t x̂_tᵀ`` (GPTQ's ``add_batch``), ``C = (2/n_seq) Σ_t (x_t − x̂_t) x̂_tᵀ``
    (GPTAQ's dXXT) and ``G = (2/n_seq) Σ_t (r_t − r̂_t) x̂_tᵀ`` all carry the same factor.

    ``n``: input features; ``residual_rows``: m of the residual streams (0: any).
    Statistics accumulate in float64 whatever the batch dtype. ``float_products=True`` computes
    each batch's products in float32 and adds them to the float64 sums: about half the time
    where float GEMM runs twice as fast, with float rounding within each batch; a batch whose
    products would overflow or underflow float32 raises ``LoaqError`` (out of range).
    """

    def __init__(self, n: int, residual_rows: int = 0, *, float_products: bool = False):
        if int(n) < 1:
            raise InvalidArgumentError(f"an accumulator needs n ≥ 1 features, got {n}")
        self._core = _core.Accumulator(int(n), int(residual_rows))
        self._core.set_float_products(bool(float_products))

    def add_batch(self, x_hat: Any, x: Any = None, r_hat: Any = None, r: Any = None, *,
                  sequences: Optional[int] = None, a: Any = None, b: Any = None) -> None:
        """Adds one batch. ``x_hat``: quantized-model inputs [T, n] (or [batch, seq, n]);
        ``x``: FP inputs (tracks C); ``r_hat``, ``r``: residual streams [T, m] (tracks G).
        ``sequences``: sequences in the batch (default: the leading dim of a 3-D batch, else 1).
        ``a``, ``b``: per-token weights [T] of the general form Ĥ = Σ a² x̂x̂ᵀ,
        C = Σ a (b·x − a·x̂) x̂ᵀ, G = Σ a (b·r − a·r̂) x̂ᵀ (needs ``x``). The GIL is released."""
        if (r_hat is None) != (r is None):
            raise InvalidArgumentError("give both residual streams r_hat and r, or neither")
        if r is not None and x is None:
            raise InvalidArgumentError("residual streams need the FP inputs x too")
        (xh, xv, rh, rv, _), seq = _batch(x_hat, x, r_hat, r, sequences)
        av = bv = None
        if a is not None or b is not None:
            if a is None or b is None or x is None:
                raise InvalidArgumentError("token weights need a, b and the FP inputs x")
            av, bv = vector(a, "a", xh.shape[0]), vector(b, "b", xh.shape[0])
        self._core.add(xh, xv, rh, rv, seq, av, bv)

    def __repr__(self) -> str:
        return (f"CalibrationAccumulator(n={self.features}, tokens={self.tokens}, "
                f"sequences={self.sequences}, cross={self.has_cross}, "
                f"residual_cross={self.has_residual_cross})")


@dataclasses.dataclass(frozen=True)
class LinearOutput:
    """(a) LLOA / QEP, for linears feeding a nonlinearity (q, k, v, gate, up): match the layer
    output ``Y* = W x̂ + α W (x − x̂)``, i.e. ``W* = W + α W C Ĥ⁻¹``. QEP's own default is α = 0.5."""

    alpha: float = 1.0


@dataclasses.dataclass(frozen=True)
class ResidualOutput:
    """(b) SLOA, for linears added to the residual stream (o, down): match ``r + W x``, i.e.
    ``W* = W + α W C Ĥ⁻¹ + β G Ĥ⁻¹`` with ``G = Σ (r − r̂) x̂ᵀ``."""

    alpha: float = 1.0
    beta: float = 1.0


@dataclasses.dataclass(frozen=True)
class NormalizedOutput:
    """(c) NSOA: match after the next RMSNorm with the per-token RMS frozen,
    ``s_t = 1/ρ(r_t + W x_t)``, ``ŝ_t = 1/ρ(r̂_t + W x̂_t)``, ``ρ(y) = sqrt(mean(y²) + ε)``.
    weighted: ``Ĥ_N = Σ ŝ² x̂x̂ᵀ``, ``C_N = Σ ŝ (s x − ŝ x̂) x̂ᵀ``, ``G_N = Σ ŝ (s r − ŝ r̂) x̂ᵀ``,
    ``W* = W + α W C_N Ĥ_N⁻¹ + β G_N Ĥ_N⁻¹``; unweighted keeps Ĥ and rescales the target by
    ``m_t = s_t / ŝ_t``."""

    alpha: float = 1.0
    beta: float = 1.0
    eps: float = 1e-5
    weighted: bool = True


Objective = Union[LinearOutput, ResidualOutput, NormalizedOutput]


@_stats_properties
class ObjectiveStats:
    """Streaming statistics of one linear (or a group sharing inputs) under an objective
    (C++ ``loaq::ObjectiveStats<Objective>``)::

        ObjectiveStats(LinearOutput(alpha), n=n)
        ObjectiveStats(ResidualOutput(alpha, beta), n=n, m=m)
        ObjectiveStats(NormalizedOutput(alpha, beta, eps, weighted), weight=W)   # W: [m, n]

    ``NormalizedOutput`` needs the layer's unquantized weight to freeze the per-token RMS.
    ``float_products``: as for :class:`CalibrationAccumulator` (W·x of ``NormalizedOutput`` too).
    ``target_only`` (``NormalizedOutput`` only): accumulate just Ĥ and the target's
    ``B = α W C + β G`` (kept in ``residual_cross``; ``cross`` stays empty), one m × n product per
    batch instead of C and G; the solve is the same up to rounding.
    """

    def __init__(self, objective: Objective, *, n: Optional[int] = None, m: Optional[int] = None,
                 weight: Any = None, float_products: bool = False, target_only: bool = False):
        self.objective = objective
        if isinstance(objective, LinearOutput):
            if n is None or int(n) < 1:
                raise InvalidArgumentError("LinearOutput statistics need n ≥ 1 input features")
            self._core = _core.LinearOutputStats(int(n), float(objective.alpha))
            self._kind = "linear"
        elif isinstance(objective, ResidualOutput):
            if n is None or m is None or int(n) < 1 or int(m) < 1:
                raise InvalidArgumentError("ResidualOutput statistics need n ≥ 1 and m ≥ 1")
            self._core = _core.ResidualOutputStats(int(n), int(m), float(objective.alpha),
                                                   float(objective.beta))
            self._kind = "residual"
        elif isinstance(objective, NormalizedOutput):
            if weight is None:
                raise InvalidArgumentError("NormalizedOutput statistics need the layer's weight")
            w = matrix(weight, "weight")
            self._core = _core.NormalizedOutputStats(w, float(objective.alpha),
                                                     float(objective.beta), float(objective.eps),
                                                     bool(objective.weighted))
            self._kind = "normalized"
        else:
            raise TypeError("objective must be LinearOutput, ResidualOutput or NormalizedOutput, "
                            f"got {type(objective).__name__}")
        if target_only:
            if self._kind != "normalized":
                raise InvalidArgumentError("target_only statistics are for NormalizedOutput")
            self._core.set_target_only(True)
        self._core.set_float_products(bool(float_products))

    @property
    def target_only(self) -> bool:
        """Whether only Ĥ and the target B are accumulated (``NormalizedOutput``)."""
        return self._kind == "normalized" and self._core.target_only

    def add(self, x_hat: Any, x: Any, r_hat: Any = None, r: Any = None, *,
            sequences: Optional[int] = None, y: Any = None) -> None:
        """Adds one batch: ``x_hat``, ``x`` [T, n] (quantized-model and FP inputs); the residual
        objectives also need ``r_hat``, ``r`` [T, m], the streams the output is added to.
        ``y`` (``NormalizedOutput`` only, optional): the FP output ``r + x Wᵀ`` [T, m] as the FP
        model computed it; then W·x is not formed again (with ``target_only``, x is not read)."""
        needs_r = self._kind != "linear"
        if needs_r and (r_hat is None or r is None):
            raise InvalidArgumentError(f"{type(self.objective).__name__} needs r_hat and r")
        if not needs_r and (r_hat is not None or r is not None):
            raise InvalidArgumentError("LinearOutput takes no residual streams")
        if y is not None and self._kind != "normalized":
            raise InvalidArgumentError("the FP output y is for NormalizedOutput statistics")
        (xh, xv, rh, rv, yv), seq = _batch(x_hat, x, r_hat, r, sequences, y)
        if self._kind == "normalized":
            self._core.add(xh, xv, rh, rv, seq, yv)
        elif needs_r:
            self._core.add(xh, xv, rh, rv, seq)
        else:
            self._core.add(xh, xv, seq)

    def __repr__(self) -> str:
        return f"ObjectiveStats({self.objective}, n={self.features}, tokens={self.tokens})"


def llama_linear_role(name: str) -> str:
    """``"output"`` for linears that write to the residual stream (``o_proj``, ``down_proj``,
    matched on the suffix), ``"input"`` for the rest (C++ ``loaq::llama_linear_role``)."""
    return "output" if name.endswith(("o_proj", "down_proj")) else "input"


# ---- solves --------------------------------------------------------------------------------------

def _solver_dtype(w: np.ndarray, dtype: Any) -> np.dtype:
    if dtype is None:
        return w.dtype
    d = np.dtype(dtype)
    if d not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"dtype must be float32 or float64, got {d}")
    return d


def _grid(grid: str, bits: Optional[int], sym: bool, full_range: bool,
          levels: Optional[Sequence[float]]) -> dict:
    if grid not in _GRIDS:
        raise InvalidArgumentError(f"grid must be one of {sorted(_GRIDS)}, got {grid!r}")
    lv: list = []
    if grid in ("nf4", "e2m1"):
        if bits not in (None, 4):
            raise InvalidArgumentError(f"{grid} is a 4-bit grid, got bits={bits}")
        bits = 4
    elif grid == "codebook":
        if levels is None:
            raise InvalidArgumentError("grid='codebook' needs levels")
        lv = [float(v) for v in np.asarray(levels, dtype=np.float64).ravel()]
        if bits is not None and len(lv) > (1 << int(bits)):
            raise InvalidArgumentError(f"{len(lv)} levels do not fit in {bits} bits")
        bits = 8
    elif bits is None:
        bits = 4
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise TypeError(f"bits must be an int, got {type(bits).__name__}")
    if levels is not None and grid != "codebook":
        raise InvalidArgumentError("levels are only used with grid='codebook'")
    return dict(grid_kind=_GRIDS[grid], bits=int(bits), sym=bool(sym), full_range=bool(full_range),
                levels=lv)


def _options(block_size, group_size, act_order, static_groups, mse, mse_norm, mse_grid, maxshrink,
             percdamp, damp_growth, damp_attempts) -> dict:
    for name, v in (("block_size", block_size), ("group_size", group_size),
                    ("mse_grid", mse_grid), ("damp_attempts", damp_attempts)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    return dict(block_size=int(block_size), group_size=int(group_size), act_order=bool(act_order),
                static_groups=bool(static_groups), mse=bool(mse), norm=float(mse_norm),
                mse_grid=int(mse_grid), maxshrink=float(maxshrink), percdamp=float(percdamp),
                growth=float(damp_growth), max_attempts=int(damp_attempts))


def _hessian(h: Any, n: int, name: str = "hessian", keep_float32: bool = False):
    """An array Ĥ (float64 view; float32 upcast unless ``keep_float32``: GPTQ reads it in place,
    exactly) or a loaq statistics object."""
    if isinstance(h, (CalibrationAccumulator, ObjectiveStats)):
        return None, h._core
    return matrix(h, name, None if keep_float32 else np.float64, n, n), None


def _weight(weight: Any, dtype: Any) -> np.ndarray:
    w = matrix(weight, "weight")
    return w.astype(_solver_dtype(w, dtype), copy=False)


def _call(method: str, weight: np.ndarray, *, hessian=None, dxxt=None, c=None, g=None, stats=None,
          alpha=0.25, beta=1.0, want_target=False, dtype=None, grid_args: dict,
          option_args: dict) -> QuantizedWeight:
    return QuantizedWeight(_core.solve(
        _METHOD[method], weight, hessian, dxxt, c, g, stats, alpha=float(alpha), beta=float(beta),
        want_target=bool(want_target), **grid_args, **option_args))


_GRID_DOC = """
    Grid (chosen at run time): ``bits`` 2..8 (default 4), ``grid`` ``"uniform"`` (GPTQ's
    ``quantize(x) = s·(clamp(round(x/s) + z, 0, 2^b − 1) − z)``, asymmetric, or unsigned-symmetric
    with ``sym=True``), ``"signed"`` (``x̂ = s·q``, ``q ∈ [−2^(b−1)+1, 2^(b−1)−1]``, or from
    ``−2^(b−1)`` with ``full_range=True``), ``"nf4"``, ``"e2m1"`` or ``"codebook"`` with
    ``levels`` (x̂ = s·level, nearest level, s = max|x| / max|level|).
    Options (the C++ defaults): ``block_size=128``, ``group_size=-1`` (per row), ``act_order``,
    ``static_groups``, ``mse`` (shrink search with ``mse_norm=2.4``, ``mse_grid=100``,
    ``maxshrink=0.8``), damping λ = ``percdamp`` (0.01) · mean(diag Ĥ), retried ×``damp_growth``
    (10) up to ``damp_attempts`` (4) factorizations. ``dtype``: the solver's scalar (float32 or
    float64; default: the weight's). Raises a :class:`LoaqError` subclass carrying the C++
    ``Report`` message; the GIL is released during the solve.
"""


def gptq(weight: Any, hessian: Any, *, bits: Optional[int] = None, sym: bool = False,
         grid: str = "uniform", full_range: bool = False,
         levels: Optional[Sequence[float]] = None, block_size: int = 128, group_size: int = -1,
         act_order: bool = False, static_groups: bool = False, mse: bool = False,
         mse_norm: float = 2.4, mse_grid: int = 100, maxshrink: float = 0.8,
         percdamp: float = 0.01, damp_growth: float = 10.0, damp_attempts: int = 4,
         dtype: Any = None) -> QuantizedWeight:
    """GPTQ (Frantar et al. 2022) with the reference ``fasterquant`` semantics.

    ``weight`` [m, n]; ``hessian`` Ĥ [n, n] (e.g. ``2/n_seq Σ x̂ x̂ᵀ``) or a
    :class:`CalibrationAccumulator` / :class:`ObjectiveStats` (its Ĥ is used in place).
    With ``(Ĥ + λI)⁻¹ = UᵀU``, columns are quantized in order and the error
    ``e = (w − q)/U_jj`` is spread onto the remaining columns: ``W[:, j:] −= e · U[j, j:]``.
    """
    weight = _weight(weight, dtype)
    h, st = _hessian(hessian, weight.shape[1], keep_float32=True)
    return _call("gptq", weight, hessian=h, stats=st, dtype=dtype,
                 grid_args=_grid(grid, bits, sym, full_range, levels),
                 option_args=_options(block_size, group_size, act_order, static_groups, mse,
                                      mse_norm, mse_grid, maxshrink, percdamp, damp_growth,
                                      damp_attempts))


def gptaq(weight: Any, hessian: Any, dxxt: Any = None, *, alpha: float = 0.25,
          bits: Optional[int] = None, sym: bool = False, grid: str = "uniform",
          full_range: bool = False, levels: Optional[Sequence[float]] = None,
          block_size: int = 128, group_size: int = -1, act_order: bool = False,
          static_groups: bool = False, mse: bool = False, mse_norm: float = 2.4,
          mse_grid: int = 100, maxshrink: float = 0.8, percdamp: float = 0.01,
          damp_growth: float = 10.0, damp_attempts: int = 4, dtype: Any = None) -> QuantizedWeight:
    """GPTAQ (Li et al. 2025), the reference ``gptaq_utils.py`` semantics: minimizes
    ``‖W X − Q X̂‖²`` with ``Ĥ = 2/n Σ x̂x̂ᵀ`` and ``dXXT = 2/n Σ (x − x̂)x̂ᵀ``; GPTQ's loop plus
    ``P = α · triu₁(dXXT · Uᵀ) · U``. α = 0.25 is the reference default, α = 0 is GPTQ.

    Either ``hessian`` and ``dxxt`` arrays [n, n], or a :class:`CalibrationAccumulator` fed
    with ``add_batch(x_hat, x)`` as ``hessian`` (its Ĥ and C are used in place).
    """
    weight = _weight(weight, dtype)
    n = weight.shape[1]
    h, st = _hessian(hessian, n)
    d = None
    if st is None:
        if dxxt is None:
            raise InvalidArgumentError("gptaq needs dxxt (or a CalibrationAccumulator with x)")
        d = matrix(dxxt, "dxxt", np.float64, n, n)
    elif dxxt is not None:
        raise InvalidArgumentError("pass dxxt only with a Hessian array, not with an accumulator")
    elif not isinstance(hessian, CalibrationAccumulator):
        raise TypeError("gptaq takes a CalibrationAccumulator (use solve_objective for "
                        "ObjectiveStats)")
    return _call("gptaq", weight, hessian=h, dxxt=d, stats=st, alpha=alpha, dtype=dtype,
                 grid_args=_grid(grid, bits, sym, full_range, levels),
                 option_args=_options(block_size, group_size, act_order, static_groups, mse,
                                      mse_norm, mse_grid, maxshrink, percdamp, damp_growth,
                                      damp_attempts))


def rtn(weight: Any, *, bits: Optional[int] = None, sym: bool = False, grid: str = "uniform",
        full_range: bool = False, levels: Optional[Sequence[float]] = None, group_size: int = -1,
        mse: bool = False, mse_norm: float = 2.4, mse_grid: int = 100, maxshrink: float = 0.8,
        dtype: Any = None) -> QuantizedWeight:
    """Round-to-nearest: every group of ``group_size`` columns (−1: whole rows) quantized on its
    own parameters (min-max, or the MSE shrink search). No Hessian; ``diagnostics`` is None."""
    return _call("rtn", _weight(weight, dtype), dtype=dtype, grid_args=_grid(grid, bits, sym, full_range, levels),
                 option_args=_options(128, group_size, False, False, mse, mse_norm, mse_grid,
                                      maxshrink, 0.01, 10.0, 4))


def solve_target(weight: Any, hessian: Any, c: Any = None, g: Any = None, *, alpha: float = 1.0,
                 beta: float = 1.0, return_target: bool = False, bits: Optional[int] = None,
                 sym: bool = False, grid: str = "uniform", full_range: bool = False,
                 levels: Optional[Sequence[float]] = None, block_size: int = 128,
                 group_size: int = -1, act_order: bool = False, static_groups: bool = False,
                 mse: bool = False, mse_norm: float = 2.4, mse_grid: int = 100,
                 maxshrink: float = 0.8, percdamp: float = 0.01, damp_growth: float = 10.0,
                 damp_attempts: int = 4, dtype: Any = None) -> QuantizedWeight:
    """The LoaQ-family closed form over GPTQ: ``W* = W + α W C Ĥ⁻¹ + β G Ĥ⁻¹``, then
    ``Q = GPTQ(W*, Ĥ)``, with Ĥ⁻¹ = UᵀU from the factor the solver computes anyway.
    ``c`` [n, n] = Σ (x − x̂)x̂ᵀ and ``g`` [m, n] = Σ (r − r̂)x̂ᵀ must carry Ĥ's scaling; either may
    be None. α = β = 0 is GPTQ exactly. ``hessian`` may be a :class:`CalibrationAccumulator`
    (its Ĥ, C and G are used unless ``c``/``g`` are given). ``return_target=True`` fills
    ``result.target`` with W*.
    """
    weight = _weight(weight, dtype)
    m, n = weight.shape
    h, st = _hessian(hessian, n)
    if st is not None and not isinstance(hessian, CalibrationAccumulator):
        raise TypeError("solve_target takes a CalibrationAccumulator or arrays "
                        "(use solve_objective for ObjectiveStats)")
    cm = None if c is None else matrix(c, "c", np.float64, n, n)
    gm = None if g is None else matrix(g, "g", np.float64, m, n)
    return _call("target", weight, hessian=h, c=cm, g=gm, stats=st, alpha=alpha, beta=beta,
                 want_target=return_target, dtype=dtype,
                 grid_args=_grid(grid, bits, sym, full_range, levels),
                 option_args=_options(block_size, group_size, act_order, static_groups, mse,
                                      mse_norm, mse_grid, maxshrink, percdamp, damp_growth,
                                      damp_attempts))


def solve_objective(weight: Any, stats: ObjectiveStats, *, return_target: bool = False,
                    bits: Optional[int] = None, sym: bool = False, grid: str = "uniform",
                    full_range: bool = False, levels: Optional[Sequence[float]] = None,
                    block_size: int = 128, group_size: int = -1, act_order: bool = False,
                    static_groups: bool = False, mse: bool = False, mse_norm: float = 2.4,
                    mse_grid: int = 100, maxshrink: float = 0.8, percdamp: float = 0.01,
                    damp_growth: float = 10.0, damp_attempts: int = 4,
                    dtype: Any = None) -> QuantizedWeight:
    """Quantizes ``weight`` [m, n] toward its objective's target with the accumulated statistics
    (C++ ``loaq::solve_objective``): ``solve_target`` with the objective's Ĥ, C, G and its α, β."""
    if not isinstance(stats, ObjectiveStats):
        raise TypeError(f"stats must be an ObjectiveStats, got {type(stats).__name__}")
    return _call(stats._kind, _weight(weight, dtype), stats=stats._core, want_target=return_target, dtype=dtype,
                 grid_args=_grid(grid, bits, sym, full_range, levels),
                 option_args=_options(block_size, group_size, act_order, static_groups, mse,
                                      mse_norm, mse_grid, maxshrink, percdamp, damp_growth,
                                      damp_attempts))


for _f in (gptq, gptaq, rtn, solve_target, solve_objective):
    _f.__doc__ = (_f.__doc__ or "") + _GRID_DOC
del _f
