"""Resuming a run (``proxfed.run(..., state=...)``) is the uninterrupted run, bit for bit.

Interrupted anywhere (on or off the record grid), with or without jumps, single or batched, from
the state in memory or reloaded from disk; resumed states are checked like ``init``'s input and
carry the seed they were run with. See the user guide, "Saving and resuming".
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import proxfed
from proxfed import State
from proxfed import algorithms as A
from proxfed.data import DataFormatError, make_sparse_regression
from proxfed.problems import Ridge
from proxfed.runner import save_state

STATE_FIELDS = ("communications", "bits_up", "bits_down", "values_up", "upload_nnz")


@functools.lru_cache(maxsize=None)
def ridge() -> Ridge:
    """Heavy-tailed client sizes, so the Gram and the row layouts of the closed form both occur."""
    ds = make_sparse_regression(n_clients=5, n_features=7, n_informative=3, mean_client_size=10.0, n_test=20,
                                seed=3)
    return Ridge(ds, alpha=1.0)


def gamma() -> float:
    return 1.0 / float(np.max(ridge().smoothness()))


def make(name: str, R: int | None, p: float = 0.2):
    """A rule that can jump (closed-form local phases) on ridge; R runs with per-run hyperparameters."""
    g = gamma() if R is None else np.full(R, gamma())
    q = p if R is None else np.linspace(p, min(1.0, 2 * p), R)
    return {
        "proxskip": lambda: A.proxskip(g, q),
        "sparse_proxskip": lambda: A.sparse_proxskip(g, q, 3),
        "sps_modified": lambda: A.sps_modified(g, q, 3),
        "fedavg": lambda: A.fedavg(g, 4 if R is None else np.arange(3, 3 + R)),
        "scaffold": lambda: A.scaffold(g, 5),
    }[name]()


def seeds(R):
    return 11 if R is None else [11 + r for r in range(R)]


def assert_same_state(a: State, b: State):
    np.testing.assert_array_equal(a.w, b.w)
    np.testing.assert_array_equal(a.h, b.h)
    assert a.t == b.t
    for name in STATE_FIELDS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.extras.keys() == b.extras.keys()
    for key in a.extras:
        np.testing.assert_array_equal(a.extras[key], b.extras[key], err_msg=key)


def assert_rows_match(part, full, skip_iteration=None):
    """Every record of ``part`` (but the one at ``skip_iteration``) is the full run's record there, bit for bit."""
    it_full = list(full.history["iteration"])
    for i, it in enumerate(part.history["iteration"]):
        if it == skip_iteration:
            continue
        j = it_full.index(it)
        for key, values in part.history.items():
            if key != "time":
                np.testing.assert_array_equal(values[i], full.history[key][j], err_msg=f"{key} at {it}")


def reload(state: State) -> State:
    with tempfile.TemporaryDirectory() as tmp:
        save_state(state, Path(tmp) / "state.npz")
        return proxfed.load_state(Path(tmp) / "state.npz")


def resume_check(name, R, total, split, every, jumps, from_disk, p=0.2):
    alg = make(name, R, p)
    full = proxfed.run(alg, ridge(), total, seed=seeds(R), every=every, jumps=jumps)
    first = proxfed.run(alg, ridge(), split, seed=seeds(R), every=every, jumps=jumps)
    state = reload(first.state) if from_disk else first.state
    second = proxfed.run(alg, ridge(), total - split, state=state, every=every, jumps=jumps)
    assert second.status == full.status == "completed"
    assert_same_state(second.state, full.state)
    np.testing.assert_array_equal(second.w, full.w)
    on_grid = split % every == 0
    assert_rows_match(first, full, skip_iteration=None if on_grid else split)
    assert_rows_match(second, full, skip_iteration=None if on_grid else split)
    return full, first, second


# ---------------------------------------------------------------------------------------------
# (d) off the record grid with jumps; (e) a batched state reloaded from disk
# ---------------------------------------------------------------------------------------------

def test_off_grid_resume_with_jumps_is_bit_identical_after_3000_iterations():
    """The reported case: 2e-14 apart after 3,000 iterations when the split point is off the record grid."""
    full, first, second = resume_check("sparse_proxskip", None, 3000, 1503, 100, True, False, p=0.05)
    assert int(full.state.communications) > 50
    assert first.state.stretch is not None  # interrupted inside a coin-free stretch


def test_the_trajectory_does_not_depend_on_the_records():
    """Records inside a closed-form stretch are computed from its start: ``every`` changes no bit."""
    alg = make("sparse_proxskip", 3, p=0.05)
    a = proxfed.run(alg, ridge(), 400, seed=seeds(3), every=1)
    b = proxfed.run(alg, ridge(), 400, seed=seeds(3), every=57, record_at=[3, 101])
    assert_same_state(a.state, b.state)
    assert_rows_match(b, a)


def test_batched_state_reloaded_from_disk_is_c_contiguous_and_resumes_the_same():
    alg = make("proxskip", 3)
    first = proxfed.run(alg, ridge(), 37, seed=seeds(3), every=5)
    odd = first.state.replace(w=np.asfortranarray(first.state.w), h=np.asfortranarray(first.state.h))
    assert not odd.w.flags.c_contiguous
    loaded = reload(odd)
    assert loaded.w.flags.c_contiguous and loaded.h.flags.c_contiguous
    np.testing.assert_array_equal(loaded.w, first.state.w)
    a = proxfed.run(alg, ridge(), 50, state=loaded, every=5)
    b = proxfed.run(alg, ridge(), 50, state=first.state, every=5)
    c = proxfed.run(alg, ridge(), 50, state=odd, every=5)
    assert_same_state(a.state, b.state)
    assert_same_state(c.state, b.state)


def test_a_state_with_a_changed_w_starts_a_stretch_of_its_own():
    """``state.stretch`` is used only if it gives ``state.w`` back; an edited state is continued as it is."""
    alg = make("proxskip", None, p=0.05)
    first = proxfed.run(alg, ridge(), 203, seed=11, every=100)
    assert first.state.stretch is not None
    edited = first.state.replace(w=first.state.w * (1 + 1e-12))
    explicit = proxfed.run(alg, ridge(), 20, state=edited.replace(stretch=None), every=10)
    kept = proxfed.run(alg, ridge(), 20, state=edited, every=10)
    assert_same_state(kept.state, explicit.state)


@settings(max_examples=30, deadline=None)
@given(name=st.sampled_from(["proxskip", "sparse_proxskip", "sps_modified", "fedavg", "scaffold"]),
       R=st.sampled_from([None, 2, 4]), total=st.integers(2, 90), frac=st.floats(0.0, 1.0),
       every=st.integers(1, 12), jumps=st.booleans(), from_disk=st.booleans(), p=st.sampled_from([0.05, 0.3, 1.0]))
def test_property_resume_anywhere_is_the_uninterrupted_run(name, R, total, frac, every, jumps, from_disk, p):
    split = min(total - 1, max(1, int(frac * total)))
    resume_check(name, R, total, split, every, jumps, from_disk, p)


@pytest.mark.parametrize("jumps", [True, False])
def test_resume_twice_and_from_a_run_without_jumps(jumps):
    """Three pieces equal one run; a state from a run without jumps resumes (with jumps) as a fresh stretch."""
    alg = make("sparse_proxskip", 2, p=0.1)
    full = proxfed.run(alg, ridge(), 120, seed=seeds(2), every=7, jumps=jumps)
    a = proxfed.run(alg, ridge(), 33, seed=seeds(2), every=7, jumps=jumps)
    b = proxfed.run(alg, ridge(), 41, state=reload(a.state), every=7, jumps=jumps)
    c = proxfed.run(alg, ridge(), 46, state=b.state, every=7, jumps=jumps)
    assert_same_state(c.state, full.state)
    plain = proxfed.run(alg, ridge(), 33, seed=seeds(2), every=7, jumps=False)
    assert plain.state.stretch is None
    on = proxfed.run(alg, ridge(), 87, state=plain.state, every=7)
    np.testing.assert_allclose(on.state.w, full.state.w, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# (f) a resumed state is checked like init's input and carries its seed
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def first():
    return proxfed.run(make("proxskip", None), ridge(), 30, seed=7, every=10)


def test_state_carries_its_seed_and_a_resumed_run_uses_it(first, tmp_path):
    assert first.state.seed == 7
    full = proxfed.run(make("proxskip", None), ridge(), 60, seed=7, every=10)
    for state in (first.state, reload(first.state)):
        assert state.seed == 7
        rest = proxfed.run(make("proxskip", None), ridge(), 30, state=state, every=10)  # seed from the state
        assert_same_state(rest.state, full.state)
        same = proxfed.run(make("proxskip", None), ridge(), 30, state=state, seed=7, every=10)
        assert_same_state(same.state, full.state)
        assert rest.state.seed == 7 and rest.config["seed"] == 7
    batched = proxfed.run(make("proxskip", 2), ridge(), 5, seed=[3, 4])
    assert batched.state.seed == (3, 4) and reload(batched.state).seed == (3, 4)


@pytest.mark.parametrize("other", [8, [7], np.int64(0)])
def test_resuming_with_another_seed_is_an_error(first, other):
    with pytest.raises(ValueError, match=r"seed=.* differs from the seed the state was run with \(7\)"):
        proxfed.run(make("proxskip", None), ridge(), 5, state=first.state, seed=other)


def test_a_state_without_a_seed_takes_the_given_one(first):
    bare = first.state.replace(seed=None)
    a = proxfed.run(make("proxskip", None), ridge(), 20, state=bare, seed=7)
    b = proxfed.run(make("proxskip", None), ridge(), 20, state=first.state)
    assert_same_state(a.state, b.state)


def _shifted_h(state):
    h = np.array(state.h)
    h[..., 0, :] += 1.0  # sum_i h_i = 1 per coordinate
    return state.replace(h=h)


def _nan_h(state):
    h = np.array(state.h)
    h[..., 1, 2] = np.nan
    return state.replace(h=h)


def _inf_w(state):
    w = np.array(state.w)
    w[..., 0, 0] = np.inf
    return state.replace(w=w)


@pytest.mark.parametrize("damage, error, match", [
    (_shifted_h, ValueError, r"state\.h must sum to zero over clients"),
    (_nan_h, ValueError, r"state\.h contains NaN or inf"),
    (_inf_w, ValueError, r"state\.w contains NaN or inf"),
    (lambda s: s.replace(w=s.w[..., :-1]), ValueError, r"state\.w must have shape \(\.\.\., 5, 8\)"),
    (lambda s: s.replace(h=s.h[:-1]), ValueError, r"state\.h must have shape"),
    (lambda s: s.replace(h=s.h.astype(np.float32)), TypeError, r"state\.h must be an array of the same"),
    (lambda s: s.replace(w=s.w.astype(np.int64)), TypeError, r"state\.w must have a real floating dtype"),
    (lambda s: s.replace(t=-1), ValueError, r"state\.t must be a non-negative integer"),
    (lambda s: s.replace(t=2.5), ValueError, r"state\.t must be a non-negative integer"),
    (lambda s: s.replace(bits_up=np.zeros(3, np.int64)), ValueError, r"state\.bits_up must be"),
    (lambda s: s.replace(communications=np.array(-1)), ValueError, r"state\.communications must be"),
    (lambda s: s.replace(w=np.stack([s.w] * 3), h=np.stack([s.h] * 3)), ValueError,
     r"state\.w has batch shape \(3,\) but the hyperparameters have 2 runs"),
    (lambda s: (s.w, s.h), TypeError, r"state must be a proxfed State"),
])
def test_a_damaged_state_is_refused_before_any_work(first, damage, error, match):
    alg = make("proxskip", 2) if "batch shape" in match else make("proxskip", None)
    bad = damage(first.state)
    calls = []
    with pytest.raises(error, match=match):
        proxfed.run(alg, ridge(), 10, state=bad, callbacks=[lambda row, s: calls.append(row)])
    assert calls == []  # refused before the first record


def test_a_state_whose_h_drifts_by_design_resumes(first):
    """SPS-modified lets sum_i h_i drift (ALGORITHMS.md): its states are not held to the zero sum."""
    alg = A.sps_modified(gamma(), 0.5, 2)
    res = proxfed.run(alg, ridge(), 60, seed=1, every=20)
    assert res.history["sum_h_norm"][-1] > 1e-6
    assert not alg.keeps_zero_sum and make("proxskip", None).keeps_zero_sum
    more = proxfed.run(alg, ridge(), 10, state=res.state)
    assert more.status == "completed"
    with pytest.raises(ValueError, match="state.h must sum to zero"):  # a rule that keeps it refuses the state
        proxfed.run(A.sparse_proxskip(gamma(), 0.5, 2), ridge(), 10, state=res.state)


@pytest.mark.parametrize("bad, match", [
    (np.nan, "h0 contains NaN or inf"), (np.inf, "h0 contains NaN or inf"), (-np.inf, "h0 contains NaN or inf"),
])
def test_init_refuses_non_finite_h0(bad, match):
    pb = ridge()
    h0 = np.zeros((pb.n_clients, pb.dim))
    h0[2, 3] = bad
    with pytest.raises(ValueError, match=match):
        make("proxskip", None).init(pb, h0=h0)


def test_w0_and_state_together_are_refused(first):
    with pytest.raises(ValueError, match="give w0 or state, not both"):
        proxfed.run(make("proxskip", None), ridge(), 5, state=first.state, w0=np.zeros(ridge().dim))


# ---------------------------------------------------------------------------------------------
# (g) a damaged state file: one error type, naming the file and what is wrong
# ---------------------------------------------------------------------------------------------

def _write_state(tmp_path, state, **changes):
    path = tmp_path / "state.npz"
    save_state(state, path)
    if changes:
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
        for key, value in changes.items():
            if value is None:
                del arrays[key]
            else:
                arrays[key] = value
        np.savez(path, **arrays)
    return path


def _truncate(path, keep=0.5):
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])


def _npy_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, np.zeros(3))
    return buf.getvalue()


def _corrupt_member(path):
    """Flip bytes inside the compressed data of the first member (the zip directory stays intact)."""
    raw = bytearray(path.read_bytes())
    for i in range(60, 90):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("make_bad, what", [
    (lambda p: _truncate(p), "truncated or corrupt"),
    (lambda p: _truncate(p, 0.02), "truncated or corrupt"),
    (lambda p: p.write_bytes(b""), "truncated or corrupt"),
    (lambda p: p.write_bytes(b"not a zip file at all"), "truncated or corrupt"),
    (_corrupt_member, "truncated or corrupt"),
    (lambda p: p.write_bytes(_npy_bytes()), "a single .npy array"),
])
def test_load_state_on_a_damaged_file(first, tmp_path, make_bad, what):
    path = _write_state(tmp_path, first.state)
    make_bad(path)
    with pytest.raises(DataFormatError, match=what) as exc:
        proxfed.load_state(path)
    assert str(path) in str(exc.value)


@pytest.mark.parametrize("changes, what", [
    ({"h": None}, r"missing arrays \['h'\]"),
    ({"t": None, "w": None}, r"missing arrays \['w', 't'\]"),
    ({"w": np.zeros(4)}, "w must be a floating array of shape"),
    ({"w": np.zeros((5, 8), np.int64)}, "w must be a floating array"),
    ({"h": np.zeros((5, 7))}, "h must have the shape and dtype of w"),
    ({"t": np.array([1, 2])}, "t must be a non-negative integer"),
    ({"t": np.array(-3)}, "t must be a non-negative integer"),
    ({"t": np.array(3.0)}, "t must be a non-negative integer"),
    ({"bits_up": np.zeros(4, np.int64)}, r"bits_up must be an integer array of shape \(5,\)"),
    ({"communications": np.zeros(2)}, "communications must be an integer array"),
    ({"seed": np.array(1.5)}, "seed must be a non-negative integer"),
    ({"seed": np.array(-1)}, "seed must be a non-negative integer"),
    ({"stretch_t": np.array(3)}, "stretch_t and stretch_w"),
])
def test_load_state_on_a_wrong_archive(first, tmp_path, changes, what):
    path = _write_state(tmp_path, first.state, **changes)
    with pytest.raises(DataFormatError, match=what) as exc:
        proxfed.load_state(path)
    assert str(path) in str(exc.value)
    assert isinstance(exc.value, ValueError)


def test_load_state_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope.npz")):
        proxfed.load_state(tmp_path / "nope.npz")
