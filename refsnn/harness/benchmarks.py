"""Benchmarks and experiments for all four algorithms: ``refsnn bench ALGO``, memory probes, accuracy against T.

These are measurements, never tests: the numbers depend on the machine and its
load.  Three tools serve every algorithm:

* :func:`timed` -- one timer: a warm-up call (it compiles the kernels), then
  ``repeats`` timed calls; median and minimum in milliseconds (on a shared
  machine the minimum is the least disturbed);
* :func:`peak_bytes` -- one memory probe: the peak of ``tracemalloc`` over a
  call, above what was allocated before it;
* :func:`refsnn.blocks._jit.limit_threads` -- one thread limiter, for BLAS and numba.

``bench(algo, quick)`` runs the benchmark ``refsnn bench ALGO`` prints and
returns its numbers as a dict (``--json`` prints that).  ``quick`` shrinks
every size so the whole thing takes seconds (the tests use it).
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
import tracemalloc
from dataclasses import dataclass, field, replace

import numpy as np

import refsnn
from refsnn import ide, ssnn_bp, st_rsbp, stbp
from refsnn.harness import datasets, optim, recipes
from refsnn.blocks._checks import check_int, check_positive
from refsnn.blocks._jit import jit_status, limit_threads
from refsnn.blocks._pools import user_environment
from refsnn.harness.experiments import accuracy_table, accuracy_vs_T

__all__ = ["paired", "paired_table", "versus", "Competitor", "timed", "peak_bytes", "bench", "stbp_conv_bench", "ide_conv_bench", "training_step_memory", "BENCHMARKS"]


def timed(fn, repeats: int, *, warmup: int = 1) -> dict:
    """Call ``fn()`` ``warmup`` times untimed, then ``repeats`` times timed: ``{"median_ms", "min_ms", "repeats"}``."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return {"median_ms": 1e3 * float(np.median(ts)), "min_ms": 1e3 * float(np.min(ts)), "repeats": repeats}


def peak_bytes(fn) -> int:
    """Peak memory (bytes, ``tracemalloc``) that one call of ``fn()`` allocates above what was allocated before.

    tracemalloc sees every NumPy allocation, but not memory that numba kernels
    allocate inside themselves: measure kernels that write into NumPy buffers.
    """
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def _threads() -> int:
    try:
        import numba

        return numba.config.NUMBA_NUM_THREADS
    except ImportError:  # pragma: no cover
        return 1


def _torch_on_threads():
    """``(torch, threads)`` with torch set to refsnn's thread count, or ``(None, None)`` without torch."""
    try:
        import torch
    except ImportError:
        return None, None
    threads = _threads()
    torch.set_num_threads(threads)
    return torch, threads


# ---------------------------------------------------------------------------
# Paired runs: every competitor in a process of its own, timed in alternating rounds
# ---------------------------------------------------------------------------

_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_bench_worker.py")


@dataclass
class Competitor:
    """One row of a paired benchmark: a ``label``, the worker case that builds its step
    (``refsnn/harness/_bench_worker.py``: ``CASES``) and that case's ``args``; ``pythonpath`` runs it with another
    refsnn checkout first on the path (to time an older version beside this one); ``env`` adds environment
    variables to its process (an A/B of a setting, e.g. ``{"NUMBA_DISABLE_JIT": "1"}``)."""

    label: str
    case: str
    args: dict = field(default_factory=dict)
    pythonpath: str | None = None
    env: dict = field(default_factory=dict)


def _cpu_busy_jiffies():
    """(busy, total) jiffies of the whole machine from /proc/stat, or None off Linux."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except OSError:  # pragma: no cover - not Linux
        return None
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return sum(v) - idle, sum(v)


def _own_jiffies(pids):
    """utime + stime jiffies of the given processes (and this one), or None off Linux."""
    total = 0
    for pid in list(pids) + [os.getpid()]:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        total += int(fields[11]) + int(fields[12])
    return total


def _load():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover
        return None


def _ask(proc, msg, label):
    proc.stdin.write(json.dumps(msg) + "\n")
    proc.stdin.flush()
    line = proc.stdout.readline()
    if not line:
        err = proc.stderr.read().strip().splitlines()
        raise RuntimeError(f"{label}: the worker exited ({err[-1] if err else 'no message'})")
    return json.loads(line)


def paired(competitors, *, rounds: int = 7, calls: int = 3, threads: int | None = None, pause: float = 0.3,
           warm: float = 0.3, reference: str | None = None, log=print) -> dict:
    """Time ``competitors`` side by side: each in its own process, ``rounds`` rounds of ``calls`` timed
    calls each, the order rotated every round (A B C, B C A, C A B, ...); before each competitor's timed
    calls a ``pause`` (seconds) and then untimed calls for ``warm`` seconds (at least one if ``warm > 0``).

    The pause lets the thread pools of whatever ran before (in any process) go to sleep.  The untimed calls
    let this competitor reach the pace it keeps in a training loop: on this project's 2-core VM every
    two-thread competitor runs slower for a while after a pause (measured, float32 STBP step, 12 rounds of
    3 calls: the GEMM floor 16.4 ms by median straight after a 0.3 s pause against 14.3 after 0.3 s of
    untimed calls, torch.compile 21.6 against 19.1, refsnn 28.9 against 17.0).

    Every process gets ``threads`` threads for BLAS, OpenMP, numba and torch (default: numba's count), so
    the competitors run on the same cores; one that cannot start (a peer that is not installed) is
    reported and left out.  Recorded beside the times: the load average before and after, and how much of
    the machine's CPU time during the rounds went to *other* processes (``/proc/stat`` minus the workers'
    own ``/proc/PID/stat``), since a busy machine slows everyone.

    Returns ``{"threads", "rounds", "calls", "pause_s", "warm_s", "load_before", "load_after",
    "others_cpu_share", "rows": {label: {"median_ms", "min_ms", "n", "warm_calls", "ratio", "info"}},
    "skipped": {label: reason}}`` (``warm_calls``: the untimed calls, all rounds); ``ratio`` is the
    median over ``reference``'s median (default: the first competitor that ran).
    """
    rounds, calls = check_int("rounds", rounds, minimum=1), check_int("calls", calls, minimum=1)
    threads = _threads() if threads is None else check_int("threads", threads, minimum=1)
    pause = check_positive("pause", pause, allow_zero=True)
    warm = check_positive("warm", warm, allow_zero=True)
    # each worker starts from the user's environment, not with what refsnn set in this process: this
    # version's workers set it again themselves, an older version's (--baseline) run as it would alone
    env_base = dict(user_environment(), OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
                    MKL_NUM_THREADS=str(threads), NUMBA_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    procs, skipped, infos = {}, {}, {}
    load_before = _load()
    try:
        for c in competitors:             # one at a time: warm-ups (compilation) do not compete
            env = dict(env_base, **{k: str(v) for k, v in c.env.items()})
            if c.pythonpath:
                env["PYTHONPATH"] = c.pythonpath + os.pathsep + env.get("PYTHONPATH", "")
            p = subprocess.Popen([sys.executable, _WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=env)
            reply = _ask(p, {"case": c.case, "args": c.args}, c.label)
            if "error" in reply:
                skipped[c.label] = reply["error"]
                p.wait()
                log(f"  ({c.label}: left out -- {reply['error']})")
                continue
            procs[c.label], infos[c.label] = p, reply.get("info", {})
        times = {label: [] for label in procs}
        warm_calls = {label: 0 for label in procs}
        labels = list(procs)
        cpu0, own0 = _cpu_busy_jiffies(), _own_jiffies(p.pid for p in procs.values())
        for r in range(rounds):
            for label in labels[r % len(labels):] + labels[:r % len(labels)] if labels else []:
                reply = _ask(procs[label], {"time": calls, "pause": pause, "warm": warm}, label)
                if "error" in reply:
                    raise RuntimeError(f"{label}: {reply['error']}")
                times[label] += reply["times"]
                warm_calls[label] += reply.get("warm_calls", 0)
        cpu1, own1 = _cpu_busy_jiffies(), _own_jiffies(p.pid for p in procs.values())
    finally:
        for p in procs.values():
            try:
                p.stdin.write('{"quit": true}\n')
                p.stdin.flush()
            except OSError:  # pragma: no cover
                pass
            p.wait()
    others = None
    if None not in (cpu0, cpu1, own0, own1) and cpu1[1] > cpu0[1]:
        others = max(0.0, ((cpu1[0] - cpu0[0]) - (own1 - own0)) / (cpu1[1] - cpu0[1]))
    rows = {label: {"median_ms": 1e3 * float(np.median(ts)), "min_ms": 1e3 * float(np.min(ts)), "n": len(ts),
                    "warm_calls": warm_calls[label], "info": infos[label]} for label, ts in times.items()}
    ref = reference if reference in rows else next(iter(rows), None)
    for row in rows.values():
        row["ratio"] = row["median_ms"] / rows[ref]["median_ms"] if ref else None
    return {"threads": threads, "rounds": rounds, "calls": calls, "pause_s": pause, "warm_s": warm,
            "reference": ref, "load_before": load_before, "load_after": _load(), "others_cpu_share": others,
            "rows": rows, "skipped": skipped}


def paired_table(result, title: str, log=print) -> None:
    """Print a :func:`paired` result: one line per competitor, its median and minimum, and the ratio of its
    median to the reference's (> 1: slower than the reference)."""
    others = result["others_cpu_share"]
    log(f"{title}: {result['threads']} thread(s), {result['rounds']} rounds x {result['calls']} calls "
        f"(each after a {result['pause_s']:g} s pause and {result['warm_s']:g} s of untimed calls), "
        f"load {result['load_before']} -> {result['load_after']}, other processes "
        f"{'?' if others is None else f'{100 * others:.0f} %'} of the CPU")
    for label, r in result["rows"].items():
        extra = ", ".join(f"{k} {v}" for k, v in r["info"].items()
                          if k in ("adjoint_iterations", "gflop") and v is not None)
        log(f"  {label:<30} median {r['median_ms']:9.2f} ms  min {r['min_ms']:9.2f} ms  "
            f"x{r['ratio']:.2f} of {result['reference']}" + (f"  ({extra})" if extra else ""))


def _with_baseline(competitors, baseline):
    """Each refsnn competitor again, run from the checkout ``baseline`` (labelled with its git revision)."""
    if not baseline:
        return list(competitors)
    try:
        rev = subprocess.run(["git", "-C", baseline, "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        rev = os.path.basename(os.path.abspath(baseline))
    out = []
    for c in competitors:
        out.append(c)
        if c.label.startswith("refsnn"):
            out.append(Competitor(f"{c.label} @{rev}", c.case, c.args, pythonpath=os.path.abspath(baseline),
                                  env=c.env))
    return out


def versus(algo: str, quick: bool = False, *, baseline: str | None = None, threads=None, rounds: int | None = None,
           log=print) -> dict:
    """The paired table of ``algo`` (``refsnn bench ALGO``): refsnn beside the implementations people use.

    * STBP: 784-400-10, T = 20, batch 100, the official neuron, per dtype: refsnn (numba tier), the same step
      with every matrix product by BLAS (``dense products``: refsnn otherwise adds weight rows for the input's
      spikes, :mod:`refsnn.blocks.spike_products`), the same
      network as a stack of layers (``refsnn.stbp_layers``, float64 only), eager
      PyTorch of the same graph, ``torch.compile`` of it, snnTorch and spikingjelly (each its stock LIF with
      the same constants), and the GEMM floor (the step's matrix products alone).  Then the stack's new pieces
      (BatchNorm, a recurrent population, a leaky-integrator readout with a membrane loss) at the same shapes,
      against the same network in eager PyTorch and under ``torch.compile``.  Last, the official conv net
      (``PRESETS["code_conv"]``, T = 20, batch 32) per dtype against eager PyTorch of the same graph.
    * IDE: the official F400 step (``PRESETS["code"]``, T = 5, batch 128, dropout masks given) with the
      code's Broyden and with its fixed 30 'iter' steps, refsnn against a PyTorch port of the same step, on
      1 and on 2 threads.
    * ST-RSBP: one online sample of 784-400-R400-10 at T = 400 on one thread; beside it the official CUDA
      log's time per sample (911-953 s per 60 000-sample epoch).
    * SSNN-BP: one online V1 sample (T = 64, both counters) of 784-100-10 on Fashion-MNIST (digits if it
      is not installed) beside the ANN twin.

    ``baseline``: a path to another refsnn checkout, whose refsnn rows are timed in the same rounds.
    ``quick``: small sizes, two rounds (the tests).
    """
    algo = refsnn.algorithm_name(algo)
    out = {"algo": algo, "quick": quick, "platform": platform.platform(), "cpu_count": os.cpu_count(),
           "tables": {}}
    R = rounds or (2 if quick else 7)
    W = 0.01 if quick else 0.3          # seconds of untimed calls before each competitor's timed ones (paired)
    if algo == "stbp":
        # float64 and float32 as separate tables: the float32 peers are compared with refsnn's float32
        shape = {"sizes": [100, 50, 10], "T": 5, "batch": 20} if quick else {"sizes": [784, 400, 10], "T": 20,
                                                                           "batch": 100}
        for dt in ("float64", "float32"):
            a = dict(shape, dtype=dt)
            comps = [Competitor("refsnn", "stbp_refsnn", a),
                     # the same step with every product by BLAS (no event-driven sums): its distance to the
                     # GEMM floor is the cost of the rest of the step (not a "refsnn" row: no baseline twin)
                     Competitor("dense products", "stbp_refsnn", dict(a, products="dense")),
                     Competitor("torch eager", "stbp_torch", a)]
            if dt == "float64":                      # the stack of layers runs float64 (not a "refsnn" row:
                comps.insert(1, Competitor("stack (stbp_layers)", "stbp_refsnn_stack", a))   # no baseline twin)
            if not quick:
                comps.append(Competitor("torch.compile", "stbp_torch", dict(a, compile=True)))
            comps += [Competitor("snntorch", "stbp_snntorch", a), Competitor("spikingjelly", "stbp_spikingjelly", a),
                      Competitor("GEMM floor", "stbp_gemm_floor", a)]
            res = paired(_with_baseline(comps, baseline), rounds=R, warm=W, threads=threads, reference="refsnn",
                         log=log)
            paired_table(res, f"STBP step {'-'.join(map(str, shape['sizes']))}, T={shape['T']}, batch "
                              f"{shape['batch']}, {dt}", log)
            out["tables"][f"stbp {dt}"] = res
        # the pieces the peers' models add (BatchNorm, a recurrent population, a leaky-integrator readout, a
        # membrane loss) at the same shapes, against the same network in PyTorch (float64: the stack's dtype)
        a = dict(shape, dtype="float64")
        comps = [Competitor("stack (stbp_layers)", "stack_refsnn", a),
                 Competitor("stack, readable tier", "stack_refsnn", dict(a, backend="numpy")),
                 Competitor("torch eager", "stack_torch", a)]
        if not quick:
            comps.append(Competitor("torch.compile", "stack_torch", dict(a, compile=True)))
        res = paired(comps, rounds=R, warm=W, threads=threads, reference="stack (stbp_layers)", log=log)
        paired_table(res, f"STBP stack: Affine-BatchNorm-recurrent LIF-Affine-LI readout, "
                          f"{'-'.join(map(str, shape['sizes']))}, T={shape['T']}, batch {shape['batch']}, float64", log)
        out["tables"]["stbp stack pieces"] = res
        # the official conv net (T 20, batch 32) against eager PyTorch of the same graph, per dtype
        conv_shape = ({"arch": "8x8x1-4c3p1-ap2-10", "T": 4, "batch": 4} if quick else {"T": 20, "batch": 32})
        for dt in ("float64", "float32"):
            a = dict(conv_shape, dtype=dt)
            comps = [Competitor("refsnn", "conv_refsnn", a), Competitor("torch eager", "conv_torch", a)]
            res = paired(_with_baseline(comps, baseline), rounds=R, warm=W, threads=threads, reference="refsnn",
                         log=log)
            paired_table(res, f"STBP conv step {a.get('arch', stbp.PRESETS['code_conv'].arch)}, T={a['T']}, "
                              f"batch {a['batch']}, {dt}", log)
            out["tables"][f"stbp conv {dt}"] = res
    elif algo == "ide":
        shape = {"sizes": [64, 32, 10], "batch": 16} if quick else {"sizes": [784, 400, 10], "batch": 128}
        for n in ((threads,) if threads else (1, 2)):
            comps = []
            for solver in ("broyden", "iter"):
                a = dict(shape, solver=solver)
                comps += [Competitor(f"refsnn {solver}", "ide_refsnn", a),
                          Competitor(f"torch port {solver}", "ide_torch", a)]
            res = paired(_with_baseline(comps, baseline), rounds=R, warm=W, threads=n, reference="refsnn broyden",
                         log=log)
            paired_table(res, f"IDE F{shape['sizes'][1]} step (official code's), T=5, batch {shape['batch']}", log)
            out["tables"][f"ide {n} thread(s)"] = res
    elif algo == "st_rsbp":
        a = {"arch": "784-100-R100-10", "T": 100} if quick else {"arch": "784-400-R400-10", "T": 400}
        res = paired(_with_baseline([Competitor("refsnn", "st_rsbp_refsnn", a)], baseline), rounds=R, warm=W,
                     calls=5 if quick else 20, threads=1, reference="refsnn", log=log)
        paired_table(res, f"ST-RSBP online sample {a['arch']}, T={a['T']}", log)
        if not quick:
            ref = res["rows"]["refsnn"]["median_ms"]
            res["official_gpu_log_ms"] = [1e3 * 911 / 60000, 1e3 * 953 / 60000]
            log(f"  {'official CUDA log':<30} {1e3 * 911 / 60000:.1f}-{1e3 * 953 / 60000:.1f} ms per sample "
                f"(911-953 s per epoch): refsnn x{ref / (1e3 * 953 / 60000):.2f}-x{ref / (1e3 * 911 / 60000):.2f}")
        out["tables"]["st_rsbp"] = res
    else:
        try:
            datasets.load("fashion-mnist", "test", limit=1)
            ds = "digits" if quick else "fashion-mnist"
        except (OSError, ValueError, FileNotFoundError):  # pragma: no cover - not installed
            ds = "digits"
        T = 16 if quick else 64
        comps = [Competitor(f"refsnn V1 T={T} events", "ssnn_bp_refsnn", {"dataset": ds, "T": T}),
                 Competitor(f"refsnn V1 T={T} matmul", "ssnn_bp_refsnn", {"dataset": ds, "T": T, "counter": "matmul"}),
                 Competitor("ANN twin", "ssnn_bp_refsnn", {"dataset": ds, "ann": True})]
        res = paired(_with_baseline(comps, baseline), rounds=R, warm=W, calls=20 if quick else 200, threads=1,
                     reference="ANN twin", pause=0.05, log=log)
        paired_table(res, f"SSNN-BP online sample, {ds}, 100 hidden", log)
        out["tables"]["ssnn_bp"] = res
    return out


# ---------------------------------------------------------------------------
# STBP: one training step against eager PyTorch
# ---------------------------------------------------------------------------

def stbp_bench(quick: bool = False, repeats: int | None = None, log=print) -> dict:
    """Time one STBP training step (forward + backward): 784-400-10, T = 20, batch 100, the code preset,
    Bernoulli input with rate 0.2; the numba and NumPy tiers in float64 and float32, in this process (the
    comparison with PyTorch and the peers is :func:`versus`, each in a process of its own), then the conv
    net (:func:`stbp_conv_bench`).  ``quick``: 100-50-10, T = 5, batch 20."""
    sizes, T, B = ([100, 50, 10], 5, 20) if quick else ([784, 400, 10], 20, 100)
    repeats = repeats or (3 if quick else 10)
    cfg = replace(stbp.PRESETS["code"], T=T)
    rng = np.random.default_rng(0)
    params = stbp.init_params(sizes, cfg, rng)
    x = stbp.encode(np.full((B, sizes[0]), 0.2), cfg, rng)
    y = rng.integers(0, sizes[-1], B)
    results = {}
    for dtype in ("float64", "float32"):
        for backend in ("numba", "numpy"):
            c = replace(cfg, dtype=dtype, backend=backend)
            results[f"refsnn {backend} {dtype}"] = timed(lambda c=c: stbp.loss_and_grad(params, x, y, c), repeats)
    setting = {"sizes": sizes, "T": T, "batch": B, "jit": jit_status()}
    log(f"STBP training step (forward + backward), {'-'.join(map(str, sizes))}, T={T}, batch {B}; {jit_status()}")
    for label, r in results.items():
        log(f"  {label:<24} median {r['median_ms']:9.2f} ms   min {r['min_ms']:9.2f} ms   ({r['repeats']} runs)")
    return {"setting": setting, "results": results, "conv": stbp_conv_bench(quick, log=log)}


def _conv_step_flops(specs, T: int, B: int) -> float:
    """Multiply-adds x 2 of one STBP training step of a (conv) net: the forward synaptic operations, their
    weight gradients and (above the first layer) their input gradients, for every step and sample."""
    fwd = [2.0 * sp.n_out * (sp.in_shape[0] * sp.kernel ** 2 if sp.op == "conv" else sp.n_in) for sp in specs]
    return T * B * (2 * sum(fwd) + sum(fwd[1:]))


def stbp_conv_bench(quick: bool = False, repeats: int | None = None, log=print) -> dict:
    """Time one STBP training step of the official conv net (``PRESETS["code_conv"]``,
    ``28x28x1-32c3p1-ap2-32c3p1-ap2-128-10``), T = 20, batch 32, Bernoulli input with rate 0.2, in float64 and
    float32, against eager PyTorch of the same graph (:func:`refsnn.checking.torch_golds.stbp_family_loss`: torch's
    conv2d and avg_pool2d) on as many threads, and beside them the GEMM floor: the step's FLOPs divided by
    the BLAS rate measured on the im2col product of the second convolution (the step's largest).
    ``quick``: ``8x8x1-4c3p1-ap2-10``, T = 4, batch 4."""
    arch, T, B = ("8x8x1-4c3p1-ap2-10", 4, 4) if quick else (stbp.PRESETS["code_conv"].arch, 20, 32)
    repeats = repeats or (2 if quick else 5)
    cfg = replace(stbp.PRESETS["code_conv"], T=T, arch=arch)
    specs = stbp.parse_arch(arch)[1]
    rng = np.random.default_rng(0)
    params = stbp.init_params(None, cfg, rng)
    x = stbp.encode(np.full((B, specs[0].n_in), 0.2), cfg, rng)
    y = rng.integers(0, specs[-1].n_out, B)
    flops = _conv_step_flops(specs, T, B)
    big = max((sp for sp in specs if sp.op == "conv"), key=lambda sp: sp.n_out * sp.in_shape[0])
    rows, depth = T * B * big.out_shape[1] * big.out_shape[2], big.in_shape[0] * big.kernel ** 2
    results, floor = {}, {}
    for dtype in ("float64", "float32"):
        c = replace(cfg, dtype=dtype)
        results[f"refsnn numba {dtype}"] = timed(lambda c=c: stbp.loss_and_grad(params, x, y, c), repeats)
        A = rng.random((rows, depth)).astype(dtype)
        Wm = rng.random((depth, big.out_shape[0])).astype(dtype)
        g = timed(lambda A=A, Wm=Wm: A @ Wm, repeats)
        rate = 2.0 * rows * depth * big.out_shape[0] / (g["min_ms"] / 1e3)
        floor[dtype] = {"blas_gflops": rate / 1e9, "floor_ms": 1e3 * flops / rate}
    torch, threads = _torch_on_threads()
    if torch is not None:
        from refsnn.checking.torch_golds import stbp_family_loss

        for dtype, tdt in (("float64", torch.float64), ("float32", torch.float32)):
            xs = torch.tensor(x, dtype=tdt)
            c = replace(cfg, dtype=dtype)

            def step(tdt=tdt, xs=xs, c=c):
                tp = {k: torch.tensor(v, dtype=tdt, requires_grad=True) for k, v in params.items()}
                stbp_family_loss(tp, xs, y, c).backward()

            results[f"torch eager {dtype}"] = timed(step, repeats)
    log(f"STBP conv training step, {arch}, T={T}, batch {B}: {flops / 1e9:.2f} GFLOP; {jit_status()}")
    for label, r in results.items():
        log(f"  {label:<24} median {r['median_ms']:9.1f} ms   min {r['min_ms']:9.1f} ms   ({r['repeats']} runs)")
    for dtype, f in floor.items():
        log(f"  GEMM floor {dtype:<13} {f['floor_ms']:9.1f} ms   (BLAS {f['blas_gflops']:.1f} GFLOP/s on the "
            f"{rows}x{depth}x{big.out_shape[0]} im2col product)")
    return {"setting": {"arch": arch, "T": T, "batch": B, "gflop": flops / 1e9, "torch_threads": threads},
            "results": results, "floor": floor}


# ---------------------------------------------------------------------------
# IDE: memory against T (vs STBP), and the F400 step
# ---------------------------------------------------------------------------

def training_step_memory(algo: str, T: int, sizes=(784, 400, 10), batch: int = 128, seed: int = 0,
                         config: dict | None = None) -> int:
    """Peak bytes (:func:`peak_bytes`) of one training step (encode, ``loss_and_grad``, SGD step) at ``T`` steps.

    ``algo`` is ``"ide"`` (``ide.Config(T=T)``, direct input, changed by the ``config`` dict) or ``"stbp"``
    (the code preset, direct input, NumPy backend: its numba kernels allocate outside tracemalloc's view).
    Parameters and data are allocated before tracing starts.  The IDE kernel allocates nothing itself (its
    buffers are NumPy arrays), so everything it uses is counted.
    """
    rng = np.random.default_rng(seed)
    if algo == "ide":
        mod, cfg = ide, replace(ide.Config(T=T), **(config or {}))
    elif algo == "stbp":
        mod, cfg = stbp, replace(stbp.PRESETS["code"], T=T, encoding="direct", backend="numpy", **(config or {}))
    else:
        raise ValueError(f"algo: expected 'ide' or 'stbp', got {algo!r}")
    if cfg.arch is not None:                    # a convolutional net: the architecture gives the sizes
        parsed = mod.parse_arch(cfg.arch)
        n_out = parsed[3] if algo == "ide" else parsed[1][-1].n_out
        sizes = (int(np.prod(parsed[0])), n_out)
    features = rng.random((batch, sizes[0]))
    y = rng.integers(0, sizes[-1], batch)
    params = mod.init_params(None if cfg.arch is not None else list(sizes), cfg, rng)
    opt = optim.make("sgd", 0.01, momentum=0.9)

    def step():
        x = mod.encode(features, cfg, rng)
        _, grads = mod.loss_and_grad(params, x, y, cfg)
        opt.step(params, grads)

    step()  # warm up (compilation, optimizer state)
    return peak_bytes(step)


def ide_bench(quick: bool = False, log=print) -> dict:
    """IDE's memory against T (vs STBP) and its training speed on the F400 network.

    * Peak memory of one training step for IDE and STBP at ``T = 5, 30, 100`` on a 784-400-10 network with
      batch 128 (``quick``: 32-32-10, batch 16).
    * Time of one IDE training step of the paper's F400 setting (T = 5, batch 128) with each adjoint
      solver, and the implied time per Fashion-MNIST epoch (469 steps, without evaluation).
    """
    sizes, batch = ((32, 32, 10), 16) if quick else ((784, 400, 10), 128)
    Ts = (5, 30, 100)
    out = {"sizes": list(sizes), "batch": batch, "T": list(Ts), "memory_bytes": {}}
    variants = {"ide": ("ide", None), "ide_fixed_point": ("ide", {"solver": "fixed_point"}), "stbp": ("stbp", None)}
    for name, (algo, over) in variants.items():
        mem = [training_step_memory(algo, T, sizes, batch, config=over) for T in Ts]
        out["memory_bytes"][name] = mem
        out[f"{name}_ratio_T{Ts[-1]}_over_T{Ts[0]}"] = mem[-1] / mem[0]
    log(f"peak memory of one training step, {'-'.join(map(str, sizes))}, batch {batch} (tracemalloc, MB):")
    log(f"{'T':>6} {'IDE Broyden':>12} {'IDE fixed-pt':>13} {'STBP':>8}")
    m = out["memory_bytes"]
    for i, T in enumerate(Ts):
        log(f"{T:>6} {m['ide'][i] / 1e6:>12.2f} {m['ide_fixed_point'][i] / 1e6:>13.2f} {m['stbp'][i] / 1e6:>8.2f}")
    log(f"ratio T={Ts[-1]}/T={Ts[0]}: " + ", ".join(
        f"{name} {out[f'{name}_ratio_T{Ts[-1]}_over_T{Ts[0]}']:.3f}" for name in variants))

    cfg, _ = recipes.recipe("ide", "fashion-mnist")
    rng = np.random.default_rng(0)
    params = ide.init_params(list(sizes), cfg, rng)
    x = ide.encode(rng.random((batch, sizes[0])), cfg)
    y = rng.integers(0, sizes[-1], batch)
    reps = 3 if quick else 10
    timings = {}
    for solver in ("broyden", "fixed_point", "dense"):
        c = replace(cfg, solver=solver)
        info = {}
        r = timed(lambda c=c, info=info: ide.loss_and_grad(params, x, y, c, info=info),
                  1 if solver == "dense" and not quick else reps)
        timings[solver] = {"seconds_per_step": r["median_ms"] / 1e3, "min_seconds_per_step": r["min_ms"] / 1e3,
                           "adjoint_iterations": info["adjoint"].iterations}
    t_sim = timed(lambda: ide.simulate(params, x, cfg), reps)
    out["step_seconds"] = timings
    out["simulate_seconds"] = t_sim["median_ms"] / 1e3
    steps = math.ceil(60000 / batch)
    out["epoch_seconds_estimate"] = {s: timings[s]["seconds_per_step"] * steps for s in ("broyden", "fixed_point")}
    log(f"\nIDE training step, {'-'.join(map(str, sizes))}, T={cfg.T}, batch {batch} "
        f"(the fashion-mnist recipe; wall-clock, so it depends on the machine's load):")
    for solver, tmg in timings.items():
        log(f"  {solver:<12} {tmg['seconds_per_step'] * 1e3:8.1f} ms/step  ({tmg['adjoint_iterations']} adjoint "
            f"iterations)")
    log(f"  simulation alone {out['simulate_seconds'] * 1e3:.1f} ms")
    if not quick:
        log(f"  implied Fashion-MNIST epoch ({steps} steps, no evaluation): "
            f"{out['epoch_seconds_estimate']['broyden']:.0f} s with Broyden, "
            f"{out['epoch_seconds_estimate']['fixed_point']:.0f} s with the fixed-point solver")
    out["conv"] = ide_conv_bench(quick, log=log)
    return out


def ide_conv_bench(quick: bool = False, log=print) -> dict:
    """One IDE training step of the official conv net "64C5s (F64C5)" (``ide.PRESETS["conv"]``, batch 32)
    at T = 5 and T = 30: simulation alone and the whole step (Broyden, 30 iterations at most), and the
    traced peak memory of the step at both T (the readable twin's convolutions, batch 8).
    ``quick``: ``8x8x1-4c3s2p1-fbc3p1-10``, batch 4."""
    arch, batch = ("8x8x1-4c3s2p1-fbc3p1-10", 4) if quick else (ide.PRESETS["conv"].arch, 32)
    rng = np.random.default_rng(0)
    out = {"arch": arch, "batch": batch, "T": {}}
    n_in = int(np.prod(ide.parse_arch(arch)[0]))
    for T in (5, 30):
        cfg = replace(ide.PRESETS["conv"], T=T, arch=arch)
        params = ide.init_params(None, cfg, rng)
        x = ide.encode(rng.random((batch, n_in)), cfg)
        y = rng.integers(0, 10, batch)
        info = {}
        step = timed(lambda: ide.loss_and_grad(params, x, y, cfg, info=info), 1 if not quick else 2)
        sim = timed(lambda: ide.simulate(params, x, cfg), 1 if not quick else 2)
        mem = training_step_memory("ide", T, batch=4 if quick else 8,
                                   config={"arch": arch, "backend": "numpy", "solver": "fixed_point",
                                           "max_iter": 30})
        out["T"][T] = {"step_seconds": step["median_ms"] / 1e3, "simulate_seconds": sim["median_ms"] / 1e3,
                       "adjoint_iterations": info["adjoint"].iterations, "peak_bytes": mem}
    log(f"\nIDE conv training step, {arch}, batch {batch} (Broyden, BatchNorm2d; wall-clock):")
    for T, r in out["T"].items():
        log(f"  T={T:<3} step {r['step_seconds']:7.2f} s  (simulation {r['simulate_seconds']:6.2f} s, "
            f"{r['adjoint_iterations']} adjoint iterations); traced peak {r['peak_bytes'] / 1e6:.2f} MB")
    return out


# ---------------------------------------------------------------------------
# ST-RSBP: one online sample, and how it grows with T and the recurrent layer
# ---------------------------------------------------------------------------

def st_rsbp_bench(quick: bool = False, *, reps: int | None = None, log=print) -> dict:
    """Time one online ST-RSBP training step (``loss_and_grad`` + Adam) per sample.

    The headline is the paper's Fashion-MNIST network 784-400-R400-10 at T = 400 (default Config: exact
    gradient, one thread), on the first Fashion-MNIST training images (random images of the same mean
    intensity if the dataset is not installed), from the initial weights.  Then T in {100, 200, 400, 800}
    at N_r = 400, N_r in {100, 200, 400, 800} at T = 400 (784-400-R{N_r}-10), and the NumPy backend at
    the headline setting.  ``quick``: 784-100-R100-10 at T = 100 and fewer repetitions.  Reports the
    median and minimum over ``reps`` samples and splits the step into ``loss_and_grad`` and Adam.
    """
    try:
        X, _ = datasets.load("fashion-mnist", "train", limit=64)
        feats, source = X.reshape(len(X), -1) / 255.0, "fashion-mnist"
    except (FileNotFoundError, ValueError):
        rng0 = np.random.default_rng(0)
        feats, source = rng0.random((64, 784)) * (rng0.random((64, 784)) < 0.57), "random images"
    reps = reps or (5 if quick else 60)
    base_T, base_N = (100, 100) if quick else (400, 400)
    Ts = [50, 100] if quick else [100, 200, 400, 800]
    Ns = [50, 100] if quick else [100, 200, 400, 800]

    def run(arch, T, backend="numba", n=reps):
        cfg = replace(st_rsbp.Config(), T=T, backend=backend)
        t0 = time.perf_counter()
        st_rsbp.d_table(cfg)
        t_table = time.perf_counter() - t0
        params = st_rsbp.init_params(arch, cfg, 0)
        opt = optim.Adam(1e-3)
        rng = np.random.default_rng(0)
        xs = [st_rsbp.encode(feats[i % len(feats)][None], cfg, rng) for i in range(n + 1)]
        ys = [np.array([i % 10]) for i in range(n + 1)]
        st_rsbp.loss_and_grad(params, xs[-1], ys[-1], cfg)             # warm-up: compilation
        grads_t, adam_t, fwds, spikes = [], [], [], []
        for x, y in zip(xs[:n], ys[:n]):
            t0 = time.perf_counter()
            info = {}
            _, g = st_rsbp.loss_and_grad(params, x, y, cfg, info=info)
            t1 = time.perf_counter()
            opt.step(params, g)
            t2 = time.perf_counter()
            st_rsbp.predict(params, x, cfg)
            fwds.append(time.perf_counter() - t2)
            grads_t.append(t1 - t0)
            adam_t.append(t2 - t1)
            spikes.append([float(c.sum()) for c in info["counts"]])
        steps = np.add(grads_t, adam_t)
        row = {"arch": arch, "T": T, "backend": backend, "s_per_sample": float(np.median(steps)),
               "s_per_sample_min": float(np.min(steps)), "loss_and_grad_s": float(np.median(grads_t)),
               "adam_s": float(np.median(adam_t)), "forward_s_per_sample": float(np.median(fwds)),
               "d_table_s": t_table, "mean_spikes_per_layer": np.mean(spikes, axis=0).round(1).tolist(), "reps": n}
        log(f"  {arch:<18} T={T:<4} {backend:<6} step {1e3 * row['s_per_sample']:7.1f} ms (min "
            f"{1e3 * row['s_per_sample_min']:6.1f}; loss_and_grad {1e3 * row['loss_and_grad_s']:6.1f}, Adam "
            f"{1e3 * row['adam_s']:5.1f})  forward {1e3 * row['forward_s_per_sample']:6.1f} ms  "
            f"spikes/layer {row['mean_spikes_per_layer']}")
        return row

    log(f"ST-RSBP benchmark ({source}; {jit_status()}; one thread per call, Config.threads=1)")
    head = run(f"784-{base_N}-R{base_N}-10", base_T)
    vs_T = [head if T == base_T else run(f"784-{base_N}-R{base_N}-10", T) for T in Ts]
    vs_N = [head if N == base_N else run(f"784-400-R{N}-10" if not quick else f"784-{N}-R{N}-10", base_T)
            for N in Ns]
    numpy_row = run(f"784-{base_N}-R{base_N}-10", base_T, backend="numpy", n=max(2, reps // 5))
    return {"source": source, "jit": jit_status(), "platform": platform.platform(), "processor": platform.processor(),
            "cpu_count": os.cpu_count(), "headline": head, "vs_T": vs_T, "vs_recurrent_size": vs_N,
            "numpy_backend": numpy_row}


# ---------------------------------------------------------------------------
# SSNN-BP: the coincidence counters (accuracy against T is refsnn.harness.experiments')
# ---------------------------------------------------------------------------

def _time_counters(dataset: str, Ts, n_samples: int, log) -> dict:
    """Per-sample time of one V1 training step with each counter, and of each counter alone.

    The counters alone are timed on identical recorded spikes, through the module's own (private) net
    counter, as the step uses them.
    """
    X, y = datasets.load(dataset, "train", limit=n_samples)
    F = X.reshape(len(X), -1) / 255.0
    n_train = {"digits": 1438, "fashion-mnist": 60000}.get(dataset, len(y))
    sizes = [F.shape[1], 100, datasets.n_classes(dataset)]
    params = ssnn_bp.init_params(sizes, ssnn_bp.Config(), 0)
    out = {}
    for T in Ts:
        row = {}
        for counter in ("events", "matmul", "loop"):
            cfg = ssnn_bp.Config(T=T, counter=counter)
            rng = np.random.default_rng(0)
            ssnn_bp.loss_and_grad(params, F[:1], y[:1], cfg, rng)          # warm-up / compile
            t0 = time.perf_counter()
            for i in range(n_samples):
                ssnn_bp.loss_and_grad(params, F[i:i + 1], y[i:i + 1], cfg, rng)
            row[f"step {counter}"] = 1e3 * (time.perf_counter() - t0) / n_samples
        traces = [ssnn_bp.simulate(params, F[i:i + 1], y[i:i + 1], ssnn_bp.Config(T=T), np.random.default_rng(i))
                  for i in range(n_samples)]
        count = ssnn_bp._net_coincidences
        for name, fn in (("events", lambda p, d: count(p, d, "events")),
                         ("matmul", lambda p, d: count(p, d, "matmul")),
                         ("loop", lambda p, d: count(p, d, "loop"))):
            t0 = time.perf_counter()
            for tr in traces:
                for d, port in zip(tr.streams, tr.ports):
                    fn(port, d)
            row[f"count {name}"] = 1e3 * (time.perf_counter() - t0) / len(traces)
        row["active fraction"] = float(np.mean([len(tr.rows) / T for tr in traces]))
        for k in [k for k in row if k.startswith("step")]:
            row[k.replace("step", "epoch s")] = row[k] * n_train / 1e3
        out[T] = row
        log(f"{dataset} {sizes} T={T}: " + ", ".join(f"{k} {v:.3g}" for k, v in row.items()))
    return {"sizes": sizes, "n_train": n_train, "by_T": out}


def ssnn_bp_bench(quick: bool = False, log=print, accuracy: bool = True) -> dict:
    """Time the coincidence counters, and measure accuracy against T on digits next to the ANN twin.

    Timing: one online V1 training step (batch 1) at initialisation (the worst case: about 90 % of the
    steps carry gradient spikes), per counter, on digits (64-100-10) and, if installed, Fashion-MNIST
    (784-100-10); the counters alone on identical recorded spikes; epoch times are per-sample times times
    the training-set size (the pure-Python brute force is extrapolated from a few samples).  BLAS is
    limited to one thread so that timings do not depend on other processes' load.  Accuracy:
    :func:`accuracy_vs_T` on digits, V1 and the ANN twin, one seed; ``quick``: T in (1, 4, 16, 64) and 5
    epochs; full: T = 1, 2, 4, ..., 256 and the recipe's 20 epochs (about 10 min).  The several-seed
    tables: ``data_scripts/ssnn_bp_accuracy.py``.
    """
    result = {"jit": jit_status(), "quick": quick}
    with limit_threads(1):
        result["timing"] = {"digits": _time_counters("digits", (16,) if quick else (16, 64, 256),
                                                     20 if quick else 200, log)}
        if not quick:
            try:
                datasets.load("fashion-mnist", "test", limit=1)
            except (OSError, ValueError, FileNotFoundError):  # pragma: no cover - not installed
                log("fashion-mnist not available: skipping its timing")
            else:
                result["timing"]["fashion-mnist"] = _time_counters("fashion-mnist", (16, 64, 256), 100, log)
        if accuracy:
            if quick:
                acc = accuracy_vs_T("digits", Ts=(1, 4, 16, 64), seeds=(0,), forwards=("rate",), log=log, epochs=5)
            else:
                acc = accuracy_vs_T("digits", seeds=(0,), forwards=("rate",), log=log)
            result["accuracy"] = acc
            log(accuracy_table(acc))
    return result


#: The benchmark of each algorithm.
BENCHMARKS = {"stbp": stbp_bench, "st_rsbp": st_rsbp_bench, "ide": ide_bench, "ssnn_bp": ssnn_bp_bench}


def bench(algo, quick: bool = False, *, paired_only: bool = False, baseline: str | None = None, threads=None,
          rounds: int | None = None, **kwargs) -> dict:
    """Run algorithm ``algo``'s benchmark (``refsnn bench ALGO``): the paired table of :func:`versus` (ratios
    to the competitors), then, unless ``paired_only``, the algorithm's own measurements (:data:`BENCHMARKS`:
    tiers, scaling, memory).  Returns the numbers as a dict."""
    algo = refsnn.algorithm_name(algo)
    log = kwargs.get("log", print)
    out = {"versus": versus(algo, quick, baseline=baseline, threads=threads, rounds=rounds, log=log)}
    if not paired_only:
        log("")
        out["details"] = BENCHMARKS[algo](quick=quick, **kwargs)
    return out
