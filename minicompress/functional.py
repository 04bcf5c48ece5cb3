"""Neural-network functions: linear, convolution, pooling, softmax, losses, dropout, batch norm.

Each is a ``Function`` with forward and backward side by side. Several of them could be written as compositions
of the elementary ops in ``tensor.py`` (``softmax_simple`` below is one, kept to show the idea); they are fused
where a composition would be numerically unstable (softmax, log-softmax, cross-entropy) or slow (linear,
convolution, pooling, batch norm). Layouts follow PyTorch: ``x`` is (N, C, H, W), a conv weight (O, C, kh, kw),
a linear weight (out, in).
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

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
        return y + b if b is not None else y

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
# Convolution and pooling: im2col with sliding windows
# --------------------------------------------------------------------------------------------------------------------


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


class Conv2d(Function):
    """y[n, o] = sum_{c, i, j} W[o, c, i, j] * x_pad[n, c, s*h + i, s*w + j] + b[o]  (cross-correlation, as PyTorch).

    im2col: every window becomes a column of ``cols`` (C*kh*kw, N*Ho*Wo); the convolution is then one matrix
    product W.reshape(O, -1) @ cols. Backward: dW = G cols^T, dcols = W^T G, folded back onto the image by _col2im.
    """

    @staticmethod
    def forward(ctx, x, w, b, stride, padding):
        _check_image(x, "conv2d")
        if w.ndim != 4 or x.shape[1] != w.shape[1]:
            raise ValueError(
                f"conv2d: input has {x.shape[1]} channels (shape {x.shape}) but the weight of shape {w.shape} "
                f"expects {w.shape[1] if w.ndim == 4 else '(a 4-D weight)'}"
            )
        (sh, sw), (ph, pw) = _pair(stride, "stride", "conv2d"), _pair(padding, "padding", "conv2d")
        if sh == 0 or sw == 0:
            raise ValueError(f"conv2d: stride must be >= 1, got {stride!r}")
        o, c, kh, kw = w.shape
        n, _, h, wd = x.shape
        if kh > h + 2 * ph or kw > wd + 2 * pw:
            raise ValueError(
                f"conv2d: kernel {kh}x{kw} is larger than the padded input {h + 2 * ph}x{wd + 2 * pw} "
                f"(input shape {x.shape}, padding {padding})"
            )
        xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x
        ho, wo = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
        cols = _im2col(xp, (kh, kw), (sh, sw), (ho, wo))
        y = w.reshape(o, -1) @ cols
        if b is not None:
            y += b[:, None]
        ctx.cols, ctx.w, ctx.xp_shape, ctx.pads = cols, w, xp.shape, (ph, pw)
        ctx.stride, ctx.has_bias = (sh, sw), b is not None
        return y.reshape(o, n, ho, wo).transpose(1, 0, 2, 3)

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


def conv2d(x, w, b=None, stride=1, padding=0):
    """2-D convolution of x (N, C, H, W) with w (O, C, kh, kw) and optional b (O,): output (N, O, Ho, Wo),
    Ho = (H + 2 * padding - kh) // stride + 1."""
    return Conv2d.apply(_operand(x), w, b, stride, padding)


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
