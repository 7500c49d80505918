"""Every numeric tolerance the suite uses, in one place, with the reason for each.

Change a number here only with an argument from the mathematics or from
floating-point error analysis, never to make a failing test pass.
"""

#: Gradient vs central finite differences (eps 1e-6, float64) of a smooth
#: reference objective.  FD truncation error ~ eps^2 * |f'''| ~ 1e-12 and
#: round-off ~ 1e-16 * |f| / eps ~ 1e-10, relative to gradients of order 1e-2
#: to 1e-1: observed errors are 1e-10..1e-8.  The issues require <= 1e-7.
GRAD_FD_REL = 1e-7

#: Two float64 implementations of the same arithmetic in a different order
#: (e.g. one big matrix product vs a sum of per-step products): round-off
#: grows like n * 1e-16 with n the number of terms summed.
TWIN_REL = 1e-12

#: Cross-check against PyTorch autograd of the same graph in float64.
TORCH_REL = 1e-10

#: float32 vs float64 runs of the same network with no spike flipped:
#: float32 round-off ~ 6e-8 per operation, accumulated over T steps and layers.
FLOAT32_REL = 1e-4
