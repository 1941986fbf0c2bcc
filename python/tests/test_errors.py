"""Every bad input raises a clear exception (and the C++ Report's message where it has one)."""

import numpy as np
import pytest

import loaq
from conftest import layer


@pytest.fixture
def lay():
    W, Xh, X = layer(0)
    return W, 2.0 * Xh.T @ Xh, Xh, X


def test_exception_hierarchy():
    assert issubclass(loaq.ShapeMismatchError, ValueError)
    assert issubclass(loaq.NonFiniteInputError, ValueError)
    assert issubclass(loaq.InvalidArgumentError, ValueError)
    assert issubclass(loaq.NotPositiveDefiniteError, ArithmeticError)
    for cls in (loaq.ShapeMismatchError, loaq.NonFiniteInputError, loaq.InvalidArgumentError,
                loaq.NotPositiveDefiniteError):
        assert issubclass(cls, loaq.LoaqError)


@pytest.mark.parametrize("bad, match", [
    (np.zeros(10, np.float32), "weight must be 2-D"),
    (np.zeros((2, 3, 4), np.float32), "weight must be 2-D"),
    (np.zeros((0, 96), np.float32), "weight is empty"),
])
def test_weight_shapes(lay, bad, match):
    _, H, _, _ = lay
    with pytest.raises(loaq.ShapeMismatchError, match=match):
        loaq.gptq(bad, H)


def test_hessian_shape_mismatch(lay):
    W, H, _, _ = lay
    with pytest.raises(loaq.ShapeMismatchError, match=r"hessian must have shape \[96, 96\]"):
        loaq.gptq(W, H[:50, :50])
    with pytest.raises(loaq.ShapeMismatchError, match="dxxt"):
        loaq.gptaq(W, H, H[:, :3])
    with pytest.raises(loaq.ShapeMismatchError, match="g must have shape"):
        loaq.solve_target(W, H, None, np.zeros((3, 96)))


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.complex64, np.bool_, object])
def test_bad_dtypes(lay, dtype):
    W, H, _, _ = lay
    with pytest.raises(TypeError, match="float32 or float64"):
        loaq.gptq(W.astype(dtype), H)
    with pytest.raises(TypeError, match="float32 or float64"):
        loaq.gptq(W, H.astype(dtype))


def test_not_an_array(lay):
    _, H, _, _ = lay
    with pytest.raises(TypeError, match="must be an array"):
        loaq.gptq(object(), H)
    with pytest.raises(TypeError, match="required"):
        loaq.gptq(None, H)


def test_non_finite_inputs_carry_the_report_message(lay):
    W, H, Xh, X = lay
    Wn = W.copy()
    Wn[3, 4] = np.nan
    with pytest.raises(loaq.NonFiniteInputError, match="weight holds NaN or Inf"):
        loaq.gptq(Wn, H)
    with pytest.raises(loaq.NonFiniteInputError, match="weight holds NaN or Inf"):
        loaq.rtn(Wn)
    Hn = H.copy()
    Hn[0, 0] = np.inf
    with pytest.raises(loaq.NonFiniteInputError, match="Hessian holds NaN or Inf"):
        loaq.gptq(W, Hn)
    acc = loaq.CalibrationAccumulator(W.shape[1])
    Xn = Xh.copy()
    Xn[7, 7] = np.nan
    with pytest.raises(loaq.NonFiniteInputError, match="calibration batch holds NaN"):
        acc.add_batch(Xn)
    assert acc.tokens == 0  # a refused batch leaves the statistics untouched


def test_indefinite_hessian(lay):
    W, _, _, _ = lay
    n = W.shape[1]
    H = -np.eye(n)
    with pytest.raises(loaq.NotPositiveDefiniteError, match="non-positive mean"):
        loaq.gptq(W, H)
    H = np.eye(n)
    H[0, 1] = H[1, 0] = 50.0
    with pytest.raises(loaq.NotPositiveDefiniteError, match="Cholesky failed at pivot"):
        loaq.gptq(W, H, percdamp=0.0, damp_attempts=1)


@pytest.mark.parametrize("kwargs, match", [
    (dict(bits=1), "bits must be in"),
    (dict(bits=9), "bits must be in"),
    (dict(group_size=0), "group size"),
    (dict(block_size=0), "block size"),
    (dict(mse=True, maxshrink=1.5), "MSE search"),
    (dict(percdamp=-1.0), "damping policy"),
    (dict(grid="int3"), "grid must be one of"),
    (dict(grid="nf4", bits=3), "4-bit grid"),
    (dict(grid="codebook"), "needs levels"),
    (dict(grid="codebook", levels=[0.0, 0.0]), "all zero"),
    (dict(levels=[1.0, 2.0]), "only used with grid='codebook'"),
])
def test_invalid_options(lay, kwargs, match):
    W, H, _, _ = lay
    with pytest.raises(loaq.InvalidArgumentError, match=match):
        loaq.gptq(W, H, **kwargs)


def test_non_finite_codebook_level(lay):
    W, H, _, _ = lay
    with pytest.raises(loaq.LoaqError, match="finite"):
        loaq.gptq(W, H, grid="codebook", levels=[1.0, np.nan])


def test_option_types(lay):
    W, H, _, _ = lay
    with pytest.raises(TypeError, match="bits must be an int"):
        loaq.gptq(W, H, bits=4.0)
    with pytest.raises(TypeError, match="group_size must be an int"):
        loaq.gptq(W, H, group_size="128")
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        loaq.gptq(W, H, dtype=np.int8)
    with pytest.raises(TypeError):
        loaq.gptq(W, H, 4)  # options are keyword-only


def test_accumulator_misuse(lay):
    W, _, Xh, X = lay
    n = W.shape[1]
    with pytest.raises(loaq.InvalidArgumentError, match="n ≥ 1"):
        loaq.CalibrationAccumulator(0)
    acc = loaq.CalibrationAccumulator(n)
    with pytest.raises(loaq.InvalidArgumentError, match="no calibration batch"):
        loaq.gptq(W, acc)
    with pytest.raises(loaq.ShapeMismatchError, match="features, the accumulator expects"):
        acc.add_batch(Xh[:, :10])
    with pytest.raises(loaq.ShapeMismatchError, match="FP inputs must have the shape"):
        acc.add_batch(Xh, X[:10])
    with pytest.raises(loaq.InvalidArgumentError, match="both residual streams"):
        acc.add_batch(Xh, X, Xh)
    with pytest.raises(loaq.InvalidArgumentError, match="at least one sequence"):
        acc.add_batch(Xh, sequences=0)
    acc.add_batch(Xh)
    with pytest.raises(loaq.InvalidArgumentError, match="cross term mid-stream"):
        acc.add_batch(Xh, X)
    with pytest.raises(loaq.InvalidArgumentError, match="GPTAQ needs the FP inputs"):
        loaq.gptaq(W, acc)
    with pytest.raises(loaq.ShapeMismatchError, match="must be 1-D with"):
        loaq.CalibrationAccumulator(n).add_batch(Xh, X, a=np.ones(3), b=np.ones(3))
    with pytest.raises(loaq.ShapeMismatchError, match="tokens, features"):
        acc.add_batch(np.zeros(n))


def test_objective_misuse(lay):
    W, H, Xh, X = lay
    n = W.shape[1]
    with pytest.raises(TypeError, match="objective must be"):
        loaq.ObjectiveStats("linear", n=n)
    with pytest.raises(loaq.InvalidArgumentError, match="need the layer's weight"):
        loaq.ObjectiveStats(loaq.NormalizedOutput())
    with pytest.raises(loaq.InvalidArgumentError, match="need n ≥ 1 and m ≥ 1"):
        loaq.ObjectiveStats(loaq.ResidualOutput(), n=n)
    st = loaq.ObjectiveStats(loaq.ResidualOutput(), n=n, m=W.shape[0])
    with pytest.raises(loaq.InvalidArgumentError, match="needs r_hat and r"):
        st.add(Xh, X)
    with pytest.raises(loaq.InvalidArgumentError, match="no calibration batch"):
        loaq.solve_objective(W, st)
    with pytest.raises(TypeError, match="must be an ObjectiveStats"):
        loaq.solve_objective(W, H)
    nrm = loaq.ObjectiveStats(loaq.NormalizedOutput(), weight=W)
    with pytest.raises(loaq.ShapeMismatchError, match="normalized objective needs"):
        nrm.add(Xh, X, Xh, X)  # residual streams must be [T, m]
    lin = loaq.ObjectiveStats(loaq.LinearOutput(), n=n)
    with pytest.raises(loaq.InvalidArgumentError, match="takes no residual"):
        lin.add(Xh, X, Xh, X)


def test_cuda_tensor_is_refused(lay):
    W, H, _, _ = lay

    class FakeCuda:
        device = type("D", (), {"type": "cuda"})()

        def __array__(self):
            raise AssertionError("must not be read")

    with pytest.raises(TypeError, match="tensor.cpu()"):
        loaq.gptq(FakeCuda(), H)


def test_requires_grad_tensor_is_detached(lay):
    torch = pytest.importorskip("torch")
    W, H, _, _ = lay
    w = torch.nn.Parameter(torch.from_numpy(W.copy()))
    np.testing.assert_array_equal(loaq.gptq(w, H).codes, loaq.gptq(W, H).codes)
