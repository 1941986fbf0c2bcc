"""Exceptions raised by loaq: one per ``loaq::Status``, carrying the C++ ``Report`` message."""

from __future__ import annotations


class LoaqError(Exception):
    """A solver or statistics call failed; ``status`` names the C++ ``loaq::Status``."""

    status = "error"


class ShapeMismatchError(LoaqError, ValueError):
    """Matrix sizes disagree (``Status::ShapeMismatch``)."""

    status = "shape mismatch"


class NonFiniteInputError(LoaqError, ValueError):
    """A NaN or Inf in the weight, Hessian or statistics (``Status::NonFiniteInput``)."""

    status = "non-finite input"


class InvalidArgumentError(LoaqError, ValueError):
    """An option out of range: bits, group size, block size, damping (``Status::InvalidArgument``)."""

    status = "invalid argument"


class NotPositiveDefiniteError(LoaqError, ArithmeticError):
    """The damped Hessian could not be factored even after the damping retries
    (``Status::NotPositiveDefinite``)."""

    status = "not positive definite"


_BY_STATUS = {
    1: NonFiniteInputError,
    2: ShapeMismatchError,
    3: InvalidArgumentError,
    4: NotPositiveDefiniteError,
}


def class_for_status(status: int) -> type:
    """The exception class of a ``loaq::Status`` value (used by the compiled core)."""
    return _BY_STATUS.get(status, LoaqError)
