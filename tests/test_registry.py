"""The method registry (proxfed.algorithms.registry): every name->constructor path builds what it built before.

The reference constructions below are the name->constructor mappings as they were before the
registry (tune.make_algorithm, catalog.build_algorithm, the demo, pipeline.theory_fallback,
catalog.theory_defaults and proxfed_dl.make_algorithm with its patching of TopK attributes),
written against the core factories; every registry path must give the same ``config()``.
"""

import numpy as np
import pytest

from proxfed import algorithms as A
from proxfed import tune
from proxfed.algorithms import registry as R
from proxfed.data import make_sparse_regression
from proxfed.experiments import catalog, demo, pipeline
from proxfed.experiments.published import METHOD_LABELS
from proxfed.problems import Ridge
from proxfed.prox import TopK, sparsity_to_k
from proxfed.theory import constants, proxskip_parameters

SCALAR = {"gamma": 0.1, "p": 0.25, "lam": 0.02, "local_steps": 4}
ARRAY = {"gamma": [0.1, 0.2], "p": [0.25, 0.5], "lam": [0.02, 0.03], "local_steps": [4, 3]}
OLD_TUNABLE = {
    "proxskip": ("gamma", "p"), "final_topk": ("gamma", "p"), "sparse_proxskip": ("gamma", "p"),
    "sparse_proxskip_local": ("gamma", "p"), "accelerated_server_pruning": ("gamma", "p"),
    "asp_modified": ("gamma", "p"), "sps_modified": ("gamma", "p"), "randprox_l1": ("gamma", "p", "lam"),
    "fedht": ("gamma", "local_steps"), "fediht": ("gamma", "local_steps"),
}
OLD_CATALOG = {  # code name -> (label, schedule, sparse, rounds)
    "proxskip": ("ProxSkip", "random", False, False), "final_topk": ("Final-TopK", "random", True, False),
    "sparse_proxskip": ("Sparse-ProxSkip", "random", True, False),
    "sparse_proxskip_local": ("Sparse-ProxSkip-Local", "random", True, False),
    "accelerated_server_pruning": ("Accelerated-Server-Pruning", "random", True, False),
    "asp_modified": ("ASP-modified", "random", True, False), "sps_modified": ("SPS-modified", "random", True, False),
    "randprox_l1": ("RandProx-l1", "random", True, False), "fedavg": ("FedAvg", "fixed", False, False),
    "fedht": ("FedHT", "fixed", True, False), "fediht": ("FedIHT", "fixed", True, False),
    "scaffold": ("SCAFFOLD", "fixed", False, False),
    "fedsparsify_global": ("FedSparsify-Global", "fixed", True, True),
    "fedsparsify_local": ("FedSparsify-Local", "fixed", True, True),
    "random_pruning": ("Random-Pruning", "fixed", True, True), "oneshot": ("OneShot", "fixed", True, True),
    "pdst": ("PDST", "fixed", True, True), "spdst": ("SPDST", "fixed", True, True),
    "jmwst": ("JMWST", "fixed", True, True), "hetero_flash": ("hetero-FLASH", "fixed", True, True),
}
OLD_METHOD_LABELS = {
    "final_topk": "Final-TopK", "fedht": "FedHT", "fediht": "FedIHT",
    "accelerated_server_pruning": "Accelerated-Server-Pruning", "randprox_l1": "RandProx-l1",
    "sparse_proxskip_local": "Sparse-ProxSkip-Local", "sparse_proxskip": "Sparse-ProxSkip",
    "proxskip": "ProxSkip (dense, reference)", "asp_modified": "ASP-modified", "sps_modified": "SPS-modified",
}
_FEDSPARSIFY = {"fedsparsify_global": A.fedsparsify_global, "fedsparsify_local": A.fedsparsify_local,
                "random_pruning": A.random_pruning, "oneshot": A.oneshot_pruning}
_FLASH = {"pdst": A.pdst, "spdst": A.spdst, "jmwst": A.jmwst, "hetero_flash": A.hetero_flash}


def _per_run(values, dtype=float):
    a = np.asarray(values, dtype=dtype)
    return a.item() if a.ndim == 0 else a


def old_make_algorithm(method, params, k=None):
    """tune.make_algorithm before the registry."""
    gamma = _per_run(params["gamma"])
    if k is not None:
        k_arr = np.asarray(k, dtype=np.int64)
        k = int(k_arr.ravel()[0]) if k_arr.ndim == 0 or np.all(k_arr == k_arr.ravel()[0]) else k_arr
    if method in ("fedht", "fediht"):
        return getattr(A, method)(gamma, _per_run(params["local_steps"], np.int64), k)
    p = _per_run(params["p"])
    if method == "proxskip":
        return A.proxskip(gamma, p)
    if method == "randprox_l1":
        return A.randprox_l1(gamma, p, _per_run(params["lam"]), k=k)
    return getattr(A, method)(gamma, p, k)


def old_build_algorithm(method, params, k=None, dim=None, rounds=None, clients_per_round=None, seed=0):
    """catalog.build_algorithm before the registry."""
    label, schedule, sparse, _ = OLD_CATALOG[method]
    if method in OLD_TUNABLE:
        return old_make_algorithm(method, params, k if sparse else None)
    gamma, steps = _per_run(params["gamma"]), _per_run(params["local_steps"], np.int64)
    if method == "fedavg":
        return A.fedavg(gamma, steps)
    if method == "scaffold":
        return A.scaffold(gamma, steps)
    density = int(np.unique(np.asarray(k))[0]) / int(dim)
    kw = {"clients_per_round": clients_per_round, "seed": int(seed)}
    if method in _FEDSPARSIFY:
        return _FEDSPARSIFY[method](gamma, steps, 1.0 - density, int(rounds), **kw)
    return _FLASH[method](gamma, steps, density, int(rounds), **kw)


@pytest.fixture(scope="module")
def ridge():
    return Ridge(make_sparse_regression(seed=0), alpha=10.0)


def _lam_max(problem):
    return float(np.max(np.abs(problem.full_grad(np.zeros(problem.dim)))))


# ---------------------------------------------------------------------------------------------
# names
# ---------------------------------------------------------------------------------------------
#: Methods added after the registry replaced the old name tables (issue 22's worked example of adding a method).
ADDED_SINCE = {"sps_bidirectional": ("gamma", "p")}


def test_registry_covers_every_old_name_with_the_old_flags():
    assert set(R.METHODS) == set(OLD_CATALOG) | set(ADDED_SINCE)
    assert tune.TUNABLE_METHODS == {**OLD_TUNABLE, **ADDED_SINCE}
    order = list(OLD_TUNABLE)
    order.insert(order.index("randprox_l1") + 1, "sps_bidirectional")  # with the Algorithm-1 variants
    assert list(tune.TUNABLE_METHODS) == order
    for name, (label, schedule, sparse, rounds) in OLD_CATALOG.items():
        spec = R.METHODS[name]
        assert (spec.name, spec.label, spec.schedule, spec.needs_k, spec.round_based) == (
            name, label, schedule, sparse, rounds)
        assert catalog.METHODS[name] == catalog.Method(name, label, schedule, sparse, rounds)
        assert catalog.hyperparameters(name) == (OLD_TUNABLE.get(name) or ("gamma", "local_steps"))


def test_paper_labels_equal_method_labels():
    assert METHOD_LABELS == OLD_METHOD_LABELS
    assert list(METHOD_LABELS) == list(OLD_METHOD_LABELS)  # the paper's table order
    for name, label in METHOD_LABELS.items():
        spec = R.METHODS[name]
        assert (spec.table_label or spec.label) == label
        assert R.get_method(label) is spec


@pytest.mark.parametrize("spelling, name", [
    ("sparse_proxskip", "sparse_proxskip"), ("Sparse-ProxSkip", "sparse_proxskip"), ("SPS", "sparse_proxskip"),
    ("sps local", "sparse_proxskip_local"), ("ASP", "accelerated_server_pruning"), ("FEDIHT", "fediht"),
    ("randprox-l1", "randprox_l1"), ("ProxSkip (dense, reference)", "proxskip"), ("proxskip", "proxskip"),
    ("FedSparsify", "fedsparsify_global"), ("flash", "jmwst"), ("Hetero-FLASH", "hetero_flash"),
    ("OneShot", "oneshot"),
])
def test_aliases_and_paper_names_resolve(spelling, name):
    assert R.get_method(spelling).name == name
    assert catalog.resolve_method(spelling) == name


def test_unknown_names_list_the_choices():
    with pytest.raises(R.UnknownName) as err:
        R.get_method("sparse_proxskp")
    msg = str(err.value)
    assert "unknown method 'sparse_proxskp'; did you mean" in msg and "sparse_proxskip (Sparse-ProxSkip)" in msg
    assert "choose from " + ", ".join(R.METHODS) in msg
    with pytest.raises(ValueError, match="choose from proxskip, final_topk"):
        R.get_method("nope")
    assert catalog.UnknownName is R.UnknownName
    with pytest.raises(ValueError, match="unknown method 'fedavg'; choose from"):
        tune.make_algorithm("fedavg", {"gamma": 0.1, "local_steps": 2})


# ---------------------------------------------------------------------------------------------
# factories: the same configurations as the old mappings
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", list(OLD_TUNABLE))
def test_tune_make_algorithm_matches_the_old_mapping(method):
    hp = OLD_TUNABLE[method]
    for params, ks in (({n: SCALAR[n] for n in hp}, [5]), ({n: ARRAY[n] for n in hp}, [[5, 5], [5, 6]])):
        for k in ks + ([None] if method == "proxskip" else []):
            new = tune.make_algorithm(method, params, k)
            assert new.config() == old_make_algorithm(method, params, k).config()
            assert new.config() == R.METHODS[method].build(params, k).config()
    if method != "proxskip":
        with pytest.raises(ValueError, match=f"{method} needs k"):
            tune.make_algorithm(method, {n: SCALAR[n] for n in hp})
    with pytest.raises(ValueError, match="needs hyperparameters"):
        tune.make_algorithm(method, {"gamma": 0.1})


@pytest.mark.parametrize("method", list(OLD_CATALOG))
def test_catalog_build_algorithm_matches_the_old_mapping(method):
    hp = catalog.hyperparameters(method)
    for params in ({n: SCALAR[n] for n in hp}, {n: ARRAY[n] for n in hp}):
        kw = dict(k=5, dim=20, rounds=4, clients_per_round=2, seed=3)
        new = catalog.build_algorithm(method, params, **kw)
        assert new.config() == old_build_algorithm(method, params, **kw).config()
    if R.METHODS[method].round_based:
        with pytest.raises(ValueError, match=f"{method} needs rounds, k and dim"):
            catalog.build_algorithm(method, {n: SCALAR[n] for n in hp}, k=5)
        with pytest.raises(ValueError, match="one sparsity for all runs"):
            catalog.build_algorithm(method, {n: ARRAY[n] for n in hp}, k=[5, 6], dim=20, rounds=4)


def test_demo_methods_match_the_old_construction(ridge):
    th = proxskip_parameters(ridge)
    g, p = th["gamma"], th["p"]
    steps, k = max(1, int(round(1 / p))), 7
    old = {
        "proxskip": A.proxskip(g, p), "final_topk": A.final_topk(g, p, k), "sparse_proxskip": A.sparse_proxskip(g, p, k),
        "sparse_proxskip_local": A.sparse_proxskip_local(g, p, k),
        "accelerated_server_pruning": A.accelerated_server_pruning(g, p, k), "asp_modified": A.asp_modified(g, p, k),
        "sps_modified": A.sps_modified(g, p, k), "randprox_l1": A.randprox_l1(g, p, 0.03 * _lam_max(ridge), k=k),
        "fedht": A.fedht(g, steps, k), "fediht": A.fediht(g, steps, k),
    }
    new = demo.demo_methods(ridge, k)
    assert list(new) == list(old) == list(demo.DEMO_METHODS)
    assert {n: a.config() for n, a in new.items()} == {n: a.config() for n, a in old.items()}
    rounds, d = max(2, 300 // steps), ridge.dim
    old_st = {n: f(g, steps, 1 - k / d, rounds) for n, f in _FEDSPARSIFY.items() if n != "oneshot"}
    old_st.update({n: f(g, steps, k / d, rounds) for n, f in _FLASH.items() if n != "hetero_flash"})
    new_st = demo.sparse_training_methods(ridge, k, 300)
    assert list(new_st) == list(demo.SPARSE_TRAINING_DEMO_METHODS) == [
        "fedsparsify_global", "fedsparsify_local", "random_pruning", "pdst", "spdst", "jmwst"]
    assert {n: a.config() for n, a in new_st.items()} == {n: a.config() for n, a in old_st.items()}


def test_theory_defaults_have_one_source(ridge):
    th = proxskip_parameters(ridge)
    lam = 0.03 * _lam_max(ridge)
    assert R.RANDPROX_LAMBDA_FRACTION == demo.RANDPROX_LAMBDA_FRACTION == 0.03
    assert R.lam_max(ridge) == _lam_max(ridge)
    assert catalog.theory_defaults(ridge) == {
        "gamma": th["gamma"], "p": th["p"], "local_steps": max(1, int(round(1 / th["p"]))), "lam": lam,
        "L": th["L"], "mu": th["mu"], "kappa": th["kappa"]}
    for p_range in ((0.02, 1.0), (0.5, 1.0)):
        p = float(np.clip(th["p"], *p_range))
        for method in OLD_TUNABLE:
            old = ({"gamma": th["gamma"], "local_steps": max(1, int(round(1 / p)))} if method in ("fedht", "fediht")
                   else {"gamma": th["gamma"], "p": p, **({"lam": lam} if method == "randprox_l1" else {})})
            assert pipeline.theory_fallback(method, ridge, p_range) == old


def test_method_space_reads_the_registry_ranges(ridge):
    L = constants(ridge)[0]  # what method_space scales gamma by (L = max_i L_i)
    lm = _lam_max(ridge)
    assert tune.method_space("randprox_l1", ridge) == tune.SearchSpace((
        tune.Param("gamma", 0.05 / L, 3.0 / L), tune.Param("p", 0.02, 1.0), tune.Param("lam", 1e-4 * lm, 0.3 * lm)))
    assert tune.method_space("fediht", ridge, p_range=(0.1, 0.5)) == tune.SearchSpace((
        tune.Param("gamma", 0.05 / L, 3.0 / L), tune.Param("local_steps", 2, 10, integer=True)))
    for spec in R.METHODS.values():
        assert spec.hyperparameters[0] == R.Hyperparameter("gamma", *R.GAMMA_RANGE, unit="1/L")


def test_closed_form_flags_agree_with_can_jump(ridge):
    """``closed_form`` says statically what ``can_jump`` says on a problem with a closed form."""
    from proxfed.round_runner import supports_rounds

    for spec in R.METHODS.values():
        if spec.round_based:
            assert not spec.closed_form
            continue
        alg = spec.build(SCALAR, 5)
        assert supports_rounds(alg, ridge) == spec.closed_form, spec.name


def test_factories_build_topk_placements_with_make_topk():
    class MyTopK(TopK):
        pass

    for spec in R.METHODS.values():
        if spec.round_based:  # masks of their own (options prunable / layers)
            continue
        if not spec.accepts("make_topk"):
            assert not spec.needs_k, spec.name
            continue
        alg = spec.factory(**{n: SCALAR[n] for n in spec.hyperparameter_names}, k=3, make_topk=MyTopK)
        ops = [v for v in vars(alg).values() if isinstance(v, TopK)]
        assert ops and all(type(op) is MyTopK for op in ops), spec.name
    with pytest.raises(TypeError, match="make_topk must build a TopK"):
        A.sparse_proxskip(0.1, 0.5, 3, make_topk=lambda k: None)


# ---------------------------------------------------------------------------------------------
# proxfed_dl: constructor options give what the old patching of vars(alg) gave
# ---------------------------------------------------------------------------------------------
def old_dl_make_algorithm(D, name, problem, gamma, p, *, sparsity=0.9, scope="all", grad_at="dense",
                          schedule="fixed", lam=None):
    """proxfed_dl.make_algorithm before the registry (non-round-based rules)."""
    prunable = problem.flat.prunable_mask(problem.device) if scope == "weights" else None
    k = sparsity_to_k(problem.dim if prunable is None else int(prunable.sum()), sparsity)
    steps = max(1, int(round(1.0 / p)))
    kw = {"grad_at": grad_at, "schedule": schedule}
    if name == "proxskip":
        alg = A.proxskip(gamma, p, schedule=schedule)
    elif name == "final_topk":
        alg = A.final_topk(gamma, p, k, schedule=schedule)
    elif name in ("sparse_proxskip", "sparse_proxskip_local", "accelerated_server_pruning", "asp_modified",
                  "sps_modified"):
        alg = getattr(A, name)(gamma, p, k, **kw)
    elif name == "randprox_l1":
        alg = A.randprox_l1(gamma, p, lam, k, schedule=schedule)
    elif name == "fedavg":
        alg = A.FedAvg(gamma, steps, k, name="fedavg")
    elif name in ("fedht", "fediht"):
        alg = getattr(A, name)(gamma, steps, k)
    else:
        alg = A.scaffold(gamma, steps)
    if prunable is not None:
        swapped = {}
        for attr, v in list(vars(alg).items()):
            if isinstance(v, TopK):
                if id(v) not in swapped:
                    swapped[id(v)] = D.WeightTopK(v.k, prunable)
                setattr(alg, attr, swapped[id(v)])
    if problem.n_buffers:
        alg = D.track_buffers(alg)
    return alg


def _describe(alg):
    ids, ops = {}, {}
    for attr, v in sorted(vars(alg).items()):
        if isinstance(v, TopK):
            ops[attr] = (type(v).__name__, repr(v), ids.setdefault(id(v), len(ids)))
    return type(alg).__mro__[1:], alg.config(), ops


@pytest.mark.parametrize("scope", ["all", "weights"])
def test_dl_make_algorithm_matches_the_old_patching(scope):
    torch = pytest.importorskip("torch")
    import proxfed_dl as D

    data = D.random_image_clients(3, [9, 14, 6], image_shape=(3, 8, 8), n_classes=4, n_test=10, seed=1)
    prob = D.TorchProblem(data, lambda: D.resnet18(4, width=2), batch_size=4, dtype=torch.float64)
    for name in [n for n in D.ALGORITHMS if n not in D.ROUND_BASED and n not in ADDED_SINCE] + ["randprox_l1"]:
        for kw in ({}, {"schedule": "random"}, {"grad_at": "pruned"}):
            extra = {**kw, **({"lam": 0.01} if name == "randprox_l1" else {})}
            new = D.make_algorithm(name, prob, 0.05, 0.3, sparsity=0.8, scope=scope, **extra)
            old = old_dl_make_algorithm(D, name, prob, 0.05, 0.3, sparsity=0.8, scope=scope, **extra)
            assert type(new) is type(old)
            assert _describe(new) == _describe(old), (name, kw)
    # a method added since is built like the Algorithm-1 variants: its TopK placements prune the same scope
    bi = D.make_algorithm("sps_bidirectional", prob, 0.05, 0.3, sparsity=0.8, scope=scope)
    sps = D.make_algorithm("sparse_proxskip", prob, 0.05, 0.3, sparsity=0.8, scope=scope)
    assert type(bi) is type(sps)
    assert repr(bi.uplink) == repr(bi.server) == repr(sps.uplink) and bi.server_order == "after_h"
    with pytest.raises(ValueError, match="unknown algorithm 'Sparse-ProxSkip'"):
        D.make_algorithm("Sparse-ProxSkip", prob, 0.05, 0.5)
    assert set(D.ALGORITHMS) == set(R.METHODS) - {"randprox_l1"}
    assert set(D.ROUND_BASED) == {n for n, s in R.METHODS.items() if s.round_based}


@pytest.mark.parametrize("scope", ["all", "weights"])
def test_dl_round_based_rules_match_the_old_construction(scope):
    torch = pytest.importorskip("torch")
    import proxfed_dl as D

    data = D.random_image_clients(3, [7, 12, 9], image_shape=(1, 8, 8), n_classes=5, n_test=10, seed=2)
    prob = D.TorchProblem(data, lambda: D.leaf_cnn(5, hidden=6, image_size=8, channels=(2, 3)), batch_size=5,
                          dtype=torch.float64)
    prunable = prob.flat.prunable_mask(prob.device) if scope == "weights" else None
    kw = {"clients_per_round": 2, "seed": 1}
    for name in D.ROUND_BASED:
        new = D.make_algorithm(name, prob, 0.05, 0.3, sparsity=0.8, scope=scope, rounds=3, **kw)
        if name in _FEDSPARSIFY:
            old = _FEDSPARSIFY[name](0.05, 3, 0.8, 3, prunable=None if prunable is None else prunable.cpu().numpy(),
                                     **kw)
        else:
            old = _FLASH[name](0.05, 3, 1.0 - 0.8, 3, layers=prob.flat.weight_segments(("conv", "linear")), **kw)
        assert new.config() == old.config(), name
    with pytest.raises(ValueError, match="needs rounds"):
        D.make_algorithm("jmwst", prob, 0.05, 0.5)
    with pytest.raises(TypeError, match="unexpected options"):
        D.make_algorithm("sparse_proxskip", prob, 0.05, 0.5, dst_rate=0.1)
