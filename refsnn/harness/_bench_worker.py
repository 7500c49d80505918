"""One competitor of a paired benchmark, in a process of its own (``refsnn bench ALGO``).

:func:`refsnn.harness.benchmarks.paired` starts this file as a script, once per competitor, and talks to it over
its standard input and output, one JSON object per line:

* ``{"case": NAME, "args": {...}}`` -- build the competitor's training step (:data:`CASES`), call it once
  to warm up (compilation, workspaces); answer ``{"ready": true, "info": {...}}``;
* ``{"time": K, "pause": P, "warm": W}`` -- sleep ``P`` seconds (so that the thread pools of whatever ran
  before, in any process, have gone back to sleep), call the step untimed for ``W`` seconds (a process that
  has slept runs slower for a while), then time ``K`` calls; answer ``{"times": [seconds, ...],
  "warm_calls": n}``;
* ``{"quit": true}`` -- exit.

A competitor in its own process has its own BLAS, numba and torch thread pools, so no pool of one
competitor spins on a core while another is timed.  The thread count comes from the environment the
parent sets (``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``, ``NUMBA_NUM_THREADS``) and is applied to
torch too.

Run as a file, ``import refsnn`` finds whichever refsnn is first on ``PYTHONPATH``: the parent points it
at another checkout to time an older version beside this one.  The cases therefore use only refsnn's
public functions.  It imports refsnn before NumPy, as a program using refsnn should, so that refsnn's
thread-pool policy (``refsnn/blocks/_pools.py``) is in force for this version's cases (an older version has its
own or none; torch is not affected by it).
"""
import json
import os
import sys
import time
from dataclasses import replace

import refsnn  # noqa: F401, I001  -- before NumPy: the thread-pool policy

import numpy as np  # noqa: E402


def _threads() -> int:
    return int(os.environ.get("NUMBA_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS") or os.cpu_count())


def _torch():
    import torch

    torch.set_num_threads(_threads())
    return torch


def _dtype(torch, name):
    return {"float64": torch.float64, "float32": torch.float32}[name]


# ---------------------------------------------------------------------------
# STBP: 784-400-10 (or any dense sizes), the official neuron, Bernoulli input
# ---------------------------------------------------------------------------

def _stbp_problem(a):
    from refsnn import stbp

    cfg = replace(stbp.PRESETS["code"], T=a["T"], dtype=a["dtype"])
    rng = np.random.default_rng(0)
    params = stbp.init_params(list(a["sizes"]), cfg, rng)
    x = stbp.encode(np.full((a["batch"], a["sizes"][0]), a.get("rate", 0.2)), cfg, rng)
    y = rng.integers(0, a["sizes"][-1], a["batch"])
    return stbp, cfg, params, x, y


def stbp_refsnn(a):
    """refsnn's numba tier (``backend="numpy"`` in ``a`` for the NumPy tier), as the ``refsnn`` command runs it;
    ``products="dense"``: every matrix product by BLAS, none by adding the weight rows of the input's spikes."""
    import refsnn

    if hasattr(refsnn, "keep_freed_memory"):
        refsnn.keep_freed_memory()
    if a.get("products") == "dense":
        from refsnn.blocks import spike_products

        spike_products.MAX_DENSITY = 0.0
    stbp, cfg, params, x, y = _stbp_problem(a)
    cfg = replace(cfg, backend=a.get("backend", "numba"))
    return lambda: stbp.loss_and_grad(params, x, y, cfg), {}


def stbp_refsnn_stack(a):
    """The same step through the stack of layers (``refsnn.stbp_layers.Network``, ``backend="numba"``): the
    pieces the peers' models are read into, on the kernels where they apply.  The stack runs float64."""
    import refsnn
    from refsnn import stbp_layers

    if hasattr(refsnn, "keep_freed_memory"):
        refsnn.keep_freed_memory()
    _, cfg, params, x, y = _stbp_problem(dict(a, dtype="float64"))
    net = replace(stbp_layers.from_config(cfg, params)[0], backend="numba")
    return lambda: net.loss_and_grad(params, x, y), {}


def _stbp_torch_tensors(a, torch):
    _, cfg, params, x, y = _stbp_problem(dict(a, dtype="float64"))
    tdt = _dtype(torch, a["dtype"])
    xs = torch.tensor(x, dtype=tdt)
    ps = {k: torch.tensor(v, dtype=tdt) for k, v in params.items()}
    return cfg, ps, xs, torch.as_tensor(y)


def stbp_torch(a):
    """Eager PyTorch autograd of the same graph: refsnn's torch gold (:func:`refsnn.checking.torch_golds.stbp_loss`);
    ``compile=True``: the same function under ``torch.compile``."""
    torch = _torch()
    from refsnn.checking.torch_golds import stbp_loss

    cfg, ps, xs, y = _stbp_torch_tensors(a, torch)
    n = len(ps) // 2

    def loss(*tensors):
        return stbp_loss(list(tensors[:n]), list(tensors[n:]), xs, y, v_th=cfg.v_th, decay=cfg.decay,
                         surrogate=cfg.surrogate, width=cfg.width, reset=cfg.reset, detach_reset=cfg.detach_reset,
                         loss=cfg.loss)

    fn = torch.compile(loss) if a.get("compile") else loss

    def step():
        ts = [ps[f"W{i}"].clone().requires_grad_() for i in range(1, n + 1)]
        ts += [ps[f"b{i}"].clone().requires_grad_() for i in range(1, n + 1)]
        fn(*ts).backward()

    return step, {"torch": torch.__version__}


def _conv_problem(a):
    """The official STBP conv net (``PRESETS["code_conv"]``, or ``a["arch"]``), T, batch, Bernoulli input of
    rate 0.2, in ``a["dtype"]``."""
    from refsnn import stbp

    cfg = replace(stbp.PRESETS["code_conv"], T=a["T"], arch=a.get("arch", stbp.PRESETS["code_conv"].arch),
                  dtype=a["dtype"])
    specs = stbp.parse_arch(cfg.arch)[1]
    rng = np.random.default_rng(0)
    params = stbp.init_params(None, cfg, rng)
    x = stbp.encode(np.full((a["batch"], specs[0].n_in), 0.2), cfg, rng)
    y = rng.integers(0, specs[-1].n_out, a["batch"])
    return stbp, cfg, params, x, y


def conv_refsnn(a):
    """refsnn's fast tier on the conv net (im2col blocks and BLAS, the LIF kernels)."""
    import refsnn

    if hasattr(refsnn, "keep_freed_memory"):
        refsnn.keep_freed_memory()
    stbp, cfg, params, x, y = _conv_problem(a)
    return lambda: stbp.loss_and_grad(params, x, y, cfg), {}


def conv_torch(a):
    """Eager PyTorch autograd of the same conv graph (refsnn's torch gold: ``conv2d``, ``avg_pool2d``)."""
    torch = _torch()
    from refsnn.checking.torch_golds import stbp_family_loss

    _, cfg, params, x, y = _conv_problem(a)
    tdt = _dtype(torch, a["dtype"])
    xs = torch.tensor(x, dtype=tdt)

    def step():
        tp = {k: torch.tensor(v, dtype=tdt, requires_grad=True) for k, v in params.items()}
        stbp_family_loss(tp, xs, y, cfg).backward()

    return step, {"torch": torch.__version__}


def _peer_step(a, torch, model, loss_of_rates):
    cfg, ps, xs, y = _stbp_torch_tensors(a, torch)
    target = torch.nn.functional.one_hot(y, ps[f"W{len(ps) // 2}"].shape[0]).to(xs.dtype)

    def step():
        model.zero_grad(set_to_none=True)
        loss_of_rates(xs, target).backward()

    return step


def stbp_snntorch(a):
    """snnTorch: ``nn.Linear`` and ``snn.Leaky`` (beta = the decay, reset to zero, its stock fast-sigmoid
    surrogate) per layer, a Python loop over time; MSE of the output rate."""
    torch = _torch()
    import snntorch as snn

    cfg, ps, xs, _ = _stbp_torch_tensors(a, torch)
    tdt = xs.dtype
    n = len(ps) // 2
    lins = torch.nn.ModuleList()
    neurons = torch.nn.ModuleList()
    for i in range(1, n + 1):
        W = ps[f"W{i}"]
        lin = torch.nn.Linear(W.shape[1], W.shape[0]).to(tdt)
        with torch.no_grad():
            lin.weight.copy_(W)
            lin.bias.copy_(ps[f"b{i}"])
        lins.append(lin)
        neurons.append(snn.Leaky(beta=torch.tensor(cfg.decay, dtype=tdt), threshold=torch.tensor(cfg.v_th, dtype=tdt),
                                 reset_mechanism="zero", graded_spikes_factor=torch.ones(1, dtype=tdt)))
    model = torch.nn.ModuleList([lins, neurons])

    def loss_of_rates(x, target):
        mems = [nrn.init_leaky() for nrn in neurons]
        total = 0
        for t in range(x.shape[0]):
            h = x[t]
            for i in range(n):
                h, mems[i] = neurons[i](lins[i](h), mems[i])
            total = total + h
        return torch.nn.functional.mse_loss(total / x.shape[0], target)

    return _peer_step(a, torch, model, loss_of_rates), {"snntorch": snn.__version__}


def stbp_spikingjelly(a):
    """spikingjelly: ``layer.Linear`` and ``neuron.LIFNode`` in multi-step mode (its torch code on a CPU;
    ``tau = 1/(1-decay)``, ``decay_input=False``, hard reset to 0, its stock sigmoid surrogate);
    MSE of the output rate."""
    torch = _torch()
    from spikingjelly.activation_based import functional, layer, neuron
    import spikingjelly

    cfg, ps, xs, _ = _stbp_torch_tensors(a, torch)
    tdt = xs.dtype
    n = len(ps) // 2
    mods = []
    for i in range(1, n + 1):
        W = ps[f"W{i}"]
        lin = layer.Linear(W.shape[1], W.shape[0], step_mode="m").to(tdt)
        with torch.no_grad():
            lin.weight.copy_(W)
            lin.bias.copy_(ps[f"b{i}"])
        mods += [lin, neuron.LIFNode(tau=1.0 / (1.0 - cfg.decay), decay_input=False, v_threshold=cfg.v_th,
                                     v_reset=0.0, step_mode="m")]
    model = torch.nn.Sequential(*mods).to(tdt)

    def loss_of_rates(x, target):
        functional.reset_net(model)
        return torch.nn.functional.mse_loss(model(x).mean(0), target)

    version = getattr(spikingjelly, "__version__", None)
    if version is None:
        from importlib.metadata import version as _v
        version = _v("spikingjelly")
    return _peer_step(a, torch, model, loss_of_rates), {"spikingjelly": version}


def _stack_problem(a):
    """The new pieces at the STBP benchmark's shapes: ``Affine(784, 400)`` without bias, BatchNorm over time
    and batch (training statistics), a LIF population with one recurrent weight per neuron (snnTorch's
    ``RLeaky(all_to_all=False)``), ``Affine(400, 10)``, a leaky-integrator readout and the cross-entropy of
    its maximum membrane over time; T 20, batch 100, Bernoulli input of rate 0.2, float64."""
    from refsnn import stbp_layers as sl

    n_in, H, C = a["sizes"]
    T, B = a["T"], a["batch"]
    neuron = sl.Neuron(reset="zero", surrogate="atan", width=2.0)
    net = sl.Network((sl.Affine("W1", None), sl.BatchNorm("gamma1", "beta1", "mean1", "var1"),
                      sl.LIF(neuron, decay=0.9, recurrent=("V1", "one")), sl.Affine("W2", "b2"), sl.LI(decay=0.9)),
                     loss=sl.Loss("ce_membrane_max"), backend=a.get("backend", "numba"))
    rng = np.random.default_rng(0)
    params = {"W1": rng.normal(0, 1 / np.sqrt(n_in), (H, n_in)), "gamma1": np.ones(H), "beta1": np.full(H, 0.5),
              "mean1": np.zeros(H), "var1": np.ones(H), "V1": rng.normal(0, 0.3, H),
              "W2": rng.normal(0, 1 / np.sqrt(H), (C, H)), "b2": np.zeros(C)}
    x = (rng.random((T, B, n_in)) < a.get("rate", 0.2)).astype(np.float64)
    y = rng.integers(0, C, B)
    return net, params, x, y


def stack_refsnn(a):
    """The stack of :func:`_stack_problem` in refsnn (``backend`` "numba": its fast tier, or "numpy")."""
    import refsnn

    if hasattr(refsnn, "keep_freed_memory"):
        refsnn.keep_freed_memory()
    net, params, x, y = _stack_problem(a)
    return lambda: net.loss_and_grad(params, x, y), {}


def stack_torch(a):
    """The same network in PyTorch (:func:`refsnn.checking.torch_golds.stack_forward`, the stack's autograd
    gold written with torch operations only), eager or under ``torch.compile``, in ``a["dtype"]``."""
    torch = _torch()
    from refsnn.checking import torch_golds as golds

    net, params, x, y = _stack_problem(a)
    tdt = _dtype(torch, a.get("dtype", "float64"))
    buffers = {k: torch.tensor(params[k], dtype=tdt) for k in ("mean1", "var1")}
    xs, ys = torch.tensor(x, dtype=tdt), torch.as_tensor(y)

    def loss(tp):
        return golds.stack_forward(net, tp, buffers, xs, ys)[0]

    fn = torch.compile(loss) if a.get("compile") else loss

    def step():
        tp = {k: torch.tensor(v, dtype=tdt, requires_grad=True) for k, v in params.items() if k not in buffers}
        fn(tp).backward()

    return step, {"torch": torch.__version__}


def stbp_gemm_floor(a):
    """The step's matrix products alone, at its shapes, with NumPy's BLAS: for every dense layer the forward
    product ``(T B, n_in) @ W.T``, the weight gradient ``e.T @ input`` and, above the first layer, the input
    gradient ``e @ W``.  No step can be faster than its products."""
    sizes, T, B = a["sizes"], a["T"], a["batch"]
    dt = np.dtype(a["dtype"])
    rng = np.random.default_rng(0)
    mats = []
    for n, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        X = (rng.random((T * B, n_in)) < 0.2).astype(dt)
        W = rng.standard_normal((n_out, n_in)).astype(dt)
        E = rng.standard_normal((T * B, n_out)).astype(dt)
        mats.append((X, W, E, n > 0))

    def step():
        for X, W, E, need in mats:
            X @ W.T
            E.T @ X
            if need:
                E @ W

    flops = sum(2.0 * T * B * a * b * (3 if k else 2) for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])))
    return step, {"gflop": flops / 1e9}


# ---------------------------------------------------------------------------
# IDE: one training step of the official F400 net (PRESETS["code"]) against a PyTorch port of the same step
# ---------------------------------------------------------------------------

def _ide_problem(a):
    from refsnn import ide

    cfg = ide.PRESETS["code"]
    if a.get("solver") == "iter":
        cfg = replace(cfg, solver="code_iter", early_stop=False, max_iter=30)
    rng = np.random.default_rng(0)
    params = ide.init_params(list(a["sizes"]), cfg, rng)
    x = ide.encode(rng.random((a["batch"], a["sizes"][0])), cfg)
    y = rng.integers(0, a["sizes"][-1], a["batch"])
    mask = ide.dropout_mask(params, x, cfg, 1)
    return ide, cfg, params, x, y, mask


def ide_refsnn(a):
    """refsnn's IDE step of ``PRESETS["code"]`` with the given dropout masks; ``solver``: ``"broyden"`` (the
    preset's) or ``"iter"`` (the code's fixed 30 halving steps, ``solver="code_iter"``)."""
    import warnings

    import refsnn

    if hasattr(refsnn, "keep_freed_memory"):
        refsnn.keep_freed_memory()
    ide, cfg, params, x, y, mask = _ide_problem(a)
    info = {}

    def step():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ide.loss_and_grad(params, x, y, cfg, dropout_mask=mask, info=info)

    step()
    return step, {"adjoint_iterations": int(info["adjoint"].iterations)}


def ide_torch(a):
    """The official F400 training step re-typed in PyTorch (:func:`refsnn.checking.torch_ide_port.ide_code_training_step`:
    simulation without a graph, the equivalent function with one, the code's Broyden or 'iter' adjoint
    with 30 steps), float64, the same masks."""
    torch = _torch()
    from refsnn.checking.torch_ide_port import ide_code_training_step

    _, cfg, params, x, y, mask = _ide_problem(a)
    solver = "iter" if a.get("solver") == "iter" else "broy"
    out = {}

    def step():
        out.update(ide_code_training_step(params, x, y, mask, time_step=cfg.T, vth=cfg.v_th, threshold=30,
                                          solver=solver))

    step()
    return step, {"adjoint_iterations": out.get("nstep"), "torch": torch.__version__}


# ---------------------------------------------------------------------------
# ST-RSBP: one online sample of 784-400-R400-10; SSNN-BP: one V1 sample against its ANN twin
# ---------------------------------------------------------------------------

def st_rsbp_refsnn(a):
    """One online ST-RSBP sample (``loss_and_grad`` and Adam) of ``arch`` at ``T``, cycling over 32 encoded
    images (the first Fashion-MNIST training images, or random ones of the same mean intensity)."""
    from refsnn import st_rsbp
    from refsnn.harness import datasets, optim

    try:
        X, _ = datasets.load("fashion-mnist", "train", limit=32)
        feats = X.reshape(len(X), -1) / 255.0
    except (FileNotFoundError, ValueError, OSError):
        r = np.random.default_rng(0)
        feats = r.random((32, 784)) * (r.random((32, 784)) < 0.57)
    cfg = replace(st_rsbp.Config(), T=a["T"])
    params = st_rsbp.init_params(a["arch"], cfg, 0)
    opt = optim.Adam(1e-3)
    rng = np.random.default_rng(0)
    xs = [st_rsbp.encode(f[None], cfg, rng) for f in feats]
    state = {"k": 0}

    def step():
        k = state["k"] % len(xs)
        state["k"] += 1
        _, g = st_rsbp.loss_and_grad(params, xs[k], np.array([k % 10]), cfg)
        opt.step(params, g)

    return step, {}


def ssnn_bp_refsnn(a):
    """One online SSNN-BP sample on digits (64-100-10) or Fashion-MNIST: V1 at ``T`` with ``counter``, or the
    ANN twin (``ann=True``); the same images in turn."""
    from refsnn import ssnn_bp
    from refsnn.harness import datasets

    X, y = datasets.load(a.get("dataset", "digits"), "train", limit=64)
    F = X.reshape(len(X), -1) / 255.0
    sizes = [F.shape[1], 100, datasets.n_classes(a.get("dataset", "digits"))]
    cfg = ssnn_bp.Config(ann=True) if a.get("ann") else ssnn_bp.Config(T=a["T"], counter=a.get("counter", "events"))
    params = ssnn_bp.init_params(sizes, cfg, 0)
    rng = np.random.default_rng(0)
    state = {"k": 0}

    def step():
        k = state["k"] % len(y)
        state["k"] += 1
        ssnn_bp.loss_and_grad(params, F[k:k + 1], y[k:k + 1], cfg, rng)

    return step, {}


def peers_layer(a):
    """One case of ``refsnn bench peers``: the Linear + LIF layer of ``a["lib"]`` at ``n``, ``T``, ``batch``,
    ``dtype``, ``mode`` ("forward" or "train": forward + backward), eager or ``compile``d
    (:mod:`refsnn.harness.bench_peers`)."""
    from refsnn.harness import bench_peers as bp

    lib, n, T, batch = a["lib"], int(a["n"]), int(a["T"]), int(a["batch"])
    dtype, mode = a["dtype"], a["mode"]
    x = bp._input(T, batch, n, 0)
    y = np.random.default_rng(2).integers(0, n, batch)
    if lib == "refsnn":
        import refsnn
        from refsnn import stbp

        if hasattr(refsnn, "keep_freed_memory"):
            refsnn.keep_freed_memory()
        _, cfg, params = bp._refsnn_config(n, dtype)
        cfg = replace(cfg, T=T)
        xx = x.astype(dtype)
        if mode == "train":
            return lambda: stbp.loss_and_grad(params, xx, y, cfg), {}
        return lambda: stbp.simulate(params, xx, cfg), {}
    torch = _torch()
    model = bp.build(lib, n, dtype)
    xt = torch.tensor(x, dtype=_dtype(torch, dtype))
    target = torch.nn.functional.one_hot(torch.as_tensor(y), n).to(xt.dtype)

    def forward(xx):
        return bp._drive(lib, model, xx)

    fn = torch.compile(forward) if a.get("compile") else forward
    if mode == "train":
        def step():
            model.zero_grad(set_to_none=True)
            ((fn(xt).mean(0) - target) ** 2).mean().backward()
    else:
        def step():
            with torch.no_grad():
                fn(xt)
    versions = {"torch": torch.__version__}
    if lib != "torch":
        from importlib.metadata import version

        versions[lib] = version(lib)
    return step, versions


CASES = {"conv_refsnn": conv_refsnn, "conv_torch": conv_torch, "stack_refsnn": stack_refsnn, "stack_torch": stack_torch, "peers_layer": peers_layer, "stbp_refsnn": stbp_refsnn, "stbp_refsnn_stack": stbp_refsnn_stack, "stbp_torch": stbp_torch, "stbp_snntorch": stbp_snntorch,
         "stbp_spikingjelly": stbp_spikingjelly, "stbp_gemm_floor": stbp_gemm_floor, "ide_refsnn": ide_refsnn,
         "ide_torch": ide_torch, "st_rsbp_refsnn": st_rsbp_refsnn, "ssnn_bp_refsnn": ssnn_bp_refsnn}


def main():
    out = sys.stdout
    sys.stdout = sys.stderr            # anything the cases print must not break the protocol
    step = None
    for line in sys.stdin:
        msg = json.loads(line)
        try:
            if "case" in msg:
                if msg["case"] not in CASES:
                    raise ValueError(f"no benchmark case {msg['case']!r} (cases: {', '.join(CASES)})")
                step, info = CASES[msg["case"]](msg.get("args", {}))
                step()
                import refsnn

                reply = {"ready": True, "info": dict(info, refsnn=refsnn.__version__)}
            elif "time" in msg:
                time.sleep(msg.get("pause", 0.0))
                warm_calls, until = 0, time.perf_counter() + msg.get("warm", 0.0)
                while time.perf_counter() < until:      # untimed: to the pace of a training loop
                    step()
                    warm_calls += 1
                times = []
                for _ in range(msg["time"]):
                    t0 = time.perf_counter()
                    step()
                    times.append(time.perf_counter() - t0)
                reply = {"times": times, "warm_calls": warm_calls}
            else:
                break
        except Exception as exc:   # noqa: BLE001 - reported to the parent, which says which competitor failed
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()
        if "error" in reply:
            break


if __name__ == "__main__":
    main()
