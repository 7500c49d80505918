"""How strong the code's weight regulariser is next to the ST-RSBP error gradient, layer by layer.

Why this exists: with the official Fashion-MNIST setting (lambda 10, beta 0.04, L 8) our epoch-1
test accuracy drops from 85.0% to 78.7%, while the official log (which lists lambda 10) reaches
84.7%.  The term's gradient is ``lambda beta (w/L) exp(beta (Q_i - 1))`` ~ 0.048 w, the same
formula as the code's ``g_Spiking_gradAdd`` / ``g_Reservoir_gradAdd``; under Adam it moves each
weight by about ``lr * 0.048 w / sqrt(v)``, so its effect depends on how large the error gradient
(which sets ``v``) is.  This script trains online exactly as the recipe does (Adam, lr 1e-3, one
sample per step, regulariser on) and prints, every ``--every`` samples, per parameter tensor: the
RMS of the error gradient, the RMS of the regulariser gradient, the median Adam ``sqrt(v_hat)``,
the RMS weight and the fraction of (existing) weights that have shrunk below 0.05.

    python data_scripts/st_rsbp_regulariser_probe.py --samples 1000      (~30 s; needs Fashion-MNIST)

If the code's run is not hurt by the term, its error gradients must be much larger than ours
relative to ``w``, or the term must be inactive there for a reason not visible in the source.
"""
import argparse
import time
from dataclasses import replace

import numpy as np

from refsnn import datasets, optim, recipes, st_rsbp


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--every", type=int, default=250)
    p.add_argument("--reg-lambda", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preset", choices=sorted(st_rsbp.PRESETS), default="exact",
                   help="gradient variant: exact (the recipe's) or code (diagonal, R M^-1, lateral factor)")
    a = p.parse_args(argv)

    cfg, settings = recipes.recipe("st_rsbp", a.dataset)
    variant = {f: getattr(st_rsbp.PRESETS[a.preset], f) for f in ("recurrent_grad", "recurrent_delta", "lateral_grad")}
    cfg = replace(cfg, reg_lambda=a.reg_lambda, **variant)
    X, y = datasets.load(a.dataset, "train")
    rng = np.random.default_rng(a.seed)
    idx = rng.permutation(len(X))[:a.samples]
    feats = X[idx].reshape(len(idx), -1) / float(X.max())
    params = st_rsbp.init_params([feats.shape[1], *settings["hidden"], int(y.max()) + 1], cfg, rng=rng)
    exists = {k: w != 0 for k, w in params.items()}          # recurrent matrices are sparse
    adam = optim.Adam(settings["lr"])             # the recipe's optimiser, as refsnn.train uses it
    err_rms = {k: [] for k in params}
    reg_rms = {k: [] for k in params}
    t0 = time.time()
    for t, n in enumerate(idx, start=1):
        x = st_rsbp.encode(X[n].reshape(1, -1) / float(X.max()), cfg, rng)
        _, g = st_rsbp.loss_and_grad(params, x, y[n:n + 1], cfg)
        _, rg = st_rsbp.regulariser(params, cfg)
        for k in params:
            r = rg.get(k, 0.0)
            err_rms[k].append(float(np.sqrt(np.mean((g[k] - r) ** 2))))
            reg_rms[k].append(float(np.sqrt(np.mean(np.asarray(r) ** 2))))
        adam.step(params, g)                          # the same update as the code's g_adam_vecAdd
        if t % a.every == 0:
            print(f"after {t} samples ({time.time() - t0:.0f} s), last {a.every}:")
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
