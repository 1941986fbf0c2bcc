"""Turning user inputs (NumPy arrays, torch tensors, anything with ``__array__`` or DLPack) into
NumPy arrays the compiled core can map without copying."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ._errors import ShapeMismatchError

_SOLVER_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _torch_like(x: Any) -> Any:
    """Detach a tensor that requires grad, refuse one off the CPU, upcast half precision."""
    if getattr(x, "requires_grad", False) and hasattr(x, "detach"):
        x = x.detach()
    device = getattr(x, "device", None)
    if device is not None and not isinstance(x, np.ndarray):
        kind = getattr(device, "type", str(device))
        if str(kind) != "cpu":
            raise TypeError(f"tensor lives on {device}; loaq solves on the CPU: pass tensor.cpu()")
    dtype = str(getattr(x, "dtype", ""))
    if dtype in ("torch.bfloat16", "torch.float16", "torch.half") and hasattr(x, "float"):
        x = x.float()  # a copy: NumPy has no bfloat16
    return x


def as_array(x: Any, name: str) -> np.ndarray:
    """A NumPy view of ``x`` (no copy for NumPy arrays, CPU tensors and DLPack producers)."""
    if isinstance(x, np.ndarray):
        return x
    if x is None:
        raise TypeError(f"{name} is required, got None")
    x = _torch_like(x)
    if hasattr(x, "__array__") or isinstance(x, (list, tuple)):
        try:
            return np.asarray(x)
        except (TypeError, ValueError, RuntimeError) as e:
            if not hasattr(x, "__dlpack__"):
                raise TypeError(f"{name}: cannot read {type(x).__name__} as an array ({e})") from e
    if hasattr(x, "__dlpack__"):
        try:
            return np.from_dlpack(x)
        except (TypeError, ValueError, RuntimeError, BufferError) as e:
            raise TypeError(f"{name}: cannot import {type(x).__name__} through DLPack ({e})") from e
    raise TypeError(
        f"{name} must be an array (NumPy, torch CPU tensor, or anything with __array__ or "
        f"__dlpack__), got {type(x).__name__}")


def _float_dtype(a: np.ndarray, name: str) -> np.ndarray:
    if a.dtype in _SOLVER_DTYPES:
        return a
    if a.dtype == np.float16:
        return a.astype(np.float32)
    raise TypeError(f"{name} must hold float32 or float64 (float16 is upcast), got {a.dtype}")


def _mappable(a: np.ndarray) -> np.ndarray:
    """Views with positive, element-aligned strides go through as they are; others are copied."""
    item = a.itemsize
    if any(s < 0 or s % item for s in a.strides):
        return np.ascontiguousarray(a)
    return a


def matrix(x: Any, name: str, dtype: Optional[np.dtype] = None, rows: Optional[int] = None,
           cols: Optional[int] = None) -> np.ndarray:
    """A 2-D float32/float64 array (``dtype`` forces one, copying only if it differs)."""
    a = as_array(x, name)
    if a.ndim != 2:
        raise ShapeMismatchError(f"{name} must be 2-D, got shape {tuple(a.shape)}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ShapeMismatchError(f"{name} is empty (shape {tuple(a.shape)})")
    a = _float_dtype(a, name)
    if dtype is not None and a.dtype != dtype:
        a = a.astype(dtype)
    if rows is not None and a.shape[0] != rows or cols is not None and a.shape[1] != cols:
        want = f"[{rows if rows is not None else '*'}, {cols if cols is not None else '*'}]"
        raise ShapeMismatchError(f"{name} must have shape {want}, got {list(a.shape)}")
    return _mappable(a)


def tokens(x: Any, name: str) -> tuple[np.ndarray, Optional[int]]:
    """Token rows [T, features]; a 3-D [batch, seq, features] batch is flattened (a view when the
    layout allows) and also returns its batch size (the reference counts sequences by it)."""
    a = as_array(x, name)
    batch = None
    if a.ndim == 3:
        batch = int(a.shape[0])
        a = a.reshape(-1, a.shape[-1])
    if a.ndim != 2:
        raise ShapeMismatchError(
            f"{name} must be [tokens, features] or [batch, seq, features], got shape "
            f"{tuple(a.shape)}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ShapeMismatchError(f"{name} is empty (shape {tuple(a.shape)})")
    return _mappable(_float_dtype(a, name)), batch


def vector(x: Any, name: str, size: int) -> np.ndarray:
    a = as_array(x, name)
    if a.ndim != 1 or a.shape[0] != size:
        raise ShapeMismatchError(f"{name} must be 1-D with {size} entries, got shape {tuple(a.shape)}")
    return np.ascontiguousarray(_float_dtype(a, name), dtype=np.float64)


def common_dtype(arrays: list) -> list:
    """One dtype for one batch: float32 if every array is float32, else float64."""
    present = [a for a in arrays if a is not None]
    if all(a.dtype == np.float32 for a in present):
        return arrays
    return [None if a is None else (a if a.dtype == np.float64 else a.astype(np.float64))
            for a in arrays]
