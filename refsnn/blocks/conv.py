r"""2-D convolution for the spiking layers: the operation, its two transposes, the transposed convolution.

STBP's convolutional layers and IDE's convolutional feedback blocks use these.  Maps are
``(R, C, H, W)`` (rows, channels, height, width), kernels PyTorch's ``(c_out, c_in, k, k)``; a
convolution is PyTorch's ``conv2d`` without bias: the *cross-correlation*

    y[r, o, Y, X] = sum_{c, i, j} w[o, c, i, j] a_pad[r, c, s Y + i, s X + j]                  # Eq. (C)

with ``a_pad`` the input padded by ``p`` zeros on every side, ``Y = 0..Ho-1``,
``Ho = (H + 2p - k) // s + 1`` (rows the stride cannot reach are dropped, as PyTorch's).

Its two transposes are what backpropagation needs.  For an output gradient ``g`` (the shape of ``y``)::

    dL/dw[o, c, i, j] = sum_{r, Y, X} g[r, o, Y, X] a_pad[r, c, s Y + i, s X + j]              # weight gradient
    dL/da_pad[r, c, s Y + i, s X + j] += w[o, c, i, j] g[r, o, Y, X]                        # input gradient

The input gradient is the *transposed convolution* of ``g``; with ``output_padding`` it is also
PyTorch's ``conv_transpose2d`` (IDE's feedback from a small map to a large one), so
:func:`conv_transpose2d` is :func:`conv2d_input_grad` under its other name.

Each operation exists twice, as everywhere in refsnn: a readable form that writes the sum as it is
(an ``einsum`` over the patches of the input, one kernel offset at a time for the input gradient), and
a fast form (``*_fast``) that builds the im2col matrix (one row per ``(c, i, j)``, one column per
output position) a block of rows at a time into a small reused buffer and multiplies the kernel by it
with one BLAS product per block (one per sample when the matrix has few rows, :data:`FEW_ROWS`); its
input gradient is itself a stride-1 convolution of ``g`` dilated
by the stride and padded by ``k - 1 - p``, with the kernel flipped and its channels swapped.  The two
forms agree to round-off (``tests/test_stbp_conv.py``, against PyTorch too).
"""

from __future__ import annotations

import numpy as np

from refsnn.blocks import _memory
from refsnn.blocks._jit import over_shares

__all__ = ["input_shape", "out_size", "patches", "conv2d", "conv2d_weight_grad", "conv2d_input_grad", "conv_transpose2d",
           "conv2d_fast", "conv2d_weight_grad_fast", "conv2d_input_grad_fast", "conv_transpose2d_fast"]


def input_shape(token: str) -> tuple:
    """The first token of an architecture string: ``"28x28x1"`` (H x W x C) -> ``(1, 28, 28)``, ``"784"`` -> ``(784,)``."""
    dims = token.split("x")
    if len(dims) == 3 and all(d.isdigit() and int(d) > 0 for d in dims):
        return (int(dims[2]), int(dims[0]), int(dims[1]))                 # HxWxC -> (C, H, W)
    if len(dims) == 1 and dims[0].isdigit() and int(dims[0]) > 0:
        return (int(dims[0]),)
    raise ValueError(f"arch: the first token must be the input, HxWxC (like 28x28x1) or a size, got {token!r}")


def out_size(n: int, k: int, stride: int = 1, pad: int = 0) -> int:
    """Output length of a convolution along one axis: ``(n + 2 pad - k) // stride + 1``."""
    return (n + 2 * pad - k) // stride + 1


def patches(a, k, stride=1, pad=0):
    """Every ``k x k`` patch of the padded maps ``a`` (R, C, H, W): a view (R, C, Ho, Wo, k, k)."""
    ap = np.pad(a, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else a
    view = np.lib.stride_tricks.sliding_window_view(ap, (k, k), axis=(2, 3))
    return view[:, :, ::stride, ::stride]


# ---------------------------------------------------------------------------
# Readable forms: the sums as written
# ---------------------------------------------------------------------------

def conv2d(a, w, stride=1, pad=0):
    """Eq. (C): ``(R, C, H, W) x (O, C, k, k) -> (R, O, Ho, Wo)``, the sum over each output's patch."""
    return np.einsum("rcyxij,ocij->royx", patches(a, w.shape[2], stride, pad), w)


def conv2d_weight_grad(a, g, k, stride=1, pad=0):
    """``dL/dw`` (O, C, k, k) of :func:`conv2d` for the output gradient ``g`` (R, O, Ho, Wo)."""
    return np.einsum("royx,rcyxij->ocij", g, patches(a, k, stride, pad))


def conv2d_input_grad(g, w, in_hw, stride=1, pad=0):
    """``dL/da`` (R, C, H, W) of :func:`conv2d`: each kernel offset ``(i, j)`` adds ``w[:, :, i, j]^T g`` back
    onto the input positions it read."""
    R, O, Ho, Wo = g.shape
    C, k = w.shape[1], w.shape[2]
    H, W = in_hw
    out = np.zeros((R, C, H + 2 * pad, W + 2 * pad), np.result_type(g, w))
    for i in range(k):
        for j in range(k):
            out[:, :, i:i + stride * (Ho - 1) + 1:stride, j:j + stride * (Wo - 1) + 1:stride] += \
                np.einsum("royx,oc->rcyx", g, w[:, :, i, j])
    return out[:, :, pad:pad + H, pad:pad + W]


def conv_transpose2d(a, w, stride=1, pad=0, output_padding=0):
    """PyTorch's ``conv_transpose2d`` (no bias): ``(R, C_in, H, W)`` with ``w`` (C_in, C_out, k, k) ->
    ``(R, C_out, (H-1) s - 2p + k + output_padding, ...)``: the input gradient of the convolution whose
    weight is ``w``."""
    k = w.shape[2]
    H, W = a.shape[2:]
    hw = ((H - 1) * stride - 2 * pad + k + output_padding, (W - 1) * stride - 2 * pad + k + output_padding)
    return conv2d_input_grad(a, w, hw, stride, pad)


# ---------------------------------------------------------------------------
# Fast forms: blocked im2col + BLAS
# ---------------------------------------------------------------------------

#: Elements of one im2col block (8 MB in float64): small enough to stay in cache, so that no large
#: temporary is allocated per call.
BLOCK = 1 << 20


def _row_blocks(R, per_row):
    """Slices of ``range(R)`` with at most :data:`BLOCK` im2col elements each (``per_row`` per row)."""
    step = max(1, BLOCK // max(per_row, 1))
    return [slice(i, min(i + step, R)) for i in range(0, R, step)]


def _im2col(ap, r, k, stride, Ho, Wo, buf):
    """The im2col matrix of the rows ``r`` of the padded maps ``ap`` (R, C, H + 2p, W + 2p), written into
    ``buf`` and laid out for the product with the kernel: ``(C k k, n Ho Wo)``, one row per ``(c, i, j)``,
    one column per output position ``(sample, y, x)``.  Row ``(c, i, j)`` is channel ``c`` shifted by the
    kernel offset ``(i, j)``: it is written one offset at a time, a strided copy whose runs along ``x`` are
    contiguous in both arrays."""
    C = ap.shape[1]
    n = r.stop - r.start
    block = buf[:, :, :, :n]
    for i in range(k):
        for j in range(k):
            np.copyto(block[:, i, j], ap[r, :, i:i + stride * (Ho - 1) + 1:stride,
                                         j:j + stride * (Wo - 1) + 1:stride].transpose(1, 0, 2, 3))
    return block.reshape(C * k * k, n * Ho * Wo)


def _over_blocks(a, k, stride, pad, work):
    """``[work(rows, cols) for each block of rows of a]``, in block order: ``cols`` is the block's im2col
    matrix (:func:`_im2col`, valid during the call).  The blocks depend only on the shapes; with several
    threads (:func:`refsnn.blocks._jit.over_shares`) each takes a contiguous share of them with its own
    buffer, so every block's result is the same, bit for bit, however many threads there are."""
    R, C, H, W = a.shape
    Ho, Wo = out_size(H, k, stride, pad), out_size(W, k, stride, pad)
    rows = _row_blocks(R, Ho * Wo * C * k * k)
    results = [None] * len(rows)

    def share(first, stop):
        lo = rows[first].start                                        # this share's rows, padded here
        mine = a[lo:rows[stop - 1].stop]
        ap = np.pad(mine, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else mine
        buf = np.empty((C, k, k, rows[0].stop - rows[0].start, Ho, Wo), a.dtype)
        for b in range(first, stop):
            r = rows[b]
            results[b] = work(r, _im2col(ap, slice(r.start - lo, r.stop - lo), k, stride, Ho, Wo, buf))

    over_shares(share, len(rows))
    return results


#: An im2col matrix with fewer rows (``C k k``) than this is multiplied sample by sample: its product is then
#: cheap beside moving the ``(O, positions)`` operand between the sample-major layout of the maps and the
#: channel-major one of a single product (the first conv layer of the official net, C k k = 9: forward
#: 5.8 -> 3.9 ms per block, weight gradient 9.3 -> 2.9 ms; its second, C k k = 288, gains nothing).
FEW_ROWS = 64


def conv2d_fast(a, w, stride=1, pad=0, bias=None):
    """:func:`conv2d` by im2col and BLAS; ``bias`` (O,), if given, is added to each output channel (in the
    block, while it is in cache: the same sums as adding it afterwards)."""
    O, C, k, _ = w.shape
    R, _, H, W = a.shape
    Ho, Wo = out_size(H, k, stride, pad), out_size(W, k, stride, pad)
    Wm = w.reshape(O, -1)                                             # (O, C k k)
    out = _memory.empty((R, O, Ho, Wo), np.result_type(a, w))

    def block(r, cols):
        if Wm.shape[1] < FEW_ROWS:                                    # one product per sample, into place
            Y = out[r].reshape(-1, O, Ho * Wo)
            np.matmul(Wm, cols.reshape(Wm.shape[1], -1, Ho * Wo).transpose(1, 0, 2), out=Y)
            if bias is not None:
                Y += bias[:, None]
            return
        Y = Wm @ cols
        if bias is not None:
            Y += bias[:, None]
        out[r] = Y.reshape(O, -1, Ho, Wo).transpose(1, 0, 2, 3)

    _over_blocks(a, k, stride, pad, block)
    return out


def conv2d_weight_grad_fast(a, g, k, stride=1, pad=0):
    """:func:`conv2d_weight_grad` with the same im2col blocks: one product per block (per sample when the
    im2col matrix has few rows, :data:`FEW_ROWS`), added in block order."""
    O, C = g.shape[1], a.shape[1]
    P = g.shape[2] * g.shape[3]

    def block(r, cols):
        if cols.shape[0] < FEW_ROWS:                                  # sum over the samples of g_s cols_s^T
            return np.matmul(g[r].reshape(-1, O, P), cols.reshape(cols.shape[0], -1, P).transpose(1, 2, 0)).sum(axis=0)
        return g[r].transpose(1, 0, 2, 3).reshape(O, -1) @ cols.T     # columns (sample, y, x)

    gW = np.zeros((O, C * k * k), np.result_type(a, g))
    for part in _over_blocks(a, k, stride, pad, block):
        gW += part
    return gW.reshape(O, C, k, k)


def conv2d_input_grad_fast(g, w, in_hw, stride=1, pad=0):
    """:func:`conv2d_input_grad` as a stride-1 convolution: ``g`` dilated by the stride and padded by
    ``k - 1 - pad`` (plus the rows the forward stride skipped), the kernel flipped, its channels swapped."""
    R, O, Ho, Wo = g.shape
    k = w.shape[2]
    H, W = in_hw
    q = k - 1 - pad
    if q < 0:                                                         # padding wider than the kernel
        gd = conv2d_input_grad_fast(g, w, (H + 2 * pad, W + 2 * pad), stride, 0)
        return gd[:, :, pad:pad + H, pad:pad + W]
    flipped = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
    if stride == 1:                                                   # nothing to dilate: conv2d_fast pads g itself
        return conv2d_fast(g, flipped, 1, q)
    extra_h, extra_w = (H + 2 * pad - k) % stride, (W + 2 * pad - k) % stride
    gd = _memory.empty((R, O, (Ho - 1) * stride + 1 + 2 * q + extra_h, (Wo - 1) * stride + 1 + 2 * q + extra_w), g.dtype)
    gd.fill(0)
    gd[:, :, q:q + (Ho - 1) * stride + 1:stride, q:q + (Wo - 1) * stride + 1:stride] = g
    return conv2d_fast(gd, flipped, 1, 0)


def conv_transpose2d_fast(a, w, stride=1, pad=0, output_padding=0):
    """:func:`conv_transpose2d` by :func:`conv2d_input_grad_fast`."""
    k = w.shape[2]
    H, W = a.shape[2:]
    hw = ((H - 1) * stride - 2 * pad + k + output_padding, (W - 1) * stride - 2 * pad + k + output_padding)
    return conv2d_input_grad_fast(a, w, hw, stride, pad)
