r"""Optimizers: SGD (momentum, weight decay) and Adam, small and explicit.

Parameters are the plain ``dict[str, ndarray]`` of every refsnn algorithm.  An
optimizer updates them **in place** from a gradient dict with the same keys.
Its whole state is a dict of arrays and numbers (``state_dict`` /
``load_state_dict``), so a checkpoint can store and restore it exactly.

SGD, as in PyTorch (``torch.optim.SGD``, dampening 0, not Nesterov)::

    g  = grad + weight_decay * w
    v  = momentum * v + g            (v = g at the first step)
    w -= lr * v

Adam (Kingma & Ba 2015, Algorithm 1, with weight decay added to the gradient
as ``torch.optim.Adam`` does)::

    g  = grad + weight_decay * w
    m  = b1 * m + (1 - b1) * g
    v  = b2 * v + (1 - b2) * g**2
    w -= lr * (m / (1 - b1**t)) / (sqrt(v / (1 - b2**t)) + eps)

The learning rate is an attribute (``opt.lr``) the training loop sets each
epoch from its schedule.  Adam's four lines are written twice: as the NumPy
expressions above (``Adam.step``, the readable form, used for anything that is
not a contiguous float array and whenever numba is off) and as one numba loop
that applies them element by element in the same order (``_adam_kernel``: one
pass over memory instead of about ten, which matters for the online ST-RSBP
update of half a million weights per sample).  Both give the same numbers, bit
for bit.  ``frozen`` keys (e.g. fixed lateral weights) are
never updated.
"""

from __future__ import annotations

import numpy as np

from refsnn.blocks._checks import check_in_range, check_positive
from refsnn.blocks._jit import JIT_ENABLED, njit

__all__ = ["SGD", "Adam", "make"]


class _Optimizer:
    name = "base"

    def __init__(self, lr: float, weight_decay: float = 0.0, frozen=()):
        self.lr = check_positive("lr", lr)
        self.weight_decay = check_positive("weight_decay", weight_decay, allow_zero=True)
        self.frozen = tuple(frozen)
        self.t = 0

    def _grad(self, params, grads, key):
        if key not in grads:
            raise KeyError(f"grads: missing gradient for parameter {key!r}")
        g = grads[key]
        if g.shape != params[key].shape:
            raise ValueError(f"grads[{key!r}]: shape {g.shape} does not match parameter shape {params[key].shape}")
        if self.weight_decay:
            g = g + self.weight_decay * params[key]
        return g

    def state_dict(self) -> dict:
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError


class SGD(_Optimizer):
    """Stochastic gradient descent with optional momentum and L2 weight decay."""

    name = "sgd"

    def __init__(self, lr: float = 0.1, momentum: float = 0.0, weight_decay: float = 0.0, frozen=()):
        super().__init__(lr, weight_decay, frozen)
        self.momentum = check_in_range("momentum", momentum, 0.0, 1.0, hi_open=True)
        self.velocity: dict[str, np.ndarray] = {}

    def step(self, params: dict, grads: dict) -> None:
        """One update of every non-frozen parameter, in place."""
        self.t += 1
        for key in params:
            if key in self.frozen:
                continue
            g = self._grad(params, grads, key)
            if self.momentum:
                if key in self.velocity:
                    self.velocity[key] = self.momentum * self.velocity[key] + g
                else:
                    self.velocity[key] = np.array(g, copy=True)
                g = self.velocity[key]
            params[key] -= self.lr * g

    def state_dict(self) -> dict:
        return {"t": self.t, "lr": self.lr, **{f"velocity/{k}": v for k, v in self.velocity.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.t = int(state["t"])
        self.lr = float(state["lr"])
        self.velocity = {k.split("/", 1)[1]: np.array(v) for k, v in state.items() if k.startswith("velocity/")}


class Adam(_Optimizer):
    """Adam with bias correction (Kingma & Ba 2015)."""

    name = "adam"

    def __init__(self, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0, frozen=()):
        super().__init__(lr, weight_decay, frozen)
        self.b1 = check_in_range("betas[0]", betas[0], 0.0, 1.0, hi_open=True)
        self.b2 = check_in_range("betas[1]", betas[1], 0.0, 1.0, hi_open=True)
        self.eps = check_positive("eps", eps)
        self.m: dict[str, np.ndarray] = {}
        self.v: dict[str, np.ndarray] = {}

    def step(self, params: dict, grads: dict) -> None:
        """One update of every non-frozen parameter, in place."""
        self.t += 1
        c1 = 1.0 - self.b1 ** self.t
        c2 = 1.0 - self.b2 ** self.t
        for key in params:
            if key in self.frozen:
                continue
            g = self._grad(params, grads, key)
            m = self.m.get(key)
            v = self.v.get(key)
            if _kernel_applies(params[key], g, m, v):
                if m is None:     # b * 0 + x is x exactly: the kernel's first step is the NumPy first step
                    m, v = np.zeros_like(g), np.zeros_like(g)
                    self.m[key], self.v[key] = m, v
                t = params[key].dtype.type     # the Python scalars rounded to the array's dtype, as NumPy does
                _adam_kernel(params[key].reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1), t(self.b1),
                             t(1 - self.b1), t(self.b2), t(1 - self.b2), t(self.lr), t(c1), t(c2), t(self.eps))
                continue
            m = (1 - self.b1) * g if m is None else self.b1 * m + (1 - self.b1) * g
            v = (1 - self.b2) * g * g if v is None else self.b2 * v + (1 - self.b2) * g * g
            self.m[key], self.v[key] = m, v
            params[key] -= self.lr * (m / c1) / (np.sqrt(v / c2) + self.eps)

    def state_dict(self) -> dict:
        out = {"t": self.t, "lr": self.lr}           # copies: the kernel updates m and v in place
        out.update({f"m/{k}": v.copy() for k, v in self.m.items()})
        out.update({f"v/{k}": v.copy() for k, v in self.v.items()})
        return out

    def load_state_dict(self, state: dict) -> None:
        self.t = int(state["t"])
        self.lr = float(state["lr"])
        self.m = {k[2:]: np.array(v) for k, v in state.items() if k.startswith("m/")}
        self.v = {k[2:]: np.array(v) for k, v in state.items() if k.startswith("v/")}


def _kernel_applies(p, g, m, v) -> bool:
    """Whether :func:`_adam_kernel` can update ``p`` in place: numba on, and every array a C-contiguous
    float array of ``p``'s dtype and shape (``m``, ``v`` may be None: the first step)."""
    if not JIT_ENABLED or p.dtype not in (np.float64, np.float32):
        return False
    return all(a is None or (isinstance(a, np.ndarray) and a.dtype == p.dtype and a.shape == p.shape
                             and a.flags.c_contiguous and a.flags.writeable) for a in (p, g, m, v))


@njit(error_model="numpy")      # IEEE division (no zero check), so the loop vectorises; same results
def _adam_kernel(p, g, m, v, b1, one_minus_b1, b2, one_minus_b2, lr, c1, c2, eps):
    """Adam's update of one flat array, in place: :meth:`Adam.step`'s NumPy lines element by element, every
    operation in the same order and precision (scalars already rounded to the arrays' dtype)."""
    for i in range(p.shape[0]):
        gi = g[i]
        mi = b1 * m[i] + one_minus_b1 * gi
        vi = b2 * v[i] + one_minus_b2 * gi * gi
        m[i] = mi
        v[i] = vi
        p[i] = p[i] - lr * (mi / c1) / (np.sqrt(vi / c2) + eps)


def make(name: str, lr: float, **kwargs) -> _Optimizer:
    """Build an optimizer by name: ``"sgd"`` or ``"adam"``."""
    if name == "sgd":
        return SGD(lr, **kwargs)
    if name == "adam":
        return Adam(lr, **kwargs)
    raise ValueError(f"optimizer: unknown name {name!r}; expected 'sgd' or 'adam'")
