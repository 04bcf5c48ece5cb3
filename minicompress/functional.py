"""Neural-network functions: linear, convolution, pooling, softmax, losses, dropout, batch norm.

Each is a ``Function`` with forward and backward side by side. Several of them could be written as compositions
of the elementary ops in ``tensor.py`` (``softmax_simple`` below is one, kept to show the idea); they are fused
where a composition would be numerically unstable (softmax, log-softmax, cross-entropy) or slow (linear,
convolution, pooling, batch norm). Layouts follow PyTorch: ``x`` is (N, C, H, W), a conv weight (O, C, kh, kw),
a linear weight (out, in).

The convolution comes in two kernels that compute the same thing: im2col (``conv2d_im2col``, one column per window,
as derived in tutorial 00) and a banded matrix over image rows (``conv2d_banded``, faster on MNIST-sized images);
``conv2d`` picks one. ``conv2d_relu_maxpool2d`` fuses Conv2d -> ReLU -> MaxPool2d(2), which ``nn.Sequential``
uses for such chains; the three separate functions are its reference.
"""

import numpy as np
from numpy.lib.stride_tricks import as_strided, sliding_window_view

from .tensor import Function, ReLU, Tensor, _operand, default_rng


def _as_tensor(x):
    return x if isinstance(x, Tensor) else Tensor(x)


def _pair(v, name, op):
    """``3 -> (3, 3)``; checks the values are non-negative integers."""
    pair = (v, v) if np.isscalar(v) else tuple(v)
    if len(pair) != 2 or not all(isinstance(p, (int, np.integer)) and p >= 0 for p in pair):
        raise ValueError(f"{op}: {name} must be a non-negative int or a pair of them, got {v!r}")
    return tuple(int(p) for p in pair)


# --------------------------------------------------------------------------------------------------------------------
# Linear layer
# --------------------------------------------------------------------------------------------------------------------


class Linear(Function):
    """y = x W^T + b;  dy/dx = G W, dy/dW = G^T x, dy/db = sum of G over the batch."""

    @staticmethod
    def forward(ctx, x, w, b):
        if x.ndim < 1 or x.shape[-1] != w.shape[1]:
            raise ValueError(
                f"linear: input has {x.shape[-1] if x.ndim else 0} features in its last axis (shape {x.shape}), "
                f"but the weight of shape {w.shape} expects {w.shape[1]}"
            )
        ctx.x, ctx.w, ctx.has_bias = x, w, b is not None
        y = x @ w.T
        if b is not None and y.ndim and y.dtype == np.result_type(y, b):
            y += b  # in place: saves one output-sized array per call
        elif b is not None:
            y = y + b
        return y

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.x, ctx.w
        g2, x2 = grad.reshape(-1, grad.shape[-1]), x.reshape(-1, x.shape[-1])
        gx = grad @ w if ctx.needs_input_grad[0] else None
        gw = g2.T @ x2 if ctx.needs_input_grad[1] else None
        gb = g2.sum(axis=0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb


def linear(x, w, b=None):
    """y = x @ w.T + b for x of shape (..., in), w (out, in), b (out,)."""
    return Linear.apply(_operand(x), w, b)


# --------------------------------------------------------------------------------------------------------------------
# Convolution, two ways: im2col, and a banded matrix over image rows
# --------------------------------------------------------------------------------------------------------------------
#
# Both compute the same cross-correlation (as PyTorch), for x (N, C, H, W), W (O, C, kh, kw), stride s, padding p:
#
#     y[n, o, h, w] = sum_{c, i, j} W[o, c, i, j] * x_pad[n, c, s*h + i, s*w + j] + b[o]
#
# i.e. y = sum W x_window + b over every window. im2col writes every window as a column and multiplies once by
# W (O, C*kh*kw): few FLOPs, but the windows overlap kh*kw times, so the copy is large and the matrices thin. The
# banded kernel multiplies whole image rows by a larger, mostly-zero matrix built from W: more FLOPs, but big
# contiguous matrices that BLAS runs several times faster, and a small copy. ``conv2d`` picks the banded kernel
# where it is cheap (``_banded_fits``) and im2col elsewhere.


def _im2col(xp, kernel, stride, out_hw):
    """Cut every (kh, kw) window of xp (N, C, H, W) into a column: returns (C * kh * kw, N * Ho * Wo).

    ``sliding_window_view`` gives all windows without copying; the one copy is the reshape at the end. Rows of the
    result are (c, i, j) and columns (n, h, w), so the copy moves whole image rows at a time (fast).
    """
    (kh, kw), (sh, sw), (ho, wo) = kernel, stride, out_hw
    n, c = xp.shape[:2]
    windows = sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, : sh * ho : sh, : sw * wo : sw]
    return windows.transpose(1, 4, 5, 0, 2, 3).reshape(c * kh * kw, n * ho * wo)


def _col2im(cols, xp_shape, kernel, stride):
    """Add window-shaped gradients cols (C, kh, kw, N, Ho, Wo) back onto the image they were cut from.

    The loop runs over the kh * kw positions inside a window only (25 for a 5x5 kernel), each a vectorised slice.
    """
    (kh, kw), (sh, sw) = kernel, stride
    ho, wo = cols.shape[4], cols.shape[5]
    n, c, h, w = xp_shape
    out = np.zeros((c, n, h, w), dtype=cols.dtype)  # channels first, like cols, so the adds read whole rows
    for i in range(kh):
        for j in range(kw):
            out[:, :, i : i + sh * ho : sh, j : j + sw * wo : sw] += cols[:, i, j]
    return out.transpose(1, 0, 2, 3)


def _check_image(x, op):
    if x.ndim != 4:
        raise ValueError(f"{op}: input must be 4-D (N, C, H, W), got shape {x.shape}")


def _unpad(xp, pads):
    (ph, pw) = pads
    return xp[:, :, ph : xp.shape[2] - ph, pw : xp.shape[3] - pw] if ph or pw else xp


def _conv_setup(x, w, stride, padding, op):
    """Check a convolution's arguments; return stride and padding as pairs and the output size (Ho, Wo)."""
    _check_image(x, op)
    if w.ndim != 4 or x.shape[1] != w.shape[1]:
        raise ValueError(
            f"{op}: input has {x.shape[1]} channels (shape {x.shape}) but the weight of shape {w.shape} "
            f"expects {w.shape[1] if w.ndim == 4 else '(a 4-D weight)'}"
        )
    (sh, sw), (ph, pw) = _pair(stride, "stride", op), _pair(padding, "padding", op)
    if sh == 0 or sw == 0:
        raise ValueError(f"{op}: stride must be >= 1, got {stride!r}")
    kh, kw = w.shape[2:]
    h, wd = x.shape[2:]
    if kh > h + 2 * ph or kw > wd + 2 * pw:
        raise ValueError(
            f"{op}: kernel {kh}x{kw} is larger than the padded input {h + 2 * ph}x{wd + 2 * pw} "
            f"(input shape {x.shape}, padding {padding})"
        )
    return (sh, sw), (ph, pw), ((h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1)


def _pad(x, pads):
    """x with (ph, pw) rows / columns of zeros on each side (np.pad does the same, with more Python overhead)."""
    (ph, pw) = pads
    if not (ph or pw):
        return x
    n, c, h, w = x.shape
    xp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=x.dtype)
    xp[:, :, ph : ph + h, pw : pw + w] = x
    return xp


class Conv2dIm2col(Function):
    """y[n, o] = sum_{c, i, j} W[o, c, i, j] * x_pad[n, c, s*h + i, s*w + j] + b[o]  (cross-correlation, as PyTorch).

    im2col: every window becomes a column of ``cols`` (C*kh*kw, N*Ho*Wo); the convolution is then one matrix
    product W.reshape(O, -1) @ cols. Backward: dW = G cols^T, dcols = W^T G, folded back onto the image by _col2im.
    """

    @staticmethod
    def forward(ctx, x, w, b, stride, padding):
        (sh, sw), (ph, pw), (ho, wo) = _conv_setup(x, w, stride, padding, "conv2d")
        o, c, kh, kw = w.shape
        xp = _pad(x, (ph, pw))
        cols = _im2col(xp, (kh, kw), (sh, sw), (ho, wo))
        y = w.reshape(o, -1) @ cols
        if b is not None:
            y += b[:, None]
        ctx.cols, ctx.w, ctx.xp_shape, ctx.pads = cols, w, xp.shape, (ph, pw)
        ctx.stride, ctx.has_bias = (sh, sw), b is not None
        return y.reshape(o, x.shape[0], ho, wo).transpose(1, 0, 2, 3)

    @staticmethod
    def backward(ctx, grad):
        w, cols = ctx.w, ctx.cols
        o, c, kh, kw = w.shape
        n, _, ho, wo = grad.shape
        g2 = grad.transpose(1, 0, 2, 3).reshape(o, -1)
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gcols = (w.reshape(o, -1).T @ g2).reshape(c, kh, kw, n, ho, wo)
            gx = _unpad(_col2im(gcols, ctx.xp_shape, (kh, kw), ctx.stride), ctx.pads)
        if ctx.needs_input_grad[1]:
            gw = (g2 @ cols.T).reshape(w.shape)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = g2.sum(axis=1)
        return gx, gw, gb, None, None


def conv2d_im2col(x, w, b=None, stride=1, padding=0):
    """2-D convolution by im2col (one matrix product with a column per window); same result as ``conv2d``."""
    return Conv2dIm2col.apply(_operand(x), w, b, stride, padding)


# ---- the banded (Toeplitz) kernel ---------------------------------------------------------------------------------
#
# Take one kernel row i. Output row h of channel o gets, from input row s*h + i of channel c, the 1-D correlation
#     y_i[o, w] = sum_j W[o, c, i, j] * x_pad[c, s*h + i, s*w + j],
# which is a vector-matrix product  x_pad[c, s*h + i, :] @ B[i, c]  with the banded (Toeplitz) matrix
#     B[i, c][v, (o, w)] = W[o, c, i, v - s*w]   if 0 <= v - s*w < kw, else 0
# (each column holds the kernel row, shifted by s along the diagonal). Stack the kh input rows s*h + i of all C
# channels side by side into one long row R[n, h] of length kh*C*Wp, stack the B[i, c] on top of each other, and
# the whole convolution is ONE matrix product
#     Y (N*Ho, O*Wo) = R (N*Ho, kh*C*Wp) @ B (kh*C*Wp, O*Wo).
# R copies each input row only kh times (im2col copies each pixel kh*kw times), and the matrices are wide.
# Backward, with G the output gradient in the same (N*Ho, O*Wo) layout:
#     dB = R^T G  (then dW[o, c, i, j] = sum_w dB[(i, c, s*w + j), (o, w)], read along the band),
#     dR = G B^T  (then dx_pad[n, c, s*h + i] += dR[n, h, i, c]: kh row-shifted adds).
# The price: B is mostly zeros, Wp / kw times more multiply-adds than im2col, so it only pays for narrow images.

_BANDED_MAX_WASTE = 8  # banded when Wp / kw <= this (at most 8x im2col's multiply-adds): MNIST-sized images
_BANDED_MAX_ENTRIES = 1 << 22  # and B has at most 4M entries (16 MB in float32)


def _banded_fits(x_shape, w_shape, padding, out_w):
    """Whether the banded kernel is the cheaper one: narrow padded rows and a band matrix of modest size."""
    o, c, kh, kw = w_shape
    wp = x_shape[3] + 2 * padding[1]
    return wp <= _BANDED_MAX_WASTE * kw and kh * c * wp * o * out_w <= _BANDED_MAX_ENTRIES


def _width_blocks(o, cols_used, g):
    """How many equal blocks (widths a multiple of g) to cut the output width into. A block of Wb outputs reads
    only sw*(Wb - 1) + kw input columns, so B shrinks with the blocks; but B's O*Wb columns should stay at least
    ``_BLOCK_MIN_COLUMNS`` wide, below which BLAS slows down. LeNet-5's conv1 (6 x 28 outputs) gets 2 blocks."""
    fitting = [k for k in range(1, cols_used // g + 1)
               if cols_used % (k * g) == 0 and o * cols_used // k >= _BLOCK_MIN_COLUMNS]
    return max(fitting, default=1)


_BLOCK_MIN_COLUMNS = 64


def _band_taps(band, kw, sw):
    """The entries of ``band`` that hold weights, as a view (kh, C, kw, g, O, Wb/g).

    ``band`` is (kh, C, Wblk, g, O, Wb/g), its output columns ordered (q, o, w2) for output column w = g*w2 + q
    (g = 1 for a plain convolution; g = 2 puts even and odd columns in separate halves, for 2x2 pooling). Entry
    [i, c, j, q, o, w2] of the view is band[i, c, sw*(g*w2 + q) + j, q, o, w2]: the tap W[o, c, i, j].
    """
    kh, c, _, g, o, wg = band.shape
    s = band.strides
    strides = (s[0], s[1], s[2], sw * s[2] + s[3], s[4], g * sw * s[2] + s[5])
    return as_strided(band, (kh, c, kw, g, o, wg), strides)


def _banded_forward(ctx, x, w, stride, pads, rows_used, cols_used, g):
    """Y = R @ B for the first ``rows_used`` x ``cols_used`` outputs, the width cut into ``_width_blocks`` blocks
    of Wb outputs. Returns Y (N * rows_used * blocks, O * Wb): rows (n, h, k) for block k, columns (q, o, w2)
    as in ``_band_taps``. Saves R and B in ctx for ``_banded_backward``."""
    (sh, sw), (o, c, kh, kw) = stride, w.shape
    n = x.shape[0]
    xp = _pad(x, pads)
    blocks = _width_blocks(o, cols_used, g)
    wb = cols_used // blocks
    wblk = sw * (wb - 1) + kw  # input columns that a block of wb outputs reads
    # R[n, h, k, i, c, v] = x_pad[n, c, sh*h + i, sw*wb*k + v]: the kh input rows that output row h reads, for
    # the input columns of block k, side by side
    s_n, s_c, s_h, s_w = xp.strides
    windows = as_strided(xp, (n, rows_used, blocks, kh, c, wblk), (s_n, sh * s_h, sw * wb * s_w, s_h, s_c, s_w))
    rows = windows.reshape(n * rows_used * blocks, kh * c * wblk)  # the one copy
    band = np.zeros((kh, c, wblk, g, o, wb // g), dtype=np.result_type(x, w))
    _band_taps(band, kw, sw)[...] = w.transpose(2, 1, 3, 0)[:, :, :, None, :, None]
    band = band.reshape(kh * c * wblk, o * wb)
    ctx.rows, ctx.band, ctx.w_shape, ctx.xp_shape, ctx.pads, ctx.stride, ctx.g = (
        rows, band, w.shape, xp.shape, pads, stride, g)
    ctx.blocks, ctx.wb = blocks, wb
    return rows @ band


def _banded_backward(ctx, dy):
    """Gradients (dx, dW) from dy, the output gradient in the layout of Y = R @ B."""
    (o, c, kh, kw), (n, _, hp, wp), (sh, sw), g = ctx.w_shape, ctx.xp_shape, ctx.stride, ctx.g
    blocks, wb = ctx.blocks, ctx.wb
    wblk = sw * (wb - 1) + kw
    gx = gw = None
    if ctx.needs_input_grad[0]:
        rows_used = dy.shape[0] // (n * blocks)
        d_rows = (dy @ ctx.band.T).reshape(n, rows_used, blocks, kh, c, wblk)
        dxp = np.zeros((n, hp, c, wp), dtype=d_rows.dtype)  # rows first, like d_rows, so each add is one slab
        for i in range(kh):
            for k in range(blocks):  # neighbouring blocks overlap by kw - sw columns: one add at a time
                dxp[:, i : i + sh * rows_used : sh, :, sw * wb * k : sw * wb * k + wblk] += d_rows[:, :, k, i]
        gx = _unpad(dxp.transpose(0, 2, 1, 3), ctx.pads)
    if ctx.needs_input_grad[1]:
        d_band = (ctx.rows.T @ dy).reshape(kh, c, wblk, g, o, wb // g)
        gw = _band_taps(d_band, kw, sw).sum(axis=(3, 5)).transpose(3, 1, 0, 2)
    return gx, gw


class Conv2dBanded(Function):
    """y[n, o] = sum_{c, i, j} W[o, c, i, j] * x_pad[n, c, s*h + i, s*w + j] + b[o], as one matrix product of image
    rows with a banded (Toeplitz) matrix B built from W:  Y = R @ B  (see the comment above ``_BANDED_MAX_WASTE``).

    Backward: dB = R^T G read along the band gives dW; dR = G B^T, added back onto kh shifted rows, gives dx.
    """

    @staticmethod
    def forward(ctx, x, w, b, stride, padding):
        stride, pads, (ho, wo) = _conv_setup(x, w, stride, padding, "conv2d_banded")
        y = _banded_forward(ctx, x, w, stride, pads, ho, wo, 1)
        if b is not None:
            y += np.repeat(b, ctx.wb)  # columns are (o, w) within a block
        ctx.has_bias = b is not None
        n, o, blocks, wb = x.shape[0], w.shape[0], ctx.blocks, ctx.wb
        return y.reshape(n, ho, blocks, o, wb).transpose(0, 3, 1, 2, 4).reshape(n, o, ho, wo)

    @staticmethod
    def backward(ctx, grad):
        n, o, ho, wo = grad.shape
        dy = grad.reshape(n, o, ho, ctx.blocks, ctx.wb).transpose(0, 2, 3, 1, 4).reshape(-1, o * ctx.wb)
        gx, gw = _banded_backward(ctx, dy)
        gb = grad.sum(axis=(0, 2, 3)) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb, None, None


def conv2d_banded(x, w, b=None, stride=1, padding=0):
    """2-D convolution as one matrix product with a banded (Toeplitz) weight matrix; same result as ``conv2d``."""
    return Conv2dBanded.apply(_operand(x), w, b, stride, padding)


def conv2d(x, w, b=None, stride=1, padding=0):
    """2-D convolution of x (N, C, H, W) with w (O, C, kh, kw) and optional b (O,): output (N, O, Ho, Wo),
    Ho = (H + 2 * padding - kh) // stride + 1;  y = sum W x_window + b for every window.

    Uses the banded kernel (``conv2d_banded``) for narrow images such as MNIST's (padded width at most 8 kernel
    widths, band matrix at most 4M entries), im2col (``conv2d_im2col``) otherwise; both give the same values and
    gradients. Stride and padding are supported by both (no dilation or groups in this library).
    """
    x = _operand(x)
    xd, wd = np.asarray(_operand_data(x)), np.asarray(_operand_data(w))
    _, pads, (_, wo) = _conv_setup(xd, wd, stride, padding, "conv2d")
    kernel = Conv2dBanded if _banded_fits(xd.shape, wd.shape, pads, wo) else Conv2dIm2col
    return kernel.apply(x, w, b, stride, padding)


# --------------------------------------------------------------------------------------------------------------------
# Pooling
# --------------------------------------------------------------------------------------------------------------------


def _pool_setup(x, kernel_size, stride, padding, op):
    """Check the arguments; return kernel, stride, padding as pairs and the output size."""
    _check_image(x, op)
    kernel = _pair(kernel_size, "kernel_size", op)
    stride = kernel if stride is None else _pair(stride, "stride", op)
    pads = _pair(padding, "padding", op)
    if min(kernel) == 0 or min(stride) == 0:
        raise ValueError(f"{op}: kernel_size and stride must be >= 1, got {kernel_size!r} and {stride!r}")
    if pads[0] * 2 > kernel[0] or pads[1] * 2 > kernel[1]:
        raise ValueError(f"{op}: padding {padding!r} must be at most half the kernel size {kernel}")
    if kernel[0] > x.shape[2] + 2 * pads[0] or kernel[1] > x.shape[3] + 2 * pads[1]:
        raise ValueError(f"{op}: kernel {kernel} is larger than the padded input (input shape {x.shape})")
    out_hw = tuple((x.shape[2 + a] + 2 * pads[a] - kernel[a]) // stride[a] + 1 for a in (0, 1))
    return kernel, stride, pads, out_hw


def _window_slices(kernel, stride, out_hw):
    """For each position (i, j) inside a window, the slices picking that position in every window."""
    (kh, kw), (sh, sw), (ho, wo) = kernel, stride, out_hw
    return [(slice(i, i + sh * ho, sh), slice(j, j + sw * wo, sw)) for i in range(kh) for j in range(kw)]


class MaxPool2d(Function):
    """y = max of each window;  the gradient goes to the position of the maximum (the first one on a tie, as PyTorch).

    Loops over the kh * kw positions inside a window, comparing whole strided slices at once.
    """

    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding):
        kernel, stride, pads, out_hw = _pool_setup(x, kernel_size, stride, padding, "max_pool2d")
        xp = np.pad(x, ((0, 0), (0, 0), (pads[0],) * 2, (pads[1],) * 2), constant_values=-np.inf) if any(pads) else x
        slices = _window_slices(kernel, stride, out_hw)
        out = xp[:, :, slices[0][0], slices[0][1]].copy()
        for rows, cols in slices[1:]:
            np.maximum(out, xp[:, :, rows, cols], out=out)
        ctx.xp, ctx.out, ctx.slices, ctx.pads = xp, out, slices, pads
        return out

    @staticmethod
    def backward(ctx, grad):
        gxp = np.zeros(ctx.xp.shape, dtype=grad.dtype)
        unclaimed = np.ones(grad.shape, dtype=bool)  # windows whose maximum has not been found yet
        for rows, cols in ctx.slices:
            hit = (ctx.xp[:, :, rows, cols] == ctx.out) & unclaimed
            gxp[:, :, rows, cols] += grad * hit
            unclaimed &= ~hit
        return _unpad(gxp, ctx.pads), None, None, None


class AvgPool2d(Function):
    """y = mean of each window (zero padding counted, as PyTorch's default);  each input gets grad / (kh * kw)."""

    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding):
        kernel, stride, pads, out_hw = _pool_setup(x, kernel_size, stride, padding, "avg_pool2d")
        xp = np.pad(x, ((0, 0), (0, 0), (pads[0],) * 2, (pads[1],) * 2)) if any(pads) else x
        slices = _window_slices(kernel, stride, out_hw)
        total = sum(xp[:, :, rows, cols] for rows, cols in slices)
        ctx.slices, ctx.xp_shape, ctx.pads = slices, xp.shape, pads
        return total / len(slices)

    @staticmethod
    def backward(ctx, grad):
        gxp = np.zeros(ctx.xp_shape, dtype=grad.dtype)
        share = grad / len(ctx.slices)
        for rows, cols in ctx.slices:
            gxp[:, :, rows, cols] += share
        return _unpad(gxp, ctx.pads), None, None, None


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """Maximum over each kernel_size window of x (N, C, H, W); stride defaults to kernel_size."""
    return MaxPool2d.apply(_operand(x), kernel_size, stride, padding)


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    """Mean over each kernel_size window of x (N, C, H, W); stride defaults to kernel_size."""
    return AvgPool2d.apply(_operand(x), kernel_size, stride, padding)


def relu(x):
    """relu(x) = max(x, 0)."""
    return ReLU.apply(_operand(x))


# --------------------------------------------------------------------------------------------------------------------
# Fused Conv2d -> ReLU -> MaxPool2d(2)
# --------------------------------------------------------------------------------------------------------------------
#
# Two facts make this chain cheaper than its three layers:
# 1. bias and ReLU commute with a max:  max_k relu(z_k + b) = relu(max_k z_k + b), because b is the same across a
#    pooling window and relu is non-decreasing. So the pool runs on the raw products z = R @ B, and bias and ReLU on
#    the pooled array, 4x smaller.
# 2. In the banded layout, output rows are (n, h) and, with g = 2 in ``_band_taps``, output columns are (q, o, w2)
#    for w = 2*w2 + q. The four members (p, q) of the window at (h2, w2) are then rows 2*h2 + p and column halves
#    q: four contiguous slabs, and the pool is three elementwise maxima of whole slabs.
# The gradient goes to the first maximum of each window in row-major order (0, 0), (0, 1), (1, 0), (1, 1), as
# PyTorch and ``max_pool2d``: MNIST's blank background makes whole windows equal, and a plain equality mask would
# send the gradient to all four.


class Conv2dReLUMaxPool(Function):
    """y = maxpool_2x2(relu(conv2d(x, W) + b)) computed as relu(maxpool_2x2(R @ B) + b); ReLU optional.

    Backward: g_z = g_y * 1[y > 0] at the first maximum of each window (0 elsewhere); db = sum of g_y * 1[y > 0];
    dx and dW from g_z as in ``Conv2dBanded``.
    """

    @staticmethod
    def forward(ctx, x, w, b, stride, padding, relu):
        stride, pads, (ho, wo) = _conv_setup(x, w, stride, padding, "conv2d_relu_maxpool2d")
        hq, wq = ho // 2, wo // 2  # as max_pool2d(2): an odd last row or column is dropped, so never computed
        if hq == 0 or wq == 0:
            raise ValueError(f"conv2d_relu_maxpool2d: the convolution output {ho}x{wo} is smaller than the 2x2 pool "
                             f"(input shape {x.shape}, weight shape {w.shape})")
        n, o = x.shape[0], w.shape[0]
        z = _banded_forward(ctx, x, w, stride, pads, 2 * hq, 2 * wq, 2)
        blocks, wb2 = ctx.blocks, ctx.wb // 2
        z = z.reshape(n * hq, 2, blocks, 2, o * wb2)  # [(n, h2), p, k, q, (o, w2)]
        # first maximum in row-major order: the right member of a pair wins only if strictly larger, the bottom
        # pair only if its maximum is strictly larger than the top pair's
        right_top, right_bottom = z[:, 0, :, 1] > z[:, 0, :, 0], z[:, 1, :, 1] > z[:, 1, :, 0]
        top, bottom = np.maximum(z[:, 0, :, 0], z[:, 0, :, 1]), np.maximum(z[:, 1, :, 0], z[:, 1, :, 1])
        from_bottom = bottom > top
        y = np.maximum(top, bottom, out=top)
        if b is not None:
            y += np.repeat(b, wb2)  # columns are (o, w2) within a block
        if relu:
            np.maximum(y, 0, out=y)
        ctx.winner, ctx.y, ctx.relu, ctx.has_bias = (right_top, right_bottom, from_bottom), y, relu, b is not None
        return y.reshape(n, hq, blocks, o, wb2).transpose(0, 3, 1, 2, 4).reshape(n, o, hq, wq)

    @staticmethod
    def backward(ctx, grad):
        n, o, hq, wq = grad.shape
        blocks, wb2 = ctx.blocks, ctx.wb // 2
        gy = grad.reshape(n, o, hq, blocks, wb2).transpose(0, 2, 3, 1, 4).reshape(n * hq, blocks, o * wb2)
        if ctx.relu:
            gy = gy * (ctx.y > 0)
        right_top, right_bottom, from_bottom = ctx.winner
        gz = np.empty((n * hq, 2, blocks, 2, o * wb2), dtype=gy.dtype)
        g_bottom = gy * from_bottom
        g_top = gy - g_bottom  # exact: each entry is gy or 0
        np.multiply(g_top, right_top, out=gz[:, 0, :, 1])
        np.subtract(g_top, gz[:, 0, :, 1], out=gz[:, 0, :, 0])
        np.multiply(g_bottom, right_bottom, out=gz[:, 1, :, 1])
        np.subtract(g_bottom, gz[:, 1, :, 1], out=gz[:, 1, :, 0])
        gx, gw = _banded_backward(ctx, gz.reshape(-1, 2 * o * wb2))
        gb = gy.reshape(-1, o, wb2).sum(axis=(0, 2)) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb, None, None, None


def conv2d_relu_maxpool2d(x, w, b=None, stride=1, padding=0, relu=True):
    """max_pool2d(relu(conv2d(x, w, b, stride, padding)), 2) in one step (without the relu if ``relu=False``).

    Same values as the three functions one after another, and the same gradients (the pool's first-maximum rule
    included); fused with the banded kernel where ``conv2d`` would use it, otherwise the three functions in turn.
    """
    x = _operand(x)
    xd, wd = np.asarray(_operand_data(x)), np.asarray(_operand_data(w))
    _, pads, (_, wo) = _conv_setup(xd, wd, stride, padding, "conv2d_relu_maxpool2d")
    if _banded_fits(xd.shape, wd.shape, pads, wo):
        return Conv2dReLUMaxPool.apply(x, w, b, stride, padding, relu)
    y = Conv2dIm2col.apply(x, w, b, stride, padding)
    return max_pool2d(ReLU.apply(y) if relu else y, 2)


# --------------------------------------------------------------------------------------------------------------------
# Softmax with temperature, log-softmax, cross-entropy, KL divergence
# --------------------------------------------------------------------------------------------------------------------


def _check_T(T, op):
    if not (np.isscalar(T) and np.isfinite(T) and T > 0):
        raise ValueError(f"{op}: temperature T must be a finite number > 0, got {T!r}")


def softmax_simple(x, axis=-1):
    """softmax(x)_i = exp(x_i) / sum_j exp(x_j), written from elementary ops.

    Easy to read, but exp overflows to inf for logits above ~88 (float32) and the result becomes NaN;
    ``softmax`` below subtracts the maximum first and is the one to use.
    """
    e = _as_tensor(x).exp()
    return e / e.sum(axis=axis, keepdims=True)


class Softmax(Function):
    """p_i = exp(z_i / T) / sum_j exp(z_j / T), computed as exp(z/T - max) / sum(...) so nothing overflows.

    dp/dz: grad_z = p * (g - sum_j g_j p_j) / T.
    """

    @staticmethod
    def forward(ctx, z, axis, T):
        _check_T(T, "softmax")
        s = z / T if T != 1 else z
        e = np.exp(s - s.max(axis=axis, keepdims=True))
        ctx.p, ctx.axis, ctx.T = e / e.sum(axis=axis, keepdims=True), axis, T
        return ctx.p

    @staticmethod
    def backward(ctx, grad):
        p = ctx.p
        return p * (grad - (grad * p).sum(axis=ctx.axis, keepdims=True)) / ctx.T, None, None


class LogSoftmax(Function):
    """log p_i = z_i / T - logsumexp(z / T), with logsumexp(s) = max(s) + log sum exp(s - max(s)) (finite for any
    finite logits).  dlogp/dz: grad_z = (g - p * sum_j g_j) / T."""

    @staticmethod
    def forward(ctx, z, axis, T):
        _check_T(T, "log_softmax")
        s = z / T if T != 1 else z
        shifted = s - s.max(axis=axis, keepdims=True)
        out = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
        ctx.out, ctx.axis, ctx.T = out, axis, T
        return out

    @staticmethod
    def backward(ctx, grad):
        p = np.exp(ctx.out)
        return (grad - p * grad.sum(axis=ctx.axis, keepdims=True)) / ctx.T, None, None


def softmax(x, axis=-1, T=1.0):
    """Softmax with temperature T along ``axis``: exp(x / T) normalised to sum to 1."""
    return Softmax.apply(_operand(x), axis, T)


def log_softmax(x, axis=-1, T=1.0):
    """log(softmax(x / T)), computed stably with log-sum-exp."""
    return LogSoftmax.apply(_operand(x), axis, T)


_REDUCTIONS = ("mean", "sum", "none")


def _reduce(loss_per_sample, reduction):
    if reduction == "mean":
        return loss_per_sample.mean()
    if reduction == "sum":
        return loss_per_sample.sum()
    return loss_per_sample


def _check_targets(logits, targets, op):
    targets = np.asarray(targets.data if isinstance(targets, Tensor) else targets)
    if logits.ndim != 2:
        raise ValueError(f"{op}: logits must be 2-D (N, classes), got shape {logits.shape}")
    if not np.issubdtype(targets.dtype, np.integer):
        raise TypeError(f"{op}: targets must be integer class indices, got dtype {targets.dtype}")
    if targets.shape != (logits.shape[0],):
        raise ValueError(f"{op}: targets must have shape ({logits.shape[0]},) to match logits {logits.shape}, got {targets.shape}")
    if targets.size and (targets.min() < 0 or targets.max() >= logits.shape[1]):
        bad = targets[(targets < 0) | (targets >= logits.shape[1])][0]
        raise ValueError(f"{op}: target {bad} is out of range; classes are 0..{logits.shape[1] - 1}")
    return targets


class CrossEntropy(Function):
    """loss_n = -log softmax(z_n)[y_n] = logsumexp(z_n) - z_n[y_n];  dloss_n/dz_n = softmax(z_n) - onehot(y_n)."""

    @staticmethod
    def forward(ctx, z, y):
        shifted = z - z.max(axis=1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        ctx.logp, ctx.y = logp, y
        return -logp[np.arange(len(y)), y]

    @staticmethod
    def backward(ctx, grad):
        dz = np.exp(ctx.logp)
        dz[np.arange(len(ctx.y)), ctx.y] -= 1
        return dz * grad[:, None], None


def cross_entropy(logits, targets, reduction="mean"):
    """Cross-entropy of logits (N, C) against integer targets (N,), as torch.nn.functional.cross_entropy."""
    logits = _operand(logits)
    if reduction not in _REDUCTIONS:
        raise ValueError(f"cross_entropy: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    targets = _check_targets(np.asarray(logits.data if isinstance(logits, Tensor) else logits), targets, "cross_entropy")
    if reduction == "mean" and targets.size == 0:
        raise ValueError("cross_entropy: empty batch (0 samples); the mean loss of nothing is undefined")
    return _reduce(CrossEntropy.apply(logits, targets), reduction)


class KLDiv(Function):
    """Pointwise p * (log p - log_q), taken as 0 where p = 0 (as torch's kl_div with log-probability input).

    d/dlog_q = -p;  d/dp = log p + 1 - log_q.
    """

    @staticmethod
    def forward(ctx, log_q, p):
        ctx.log_q, ctx.p = log_q, p
        with np.errstate(divide="ignore", invalid="ignore"):
            plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0)
        return (plogp - p * log_q).astype(np.result_type(log_q, p), copy=False)

    @staticmethod
    def backward(ctx, grad):
        p, log_q = ctx.p, ctx.log_q
        gp = None
        if ctx.needs_input_grad[1]:
            gp = grad * (np.log(np.where(p > 0, p, 1)) + 1 - log_q)
        return -grad * p, gp


def kl_div(log_q, p, reduction="batchmean"):
    """KL(p || q) from log-probabilities ``log_q`` and probabilities ``p`` (argument order and reductions as torch):
    "batchmean" sums and divides by the batch size (the mathematically correct KL per sample)."""
    log_q, p = _operand(log_q), _operand(p)
    if np.shape(_operand_data(log_q)) != np.shape(_operand_data(p)):
        raise ValueError(f"kl_div: log_q has shape {np.shape(_operand_data(log_q))} but p has {np.shape(_operand_data(p))}")
    pointwise = KLDiv.apply(log_q, p)
    if reduction == "batchmean":
        if pointwise.ndim == 0 or pointwise.shape[0] == 0:
            raise ValueError(f"kl_div: batchmean needs a non-empty batch axis, got shape {pointwise.shape}")
        return pointwise.sum() / pointwise.shape[0]
    if reduction not in _REDUCTIONS:
        raise ValueError(f"kl_div: reduction must be 'batchmean', 'sum', 'mean' or 'none', got {reduction!r}")
    return _reduce(pointwise, reduction)


def _operand_data(x):
    return x.data if isinstance(x, Tensor) else x


def mse_loss(a, b, reduction="mean"):
    """Mean squared error (a - b)^2, averaged ("mean"), summed ("sum") or elementwise ("none")."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"mse_loss: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    diff = _as_tensor(a) - _operand(b)
    return _reduce(diff * diff, reduction)


# --------------------------------------------------------------------------------------------------------------------
# Dropout and batch normalisation
# --------------------------------------------------------------------------------------------------------------------


def dropout(x, p=0.5, training=True):
    """Inverted dropout: zero each entry with probability p and scale the rest by 1 / (1 - p), so the expected
    value is unchanged and evaluation needs no rescaling. Identity when not training or p = 0."""
    if not (0 <= p <= 1):
        raise ValueError(f"dropout: p must be in [0, 1], got {p!r}")
    x = _as_tensor(x)
    if not training or p == 0:
        return x
    if p == 1:
        return x * np.zeros(x.shape, dtype=x.dtype)
    keep = (default_rng().random(x.shape) >= p).astype(x.dtype) / np.asarray(1 - p, dtype=x.dtype)
    return x * keep


class BatchNorm(Function):
    """y = (x - mean) / sqrt(var + eps) * gamma + beta, statistics over every axis but the channel axis 1.

    Training uses the batch's mean and (biased) variance; backward, with x_hat the normalised input and m the number
    of values per channel:  dx = gamma / sqrt(var + eps) * (g - mean(g) - x_hat * mean(g * x_hat)).
    Evaluation uses fixed running statistics, so it is an affine map per channel.
    """

    @staticmethod
    def forward(ctx, x, gamma, beta, mean, var, eps, batch_stats):
        shape = (1, -1) + (1,) * (x.ndim - 2)
        inv_std = 1 / np.sqrt(var + eps)
        x_hat = (x - mean.reshape(shape)) * inv_std.reshape(shape)
        ctx.x_hat, ctx.inv_std, ctx.gamma, ctx.shape = x_hat, inv_std, gamma, shape
        ctx.axes = (0,) + tuple(range(2, x.ndim))
        ctx.batch_stats = batch_stats
        y = x_hat * gamma.reshape(shape) if gamma is not None else x_hat
        return y + beta.reshape(shape) if beta is not None else y

    @staticmethod
    def backward(ctx, grad):
        x_hat, shape, axes = ctx.x_hat, ctx.shape, ctx.axes
        gamma = ctx.gamma.reshape(shape) if ctx.gamma is not None else 1
        g_hat = grad * gamma
        if ctx.batch_stats:
            gx = ctx.inv_std.reshape(shape) * (
                g_hat - g_hat.mean(axis=axes, keepdims=True) - x_hat * (g_hat * x_hat).mean(axis=axes, keepdims=True)
            )
        else:
            gx = g_hat * ctx.inv_std.reshape(shape)
        ggamma = (grad * x_hat).sum(axis=axes) if ctx.needs_input_grad[1] else None
        gbeta = grad.sum(axis=axes) if ctx.needs_input_grad[2] else None
        return gx, ggamma, gbeta, None, None, None, None


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """Batch normalisation over axis 1 of x (N, C) or (N, C, H, W), as torch.nn.functional.batch_norm.

    In training the batch statistics are used and the running ones updated in place:
    running = (1 - momentum) * running + momentum * batch, with the unbiased variance (as PyTorch).
    """
    x = _as_tensor(x)
    if x.ndim not in (2, 4):
        raise ValueError(f"batch_norm: input must be (N, C) or (N, C, H, W), got shape {x.shape}")
    c = x.shape[1]
    axes = (0,) + tuple(range(2, x.ndim))
    m = x.size // c if c else 0
    if training:
        if m < 2:
            raise ValueError(f"batch_norm: training needs more than 1 value per channel, got input shape {x.shape}")
        mean, var = x.data.mean(axis=axes), x.data.var(axis=axes)
        if running_mean is not None:
            rm, rv = _operand_data(running_mean), _operand_data(running_var)
            rm *= 1 - momentum
            rm += momentum * mean
            rv *= 1 - momentum
            rv += momentum * var * m / (m - 1)
        # batch statistics depend on x, so backward must use the full formula (batch_stats=True)
        return BatchNorm.apply(x, weight, bias, mean, var, eps, True)
    if running_mean is None:
        raise ValueError("batch_norm: evaluation mode needs running_mean and running_var")
    return BatchNorm.apply(x, weight, bias, _operand_data(running_mean), _operand_data(running_var), eps, False)
