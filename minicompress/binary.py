"""Binary networks: every weight (and optionally every activation) is +1 or -1.

Read in this order:

1. ``sign`` and ``sign_ste``: sign(x) with sign(0) = +1; its derivative is 0 almost everywhere, so training uses
   the straight-through estimator (STE): forward sign(x), backward g * 1[|x| <= 1] (the derivative of hard tanh).
2. ``BinaryLinear`` / ``BinaryConv2d``: the forward uses W_b = sign(W) of real "latent" weights W that the optimizer
   updates (BinaryConnect, Courbariaux et al. 2015); ``binary_activations=True`` also binarizes the layer input
   (BNN, Hubara et al. 2016); ``xnor=True`` rescales each output channel by alpha = mean(|W|) (XNOR-Net, Rastegari
   et al. 2016). ``ClipLatentWeights`` keeps W in [-1, 1] after every optimizer step.
3. ``binary_mlp``: Flatten, then BinaryLinear -> BatchNorm1d [-> ReLU] per layer, batch norm after the last one too.
4. Bit-packed inference: ``pack_signs`` stores 1 bit per weight (``np.packbits``: bit 1 is +1, bit 0 is -1);
   ``xnor_matmul`` computes a @ b.T of +-1 matrices from bits alone, because for +-1 vectors of length n
   a . b = (#agreeing) - (#disagreeing) = n - 2 * popcount(a XOR b).
   ``pack_model`` turns a trained model into a ``PackedBinaryModel`` whose forward equals the float +-1 computation
   exactly; ``save`` / ``load`` store it losslessly.
"""

import numpy as np

from . import checkpoint, nn
from . import functional as F
from .checkpoint import CheckpointError
from .tensor import Function, Tensor, default_rng, no_grad

STE_VARIANTS = ("ste", "identity", "approxsign")


# --------------------------------------------------------------------------------------------------------------------
# sign and the straight-through estimator
# --------------------------------------------------------------------------------------------------------------------


def sign(x):
    """sign(x) = +1 if x >= 0 else -1, in x's floating dtype (float32 for integer input).

    Unlike ``np.sign``, sign(0) = +1 (as BinaryNet and Larq): 0 is not a binary value.
    NaN has no sign and stays NaN (as np.sign and torch.sign), so it can never be stored as a -1 bit.
    """
    x = np.asarray(x)
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
    out = np.where(x >= 0, 1, -1).astype(dtype)
    if x.dtype.kind == "f":
        out[np.isnan(x)] = np.nan
    return out


class SignSTE(Function):
    """Forward sign(x); backward g * 1[|x| <= 1], the derivative of hardtanh(x) = clip(x, -1, 1).

    The edges |x| = 1 pass the gradient, as in BinaryNet and Larq; PyTorch's hardtanh backward uses |x| < 1.
    """

    @staticmethod
    def forward(ctx, x):
        ctx.mask = np.abs(x) <= 1
        return sign(x)

    @staticmethod
    def backward(ctx, grad):
        return (grad * ctx.mask,)


class SignIdentity(Function):
    """Forward sign(x); backward g (the plain straight-through estimator of Hinton's lectures / Bengio et al. 2013)."""

    @staticmethod
    def forward(ctx, x):
        return sign(x)

    @staticmethod
    def backward(ctx, grad):
        return (grad,)


class SignApprox(Function):
    """Forward sign(x); backward g * (2 - 2|x|) * 1[|x| <= 1] (ApproxSign of Bi-Real Net, Liu et al. 2018).

    2 - 2|x| is the derivative of the piecewise polynomial 2x - x|x| on [-1, 1] (and +-1 outside), which is closer
    to sign than hard tanh is.
    """

    @staticmethod
    def forward(ctx, x):
        ctx.x = x
        return sign(x)

    @staticmethod
    def backward(ctx, grad):
        x = ctx.x
        return (grad * np.where(np.abs(x) <= 1, 2 - 2 * np.abs(x), 0).astype(x.dtype),)


_STE_FUNCTIONS = {"ste": SignSTE, "identity": SignIdentity, "approxsign": SignApprox}


def _check_variant(variant, where):
    if variant not in _STE_FUNCTIONS:
        raise ValueError(f"{where}: variant must be one of {STE_VARIANTS}, got {variant!r}")


def sign_ste(x, variant="ste"):
    """sign(x) (sign(0) = +1) with a straight-through gradient; x is a Tensor or array of any shape.

    variant "ste":        dL/dx = g * 1[|x| <= 1]
            "identity":   dL/dx = g
            "approxsign": dL/dx = g * (2 - 2|x|) * 1[|x| <= 1]
    """
    _check_variant(variant, "sign_ste")
    return _STE_FUNCTIONS[variant].apply(x)


def xnor_alpha(w):
    """XNOR-Net scaling factor alpha = mean(|W|) = ||W||_1 / n per output channel (axis 0): shape (out,).

    Works on an ndarray or, differentiably, on a Tensor.
    """
    axes = tuple(range(1, len(w.shape)))
    if isinstance(w, Tensor):
        return w.abs().mean(axis=axes)
    return np.abs(np.asarray(w)).mean(axis=axes)


# --------------------------------------------------------------------------------------------------------------------
# Layers with binary weights (and optionally binary activations)
# --------------------------------------------------------------------------------------------------------------------


class _BinaryLayer(nn.Module):
    """Shared set-up: latent weights uniform in [-1, 1] (only their signs reach the forward pass; the clip range
    is [-1, 1], so the whole range is used), optional bias, flags."""

    def _setup(self, weight_shape, out_channels, bias, binary_activations, xnor, ste):
        _check_variant(ste, type(self).__name__)
        self.binary_activations, self.xnor, self.ste = bool(binary_activations), bool(xnor), ste
        self.weight = nn.Parameter(default_rng().uniform(-1, 1, size=weight_shape).astype(np.float32))
        if bias:
            self.bias = nn.Parameter(np.zeros(out_channels, dtype=np.float32))
        else:
            self.register_parameter("bias", None)

    def binary_weight(self):
        """W_b = sign(W) as a plain array (what the forward pass uses)."""
        return sign(self.weight.data)

    def _binarize(self, x):
        """(input, weight) as used in the forward: x_b = sign(x) if binary activations, W_b = sign(W), with STE."""
        x = sign_ste(x, self.ste) if self.binary_activations else x
        return x, sign_ste(self.weight, self.ste)

    def _scale_and_shift(self, y, shape):
        """y * alpha + b per output channel (the same order of operations as the packed forward)."""
        if self.xnor:
            y = y * xnor_alpha(self.weight).reshape(shape)
        if self.bias is not None:
            y = y + self.bias.reshape(shape)
        return y

    def _flags_repr(self):
        return (
            f"bias={self.bias is not None}, binary_activations={self.binary_activations}, xnor={self.xnor}, "
            f"ste={self.ste!r}"
        )


class BinaryLinear(_BinaryLayer):
    """y = x_b W_b^T [* alpha] [+ b] with W_b = sign(W) (out_features, in_features).

    x_b = sign(x) if ``binary_activations`` (BNN) else x (BinaryConnect); alpha = mean(|W|) per output if ``xnor``.
    No bias by default: in the papers a batch norm follows, which has its own shift.
    """

    def __init__(self, in_features, out_features, bias=False, binary_activations=False, xnor=False, ste="ste"):
        super().__init__()
        nn._check_positive(self, in_features=in_features, out_features=out_features)
        self.in_features, self.out_features = in_features, out_features
        self._setup((out_features, in_features), out_features, bias, binary_activations, xnor, ste)

    def forward(self, x):
        shape = nn._shape(x)
        if len(shape) != 2 or shape[1] != self.in_features:
            raise ValueError(
                f"BinaryLinear(in_features={self.in_features}): expected input (N, {self.in_features}), "
                f"got shape {shape}"
            )
        x_b, w_b = self._binarize(x)
        return self._scale_and_shift(F.linear(x_b, w_b), (1, -1))

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, {self._flags_repr()}"


class BinaryConv2d(_BinaryLayer):
    """Convolution with W_b = sign(W) (out_channels, in_channels, kh, kw), optionally binary inputs and alpha.

    Zero padding stays zero when the activations are binary (as in BNN's Torch code): padded taps add nothing.
    """

    def __init__(
        self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=False,
        binary_activations=False, xnor=False, ste="ste",
    ):  # fmt: skip
        super().__init__()
        nn._check_positive(self, in_channels=in_channels, out_channels=out_channels)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = F._pair(kernel_size, "kernel_size", "BinaryConv2d")
        self.stride = F._pair(stride, "stride", "BinaryConv2d")
        self.padding = F._pair(padding, "padding", "BinaryConv2d")
        if min(self.kernel_size) < 1 or min(self.stride) < 1:
            raise ValueError(f"BinaryConv2d: kernel_size and stride must be >= 1, got {kernel_size!r} and {stride!r}")
        self._setup((out_channels, in_channels) + self.kernel_size, out_channels, bias, binary_activations, xnor, ste)

    def forward(self, x):
        shape = nn._shape(x)
        if len(shape) != 4 or shape[1] != self.in_channels:
            raise ValueError(
                f"BinaryConv2d(in_channels={self.in_channels}): expected input (N, {self.in_channels}, H, W), "
                f"got shape {shape}"
            )
        x_b, w_b = self._binarize(x)
        y = F.conv2d(x_b, w_b, None, self.stride, self.padding)
        return self._scale_and_shift(y, (1, -1, 1, 1))

    def extra_repr(self):
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, {self._flags_repr()}"
        )


BINARY_LAYERS = (BinaryLinear, BinaryConv2d)


def binary_layers(model):
    """[(name, layer)] of the binary layers of ``model``, in order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, BINARY_LAYERS)]


def clip_latent_weights(model):
    """W <- clip(W, -1, 1) in place for every binary layer (BinaryConnect): beyond +-1 a latent weight would only
    grow without changing its sign, and the STE gradient 1[|W| <= 1] would switch off."""
    for _, layer in binary_layers(model):
        np.clip(layer.weight.data, -1, 1, out=layer.weight.data)


class ClipLatentWeights:
    """Training callback for ``minicompress.train.fit``: clip the latent weights after every optimizer step."""

    def on_step_end(self, model, step, loss):
        clip_latent_weights(model)


class LatentWeightRecorder:
    """Training callback that records, per binary layer, a histogram of the latent weights and the number of
    weights whose sign flipped, at the start (taken when constructed) and after every epoch.

    ``histograms[name]``: list of counts over ``bins`` (one entry per snapshot, first = before training);
    ``flips[name]``: list of sign flips per epoch; ``n_weights[name]``: number of weights.
    """

    def __init__(self, model, bins=41):
        self.bins = np.linspace(-1, 1, bins + 1) if np.ndim(bins) == 0 else np.asarray(bins)
        self.histograms, self.flips, self.n_weights, self._signs = {}, {}, {}, {}
        for name, layer in binary_layers(model):
            self.histograms[name], self.flips[name] = [], []
            self.n_weights[name] = layer.weight.data.size
            self._snapshot(name, layer)

    def _snapshot(self, name, layer):
        w = layer.weight.data
        self.histograms[name].append(np.histogram(np.clip(w, -1, 1), bins=self.bins)[0])
        self._signs[name] = sign(w)

    def on_epoch_end(self, model, epoch, history):
        for name, layer in binary_layers(model):
            self.flips[name].append(int(np.count_nonzero(sign(layer.weight.data) != self._signs[name])))
            self._snapshot(name, layer)


def binary_mlp(sizes, binary_activations=False, xnor=False, ste="ste"):
    """A binary multilayer perceptron as in BinaryConnect / BNN, for (N, 1, 28, 28) or (N, 784) inputs.

    Flatten, then per layer BinaryLinear -> BatchNorm1d, with ReLU between layers when activations are real
    (BinaryConnect). With ``binary_activations`` (BNN) every layer but the first binarizes its input, so the sign
    of the previous batch norm's output is the activation; the first layer sees the real pixels, as in the paper.
    A batch norm follows the last layer too (it scales the +-n integer sums to a range softmax can use).
    """
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"binary_mlp: sizes must be >= 2 positive ints, got {sizes}")
    layers = [nn.Flatten()]
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(BinaryLinear(n_in, n_out, binary_activations=binary_activations and i > 0, xnor=xnor, ste=ste))
        layers.append(nn.BatchNorm1d(n_out))
        if not binary_activations and i < len(sizes) - 2:
            layers.append(nn.ReLU())
    model = nn.Sequential(*layers)
    model.spec = "binary_mlp:" + "-".join(map(str, sizes)) + ("+act" if binary_activations else "")
    return model


def from_spec(spec, binary_activations=False, xnor=False):
    """Binary MLP from "mlp:784-512-512-10" or "binary_mlp:784-512-512-10" (a "+act" suffix = binary activations)."""
    kind, _, rest = str(spec).partition(":")
    if kind not in ("mlp", "binary_mlp") or not rest:
        raise ValueError(f"binary.from_spec: expected 'mlp:784-512-512-10' or 'binary_mlp:...', got {spec!r}")
    if rest.endswith("+act"):
        rest, binary_activations = rest[: -len("+act")], True
    try:
        sizes = [int(s) for s in rest.split("-")]
    except ValueError:
        raise ValueError(f"binary.from_spec: layer sizes must be integers separated by '-', got {spec!r}") from None
    return binary_mlp(sizes, binary_activations=binary_activations, xnor=xnor)


# --------------------------------------------------------------------------------------------------------------------
# Bit packing and the XNOR-popcount product
# --------------------------------------------------------------------------------------------------------------------


def pack_signs(values, where="pack_signs"):
    """Pack a +-1 array along its last axis, 1 bit per value: bit 1 is +1, bit 0 is -1 (``np.packbits``, big-endian
    bit order inside a byte). Shape (..., K) -> uint8 (..., ceil(K / 8)); the last byte is padded with 0 bits."""
    values = np.asarray(values)
    if values.ndim == 0 or values.shape[-1] == 0:
        raise ValueError(f"{where}: nothing to pack, got shape {values.shape} (need at least one value per row)")
    bad = (values != 1) & (values != -1)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        if np.isnan(values[idx]):
            raise ValueError(f"{where}: found NaN at index {idx} ({int(bad.sum())} bad values in shape "
                             f"{values.shape}); NaN has no sign, so it cannot be stored as a bit (are the weights finite?)")
        raise ValueError(
            f"{where}: only +1 and -1 can be stored in 1 bit, but found {values[idx].item():g} at index {idx} "
            f"({int(bad.sum())} bad values in shape {values.shape}); binarize first with binary.sign"
        )
    return np.packbits(values > 0, axis=-1)


def unpack_signs(bits, k, dtype=np.float32):
    """Inverse of ``pack_signs``: uint8 (..., ceil(k / 8)) -> +-1 array (..., k) of ``dtype`` (padding dropped)."""
    b = np.unpackbits(bits, axis=-1, count=k)
    return (2 * b.astype(np.int8) - 1).astype(dtype)


def _words(bits):
    """View packed bytes (R, B) as 64-bit words (R, ceil(B / 8)), padding with zero bytes: fewer, wider XORs."""
    r, nbytes = bits.shape
    words = -(-nbytes // 8)
    out = np.zeros((r, words * 8), dtype=np.uint8)
    out[:, :nbytes] = bits
    return out.view(np.uint64)


def _check_packed(a_bits, b_bits, k, mask_bits):
    """k values per row need exactly ceil(k / 8) bytes per row, with the padding bits 0 (as pack_signs leaves them)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"popcount_matmul: k={k!r} is the number of values per row and must be an int >= 1")
    nbytes = -(-int(k) // 8)
    padding = np.uint8((1 << (8 * nbytes - k)) - 1)  # the low bits of the last byte (np.packbits is big-endian)
    for name, bits in (("a_bits", a_bits), ("b_bits", b_bits), ("mask_bits", mask_bits)):
        if bits is None:
            continue
        bits = np.asarray(bits)
        if bits.dtype != np.uint8 or bits.ndim != 2 or bits.shape[1] != nbytes:
            raise ValueError(f"popcount_matmul: {name} must be uint8 of shape (rows, {nbytes}) for k={k} values per "
                             f"row (ceil(k / 8) bytes), got {bits.dtype} {bits.shape}")
        if padding and np.any(bits[:, -1] & padding):
            raise ValueError(f"popcount_matmul: {name} has 1 bits past position k={k} (padding must be 0); "
                             "was it packed with another k?")
    if mask_bits is not None and np.shape(mask_bits)[0] != np.shape(a_bits)[0]:
        raise ValueError(f"popcount_matmul: mask_bits has {np.shape(mask_bits)[0]} rows, a_bits {np.shape(a_bits)[0]}")


def popcount_matmul(a_bits, b_bits, k, mask_bits=None, chunk_rows=2048):
    """Integer a @ b.T for +-1 matrices given as packed bits: a_bits (M, ceil(k/8)), b_bits (N, ceil(k/8)).

    out[i, j] = k - 2 * popcount(a_i XOR b_j). Padding bits are 0 in both operands, so their XOR is 0 and they add
    nothing to the popcount: the formula holds for any k, not only multiples of 8 or 64.
    With ``mask_bits`` (M, ceil(k/8)) only positions whose mask bit is 1 count (zero-padded convolution taps):
    out[i, j] = popcount(m_i) - 2 * popcount((a_i XOR b_j) AND m_i).
    Accumulator: uint16 when k < 2^16 (a popcount is at most k), else uint32; result int32 (M, N).
    """
    _check_packed(a_bits, b_bits, k, mask_bits)
    a_w, b_w = _words(a_bits), _words(b_bits)
    m_w = None if mask_bits is None else _words(mask_bits)
    m, n = a_w.shape[0], b_w.shape[0]
    acc_dtype = np.uint16 if k < 2**16 else np.uint32
    out = np.empty((m, n), dtype=np.int32)
    for start in range(0, m, chunk_rows):
        rows = slice(start, min(start + chunk_rows, m))
        r = rows.stop - rows.start
        acc = np.zeros((r, n), dtype=acc_dtype)
        xor, count = np.empty((r, n), dtype=np.uint64), np.empty((r, n), dtype=np.uint8)
        for w in range(a_w.shape[1]):  # a handful of 64-bit words per row: the loop is over words, not values
            np.bitwise_xor(a_w[rows, w, None], b_w[None, :, w], out=xor)
            if m_w is not None:
                np.bitwise_and(xor, m_w[rows, w, None], out=xor)
            np.bitwise_count(xor, out=count)
            acc += count
        n_valid = k if m_w is None else np.bitwise_count(m_w[rows]).sum(axis=1, dtype=np.int32)[:, None]
        out[rows] = n_valid - 2 * acc.astype(np.int32)
    return out


def xnor_matmul(a, b):
    """a @ b.T for +-1 matrices a (M, K) and b (N, K), computed exactly through packed bits: int32 (M, N).

    Each row is packed to ceil(K / 8) bytes; then out[i, j] = K - 2 * popcount(a_i XOR b_j).
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"xnor_matmul: a and b must be 2-D (M, K) and (N, K), got shapes {a.shape} and {b.shape}")
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"xnor_matmul: a has K={a.shape[1]} columns (shape {a.shape}) but b has K={b.shape[1]} (shape {b.shape}); "
            "the product is a @ b.T, so both need the same K"
        )
    if 0 in a.shape or 0 in b.shape:
        raise ValueError(f"xnor_matmul: empty input, shapes {a.shape} and {b.shape}; M, N and K must be >= 1")
    return popcount_matmul(pack_signs(a, "xnor_matmul(a)"), pack_signs(b, "xnor_matmul(b)"), a.shape[1])


# --------------------------------------------------------------------------------------------------------------------
# Packed layers and models
# --------------------------------------------------------------------------------------------------------------------


def _check_signable(x, where):
    if np.isnan(x).any():
        raise ValueError(f"{where}: the input holds NaN, which has no sign to binarize (binary activations)")


class _PackedLayer:
    """A binary layer stored as bits: ``bits`` uint8 (out, ceil(K / 8)) with K the fan-in (row i = output channel i,
    in the order of W.reshape(out, -1)), plus optional float32 ``alpha`` (XNOR scale) and ``bias``, both (out,)."""

    def _set(self, bits, out, k, binary_activations, alpha, bias):
        bits = np.asarray(bits)
        if bits.dtype != np.uint8 or bits.shape != (out, -(-k // 8)):
            raise ValueError(
                f"{type(self).__name__}: bits must be uint8 of shape ({out}, {-(-k // 8)}) for {out} outputs and "
                f"fan-in {k}, got {bits.dtype} {bits.shape}"
            )
        for name, value in (("alpha", alpha), ("bias", bias)):
            if value is not None and np.shape(value) != (out,):
                raise ValueError(f"{type(self).__name__}: {name} must have shape ({out},), got {np.shape(value)}")
        self.bits, self.k, self.binary_activations = bits, k, bool(binary_activations)
        self.alpha = None if alpha is None else np.asarray(alpha, dtype=np.float32)
        self.bias = None if bias is None else np.asarray(bias, dtype=np.float32)

    @staticmethod
    def _state_of(layer):
        """Constructor arrays of a trained Binary* layer: W_b = sign(W) packed; alpha = mean(|W|) if xnor."""
        w_b = layer.binary_weight()
        return {
            "bits": pack_signs(w_b.reshape(w_b.shape[0], -1), f"pack {type(layer).__name__}"),
            "binary_activations": layer.binary_activations,
            "alpha": xnor_alpha(layer.weight.data).astype(np.float32) if layer.xnor else None,
            "bias": None if layer.bias is None else layer.bias.data.copy(),
        }

    def arrays(self):
        """The stored arrays (what ``save`` writes)."""
        out = {"bits": self.bits}
        if self.alpha is not None:
            out["alpha"] = self.alpha
        if self.bias is not None:
            out["bias"] = self.bias
        return out

    @property
    def nbytes(self):
        """Bytes really stored: packed bits plus float32 scales and bias."""
        return sum(a.nbytes for a in self.arrays().values())

    @property
    def n_weights(self):
        return self.bits.shape[0] * self.k

    def _scale_and_shift(self, y, shape):
        """y * alpha + b per output channel, in the same order as the float layer, so the results are identical."""
        if self.alpha is not None:
            y = y * self.alpha.reshape(shape)
        if self.bias is not None:
            y = y + self.bias.reshape(shape)
        return y


class PackedBinaryLinear(_PackedLayer):
    """Inference-only BinaryLinear from bits. Binary activations: x_b is packed too and x_b W_b^T comes from
    ``popcount_matmul``; real activations: W_b is unpacked to +-1 floats for an ordinary product."""

    def __init__(self, in_features, out_features, bits, binary_activations=False, alpha=None, bias=None):
        self.in_features, self.out_features = in_features, out_features
        self._set(bits, out_features, in_features, binary_activations, alpha, bias)

    @classmethod
    def from_layer(cls, layer):
        return cls(layer.in_features, layer.out_features, **cls._state_of(layer))

    def config(self):
        return {"in_features": self.in_features, "out_features": self.out_features}

    def __call__(self, x):
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"PackedBinaryLinear(in_features={self.in_features}): expected input (N, {self.in_features}), "
                f"got shape {x.shape}"
            )
        if self.binary_activations:
            _check_signable(x, type(self).__name__)
            y = popcount_matmul(np.packbits(x >= 0, axis=1), self.bits, self.k).astype(x.dtype)
        else:
            y = x @ unpack_signs(self.bits, self.k, x.dtype).T
        return self._scale_and_shift(y, (1, -1))


class PackedBinaryConv2d(_PackedLayer):
    """Inference-only BinaryConv2d from bits; with binary activations each im2col row (C * kh * kw taps) is packed
    and multiplied with ``popcount_matmul``, a mask marking the taps that fall on zero padding."""

    def __init__(
        self, in_channels, out_channels, kernel_size, stride, padding, bits, binary_activations=False, alpha=None,
        bias=None,
    ):  # fmt: skip
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = tuple(kernel_size), tuple(stride), tuple(padding)
        k = in_channels * self.kernel_size[0] * self.kernel_size[1]
        self._set(bits, out_channels, k, binary_activations, alpha, bias)

    @classmethod
    def from_layer(cls, layer):
        return cls(
            layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
            **cls._state_of(layer),
        )  # fmt: skip

    def config(self):
        return {
            "in_channels": self.in_channels, "out_channels": self.out_channels, "kernel_size": list(self.kernel_size),
            "stride": list(self.stride), "padding": list(self.padding),
        }  # fmt: skip

    def _cols(self, x):
        """im2col rows (N * Ho * Wo, C * kh * kw) in the (c, i, j) order of W.reshape(O, -1); and (Ho, Wo)."""
        (ph, pw), (sh, sw) = self.padding, self.stride
        xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        win = np.lib.stride_tricks.sliding_window_view(xp, self.kernel_size, axis=(2, 3))[:, :, ::sh, ::sw]
        n, c, ho, wo = win.shape[:4]
        return win.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, self.k), (ho, wo)

    def __call__(self, x):
        x = np.asarray(x)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"PackedBinaryConv2d(in_channels={self.in_channels}): expected input (N, {self.in_channels}, H, W), "
                f"got shape {x.shape}"
            )
        n = x.shape[0]
        if not self.binary_activations:
            w_shape = (self.out_channels, self.in_channels) + self.kernel_size
            with no_grad():
                y = F.conv2d(x, unpack_signs(self.bits, self.k, x.dtype).reshape(w_shape), None, self.stride,
                             self.padding).data  # fmt: skip
        else:
            _check_signable(x, type(self).__name__)
            cols, (ho, wo) = self._cols((x >= 0).astype(np.uint8))  # padded taps become 0 bits ...
            valid, _ = self._cols(np.ones((1,) + x.shape[1:], dtype=np.uint8))  # ... and the mask drops them
            mask = np.tile(np.packbits(valid, axis=1), (n, 1))
            y = popcount_matmul(np.packbits(cols, axis=1), self.bits, self.k, mask_bits=mask).astype(x.dtype)
            y = y.reshape(n, ho, wo, self.out_channels).transpose(0, 3, 1, 2)
        return self._scale_and_shift(y, (1, -1, 1, 1))


_PACKED = {BinaryLinear: PackedBinaryLinear, BinaryConv2d: PackedBinaryConv2d}
def _bn_config(m):
    return {"num_features": m.num_features, "eps": m.eps, "affine": m.weight is not None}


# layers kept as they are (float32) in a packed model, with the constructor arguments needed to rebuild them
_KEPT = {
    "Flatten": (nn.Flatten, lambda m: {}),
    "ReLU": (nn.ReLU, lambda m: {}),
    "Tanh": (nn.Tanh, lambda m: {}),
    "Identity": (nn.Identity, lambda m: {}),
    "Dropout": (nn.Dropout, lambda m: {"p": m.p}),
    "MaxPool2d": (nn.MaxPool2d, lambda m: {"kernel_size": m.kernel_size, "stride": m.stride, "padding": m.padding}),
    "AvgPool2d": (nn.AvgPool2d, lambda m: {"kernel_size": m.kernel_size, "stride": m.stride, "padding": m.padding}),
    "BatchNorm1d": (nn.BatchNorm1d, _bn_config),
    "BatchNorm2d": (nn.BatchNorm2d, _bn_config),
}  # fmt: skip


class PackedBinaryModel:
    """A trained binary ``nn.Sequential`` for inference: binary layers as bits, the other layers (batch norm,
    ReLU, pooling, Flatten) kept in float32 and run in eval mode. ``model(x)`` returns the logits (ndarray)."""

    def __init__(self, layers, spec=None):
        self.layers, self.spec = layers, spec

    def __call__(self, x):
        x = np.asarray(x.data if isinstance(x, Tensor) else x)
        with no_grad():
            for layer in self.layers:
                x = layer(x) if isinstance(layer, _PackedLayer) else layer(x).data
        return x

    def packed_layers(self):
        return [(str(i), layer) for i, layer in enumerate(self.layers) if isinstance(layer, _PackedLayer)]

    @property
    def nbytes(self):
        """Bytes of everything stored: packed bits, scales, biases and the float32 parameters/buffers of the kept
        layers (batch norm)."""
        kept = sum(a.nbytes for m in self.layers if not isinstance(m, _PackedLayer) for a in m.state_dict().values())
        return kept + sum(layer.nbytes for _, layer in self.packed_layers())

    def size_report(self):
        """Per binary layer: weights, packed weight bytes (bits only), the float32 bytes of the same weights and
        their ratio; the ratio is exactly 32 when the fan-in is a multiple of 8."""
        rows = []
        for name, layer in self.packed_layers():
            f32 = layer.n_weights * 4
            rows.append({
                "layer": name, "type": type(layer).__name__, "weights": layer.n_weights, "bits": layer.n_weights,
                "packed_bytes": layer.bits.nbytes, "float32_bytes": f32, "ratio": f32 / layer.bits.nbytes,
                "scale_bias_bytes": layer.nbytes - layer.bits.nbytes,
            })  # fmt: skip
        return rows


def pack_model(model):
    """Convert a trained binary ``nn.Sequential`` (e.g. from ``binary_mlp``) to a ``PackedBinaryModel``.

    The forward of the result equals ``model.eval()``'s forward exactly: the +-1 sums are integers either way.
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"pack_model: expected an nn.Sequential, got {type(model).__name__}")
    layers = []
    for i, m in enumerate(model):
        if type(m) in _PACKED:
            layers.append(_PACKED[type(m)].from_layer(m))
        elif type(m).__name__ in _KEPT and type(m) is _KEPT[type(m).__name__][0]:
            kept = _KEPT[type(m).__name__][0](**_KEPT[type(m).__name__][1](m))
            kept.load_state_dict(m.state_dict())
            layers.append(kept.eval())
        else:
            raise TypeError(
                f"pack_model: layer {i} is a {type(m).__name__}, which cannot be packed; supported: "
                f"{', '.join(sorted(['BinaryLinear', 'BinaryConv2d', *_KEPT]))}"
            )
    return PackedBinaryModel(layers, getattr(model, "spec", None))


def save(packed, path, overwrite=True):
    """Write a ``PackedBinaryModel`` with ``checkpoint.write_npz`` (kind "binary"): bits stay uint8, everything
    else float32; the layer list goes into the JSON meta."""
    arrays, layers = {}, []
    for i, m in enumerate(packed.layers):
        if isinstance(m, _PackedLayer):
            layers.append({"type": type(m).__name__, "binary_activations": m.binary_activations, **m.config()})
            state = m.arrays()
        else:
            name = type(m).__name__
            layers.append({"type": name, **_KEPT[name][1](m)})
            state = m.state_dict()
        arrays.update({f"{i}.{key}": value for key, value in state.items()})
    checkpoint.write_npz(path, arrays, {"kind": "binary", "spec": packed.spec, "layers": layers}, overwrite=overwrite)


def load(path):
    """Read a ``PackedBinaryModel`` written by ``save``; a file whose layers do not fit raises CheckpointError."""
    return checkpoint.load(path, kind="binary")


def _check_config(cfg, state, where):
    """Every constructor argument a number of the right type and size, before a layer allocates anything."""
    for key, value in cfg.items():
        if key in ("binary_activations", "affine"):
            checkpoint.field(cfg, key, bool, where)
        elif key in ("eps", "p"):
            v = checkpoint.field(cfg, key, (int, float), where)
            if not (0 < v < 1 if key == "eps" else 0 <= v < 1):
                raise CheckpointError(f"{where}: metadata field {key!r} = {v!r} out of range")
        elif not (key == "stride" and value is None):  # pooling: stride None means the kernel size
            items = value if isinstance(value, list) else [value]
            if not items or not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= 2**20 for n in items):
                raise CheckpointError(f"{where}: metadata field {key!r} = {value!r} must be ints in [0, 2^20]")
    if "num_features" in cfg and ("running_mean" not in state or state["running_mean"].shape != (cfg["num_features"],)):
        raise CheckpointError(f"{where}: num_features = {cfg['num_features']} does not match its running_mean")
    checkpoint.check_finite_arrays(state, where)
    checkpoint.check_running_var(state, where)


def _build(arrays, meta, where):
    """checkpoint builder of kind "binary" (see save)."""
    packed_types = {cls.__name__: cls for cls in _PACKED.values()}
    if "spec" in meta:
        checkpoint.field(meta, "spec", str, where, allow_none=True)
    layers, used = [], set()
    for i, cfg in enumerate(checkpoint.field(meta, "layers", list, where)):
        at = f"{where}: layers[{i}]"
        if not isinstance(cfg, dict):
            raise CheckpointError(f"{at}: {cfg!r} is not a layer description")
        cfg = dict(cfg)
        name = cfg.pop("type", None)
        state = {key.split(".", 1)[1]: value for key, value in arrays.items() if key.split(".", 1)[0] == str(i)}
        used.update(f"{i}.{key}" for key in state)
        _check_config(cfg, state, f"{at} ({name})")
        try:
            if name in packed_types:
                layers.append(packed_types[name](**cfg, **state))
            elif name in _KEPT:
                kept = _KEPT[name][0](**cfg)
                kept.load_state_dict(state)
                layers.append(kept.eval())
            else:
                raise ValueError(f"unknown layer type {name!r}")
        except (TypeError, KeyError, ValueError) as exc:
            raise CheckpointError(f"{where}: layer {i} ({name}) cannot be rebuilt: {exc}") from exc
    if set(arrays) - used:
        raise CheckpointError(f"{where}: arrays {sorted(set(arrays) - used)[:5]} belong to no layer")
    return PackedBinaryModel(layers, meta.get("spec"))


checkpoint.register_kind("binary", _build)
