"""How strong the code's weight regulariser is next to the ST-RSBP error gradient, layer by layer.

Why this exists: with the official Fashion-MNIST setting (lambda 10, beta 0.04, L 8) our epoch-1
test accuracy drops from 85.0% to 78.7%, while the official log (which lists lambda 10) reaches
84.7%.  The term's gradient is ``lambda beta (w/L) exp(beta (Q_i - 1))`` ~ 0.048 w, the same
formula as the code's ``g_Spiking_gradAdd`` / ``g_Reservoir_gradAdd``; under Adam it moves each
weight by about ``lr * 0.048 w / sqrt(v)``, so its effect depends on how large the error gradient
(which sets ``v``) is.  This script trains online exactly as the recipe does (Adam, lr 1e-3, one
sample per step, regulariser on) and prints, every ``--every`` samples, per parameter tensor: the
RMS of the error gradient, the RMS of the regulariser gradient, the median Adam ``sqrt(v_hat)``,
the RMS weight and the fraction of (existing) weights that have shrunk below 0.05; and per block
the cost x2 of the true counts (our ``2 * loss`` without the regulariser), the cost x2 the official
log prints (counts after the silent target's inserted spikes, unweighted) and the running
training accuracy.

    python data_scripts/st_rsbp_regulariser_probe.py --samples 1000      (~30 s; needs Fashion-MNIST)
    python data_scripts/st_rsbp_regulariser_probe.py --preset log        (the code's first commit)
    python data_scripts/st_rsbp_regulariser_probe.py --set reservoir_init="'ei'" --set kappa_zero=0

``--preset NAME`` applies the fields in which ``st_rsbp.PRESETS[NAME]`` differs from the default
``Config`` on top of the recipe (``code``: the gradient variants; ``log``: everything of the commit
that made the official log); ``--set FIELD=VALUE`` (repeatable, a Python literal) then changes single
fields; ``--reg-lambda`` is applied last.

If the code's run is not hurt by the term, its error gradients must be much larger than ours
relative to ``w``, or the term must be inactive there for a reason not visible in the source.
"""
import argparse
import ast
import time
from dataclasses import fields, replace

import numpy as np

from refsnn import st_rsbp
from refsnn.harness import datasets, optim, recipes


def _overrides(preset: str, pairs) -> dict:
    """The preset's departures from the default Config, then the ``--set`` fields."""
    base, chosen = st_rsbp.Config(), st_rsbp.PRESETS[preset]
    out = {f.name: getattr(chosen, f.name) for f in fields(st_rsbp.Config)
           if getattr(chosen, f.name) != getattr(base, f.name)}
    names = {f.name for f in fields(st_rsbp.Config)}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or key not in names:
            raise SystemExit(f"--set: expected FIELD=VALUE with FIELD a field of st_rsbp.Config, got {pair!r}")
        try:
            out[key] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            out[key] = value.strip()
    return out


def _log_cost(counts, label: int, cfg) -> tuple:
    """``(2 * loss, the log's cost)`` of one sample's output counts (sample weight 1, regulariser excluded)."""
    target = np.full(counts.shape, cfg.undesired)
    target[label] = cfg.desired
    diff = counts - target
    ours = float(np.sum(np.where(np.abs(diff) > cfg.margin, diff * diff, 0.0)))
    logged = counts.astype(np.float64).copy()
    if cfg.fake_target_spikes and logged[label] == 0:        # the code's g_modifySpikes runs before calCost
        logged[label] = st_rsbp._fake_target_train(cfg.T, cfg.desired).sum()
    diff = logged - target
    return ours, float(np.sum(np.where(np.abs(diff) > cfg.margin, diff * diff, 0.0)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--every", type=int, default=250)
    p.add_argument("--reg-lambda", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preset", choices=sorted(st_rsbp.PRESETS), default="exact",
                   help="exact (the recipe's), code (diagonal, R M^-1, lateral factor) or log (the code's first "
                        "commit, which made the official log)")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE", help="change a Config field (repeatable)")
    a = p.parse_args(argv)

    cfg, settings = recipes.recipe("st_rsbp", a.dataset)
    cfg = replace(cfg, **_overrides(a.preset, a.set))
    cfg = replace(cfg, reg_lambda=a.reg_lambda)
    changed = {f.name: getattr(cfg, f.name) for f in fields(cfg)
               if getattr(cfg, f.name) != getattr(recipes.recipe("st_rsbp", a.dataset)[0], f.name)}
    print(f"recipe with {changed or 'no change'}")
    X, y = datasets.load(a.dataset, "train")
    rng = np.random.default_rng(a.seed)
    idx = rng.permutation(len(X))[:a.samples]
    feats = X[idx].reshape(len(idx), -1) / float(X.max())
    params = st_rsbp.init_params([feats.shape[1], *settings["hidden"], int(y.max()) + 1], cfg, rng=rng)
    exists = {k: w != 0 for k, w in params.items()}          # recurrent matrices are sparse
    print("initial rms w: " + "  ".join(f"{k} {np.sqrt(np.mean(w[exists[k]] ** 2)):.3f}" for k, w in params.items()))
    adam = optim.Adam(settings["lr"])             # the recipe's optimiser, as refsnn.harness.train uses it
    err_rms = {k: [] for k in params}
    reg_rms = {k: [] for k in params}
    costs, correct = [], []
    t0 = time.time()
    for t, n in enumerate(idx, start=1):
        x = st_rsbp.encode(X[n].reshape(1, -1) / float(X.max()), cfg, rng)
        info = {}
        _, g = st_rsbp.loss_and_grad(params, x, y[n:n + 1], cfg, info=info)
        _, rg = st_rsbp.regulariser(params, cfg)
        costs.append(_log_cost(info["counts"][-1][0], int(y[n]), cfg))
        correct.append(bool(info["pred"][0] == y[n]))
        for k in params:
            r = rg.get(k, 0.0)
            err_rms[k].append(float(np.sqrt(np.mean((g[k] - r) ** 2))))
            reg_rms[k].append(float(np.sqrt(np.mean(np.asarray(r) ** 2))))
        adam.step(params, g)                          # the same update as the code's g_adam_vecAdd
        if t % a.every == 0:
            block = np.array(costs[-a.every:])
            print(f"after {t} samples ({time.time() - t0:.0f} s), last {a.every}: cost x2 {block[:, 0].mean():.1f} "
                  f"(the log's definition: {block[:, 1].mean():.1f})   train acc "
                  f"{np.mean(correct[-a.every:]):.3f}")
            for k in params:
                sv = np.sqrt(adam.v[k] / (1 - adam.b2 ** adam.t))
                live = sv[sv > 0]
                print(f"  {k:4s} rms error grad {np.mean(err_rms[k][-a.every:]):8.3g}   rms reg grad "
                      f"{np.mean(reg_rms[k][-a.every:]):8.3g}   median sqrt(v) {np.median(live) if live.size else 0:8.3g}"
                      f"   rms w {np.sqrt(np.mean(params[k][exists[k]] ** 2)):6.3f}   "
                      f"|w|<0.05 {np.mean(np.abs(params[k][exists[k]]) < 0.05):5.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
