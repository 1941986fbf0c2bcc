"""The ten reference layers of tests/data/reference reproduced through the Python binding, as
tests/solve/reference.cpp does in C++: every code identical to the GPTQ / GPTAQ authors' output."""

import numpy as np
import pytest

import loaq
from conftest import REFERENCE, read_safetensors, reference_cases

CASES = reference_cases()


def agreement(ours, expected, step):
    """Fraction of entries whose dequantized values agree to a quarter of the local step
    (the C++ test's criterion: equal codes give equal values up to float rounding)."""
    return float(np.mean(np.abs(ours.astype(np.float64) - expected) <= 0.25 * np.abs(step)))


@pytest.mark.parametrize("case", CASES, ids=[c["file"] for c in CASES])
def test_reference_layer(case):
    t = read_safetensors(REFERENCE / case["file"])
    W = t["weight"]
    m, n = W.shape
    expected = t["expected"].reshape(m, n).astype(np.float64)
    opts = dict(bits=case["bits"], sym=case["sym"], group_size=case["group"],
                act_order=case["act_order"], static_groups=case["static_groups"],
                mse=case["mse"], percdamp=case["percdamp"], block_size=case["blocksize"])
    if case["method"] == "gptq":
        q = loaq.gptq(W, t["hessian"].reshape(n, n), **opts)
    else:
        acc = loaq.CalibrationAccumulator(n)
        acc.add_batch(t["inputs"].astype(np.float64), t["fp_inputs"].astype(np.float64))
        q = loaq.gptaq(W, acc, alpha=case["alpha"], **opts)
    assert q.weight.dtype == np.float32
    step = q.scales[:, q.g_idx]  # [m, n]: the scale of every entry's group
    agree = agreement(q.weight, expected, step)
    print(f"{case['file']}: {agree * 100:.4f}% of codes identical")
    assert agree == 1.0


def test_reference_gptaq_from_arrays_matches_accumulator():
    """gptaq(W, H, dXXT) with the statistics as arrays equals gptaq(W, accumulator)."""
    case = next(c for c in CASES if c["method"] == "gptaq")
    t = read_safetensors(REFERENCE / case["file"])
    W = t["weight"]
    n = W.shape[1]
    acc = loaq.CalibrationAccumulator(n)
    acc.add_batch(t["inputs"], t["fp_inputs"])
    opts = dict(bits=case["bits"], sym=case["sym"], group_size=case["group"],
                act_order=case["act_order"], alpha=case["alpha"])
    a = loaq.gptaq(W, acc, **opts)
    b = loaq.gptaq(W, acc.hessian, acc.cross, **opts)
    np.testing.assert_array_equal(a.codes, b.codes)
