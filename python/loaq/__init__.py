"""loaq: layer-wise post-training quantization solvers (RTN, GPTQ, GPTAQ, QEP, LoaQ) for NumPy
arrays and PyTorch CPU tensors, on the header-only C++ library's compiled core.

    import loaq
    acc = loaq.CalibrationAccumulator(n)
    acc.add_batch(x_hat)                      # [T, n] token rows: Ĥ = 2/n_seq Σ x̂x̂ᵀ
    q = loaq.gptq(W, acc, bits=4, group_size=128, act_order=True)   # W: [m, n]
    q.weight, q.codes, q.scales, q.zeros, q.g_idx, q.loss, q.diagnostics
"""

from . import _core
from ._api import (CalibrationAccumulator, LinearOutput, NormalizedOutput, ObjectiveStats,
                   QuantizedWeight, ResidualOutput, SolveDiagnostics, gptaq, gptq,
                   llama_linear_role, rtn, solve_objective, solve_target)
from ._errors import (InvalidArgumentError, LoaqError, NonFiniteInputError,
                      NotPositiveDefiniteError, ShapeMismatchError)

__version__ = _core.version
#: Build facts of the compiled core: the SIMD level it was compiled for and whether OpenMP is on.
build_info = {"simd": _core.simd, "openmp": _core.openmp}

__all__ = [
    "CalibrationAccumulator", "LinearOutput", "ResidualOutput", "NormalizedOutput",
    "ObjectiveStats", "QuantizedWeight", "SolveDiagnostics", "gptq", "gptaq", "rtn",
    "solve_target", "solve_objective", "llama_linear_role", "LoaqError", "ShapeMismatchError",
    "NonFiniteInputError", "InvalidArgumentError", "NotPositiveDefiniteError", "build_info",
]
