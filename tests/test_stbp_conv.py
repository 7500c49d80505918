"""Convolutional STBP: the architecture strings, the convolution and pooling operations of both tiers, and the
gradient through them.

The FD and autograd checks of whole conv nets run with every other STBP case (``refsnn.harness.problems.STBP_CONV``
is part of ``gradcheck_cases("stbp")``, so tests/test_stbp.py checks them); this file checks the pieces.
"""
from dataclasses import replace

import numpy as np
import pytest
from tolerances import FLOAT32_REL, TORCH_REL, TWIN_REL, assert_close

from refsnn import stbp
from refsnn.blocks import conv
from refsnn.harness import problems

CONV_CASES = [c for c in problems.gradcheck_cases("stbp", 0) if c.cfg.arch is not None]

#: (C, H, W, O, k, stride, pad): square and rectangular maps, a stride that skips rows at the end,
#: padding wider than the kernel (k - 1 - pad < 0), a kernel as large as the padded map.
CONV_SHAPES = [(3, 7, 7, 4, 3, 1, 1), (2, 8, 9, 3, 3, 2, 1), (2, 9, 9, 3, 5, 2, 2), (1, 6, 6, 2, 2, 3, 0),
               (2, 5, 5, 3, 3, 1, 3), (2, 10, 7, 2, 4, 3, 2), (1, 4, 4, 2, 6, 1, 1)]


def _readable_conv(a, W, stride, pad):
    """The convolution as the sum it is, one output at a time (a third form, for the fast one)."""
    R, C, H, Wd = a.shape
    O, _, k, _ = W.shape
    ap = np.pad(a, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    Ho, Wo = (H + 2 * pad - k) // stride + 1, (Wd + 2 * pad - k) // stride + 1
    out = np.zeros((R, O, Ho, Wo))
    for y in range(Ho):
        for x in range(Wo):
            patch = ap[:, :, y * stride:y * stride + k, x * stride:x * stride + k]     # (R, C, k, k)
            out[:, :, y, x] = np.tensordot(patch, W, axes=([1, 2, 3], [1, 2, 3]))
    return out


@pytest.mark.parametrize("few_rows", [0, 1 << 30], ids=["one product per block", "one product per sample"])
@pytest.mark.parametrize("shape", CONV_SHAPES, ids=[str(s) for s in CONV_SHAPES])
def test_fast_convolution_and_its_transposes(shape, few_rows, monkeypatch):
    """conv2d_fast equals the loop; its two gradients are the adjoints: <g, conv(a)> = <grad_a, a> = <grad_W, W>
    (both sides are sums of the same R O Ho Wo C k k products, so they agree to round-off of that many terms).
    Both ways of multiplying an im2col block (:data:`conv.FEW_ROWS` decides which) are checked on every shape."""
    monkeypatch.setattr(conv, "FEW_ROWS", few_rows)
    C, H, W, O, k, s, p = shape
    rng = np.random.default_rng(list(shape))
    a, Wk = rng.standard_normal((3, C, H, W)), rng.standard_normal((O, C, k, k))
    out = conv.conv2d_fast(a, Wk, s, p)
    assert_close(out, _readable_conv(a, Wk, s, p), TWIN_REL)
    assert_close(conv.conv2d(a, Wk, s, p), out, TWIN_REL)
    g = rng.standard_normal(out.shape)
    lhs = float(np.sum(g * out))
    scale = float(np.sum(np.abs(g * out))) + 1.0
    for ga, gW in ((conv.conv2d_input_grad_fast(g, Wk, (H, W), s, p), conv.conv2d_weight_grad_fast(a, g, k, s, p)),
                   (conv.conv2d_input_grad(g, Wk, (H, W), s, p), conv.conv2d_weight_grad(a, g, k, s, p))):
        assert ga.shape == a.shape and gW.shape == Wk.shape
        assert abs(lhs - float(np.sum(ga * a))) <= TWIN_REL * scale
        assert abs(lhs - float(np.sum(gW * Wk))) <= TWIN_REL * scale


@pytest.mark.parametrize("few_rows", [0, 1 << 30], ids=["one product per block", "one product per sample"])
def test_fast_convolution_gives_the_same_bits_on_one_thread_and_shared_over_threads(few_rows, monkeypatch):
    """The fast forms work through blocks of rows that depend only on the shapes; with two threads each takes
    a share of the blocks, and the weight gradient adds the blocks' products in block order either way, so
    the results are identical bit for bit (by construction: the same operations on the same numbers), and
    they equal the readable forms to round-off.  Small blocks here (many per call), so that sharing happens."""
    from refsnn.blocks import _jit

    monkeypatch.setattr(conv, "BLOCK", 200)
    monkeypatch.setattr(conv, "FEW_ROWS", few_rows)
    rng = np.random.default_rng(11)
    a, Wk = rng.standard_normal((13, 3, 9, 8)), rng.standard_normal((4, 3, 3, 3))
    g = rng.standard_normal((13, 4, 5, 4))
    assert len(conv._row_blocks(13, 5 * 4 * 3 * 3 * 3)) > 4
    outs = []
    for n in (1, 2):
        with _jit.limit_threads(n):
            outs.append((conv.conv2d_fast(a, Wk, 2, 1), conv.conv2d_weight_grad_fast(a, g, 3, 2, 1),
                         conv.conv2d_input_grad_fast(g, Wk, (9, 8), 2, 1)))
    for x1, x2 in zip(*outs):
        assert np.array_equal(x1, x2)
    assert_close(outs[0][0], conv.conv2d(a, Wk, 2, 1), TWIN_REL)
    assert_close(outs[0][1], conv.conv2d_weight_grad(a, g, 3, 2, 1), TWIN_REL)
    assert_close(outs[0][2], conv.conv2d_input_grad(g, Wk, (9, 8), 2, 1), TWIN_REL)


@pytest.mark.parametrize("arch", ["6x6x2-3c3p1-ap2-4", "7x7x1-2c3s2p1-mp2-3", "9x9x1-ap2-2c3p1-mp2-3c2-4"])
def test_conv_training_step_gives_the_same_bits_on_one_thread_and_two(arch, monkeypatch):
    """A whole fast-tier step of a conv net (im2col blocks, pooling by shares of rows, the LIF kernels): the
    loss and every gradient are identical on one thread and on two, bit for bit -- each block, row and
    sample is computed by the same operations wherever it runs (exact equality by construction)."""
    from refsnn.blocks import _jit

    if not _jit.JIT_ENABLED:
        pytest.skip("numba is off: the fast tier runs on one thread")
    import numba

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has one thread on this machine")
    monkeypatch.setattr(conv, "BLOCK", 100)                       # many blocks per call
    monkeypatch.setattr(_jit, "OVER_BATCH_MIN", 0)                # the LIF and pooling kernels shared out too
    cfg = stbp.Config(arch=arch, T=4)
    params, x, y = problems.stbp_problem(cfg, 3, T=4, batch=5)
    runs = []
    for n in (1, 2):
        with _jit.limit_threads(n):
            runs.append(stbp.loss_and_grad(params, x, y, cfg))
    assert runs[0][0] == runs[1][0]
    for k in runs[0][1]:
        assert np.array_equal(runs[0][1][k], runs[1][1][k]), k
    assert any(np.any(v != 0) for v in runs[0][1].values())


@pytest.mark.parametrize("shape", CONV_SHAPES, ids=[str(s) for s in CONV_SHAPES])
def test_fast_convolution_matches_torch(shape):
    torch = pytest.importorskip("torch", reason="torch not installed: pip install torch (CPU) for the cross-check")
    C, H, W, O, k, s, p = shape
    rng = np.random.default_rng(list(shape))
    a, Wk = rng.standard_normal((3, C, H, W)), rng.standard_normal((O, C, k, k))
    at, wt = torch.tensor(a, requires_grad=True), torch.tensor(Wk, requires_grad=True)
    out = torch.nn.functional.conv2d(at, wt, stride=s, padding=p)
    g = rng.standard_normal(tuple(out.shape))
    out.backward(torch.tensor(g))
    assert_close(conv.conv2d_fast(a, Wk, s, p), out.detach().numpy(), TORCH_REL)
    assert_close(conv.conv2d_input_grad_fast(g, Wk, (H, W), s, p), at.grad.numpy(), TORCH_REL)
    assert_close(conv.conv2d_weight_grad_fast(a, g, k, s, p), wt.grad.numpy(), TORCH_REL)


@pytest.mark.parametrize("shape", [(3, 4, 4, 2, 3, 2, 1, 1), (2, 5, 6, 3, 3, 2, 1, 0), (2, 3, 3, 2, 5, 1, 2, 0),
                                   (1, 4, 5, 2, 4, 3, 1, 2)], ids=str)
def test_transposed_convolution_matches_torch(shape):
    """IDE's feedback from a small map to a large one: torch's conv_transpose2d with output_padding."""
    torch = pytest.importorskip("torch", reason="torch not installed")
    Ci, H, W, Co, k, s, p, op = shape
    rng = np.random.default_rng(list(shape))
    a, w = rng.standard_normal((2, Ci, H, W)), rng.standard_normal((Ci, Co, k, k))
    want = torch.nn.functional.conv_transpose2d(torch.tensor(a), torch.tensor(w), stride=s, padding=p,
                                                output_padding=op).numpy()
    assert_close(conv.conv_transpose2d(a, w, s, p, op), want, TORCH_REL)
    assert_close(conv.conv_transpose2d_fast(a, w, s, p, op), want, TORCH_REL)


def test_max_pooling_takes_the_first_largest_entry_as_torch_does():
    """Spikes tie all the time; the choice (and so the sub-gradient) must be torch's: the first in row-major order."""
    torch = pytest.importorskip("torch", reason="torch not installed")
    rng = np.random.default_rng(3)
    a = (rng.random((4, 3, 6, 7)) < 0.5).astype(float)
    out, idx = stbp.pool_forward(a, "max", 2)
    t_out, t_idx = torch.nn.functional.max_pool2d(torch.tensor(a), 2, return_indices=True)
    np.testing.assert_array_equal(out, t_out.numpy())
    # torch's index is into the flattened H x W map; ours is the position in the 2x2 window
    oy, ox = np.divmod(t_idx.numpy(), a.shape[3])
    Ho, Wo = out.shape[2:]
    wy = oy - 2 * np.arange(Ho)[:, None]
    wx = ox - 2 * np.arange(Wo)[None, :]
    np.testing.assert_array_equal(idx, wy * 2 + wx)
    assert np.mean(idx > 0) > 0.1          # ties and non-ties both occur, so the test can tell first from last
    g = rng.standard_normal(out.shape)
    back = stbp.pool_backward(g, a.shape, "max", 2, idx)
    at = torch.tensor(a, requires_grad=True)
    torch.nn.functional.max_pool2d(at, 2).backward(torch.tensor(g))
    np.testing.assert_array_equal(back, at.grad.numpy())   # a copy of g into chosen slots: exact


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("k, H, W", [(2, 8, 8), (3, 10, 11), (2, 7, 9)])
@pytest.mark.parametrize("threads", [1, 2])
def test_average_pooling_kernels_equal_their_readable_twins(k, H, W, dtype, threads, monkeypatch):
    """The fast tier's average pooling and its transpose (one compiled pass each) do the operations of
    pool_forward / pool_backward in their order, so the results are identical bit for bit (exact equality by
    construction), also with the rows shared over two threads and with a remainder no window covers."""
    from refsnn.blocks import _jit

    monkeypatch.setattr(_jit, "OVER_BATCH_MIN", 0)
    rng = np.random.default_rng([k, H, W])
    a = rng.standard_normal((5, 3, H, W)).astype(dtype)
    with _jit.limit_threads(threads):
        fast, none = stbp._pool_forward_rows(a, "avg", k)
        g = rng.standard_normal(fast.shape).astype(dtype)
        back = stbp._pool_backward_rows(g, a.shape, "avg", k)
    ref, _ = stbp.pool_forward(a, "avg", k)
    assert none is None and fast.dtype == ref.dtype == dtype and np.array_equal(fast, ref)
    ref_back = stbp.pool_backward(g, a.shape, "avg", k)
    assert back.dtype == dtype and np.array_equal(back, ref_back)
    assert np.all(back[:, :, (H // k) * k:] == 0) and np.all(back[:, :, :, (W // k) * k:] == 0)


def test_average_pooling_is_its_own_adjoint_up_to_the_dropped_remainder():
    rng = np.random.default_rng(4)
    a = rng.standard_normal((2, 3, 7, 5))
    out, _ = stbp.pool_forward(a, "avg", 2)
    g = rng.standard_normal(out.shape)
    back = stbp.pool_backward(g, a.shape, "avg", 2)
    assert abs(float(np.sum(g * out)) - float(np.sum(back * a))) <= TWIN_REL * float(np.sum(np.abs(g * out)))
    assert np.all(back[:, :, 6, :] == 0) and np.all(back[:, :, :, 4] == 0)   # the row and column pooling drops


def test_architecture_shapes_follow_torch():
    """The official net's layer shapes and parameter shapes, against torch modules built from the same string."""
    torch = pytest.importorskip("torch", reason="torch not installed")
    nn = torch.nn
    cfg = stbp.PRESETS["code_conv"]
    input_shape, specs = stbp.parse_arch(cfg.arch)
    assert input_shape == (1, 28, 28)
    params = stbp.init_params(None, cfg, 0)
    conv1, conv2 = nn.Conv2d(1, 32, 3, 1, 1), nn.Conv2d(32, 32, 3, 1, 1)
    fc1, fc2 = nn.Linear(32 * 7 * 7, 128), nn.Linear(128, 10)
    h1 = conv1(torch.zeros(1, 1, 28, 28))
    h2 = conv2(nn.functional.avg_pool2d(h1, 2))
    flat = nn.functional.avg_pool2d(h2, 2).flatten(1)
    for sp, want in zip(specs, [h1, h2, fc1(flat), fc2(fc1(flat))]):
        assert sp.out_shape == tuple(want.shape[1:])
    for n, m in enumerate([conv1, conv2, fc1, fc2], start=1):
        assert params[f"W{n}"].shape == tuple(m.weight.shape) and params[f"b{n}"].shape == tuple(m.bias.shape)
        # PyTorch's default init: uniform within 1/sqrt(fan_in) (kaiming_uniform with a = sqrt(5))
        bound = 1.0 / np.sqrt(np.prod(m.weight.shape[1:]))
        assert np.abs(params[f"W{n}"]).max() <= bound and np.abs(params[f"W{n}"]).max() > 0.9 * bound


@pytest.mark.parametrize("case", CONV_CASES, ids=[c.label for c in CONV_CASES])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_conv_fast_tier_equals_readable_twin(case, dtype):
    """The im2col/BLAS tier and the einsum twin: the same spikes, gradients to round-off."""
    cfg = replace(case.cfg, dtype=dtype)
    l1, g1 = stbp.loss_and_grad(case.params, case.x, case.y, replace(cfg, backend="numba"))
    l2, g2 = stbp.loss_and_grad(case.params, case.x, case.y, replace(cfg, backend="numpy"))
    tol = TWIN_REL if dtype == "float64" else FLOAT32_REL   # float32: both tiers round at 6e-8 per operation
    assert l1 == pytest.approx(l2, rel=tol)
    for k in g1:
        assert_close(g1[k], g2[k], tol, what=k)


def test_maps_and_flat_input_give_the_same_network():
    case = CONV_CASES[1]
    input_shape = stbp.parse_arch(case.cfg.arch)[0]
    x5 = case.x.reshape(case.x.shape[0], case.x.shape[1], *input_shape)
    l1, g1 = stbp.loss_and_grad(case.params, case.x, case.y, case.cfg)
    l2, g2 = stbp.loss_and_grad(case.params, x5, case.y, case.cfg)
    assert l1 == l2 and all(np.array_equal(g1[k], g2[k]) for k in g1)     # the same array, reshaped
    gx = stbp.input_gradient(case.params, x5, case.y, case.cfg)
    assert gx.shape == x5.shape


def test_reference_objective_freezes_the_max_pooling_choice():
    """At params it is the spiking loss; nearby it keeps the choice (else FD would see a kink at every tie)."""
    case = next(c for c in CONV_CASES if "mp2" in c.cfg.arch)
    loss, _ = stbp.loss_and_grad(case.params, case.x, case.y, case.cfg)
    f = stbp.reference_objective(case.params, case.x, case.y, case.cfg)
    assert f(case.params) == loss
    _, o = stbp.simulate(case.params, case.x, case.cfg)
    assert o[0].mean() > 0.05                           # spiking below the pooling: the ties are real


@pytest.mark.parametrize("arch,match", [
    ("28x28x1", "no layer|tokens"),
    ("28x28-10", "first token"),
    ("28x28x1-32c3-ap2", "last token|pooling ends"),
    ("28x28x1-32c3-ap2-ap2-10", "once"),
    ("28x28x1-32c30-10", "does not fit"),
    ("28x28x1-32q3-10", "unknown token"),
    ("784-32c3-10", "C, H, W"),
    ("28x28x1-32c3", "output layer"),
    ("28x28x1-ap40-10", "does not fit"),
])
def test_bad_architectures_are_named(arch, match):
    with pytest.raises(ValueError, match=f"arch.*({match})"):
        stbp.Config(arch=arch)


def test_params_must_fit_the_architecture():
    cfg = replace(stbp.PRESETS["code_conv"], T=2)
    params = stbp.init_params(None, cfg, 0)
    x = np.zeros((2, 1, 784))
    bad = dict(params, W1=params["W1"][:, :, :2, :2])
    with pytest.raises(ValueError, match=r"W1.*\(32, 1, 3, 3\)"):
        stbp.loss_and_grad(bad, x, [0], cfg)
    with pytest.raises(ValueError, match="x"):
        stbp.loss_and_grad(params, np.zeros((2, 1, 700)), [0], cfg)
    with pytest.raises(ValueError, match="sizes"):
        stbp.init_params([64, 10], cfg, 0)
    assert set(stbp.init_params([784, 100, 10], cfg, 0)) == set(params)    # first and last entries agree


def test_conv_bench_reports_refsnn_torch_and_the_gemm_floor():
    from refsnn.harness import benchmarks

    res = benchmarks.stbp_conv_bench(quick=True, log=lambda *_: None)
    assert {"refsnn numba float64", "refsnn numba float32"} <= set(res["results"])
    assert all(f["floor_ms"] > 0 and f["blas_gflops"] > 0 for f in res["floor"].values())
    assert res["setting"]["gflop"] > 0
    try:
        import torch  # noqa: F401
    except ImportError:
        return
    assert {"torch eager float64", "torch eager float32"} <= set(res["results"])
