"""Properties of the proximal operators (ALGORITHMS.md section 0).

* ``L1``: the Moreau identity with the conjugate (indicator of the l-inf ball,
  whose prox is clipping), the closed form, firm nonexpansiveness.
* ``TopK``: a Euclidean projection onto ``{||v||_0 <= K}`` (brute force over
  all supports), exactly ``min(K, nnz)`` non-zeros, idempotent, ``abs``-based,
  deterministic lowest-index tie-break, row-wise and per-run.
* ``Consensus``: the orthogonal projection onto the consensus subspace.
* ``Zero``: the identity.
* Bad input raises with a message naming the argument.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from proxfed.prox import L1, Consensus, TopK, Zero

# ---------------------------------------------------------------------------------------------
# strategies
# ---------------------------------------------------------------------------------------------

#: Finite floats, mixed with a few small integers so that ties and exact zeros are common.
ELEMENTS = st.one_of(
    st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, allow_subnormal=False),
    st.sampled_from([-3.0, -2.0, -1.0, -0.0, 0.0, 1.0, 2.0, 3.0]),
)
STEPS = st.floats(1e-3, 1e3, allow_nan=False, allow_infinity=False)
LAMS = st.floats(0.0, 1e2, allow_nan=False, allow_infinity=False)


def vectors(min_d=1, max_d=8):
    return st.integers(min_d, max_d).flatmap(lambda d: hnp.arrays(np.float64, d, elements=ELEMENTS))


@st.composite
def vector_and_k(draw, min_d=1, max_d=7):
    x = draw(vectors(min_d, max_d))
    k = draw(st.integers(1, x.shape[0]))
    return x, k


@st.composite
def array_pair(draw, max_dims=3):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=max_dims, min_side=1, max_side=6))
    x = draw(hnp.arrays(np.float64, shape, elements=ELEMENTS))
    y = draw(hnp.arrays(np.float64, shape, elements=ELEMENTS))
    return x, y


def reference_mask(x: np.ndarray, k: int) -> np.ndarray:
    """The spec's TopK support: largest |x_j| first, ties towards the lowest index."""
    order = np.argsort(-np.abs(x), kind="stable")
    mask = np.zeros(x.shape, bool)
    mask[order[:k]] = True
    return mask


def soft(x, tau):
    return np.sign(x) * np.maximum(np.abs(x) - tau, 0.0)


# ---------------------------------------------------------------------------------------------
# L1
# ---------------------------------------------------------------------------------------------


@given(x=vectors(), tau=STEPS, lam=LAMS)
def test_l1_moreau_identity(x, tau, lam):
    """x = prox_{tau f}(x) + tau prox_{f*/tau}(x / tau), f = lam ||.||_1, f* = indicator of the lam l-inf ball."""
    p = L1(lam).prox(x, tau)
    conj = np.clip(x / tau, -lam, lam)  # prox of an indicator (any scaling) = projection
    scale = max(1.0, float(np.max(np.abs(x))))
    np.testing.assert_allclose(p + tau * conj, x, rtol=0, atol=1e-12 * scale)


@given(x=vectors(), tau=STEPS, lam=LAMS)
def test_l1_prox_is_soft_thresholding_and_minimizes(x, tau, lam):
    op = L1(lam)
    p = op.prox(x, tau)
    np.testing.assert_allclose(p, soft(x, tau * lam), rtol=1e-14, atol=1e-12)
    # p minimizes lam ||z||_1 + ||z - x||^2 / (2 tau): compare against perturbations
    obj = lambda z: lam * np.sum(np.abs(z)) + np.sum((z - x) ** 2) / (2 * tau)  # noqa: E731
    rng = np.random.default_rng(0)
    best = obj(p)
    for _ in range(5):
        z = p + rng.normal(size=x.shape) * (1e-3 + np.abs(x))
        assert best <= obj(z) + 1e-9 * max(1.0, abs(best))


@given(xy=array_pair(), tau=STEPS, lam=LAMS)
def test_l1_firmly_nonexpansive(xy, tau, lam):
    x, y = xy
    op = L1(lam)
    d = op.prox(x, tau) - op.prox(y, tau)
    lhs = float(np.sum(d * d))
    rhs = float(np.sum(d * (x - y)))
    assert lhs <= rhs + 1e-9 * max(1.0, rhs)


def test_l1_known_values_and_value():
    op = L1(2.0)
    np.testing.assert_array_equal(op.prox(np.array([3.0, -0.5, -2.0, 1.0]), 0.5), [2.0, 0.0, -1.0, 0.0])
    assert float(op.value(np.array([[1.0, -2.0], [0.0, 3.0]]))) == pytest.approx(12.0)
    # lam = 0 is the identity
    x = np.array([1.5, -2.5, 0.0])
    np.testing.assert_array_equal(L1(0.0).prox(x, 3.0), x)
    assert float(L1(0.0).value(x)) == 0.0


def test_l1_per_run_parameters():
    rng = np.random.default_rng(1)
    lam = np.array([0.0, 0.5, 2.0])
    step = np.array([1.0, 0.3, 0.7])
    x = rng.normal(size=(3, 4, 5))
    op = L1(lam)
    out = op.prox(x, step)
    vals = np.asarray(op.value(x))
    assert out.shape == x.shape and vals.shape == (3,)
    for r in range(3):
        np.testing.assert_allclose(out[r], soft(x[r], step[r] * lam[r]), rtol=1e-15, atol=0)
        assert vals[r] == pytest.approx(lam[r] * np.abs(x[r]).sum())
    # scalar step with per-run lam on (R, d)
    x2 = rng.normal(size=(3, 6))
    out2 = op.prox(x2, 0.4)
    for r in range(3):
        np.testing.assert_allclose(out2[r], soft(x2[r], 0.4 * lam[r]), rtol=1e-15, atol=0)


# ---------------------------------------------------------------------------------------------
# TopK
# ---------------------------------------------------------------------------------------------


@given(xk=vector_and_k())
def test_topk_is_a_closest_k_sparse_vector_brute_force(xk):
    x, k = xk
    d = x.shape[0]
    out = TopK(k).prox(x, 1.0)
    # feasible: at most k non-zeros, every kept entry is the original entry
    assert np.count_nonzero(out) <= k
    assert np.all((out == x) | (out == 0))
    dist = np.linalg.norm(x - out)
    # brute force over all supports of size k (supersets of smaller supports)
    best = min(
        np.sqrt(np.sum(np.delete(x, list(S)) ** 2)) for S in itertools.combinations(range(d), k)
    )
    assert dist == pytest.approx(best, rel=1e-12, abs=1e-12)
    # closed form: the d - k smallest squares are removed
    smallest = np.sqrt(np.sum(np.sort(x**2)[: d - k]))
    assert dist == pytest.approx(smallest, rel=1e-12, abs=1e-12)


@given(x=hnp.arrays(np.float64, st.integers(1, 40), elements=ELEMENTS), data=st.data())
def test_topk_counts_idempotence_and_tie_break(x, data):
    d = x.shape[0]
    k = data.draw(st.integers(1, d))
    op = TopK(k)
    out = op.prox(x, 1.0)
    nnz = np.count_nonzero(x)
    assert np.count_nonzero(out) == min(k, nnz)
    if nnz >= k:
        assert np.count_nonzero(out) == k
    # the exact support of the spec: by |x|, ties to the lowest index
    expected = reference_mask(x, k)
    np.testing.assert_array_equal(op.mask(x), expected)
    np.testing.assert_array_equal(out, np.where(expected, x, 0.0))
    assert op.mask(x).sum() == k
    # idempotent, and independent of the step (a projection)
    np.testing.assert_array_equal(op.prox(out, 1.0), out)
    np.testing.assert_array_equal(op.prox(x, 123.0), out)
    # deterministic
    np.testing.assert_array_equal(op.prox(x.copy(), 1.0), out)


def test_topk_uses_magnitude_not_signed_value():
    np.testing.assert_array_equal(TopK(1).prox(np.array([-5.0, 1.0, 2.0]), 1.0), [-5.0, 0.0, 0.0])
    np.testing.assert_array_equal(TopK(2).prox(np.array([-5.0, 1.0, 2.0, -3.0]), 1.0), [-5.0, 0.0, 0.0, -3.0])
    np.testing.assert_array_equal(TopK(2).prox(np.array([3.0, -4.0, 1.0, 4.0]), 1.0), [0.0, -4.0, 0.0, 4.0])


def test_topk_ties_lowest_index_wins():
    np.testing.assert_array_equal(TopK(2).prox(np.ones(4), 1.0), [1.0, 1.0, 0.0, 0.0])
    np.testing.assert_array_equal(TopK(1).prox(np.array([2.0, -2.0, 1.0]), 1.0), [2.0, 0.0, 0.0])
    np.testing.assert_array_equal(TopK(1).prox(np.array([-2.0, 2.0, 1.0]), 1.0), [-2.0, 0.0, 0.0])
    np.testing.assert_array_equal(TopK(2).prox(np.array([1.0, 3.0, 1.0, 1.0]), 1.0), [1.0, 3.0, 0.0, 0.0])
    np.testing.assert_array_equal(TopK(3).prox(np.array([0.0, 0.0, 5.0, 0.0]), 1.0), [0.0, 0.0, 5.0, 0.0])
    assert TopK(3).mask(np.array([0.0, 0.0, 5.0, 0.0])).tolist() == [True, True, True, False]
    # exactly k kept among many equal entries, in every row
    x = np.tile(np.array([1.0, -1.0, 1.0, -1.0, 1.0, 0.5]), (3, 1))
    out = TopK(4).prox(x, 1.0)
    np.testing.assert_array_equal(out, np.tile([1.0, -1.0, 1.0, -1.0, 0.0, 0.0], (3, 1)))


@pytest.mark.parametrize("backend", ["torch", "array_api_strict"])
def test_topk_tie_break_other_backends(backend):
    """The tie-break and the use of |x| do not depend on the array library's selection routine."""
    xs = np.array([[1.0, 1.0, 1.0, 1.0], [-2.0, 2.0, 1.0, -2.0], [0.0, 0.0, 5.0, 0.0], [-5.0, 1.0, 2.0, 4.0]])
    if backend == "torch":
        torch = pytest.importorskip("torch")
        x = torch.asarray(xs)
        to_np = lambda a: a.numpy()  # noqa: E731
    else:
        xp = pytest.importorskip("array_api_strict")
        x = xp.asarray(xs)
        from proxfed._backend import to_numpy as to_np
    for k in (1, 2, 3):
        out = TopK(k).prox(x, 1.0)
        assert type(out) is type(x)
        np.testing.assert_array_equal(to_np(out), np.stack([np.where(reference_mask(r, k), r, 0.0) for r in xs]))


@given(
    x=hnp.arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 5), st.integers(1, 9)), elements=ELEMENTS),
    data=st.data(),
)
def test_topk_row_wise_and_per_run(x, data):
    R, N, d = x.shape
    k = data.draw(st.integers(1, d))
    # (N, d) rows independently
    out2 = TopK(k).prox(x[0], 1.0)
    for i in range(N):
        np.testing.assert_array_equal(out2[i], TopK(k).prox(x[0, i], 1.0))
    # (R, N, d) with a scalar k
    out3 = TopK(k).prox(x, 1.0)
    for r in range(R):
        np.testing.assert_array_equal(out3[r], TopK(k).prox(x[r], 1.0))
    # per-run k on (R, N, d) and on (R, d)
    ks = np.array(data.draw(st.lists(st.integers(1, d), min_size=R, max_size=R)))
    op = TopK(ks)
    out_runs = op.prox(x, 1.0)
    out_rd = op.prox(x[:, 0, :], 1.0)
    for r in range(R):
        np.testing.assert_array_equal(out_runs[r], TopK(int(ks[r])).prox(x[r], 1.0))
        np.testing.assert_array_equal(op.mask(x)[r], TopK(int(ks[r])).mask(x[r]))
        np.testing.assert_array_equal(out_rd[r], TopK(int(ks[r])).prox(x[r, 0], 1.0))


def test_topk_value():
    op = TopK(2)
    assert float(op.value(np.array([1.0, 0.0, -3.0]))) == 0.0
    assert float(op.value(np.array([1.0, 2.0, -3.0]))) == np.inf
    assert float(op.value(np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 3.0]]))) == 0.0
    assert float(op.value(np.array([[1.0, 0.0, 0.0], [1.0, 2.0, 3.0]]))) == np.inf
    # per-run k: run r may hold k[r] non-zeros per row
    per_run = TopK(np.array([1, 3]))
    x = np.array([[[1.0, 0.0, 0.0]], [[1.0, 2.0, 3.0]]])
    assert float(per_run.value(x)) == 0.0
    assert float(per_run.value(x[::-1].copy())) == np.inf
    # value is 0 on the output of the prox
    rng = np.random.default_rng(3)
    z = rng.normal(size=(4, 7))
    assert float(TopK(3).value(TopK(3).prox(z, 1.0))) == 0.0


# ---------------------------------------------------------------------------------------------
# Consensus and Zero
# ---------------------------------------------------------------------------------------------


@st.composite
def client_arrays(draw):
    shape = draw(st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 6)))
    lead = draw(st.booleans())
    if not lead:
        shape = shape[1:]
    x = draw(hnp.arrays(np.float64, shape, elements=ELEMENTS))
    y = draw(hnp.arrays(np.float64, shape, elements=ELEMENTS))
    c = draw(hnp.arrays(np.float64, shape[:-2] + (1, shape[-1]), elements=ELEMENTS))
    return x, y, np.broadcast_to(c, shape)


@given(xyc=client_arrays(), step=STEPS)
def test_consensus_is_the_orthogonal_projection(xyc, step):
    x, y, c = xyc
    op = Consensus()
    px, py = op.prox(x, step), op.prox(y, step)
    scale = max(1.0, float(np.max(np.abs(x))), float(np.max(np.abs(y))))
    N = x.shape[-2]
    # every client row is the mean over clients
    np.testing.assert_allclose(px, np.broadcast_to(x.mean(axis=-2, keepdims=True), x.shape), rtol=0, atol=1e-13 * scale)
    # idempotent
    np.testing.assert_allclose(op.prox(np.array(px), 1.0), px, rtol=0, atol=1e-12 * scale)
    # self-adjoint: <Px, y> = <x, Py>
    tol = 1e-11 * scale * scale * x.size
    assert abs(np.sum(px * y) - np.sum(x * py)) <= tol
    # residual orthogonal to every consensus vector
    assert abs(np.sum((x - px) * c)) <= tol
    # a consensus vector is its own projection
    np.testing.assert_allclose(op.prox(np.array(c), step), c, rtol=0, atol=1e-12 * scale)
    # firmly nonexpansive
    dd = px - py
    assert np.sum(dd * dd) <= np.sum(dd * (x - y)) + tol
    # value: 0 exactly on the consensus set
    assert float(op.value(np.array(c))) == 0.0
    if N > 1 and not np.all(x == x[..., :1, :]):
        assert float(op.value(x)) == np.inf


def test_consensus_known_values():
    out = Consensus().prox(np.array([[1.0, 2.0], [3.0, 6.0]]), 1.0)
    np.testing.assert_array_equal(out, [[2.0, 4.0], [2.0, 4.0]])
    np.testing.assert_array_equal(Consensus().mean(np.array([[1.0, 2.0], [3.0, 6.0]])), [[2.0, 4.0]])


@given(xy=array_pair(), step=STEPS)
def test_zero_is_the_identity(xy, step):
    x, _ = xy
    op = Zero()
    np.testing.assert_array_equal(op.prox(x, step), x)
    assert float(op.value(x)) == 0.0


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("op", [L1(1.0), TopK(1), Consensus(), Zero()], ids=lambda o: type(o).__name__)
@pytest.mark.parametrize("step", [0.0, -1.0, np.nan, np.inf, np.array([1.0, -1.0])])
def test_bad_step(op, step):
    x = np.ones((2, 3))
    with pytest.raises(ValueError, match="step"):
        op.prox(x, step)


@pytest.mark.parametrize("k, exc", [(0, ValueError), (-2, ValueError), (2.5, TypeError), ("3", TypeError),
                                    (True, TypeError), (np.array([1, 0]), ValueError),
                                    (np.array([[1, 2]]), TypeError), (np.array([1.5, 2.0]), TypeError)])
def test_bad_k(k, exc):
    with pytest.raises(exc, match="k"):
        TopK(k)


def test_k_larger_than_d():
    with pytest.raises(ValueError, match=r"k must be in \[1, 3\]"):
        TopK(4, d=3)
    with pytest.raises(ValueError, match="k"):
        TopK(4).prox(np.ones(3), 1.0)
    with pytest.raises(ValueError, match="k"):
        TopK(np.array([1, 4])).prox(np.ones((2, 3)), 1.0)
    # an integral float is accepted as an integer
    np.testing.assert_array_equal(TopK(2.0).prox(np.array([1.0, 3.0, 2.0]), 1.0), [0.0, 3.0, 2.0])
    np.testing.assert_array_equal(TopK(3, d=3).prox(np.array([1.0, 3.0, 2.0]), 1.0), [1.0, 3.0, 2.0])


@pytest.mark.parametrize("lam", [-1.0, -1e-12, np.nan, np.inf, np.array([0.1, -0.1])])
def test_bad_lam(lam):
    with pytest.raises(ValueError, match="lam"):
        L1(lam)


@pytest.mark.parametrize("k", [2, np.array([[1, 3], [4, 1], [5, 2]])])
def test_topk_ties_on_non_contiguous_input(k):
    """Rows with more ties than free slots keep exactly k entries also for arrays in a permuted memory
    layout: runs as the fastest axis, as ``Ridge.local_steps`` returns them."""
    from proxfed import _backend as B

    base = np.ones((2, 6, 3))  # (clients, d, runs), every entry tied but one
    base[0, 1, 0] = 2.0
    x = np.moveaxis(base, -1, 0)  # shape (3, 2, 6), runs fastest in memory
    assert not x.flags.c_contiguous
    mask = B.topk_mask(x, k)
    kk = np.broadcast_to(k, (3, 2))
    np.testing.assert_array_equal(mask.sum(axis=-1), kk)
    expected = np.zeros_like(mask)
    for i in range(3):
        for j in range(2):
            order = np.lexsort((np.arange(6), -np.abs(x[i, j])))
            expected[i, j, order[: kk[i, j]]] = True
    np.testing.assert_array_equal(mask, expected)


def test_take_runs_restricts_per_run_parameters():
    """``take_runs`` gives the operator of the chosen runs; scalar parameters return the operator itself."""
    x = np.random.default_rng(0).normal(size=(4, 3, 12))
    runs = np.array([0, 2, 3])
    top = TopK(np.array([1, 5, 2, 7]))
    np.testing.assert_array_equal(top.take_runs(runs).prox(x[runs]), top.prox(x)[runs])
    lam = L1(np.array([0.1, 0.5, 1.0, 2.0]))
    np.testing.assert_array_equal(lam.take_runs(runs).prox(x[runs], 0.5), lam.prox(x, 0.5)[runs])
    assert TopK(3).take_runs(runs) is not None and TopK(3).take_runs(runs).k == 3
    assert L1(0.2).take_runs(runs).lam == 0.2
    assert list(top.k) == [1, 5, 2, 7]  # the original is unchanged


def test_merge_runs_keeps_unselected_rows_and_reads_none_as_zeros():
    from proxfed.algorithms.base import merge_runs

    old = np.arange(4 * 2 * 3, dtype=float).reshape(4, 2, 3)
    mask = np.array([False, True, False, True])
    new = -np.ones((2, 2, 3))
    out = merge_runs(mask, new, old)
    np.testing.assert_array_equal(out[mask], new)
    np.testing.assert_array_equal(out[~mask], old[~mask])
    np.testing.assert_array_equal(merge_runs(mask, new, None)[~mask], 0.0)
