"""Encoders (shapes, rates, errors) and optimizers (formulas, torch agreement, state round trip)."""
import numpy as np
import pytest
from tolerances import FORMULA_REL, assert_close

from refsnn.blocks import encoding
from refsnn.harness import optim


def test_bernoulli_shapes_rates_and_determinism():
    p = np.linspace(0, 1, 11)[None].repeat(2, 0)
    x = encoding.bernoulli(p, 3000, 5)
    assert x.shape == (3000, 2, 11) and x.dtype == np.float64
    se = np.sqrt(p * (1 - p) / 3000)
    assert np.all(np.abs(x.mean(0) - p) <= 5 * se + 1e-12)
    assert np.array_equal(x, encoding.bernoulli(p, 3000, 5))
    assert not np.array_equal(x, encoding.bernoulli(p, 3000, 6))
    y = encoding.bernoulli(p[0], 10, np.random.default_rng(0), scale=1 / 5.5, dtype=np.float32)
    assert y.shape == (10, 1, 11) and y.dtype == np.float32


def test_poisson_matches_its_spike_probability():
    rate = np.array([[0.0, 50.0, 200.0]])
    x = encoding.poisson(rate, 20000, 1e-3, 1)
    p = 1 - np.exp(-rate * 1e-3)
    assert np.all(np.abs(x.mean(0) - p) <= 5 * np.sqrt(p * (1 - p) / 20000) + 1e-12)


def test_direct_is_a_repeat():
    x = encoding.direct([0.2, 0.7], 4)
    assert x.shape == (4, 1, 2) and np.all(x[:, 0] == [0.2, 0.7])
    np.testing.assert_allclose(encoding.rates(encoding.direct([[0.1]], 5)), [[0.1]])


@pytest.mark.parametrize("call,name", [
    (lambda: encoding.bernoulli([1.2], 5, 0), "p"),
    (lambda: encoding.bernoulli([0.5], 0, 0), "T"),
    (lambda: encoding.bernoulli([0.5], 5, None), "rng"),
    (lambda: encoding.bernoulli([np.nan], 5, 0), "p"),
    (lambda: encoding.bernoulli([0.6], 5, 0, scale=2.0), "scale"),
    (lambda: encoding.poisson([-1.0], 5, 1e-3, 0), "rate"),
    (lambda: encoding.poisson([1.0], 5, 0.0, 0), "dt"),
    (lambda: encoding.direct(np.zeros((2, 2, 2)), 3), "x"),
])
def test_encoding_errors(call, name):
    with pytest.raises((ValueError, TypeError), match=name):
        call()


def _quadratic_run(opt, steps=5):
    params = {"w": np.array([1.0, -2.0, 3.0]), "frozen": np.array([5.0])}
    for _ in range(steps):
        grads = {"w": 2 * params["w"] - 1.0, "frozen": np.array([1.0])}
        opt.step(params, grads)
    return params


def test_sgd_formula():
    lr, mu, wd = 0.1, 0.9, 0.01
    params = _quadratic_run(optim.SGD(lr, momentum=mu, weight_decay=wd, frozen=("frozen",)), steps=3)
    w = np.array([1.0, -2.0, 3.0])
    v = None
    for _ in range(3):
        g = 2 * w - 1.0 + wd * w
        v = g if v is None else mu * v + g
        w = w - lr * v
    np.testing.assert_allclose(params["w"], w, rtol=FORMULA_REL)   # 3 steps of a short formula
    assert params["frozen"][0] == 5.0


def test_adam_formula():
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    params = _quadratic_run(optim.Adam(lr, frozen=("frozen",)), steps=4)
    w, m, v = np.array([1.0, -2.0, 3.0]), 0.0, 0.0
    for t in range(1, 5):
        g = 2 * w - 1.0
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        w = w - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    np.testing.assert_allclose(params["w"], w, rtol=FORMULA_REL)   # 4 steps of a short formula


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_matches_torch_optim(name):
    torch = pytest.importorskip("torch", reason="torch not installed")
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(4, 3))
    grads_seq = [rng.normal(size=(4, 3)) for _ in range(6)]
    tw = torch.tensor(w0.copy(), requires_grad=True)
    if name == "sgd":
        topt = torch.optim.SGD([tw], lr=0.05, momentum=0.9, weight_decay=1e-3)
        mine = optim.SGD(0.05, momentum=0.9, weight_decay=1e-3)
    else:
        topt = torch.optim.Adam([tw], lr=0.05, weight_decay=1e-3)
        mine = optim.Adam(0.05, weight_decay=1e-3)
    params = {"W": w0.copy()}
    for g in grads_seq:
        tw.grad = torch.tensor(g)
        topt.step()
        mine.step(params, {"W": g})
    assert_close(params["W"], tw.detach().numpy(), FORMULA_REL, what=name)   # torch arranges the same formula


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_adam_kernel_twin_equals_the_numpy_lines(dtype, monkeypatch):
    """The numba loop applies Adam.step's NumPy lines element by element in the same order and precision, so
    the two forms agree bit for bit (IEEE operations, no reassociation: the same sequence by construction):
    over 5 steps, with weight decay, a frozen key, a 0-d parameter and a Fortran-ordered one (which takes
    the NumPy lines in both runs)."""
    rng = np.random.default_rng(3)
    p0 = {"W": rng.normal(size=(40, 30)).astype(dtype), "b": np.asarray(rng.normal(), dtype=dtype),
          "F": np.asfortranarray(rng.normal(size=(5, 4))).astype(dtype, order="F"),
          "frozen": rng.normal(size=3).astype(dtype)}
    grads = [{k: (rng.normal(size=v.shape) * 10.0 ** rng.integers(-6, 3)).astype(dtype) for k, v in p0.items()}
             for _ in range(5)]
    runs = {}
    for jit in (True, False):
        monkeypatch.setattr(optim, "JIT_ENABLED", jit and optim.JIT_ENABLED)
        opt = optim.Adam(3e-3, weight_decay=1e-2, frozen=("frozen",))
        p = {k: v.copy(order="K") for k, v in p0.items()}
        for g in grads:
            opt.step(p, g)
        runs[jit] = (p, opt.state_dict())
    (pk, sk), (pn, sn) = runs[True], runs[False]
    for k in p0:
        assert pk[k].dtype == dtype and np.array_equal(pk[k], pn[k]), k
    assert sk.keys() == sn.keys() and all(np.array_equal(sk[k], sn[k]) for k in sk)
    assert np.array_equal(pk["frozen"], p0["frozen"]) and not np.array_equal(pk["W"], p0["W"])


def test_adam_state_dict_is_a_snapshot():
    """The kernel updates m and v in place: a state_dict taken earlier must not change with later steps."""
    opt, p = optim.Adam(0.1), {"w": np.ones(4)}
    opt.step(p, {"w": np.ones(4)})
    before = opt.state_dict()
    saved = {k: np.array(v) for k, v in before.items()}
    opt.step(p, {"w": -np.ones(4)})
    assert all(np.array_equal(before[k], saved[k]) for k in saved)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_state_round_trip_continues_identically(name):
    make = lambda: optim.make(name, 0.05, **({"momentum": 0.9} if name == "sgd" else {}))  # noqa: E731
    a = make()
    pa = _quadratic_run(a, steps=3)
    b = make()
    b.load_state_dict({k: np.asarray(v) for k, v in a.state_dict().items()})
    pb = {k: v.copy() for k, v in pa.items()}
    for opt, p in ((a, pa), (b, pb)):
        for _ in range(2):
            opt.step(p, {"w": 2 * p["w"] - 1.0, "frozen": np.array([0.0])})
    np.testing.assert_array_equal(pa["w"], pb["w"])


def test_optimizer_errors():
    with pytest.raises(ValueError, match="lr"):
        optim.SGD(0.0)
    with pytest.raises(ValueError, match="momentum"):
        optim.SGD(0.1, momentum=1.0)
    with pytest.raises(ValueError, match="optimizer"):
        optim.make("rmsprop", 0.1)
    with pytest.raises(KeyError, match="w"):
        optim.Adam(0.1).step({"w": np.zeros(2)}, {})
    with pytest.raises(ValueError, match="shape"):
        optim.Adam(0.1).step({"w": np.zeros(2)}, {"w": np.zeros(3)})
