"""The Python API against itself and the library's identities: layouts, dtypes, grids,
objectives, statistics, threads."""

import threading
import time

import numpy as np
import pytest

import loaq
from conftest import layer


def hessian(X):
    return 2.0 * X.T @ X  # one sequence: Ĥ = 2 Σ x xᵀ


def test_accumulator_matches_formula_and_streams(small_layer):
    W, Xh, X = small_layer
    acc = loaq.CalibrationAccumulator(Xh.shape[1])
    acc.add_batch(Xh[:200], X[:200])
    acc.add_batch(Xh[200:], X[200:])
    # Two batches of one sequence each: 2/2 Σ x̂x̂ᵀ.
    np.testing.assert_allclose(acc.hessian, Xh.T @ Xh, rtol=1e-10)
    np.testing.assert_allclose(acc.cross, (X - Xh).T @ Xh, rtol=1e-10, atol=1e-9)
    assert (acc.tokens, acc.sequences, acc.features) == (len(Xh), 2, Xh.shape[1])
    assert acc.has_cross and not acc.has_residual_cross


def test_three_d_batches_count_sequences(small_layer):
    _, Xh, _ = small_layer
    acc = loaq.CalibrationAccumulator(Xh.shape[1])
    acc.add_batch(Xh.reshape(4, -1, Xh.shape[1]))
    assert acc.sequences == 4
    np.testing.assert_allclose(acc.hessian, 2.0 / 4 * Xh.T @ Xh, rtol=1e-10)


@pytest.mark.parametrize("order", ["C", "F", "strided"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layouts_give_identical_codes(small_layer, order, dtype):
    W, Xh, _ = small_layer
    W = W.astype(dtype)
    H = hessian(Xh)
    ref = loaq.gptq(np.asfortranarray(W), H, bits=3, group_size=32, act_order=True)  # mapped
    if order == "C":
        w = np.ascontiguousarray(W)
    elif order == "F":
        w = np.asfortranarray(W)
    else:  # a non-contiguous view: every other column of a wider array
        wide = np.zeros((W.shape[0], 2 * W.shape[1]), dtype=dtype)
        wide[:, ::2] = W
        w = wide[:, ::2]
        assert not w.flags["C_CONTIGUOUS"] and not w.flags["F_CONTIGUOUS"]
    before = w.copy()
    q = loaq.gptq(w, np.asfortranarray(H), bits=3, group_size=32, act_order=True)
    # A gathered copy is the solver's working matrix: the caller's array stays as it was.
    np.testing.assert_array_equal(w, before)
    for field in ("codes", "weight", "scales", "zeros", "g_idx"):
        np.testing.assert_array_equal(getattr(q, field), getattr(ref, field))
    assert q.loss == ref.loss
    assert q.weight.dtype == dtype and q.codes.dtype == np.uint8 and q.g_idx.dtype == np.int32


def test_token_layouts_give_identical_statistics(small_layer):
    _, Xh, X = small_layer
    ref = loaq.CalibrationAccumulator(Xh.shape[1])
    ref.add_batch(Xh, X)
    for xh, x in [(np.asfortranarray(Xh), np.asfortranarray(X)),
                  (Xh.astype(np.float32), X.astype(np.float32)),
                  (Xh.T.copy().T, X[::-1][::-1]),
                  (np.repeat(Xh, 2, axis=1)[:, ::2], X)]:
        acc = loaq.CalibrationAccumulator(Xh.shape[1])
        acc.add_batch(xh, x)
        tol = 1e-3 if xh.dtype == np.float32 else 1e-12
        np.testing.assert_allclose(acc.hessian, ref.hessian, rtol=tol, atol=tol)
        np.testing.assert_allclose(acc.cross, ref.cross, rtol=tol, atol=tol)


def test_negative_strides_are_copied(small_layer):
    W, Xh, _ = small_layer
    H = hessian(Xh)
    ref = loaq.gptq(W[::-1].copy(), H, bits=4)
    q = loaq.gptq(W[::-1], H, bits=4)
    np.testing.assert_array_equal(q.codes, ref.codes)


def test_weight_dtype_chooses_the_solver_and_dtype_overrides(small_layer):
    W, Xh, _ = small_layer
    H = hessian(Xh)
    assert loaq.gptq(W, H).weight.dtype == np.float32
    assert loaq.gptq(W.astype(np.float64), H).weight.dtype == np.float64
    assert loaq.gptq(W, H, dtype="float64").weight.dtype == np.float64
    assert loaq.gptq(W.astype(np.float16), H).weight.dtype == np.float32
    # A float32 Hessian is read in place: the same bits as its exact float64 copy, for both
    # solver scalars and with act-order (which makes the solver permute a copy of it).
    H32 = H.astype(np.float32)
    for kw in ({}, {"dtype": "float64"}, {"act_order": True}):
        a = loaq.gptq(W, H32, bits=4, **kw)
        b = loaq.gptq(W, H32.astype(np.float64), bits=4, **kw)
        assert np.array_equal(a.codes, b.codes) and np.array_equal(a.weight, b.weight)
        assert a.loss == b.loss
    c = loaq.gptq(W, H, bits=4)  # and close to the float64 Hessian's on this well-scaled layer
    assert np.mean(loaq.gptq(W, H32, bits=4).codes == c.codes) > 0.99
    # No float64 copy of it is made on the Python side (numpy's allocations are traced).
    import tracemalloc
    n = 512
    rng = np.random.default_rng(3)
    Xl = rng.standard_normal((4 * n, n)).astype(np.float32)
    Hl = np.asfortranarray(2 * Xl.T @ Xl)
    Wl = rng.standard_normal((4, n)).astype(np.float32)
    tracemalloc.start()
    loaq.gptq(Wl, Hl, bits=4)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < Hl.nbytes  # an upcast alone would be 2 × Hl.nbytes
    # A float32 Hessian with a NaN is refused as the float64 one is.
    bad = H32.copy()
    bad[3, 3] = np.nan
    with pytest.raises(loaq.NonFiniteInputError):
        loaq.gptq(W, bad)


def test_result_fields_are_consistent(small_layer):
    W, Xh, _ = small_layer
    q = loaq.gptq(W, hessian(Xh), bits=4, group_size=32, act_order=True)
    m, n = W.shape
    assert q.weight.shape == q.codes.shape == (m, n)
    assert q.scales.shape == q.zeros.shape == (m, n // 32)
    assert q.g_idx.shape == (n,) and q.g_idx.max() == n // 32 - 1
    # weight = scale · (code − zero) on the uniform grid.
    deq = q.scales[:, q.g_idx] * (q.codes.astype(np.float32) - q.zeros[:, q.g_idx])
    np.testing.assert_allclose(q.weight, deq, rtol=1e-6, atol=1e-7)
    d = q.diagnostics
    assert d.factor_attempts == 1 and d.failed_pivot == -1 and d.relative_damping == 0.01
    assert sorted(d.perm.tolist()) == list(range(n)) and d.perm.tolist() != list(range(n))
    assert d.dead.size == 0
    np.testing.assert_allclose(d.column_loss.sum(), q.loss, rtol=1e-9)
    assert d.damping == pytest.approx(0.01 * np.mean(np.diag(hessian(Xh))), rel=1e-6)


def test_dead_columns_are_reported(small_layer):
    W, Xh, _ = small_layer
    Xh = Xh.copy()
    Xh[:, 5] = 0
    q = loaq.gptq(W, hessian(Xh), bits=4)
    assert q.diagnostics.dead.tolist() == [5]


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("kind", ["uniform", "uniform-sym", "signed", "signed-full"])
def test_every_uniform_grid_and_bits(small_layer, kind, bits):
    W, Xh, _ = small_layer
    grid = "signed" if kind.startswith("signed") else "uniform"
    q = loaq.gptq(W, hessian(Xh), bits=bits, grid=grid, sym=kind == "uniform-sym",
                  full_range=kind == "signed-full", group_size=32)
    assert int(q.codes.max()) <= (1 << bits) - 1
    if kind == "signed":  # codes offset by 2^(b−1), never the most negative level
        assert int(q.codes.min()) >= 1
    r = loaq.rtn(W, bits=bits, grid=grid, sym=kind == "uniform-sym", group_size=32)
    assert np.abs(r.weight - W).mean() < np.abs(W).mean()


@pytest.mark.parametrize("grid", ["nf4", "e2m1"])
def test_codebooks(small_layer, grid):
    W, Xh, _ = small_layer
    q = loaq.gptq(W, hessian(Xh), grid=grid, group_size=32)
    levels = {"nf4": 16, "e2m1": 15}[grid]
    assert int(q.codes.max()) < levels
    table = loaq.gptq(W, hessian(Xh), grid="codebook", group_size=32,
                      levels=[-6, -4, -3, -2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2, 3, 4, 6])
    if grid == "e2m1":
        np.testing.assert_array_equal(q.codes, table.codes)


def test_rtn_has_no_diagnostics_and_matches_round_to_nearest(small_layer):
    W, _, _ = small_layer
    q = loaq.rtn(W, bits=4, group_size=-1)
    assert q.diagnostics is None
    lo = np.minimum(W.min(axis=1), 0)
    hi = np.maximum(W.max(axis=1), 0)
    s = (hi - lo) / 15
    z = np.round(-lo / s)
    codes = np.clip(np.round(W / s[:, None]) + z[:, None], 0, 15)
    assert np.mean(codes == q.codes) > 0.999


def test_gptaq_alpha_zero_is_gptq_and_changes_with_alpha(small_layer):
    W, Xh, X = small_layer
    acc = loaq.CalibrationAccumulator(Xh.shape[1])
    acc.add_batch(Xh, X)
    g = loaq.gptq(W, acc, bits=3)
    np.testing.assert_array_equal(loaq.gptaq(W, acc, alpha=0.0, bits=3).codes, g.codes)
    assert not np.array_equal(loaq.gptaq(W, acc, alpha=0.25, bits=3).codes, g.codes)


def test_solve_target_zero_weights_is_gptq_and_target_is_the_closed_form(small_layer):
    W, Xh, X = small_layer
    acc = loaq.CalibrationAccumulator(Xh.shape[1])
    acc.add_batch(Xh, X)
    g = loaq.gptq(W, acc, bits=3, dtype="float64")
    t0 = loaq.solve_target(W, acc, alpha=0.0, beta=0.0, bits=3, dtype="float64")
    np.testing.assert_array_equal(t0.codes, g.codes)
    t = loaq.solve_target(W, acc.hessian, acc.cross, alpha=1.0, bits=3, dtype="float64",
                          return_target=True, percdamp=0.0)
    # W* = W + α W C Ĥ⁻¹ (no damping here) is the least-squares fit of W x to x̂.
    Wd = W.astype(np.float64)
    lstsq = np.linalg.lstsq(Xh, X @ Wd.T, rcond=None)[0].T
    np.testing.assert_allclose(t.target, lstsq, rtol=1e-6, atol=1e-8)


def test_objectives_match_solve_target(small_layer):
    W, Xh, X = small_layer
    n = Xh.shape[1]
    st = loaq.ObjectiveStats(loaq.LinearOutput(alpha=0.5), n=n)
    st.add(Xh, X)
    acc = loaq.CalibrationAccumulator(n)
    acc.add_batch(Xh, X)
    a = loaq.solve_objective(W, st, bits=3, group_size=32, return_target=True)
    b = loaq.solve_target(W, acc, alpha=0.5, bits=3, group_size=32, return_target=True)
    np.testing.assert_array_equal(a.codes, b.codes)
    np.testing.assert_allclose(a.target, b.target)

    rng = np.random.default_rng(1)
    m = W.shape[0]
    R = rng.standard_normal((len(Xh), m))
    Rh = R + 0.05 * rng.standard_normal(R.shape)
    res = loaq.ObjectiveStats(loaq.ResidualOutput(alpha=1.0, beta=0.5), n=n, m=m)
    res.add(Xh, X, Rh, R)
    acc2 = loaq.CalibrationAccumulator(n, m)
    acc2.add_batch(Xh, X, Rh, R)
    np.testing.assert_allclose(res.residual_cross, (R - Rh).T @ Xh * 2, rtol=1e-9, atol=1e-9)
    a = loaq.solve_objective(W, res, bits=3)
    b = loaq.solve_target(W, acc2, alpha=1.0, beta=0.5, bits=3)
    np.testing.assert_array_equal(a.codes, b.codes)

    nrm = loaq.ObjectiveStats(loaq.NormalizedOutput(), weight=W)
    nrm.add(Xh, X, Rh, R)
    q = loaq.solve_objective(W, nrm, bits=3)
    assert q.weight.shape == W.shape and np.isfinite(q.weight).all()
    # Weighted: Ĥ_N = 2 Σ ŝ² x̂x̂ᵀ with ŝ = 1/ρ(r̂ + W x̂).
    Wd = W.astype(np.float64)
    sh = 1 / np.sqrt(np.mean((Rh + Xh @ Wd.T) ** 2, axis=1) + 1e-5)
    np.testing.assert_allclose(nrm.hessian, 2 * (Xh * sh[:, None] ** 2).T @ Xh, rtol=1e-9)


def test_normalized_without_drift_targets_the_weight(small_layer):
    W, Xh, _ = small_layer
    R = np.random.default_rng(2).standard_normal((len(Xh), W.shape[0]))
    st = loaq.ObjectiveStats(loaq.NormalizedOutput(weighted=False), weight=W)
    st.add(Xh, Xh, R, R)
    q = loaq.solve_objective(W, st, bits=4, return_target=True)
    np.testing.assert_allclose(q.target, W, atol=1e-5)


def test_normalized_target_only_and_the_fp_output(small_layer):
    W, Xh, X = small_layer
    rng = np.random.default_rng(6)
    R = rng.standard_normal((len(Xh), W.shape[0]))
    Rh = R + 0.1 * rng.standard_normal(R.shape)
    Wd = W.astype(np.float64)
    Y = R + X @ Wd.T  # what the FP model outputs
    obj = loaq.NormalizedOutput(0.5, 0.25)
    full = loaq.ObjectiveStats(obj, weight=Wd)
    only = loaq.ObjectiveStats(obj, weight=Wd, target_only=True)
    given = loaq.ObjectiveStats(obj, weight=Wd, target_only=True)
    assert only.target_only and not full.target_only
    full.add(Xh, X, Rh, R)
    only.add(Xh, X, Rh, R)
    given.add(Xh, X, Rh, R, y=Y)
    # Target-only keeps B = α W C + β G where C and G would be; the solve is the same.
    B = 0.5 * Wd @ full.cross + 0.25 * full.residual_cross
    assert only.cross.size == 0
    np.testing.assert_allclose(only.residual_cross, B, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(given.residual_cross, B, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(given.hessian, full.hessian, rtol=1e-10)
    qf = loaq.solve_objective(Wd, full, bits=3, return_target=True)
    qg = loaq.solve_objective(Wd, given, bits=3, return_target=True)
    np.testing.assert_allclose(qg.target, qf.target, rtol=1e-8, atol=1e-8)
    assert np.mean(qf.codes == qg.codes) > 0.99
    # y is what the RMS factors and the target read: a wrong one changes the statistics.
    wrong = loaq.ObjectiveStats(obj, weight=Wd, target_only=True)
    wrong.add(Xh, X, Rh, R, y=2 * Y)
    assert np.linalg.norm(wrong.residual_cross - B) > 0.1 * np.linalg.norm(B)
    # Misuse is an error that says what.
    with pytest.raises(loaq.ShapeMismatchError):
        given.add(Xh, X, Rh, R, y=Y[:, :-1])
    with pytest.raises(loaq.NonFiniteInputError):
        given.add(Xh, X, Rh, R, y=np.where(np.arange(Y.size).reshape(Y.shape) == 7, np.nan, Y))
    assert given.tokens == len(Xh)
    with pytest.raises(loaq.InvalidArgumentError, match="NormalizedOutput"):
        loaq.ObjectiveStats(loaq.LinearOutput(0.5), n=Xh.shape[1], target_only=True)
    lin = loaq.ObjectiveStats(loaq.LinearOutput(0.5), n=Xh.shape[1])
    with pytest.raises(loaq.InvalidArgumentError, match="NormalizedOutput"):
        lin.add(Xh, X, y=Y)


def test_weighted_accumulator_form(small_layer):
    _, Xh, X = small_layer
    a = np.linspace(0.5, 1.5, len(Xh))
    b = np.linspace(1.5, 0.5, len(Xh))
    acc = loaq.CalibrationAccumulator(Xh.shape[1])
    acc.add_batch(Xh, X, a=a, b=b)
    xa = Xh * a[:, None]
    np.testing.assert_allclose(acc.hessian, 2 * xa.T @ xa, rtol=1e-10)
    np.testing.assert_allclose(acc.cross, 2 * (X * b[:, None] - xa).T @ xa, rtol=1e-9, atol=1e-9)


def test_float_products_stay_within_float_rounding(small_layer):
    W, Xh, X = small_layer
    R = np.random.default_rng(3).standard_normal((len(Xh), W.shape[0]))
    Rh = R + 0.1 * np.random.default_rng(4).standard_normal(R.shape)
    exact = loaq.CalibrationAccumulator(Xh.shape[1])
    fast = loaq.CalibrationAccumulator(Xh.shape[1], float_products=True)
    assert fast.float_products and not exact.float_products
    for acc in (exact, fast):
        acc.add_batch(Xh[:200], X[:200], Rh[:200], R[:200])
        acc.add_batch(Xh[200:], X[200:], Rh[200:], R[200:])
    for name in ("hessian", "cross", "residual_cross"):
        e, f = getattr(exact, name), getattr(fast, name)
        assert np.linalg.norm(e - f) < 1e-6 * np.linalg.norm(e), name
    assert not np.array_equal(exact.hessian, fast.hessian)  # the products really ran in float
    # The normalized objective's W·x too; the solve keeps its codes close to the exact ones.
    obj = loaq.NormalizedOutput(0.5, 0.5)
    st_exact = loaq.ObjectiveStats(obj, weight=W)
    st_fast = loaq.ObjectiveStats(obj, weight=W, float_products=True)
    assert st_fast.float_products
    for st in (st_exact, st_fast):
        st.add(Xh, X, Rh, R)
    e, f = st_exact.residual_cross, st_fast.residual_cross
    assert np.linalg.norm(e - f) < 1e-5 * np.linalg.norm(e)
    qe = loaq.solve_objective(W, st_exact, bits=4)
    qf = loaq.solve_objective(W, st_fast, bits=4)
    assert np.mean(qe.codes == qf.codes) > 0.99
    # Products beyond float32's range are refused, not turned into Inf or 0; float64 holds them.
    for scale in (1e25, 1e-20):
        with pytest.raises(loaq.LoaqError, match="flow float"):
            fast.add_batch(Xh * scale, X * scale, Rh * scale, R * scale)
        exact.add_batch(Xh * scale, X * scale, Rh * scale, R * scale)
    assert fast.tokens == len(Xh) and np.isfinite(fast.hessian).all()


def test_llama_linear_role():
    assert loaq.llama_linear_role("model.layers.3.mlp.down_proj") == "output"
    assert loaq.llama_linear_role("self_attn.o_proj") == "output"
    assert loaq.llama_linear_role("self_attn.q_proj") == "input"


def test_dlpack_producer_is_accepted(small_layer):
    W, Xh, _ = small_layer

    class OnlyDLPack:  # exposes DLPack and nothing else
        def __init__(self, a):
            self._a = a

        def __dlpack__(self, stream=None):
            return self._a.__dlpack__()

        def __dlpack_device__(self):
            return self._a.__dlpack_device__()

    H = hessian(Xh)
    ref = loaq.gptq(W, H, bits=4)
    q = loaq.gptq(OnlyDLPack(W), OnlyDLPack(H), bits=4)
    np.testing.assert_array_equal(q.codes, ref.codes)


def test_torch_tensors_are_accepted(small_layer):
    torch = pytest.importorskip("torch")
    W, Xh, X = small_layer
    lin = torch.nn.Linear(W.shape[1], W.shape[0], bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(W))
    assert lin.weight.requires_grad
    acc = loaq.CalibrationAccumulator(W.shape[1])
    acc.add_batch(torch.from_numpy(Xh).float().reshape(2, -1, W.shape[1]))
    ref_acc = loaq.CalibrationAccumulator(W.shape[1])
    ref_acc.add_batch(Xh.astype(np.float32).reshape(2, -1, W.shape[1]))
    q = loaq.gptq(lin.weight, acc, bits=4, group_size=32)
    ref = loaq.gptq(W, ref_acc, bits=4, group_size=32)
    np.testing.assert_array_equal(q.codes, ref.codes)
    # Transposed (non-contiguous) tensor, bfloat16 (upcast with a copy).
    q2 = loaq.gptq(torch.from_numpy(np.ascontiguousarray(W.T)).t(), acc, bits=4, group_size=32)
    np.testing.assert_array_equal(q2.codes, ref.codes)
    assert loaq.gptq(lin.weight.to(torch.bfloat16), acc).weight.dtype == np.float32
    # Results go back into the model without a copy in between.
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(q.weight))
    np.testing.assert_array_equal(lin.weight.detach().numpy(), q.weight)


def test_solves_release_the_gil():
    """A second Python thread keeps running while a solve is under way."""
    W, Xh, _ = layer(3, m=512, n=768, T=1024)
    H = hessian(Xh)
    ticks = []
    done = threading.Event()

    def ticker():
        while not done.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    t = threading.Thread(target=ticker)
    t.start()
    t0 = time.perf_counter()
    q = loaq.gptq(W, H, bits=4)
    t1 = time.perf_counter()
    done.set()
    t.join()
    during = [x for x in ticks if t0 < x < t1]
    assert q.weight.shape == W.shape
    # With the GIL held the ticker could not run at all during the solve (0 ticks, at most 1 at
    # the edges); a loaded machine still lets it tick a few times in a ≥ 0.1 s solve.
    assert len(during) >= 3, (len(during), t1 - t0)


def test_concurrent_solves_on_one_accumulator_agree(small_layer):
    W, Xh, X = small_layer
    acc = loaq.CalibrationAccumulator(Xh.shape[1])
    acc.add_batch(Xh, X)
    ref = loaq.gptaq(W, acc, bits=3)
    out = [None] * 4

    def work(i):
        out[i] = loaq.gptaq(W, acc, bits=3).codes

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in out:
        np.testing.assert_array_equal(c, ref.codes)


@pytest.mark.parametrize("shape", [(37, 53), (8, 13), (5, 3), (64, 7), (300, 268)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_c_order_transpose_handles_ragged_tiles(shape, dtype):
    m, n = shape
    rng = np.random.default_rng(m * n)
    W = rng.standard_normal((m, n)).astype(dtype)
    X = rng.standard_normal((4 * n, n))
    D = rng.standard_normal((n, n)) * 0.01  # not symmetric: the layout must be respected
    H = 2 * X.T @ X
    F = loaq.gptaq(np.asfortranarray(W), H, np.asfortranarray(D), bits=3, alpha=0.5)
    Wc = np.ascontiguousarray(W)
    C = loaq.gptaq(Wc, H, np.ascontiguousarray(D), bits=3, alpha=0.5)
    np.testing.assert_array_equal(Wc, W)  # solved in the binding's copy, not in the caller's array
    np.testing.assert_array_equal(C.codes, F.codes)
    np.testing.assert_array_equal(C.weight, F.weight)
    np.testing.assert_array_equal(C.scales, F.scales)
    assert C.loss == F.loss
