"""The autograd engine: a Tensor that remembers how it was made, and Function, the unit of differentiation.

Reverse-mode automatic differentiation in three ideas:

1. Every operation is a ``Function`` with a ``forward`` (NumPy arrays in, an array out) and a ``backward``
   (the gradient of the output in, one gradient per input out). The two sit side by side below.
2. ``Function.apply`` wraps the result in a ``Tensor`` that remembers the function and its inputs: the graph.
3. ``Tensor.backward`` walks that graph from the output back to the leaves in reverse topological order, so a
   node's gradient is complete (every use of it added up) before it is passed on to its own inputs.
"""

from contextlib import contextmanager

import numpy as np

# --------------------------------------------------------------------------------------------------------------------
# Global switches: gradient recording and random numbers
# --------------------------------------------------------------------------------------------------------------------

_grad_enabled = True


@contextmanager
def no_grad():
    """Context manager: operations inside it record no graph (inference, evaluation, weight updates)."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


def is_grad_enabled():
    """True unless inside ``no_grad()``."""
    return _grad_enabled


_rng = np.random.default_rng()


def manual_seed(seed):
    """Seed the generator behind weight initialisation and dropout, for reproducible runs."""
    global _rng
    _rng = np.random.default_rng(seed)


def default_rng():
    """The generator used for weight initialisation and dropout (see ``manual_seed``)."""
    return _rng


# --------------------------------------------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------------------------------------------


def unbroadcast(grad, shape):
    """Sum ``grad`` down to ``shape``: the gradient of NumPy broadcasting.

    If ``a`` of shape (3, 1) was broadcast to (2, 3, 4), each entry of ``a`` was used 2 * 4 times, so its gradient
    is the sum over the leading axis and over the axis where it had size 1.
    """
    shape = tuple(shape)
    if grad.shape == shape:
        return grad
    while grad.ndim > len(shape):
        grad = grad.sum(axis=0)
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad


class Context:
    """Scratch space that ``forward`` fills with what ``backward`` will need (set any attribute)."""

    def __init__(self, needs_input_grad):
        self.needs_input_grad = needs_input_grad


class Function:
    """A differentiable operation. Subclasses define two static methods::

        forward(ctx, *args)   -> np.ndarray      Tensor arguments arrive as their NumPy arrays
        backward(ctx, grad)   -> tuple           one gradient (or None) per positional argument of forward

    and are called as ``MyFunction.apply(*args)``, which records the graph when gradients are needed.
    """

    @staticmethod
    def forward(ctx, *args):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, grad):
        raise NotImplementedError

    @classmethod
    def apply(cls, *args, **kwargs):
        needs = tuple(isinstance(a, Tensor) and a.requires_grad for a in args)
        ctx = Context(needs)
        arrays = [a.data if isinstance(a, Tensor) else a for a in args]
        try:
            out = cls.forward(ctx, *arrays, **kwargs)
        except ValueError as error:
            if "could not be broadcast" not in str(error):
                raise
            shapes = " and ".join(str(np.shape(a)) for a in arrays if isinstance(a, np.ndarray))
            raise ValueError(f"{cls.__name__.lower()}: shapes {shapes} cannot be broadcast together") from None
        result = Tensor._wrap(out)
        if _grad_enabled and any(needs):
            result.requires_grad = True
            result._ctx, result._fn, result._inputs = ctx, cls, args
        return result


def topological_order(root):
    """Nodes of the graph below ``root``, each after all of its inputs (iterative depth-first search).

    The order matters for a reused node: in ``b = a + a; c = b * b`` the gradient of ``b`` must collect both uses
    in ``c`` before it is passed down to ``a``.
    """
    order, visited, stack = [], set(), [(root, False)]
    while stack:
        node, inputs_done = stack.pop()
        if inputs_done:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        for parent in node._inputs:
            if isinstance(parent, Tensor) and parent.requires_grad and id(parent) not in visited:
                stack.append((parent, False))
    return order


class Tensor:
    """A NumPy array that records the operations applied to it, so that gradients can flow back.

    ``data`` is the array (float32, unless created from a NumPy floating array, whose dtype is kept: float64 arrays
    stay float64 for gradient checks), ``grad`` the gradient
    of the last ``backward`` (summed over calls until ``zero_grad``).
    """

    __array_ufunc__ = None  # make ``ndarray * Tensor`` call Tensor.__rmul__ instead of looping over elements
    __array_priority__ = 100

    def __init__(self, data, requires_grad=False, dtype=None):
        if isinstance(data, Tensor):
            data = data.data
        array = np.asarray(data, dtype=dtype)
        keeps_dtype = isinstance(data, (np.ndarray, np.generic)) and np.issubdtype(array.dtype, np.floating)
        if dtype is None and not keeps_dtype:
            array = array.astype(np.float32)
        self.data = array
        self.grad = None
        self._requires_grad = False
        self.requires_grad = requires_grad
        self._ctx, self._fn, self._inputs = None, None, ()

    @classmethod
    def _wrap(cls, array):
        out = cls.__new__(cls)
        out.data = array if isinstance(array, np.ndarray) else np.asarray(array)
        out.grad, out._requires_grad = None, False
        out._ctx, out._fn, out._inputs = None, None, ()
        return out

    @property
    def requires_grad(self):
        """Whether ``backward`` computes a gradient for this tensor; only floating-point tensors can have one."""
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, flag):
        # a gradient is a rate of change: an integer or boolean tensor has no small steps to take (as PyTorch)
        if flag and not np.issubdtype(self.data.dtype, np.floating):
            raise TypeError(f"Tensor(requires_grad=True): only floating-point tensors can require gradients, "
                            f"this one is {self.data.dtype}; convert it first, e.g. Tensor(x, dtype=np.float32)")
        self._requires_grad = bool(flag)

    # ---- the backward pass ----------------------------------------------------------------------------------------

    def backward(self, grad=None):
        """Compute d(self)/d(x) for every tensor x in the graph that requires grad, accumulating into ``x.grad``.

        ``grad`` is the upstream gradient, of ``self``'s shape; it may be omitted only for a single-element tensor.
        """
        if not self.requires_grad:
            raise RuntimeError(
                "backward(): this tensor does not require grad; create the inputs with requires_grad=True "
                "(or nn.Parameter) and do not compute it inside no_grad()"
            )
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward(): a gradient can be created implicitly only for a single-element output, but this "
                    f"tensor has shape {self.shape}; pass grad= of that shape or reduce first (e.g. y.sum().backward())"
                )
            grad = np.ones_like(self.data)
        else:
            grad = np.asarray(grad.data if isinstance(grad, Tensor) else grad, dtype=self.dtype)
            if grad.shape != self.shape:
                raise ValueError(f"backward(): grad has shape {grad.shape}, but the tensor has shape {self.shape}")

        grads = {id(self): grad}
        for node in reversed(topological_order(self)):
            g = grads.pop(id(node), None)
            if g is None:
                continue
            node.grad = g if node.grad is None else node.grad + g
            if node._fn is None:
                continue
            input_grads = node._fn.backward(node._ctx, g)
            if not isinstance(input_grads, tuple):
                input_grads = (input_grads,)
            for parent, pg in zip(node._inputs, input_grads):
                if pg is None or not (isinstance(parent, Tensor) and parent.requires_grad):
                    continue
                pg = np.asarray(pg, dtype=parent.dtype)
                grads[id(parent)] = pg if id(parent) not in grads else grads[id(parent)] + pg

    def zero_grad(self):
        self.grad = None

    # ---- plain attributes -----------------------------------------------------------------------------------------

    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)

    def __len__(self):
        return len(self.data)

    def numpy(self):
        return self.data

    def item(self):
        return self.data.item()

    def detach(self):
        """The same array, cut from the graph."""
        return Tensor._wrap(self.data)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        body = np.array2string(self.data, precision=4, separator=", ", prefix="tensor(")
        return f"tensor({body}{grad})"

    # ---- operators ------------------------------------------------------------------------------------------------

    def __add__(self, other):
        return Add.apply(self, _operand(other))

    def __radd__(self, other):
        return Add.apply(_operand(other), self)

    def __sub__(self, other):
        return Sub.apply(self, _operand(other))

    def __rsub__(self, other):
        return Sub.apply(_operand(other), self)

    def __mul__(self, other):
        return Mul.apply(self, _operand(other))

    def __rmul__(self, other):
        return Mul.apply(_operand(other), self)

    def __truediv__(self, other):
        return Div.apply(self, _operand(other))

    def __rtruediv__(self, other):
        return Div.apply(_operand(other), self)

    def __neg__(self):
        return Neg.apply(self)

    def __pow__(self, p):
        return Pow.apply(self, p)

    def __matmul__(self, other):
        return MatMul.apply(self, _operand(other))

    def __rmatmul__(self, other):
        return MatMul.apply(_operand(other), self)

    def __getitem__(self, index):
        return GetItem.apply(self, index.data if isinstance(index, Tensor) else index)

    # comparisons give plain boolean arrays: they have no gradient
    def __lt__(self, other):
        return self.data < _value(other)

    def __le__(self, other):
        return self.data <= _value(other)

    def __gt__(self, other):
        return self.data > _value(other)

    def __ge__(self, other):
        return self.data >= _value(other)

    __hash__ = object.__hash__

    # ---- methods that call the ops below --------------------------------------------------------------------------

    def exp(self):
        return Exp.apply(self)

    def log(self):
        return Log.apply(self)

    def sqrt(self):
        return Sqrt.apply(self)

    def abs(self):
        return Abs.apply(self)

    def clip(self, lo, hi):
        return Clip.apply(self, lo, hi)

    def relu(self):
        return ReLU.apply(self)

    def sigmoid(self):
        return Sigmoid.apply(self)

    def tanh(self):
        return Tanh.apply(self)

    def sum(self, axis=None, keepdims=False):
        return Sum.apply(self, axis, keepdims)

    def mean(self, axis=None, keepdims=False):
        return Mean.apply(self, axis, keepdims)

    def max(self, axis=None, keepdims=False):
        return Max.apply(self, axis, keepdims)

    def reshape(self, *shape):
        return Reshape.apply(self, _shape_args(shape))

    def transpose(self, *axes):
        return Transpose.apply(self, _shape_args(axes) or None)

    permute = transpose

    @property
    def T(self):
        return Transpose.apply(self, None)

    def flatten(self, start_dim=0):
        """Merge the axes from ``start_dim`` on into one (``start_dim=1`` keeps the batch axis)."""
        if not -self.ndim <= start_dim < max(self.ndim, 1):
            raise ValueError(f"flatten(start_dim={start_dim}): start_dim must be in [0, {self.ndim}) for shape {self.shape}")
        start_dim %= max(self.ndim, 1)
        return Reshape.apply(self, self.shape[:start_dim] + (-1,))


def _shape_args(args):
    """Accept both ``x.reshape(2, 3)`` and ``x.reshape((2, 3))``."""
    return tuple(args[0]) if len(args) == 1 and isinstance(args[0], (tuple, list)) else tuple(args)


def _operand(x):
    """The other operand of an operator: Tensors and arrays as they are, NumPy scalars as Python numbers.

    A Python number is "weakly typed" in NumPy, so ``float32_tensor * 0.5`` stays float32 (a ``np.float64(0.5)``
    would silently promote the result to float64).
    """
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, (Tensor, np.ndarray, int, float, bool)):
        return x
    return np.asarray(x, dtype=np.float32)


def _value(x):
    return x.data if isinstance(x, Tensor) else x


def tensor(data, requires_grad=False, dtype=None):
    """Create a Tensor (float32 unless ``data`` is a floating array or ``dtype`` says otherwise)."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


# --------------------------------------------------------------------------------------------------------------------
# Elementary operations: forward and backward side by side
# --------------------------------------------------------------------------------------------------------------------


class Add(Function):
    """c = a + b;  dc/da = 1, dc/db = 1 (summed over broadcast axes)."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = np.shape(a), np.shape(b)
        return a + b

    @staticmethod
    def backward(ctx, grad):
        return unbroadcast(grad, ctx.shapes[0]), unbroadcast(grad, ctx.shapes[1])


class Sub(Function):
    """c = a - b;  dc/da = 1, dc/db = -1."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = np.shape(a), np.shape(b)
        return a - b

    @staticmethod
    def backward(ctx, grad):
        return unbroadcast(grad, ctx.shapes[0]), unbroadcast(-grad, ctx.shapes[1])


class Mul(Function):
    """c = a * b;  dc/da = b, dc/db = a."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.a, ctx.b = a, b
        return a * b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.a, ctx.b
        ga = unbroadcast(grad * b, np.shape(a)) if ctx.needs_input_grad[0] else None
        gb = unbroadcast(grad * a, np.shape(b)) if ctx.needs_input_grad[1] else None
        return ga, gb


class Div(Function):
    """c = a / b;  dc/da = 1 / b, dc/db = -a / b^2."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.a, ctx.b = a, b
        return a / b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.a, ctx.b
        ga = unbroadcast(grad / b, np.shape(a)) if ctx.needs_input_grad[0] else None
        gb = unbroadcast(-grad * a / (b * b), np.shape(b)) if ctx.needs_input_grad[1] else None
        return ga, gb


class Neg(Function):
    """c = -a;  dc/da = -1."""

    @staticmethod
    def forward(ctx, a):
        return -a

    @staticmethod
    def backward(ctx, grad):
        return (-grad,)


class Pow(Function):
    """c = a^p for a constant exponent p;  dc/da = p * a^(p - 1)."""

    @staticmethod
    def forward(ctx, a, p):
        if isinstance(p, (Tensor, np.ndarray)):
            raise TypeError("pow: the exponent must be a Python number (a ** p with p a constant)")
        ctx.a, ctx.p = a, p
        return a**p

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.p * ctx.a ** (ctx.p - 1), None


class MatMul(Function):
    """C = A @ B (batched over leading axes as np.matmul);  dC/dA = G @ B^T, dC/dB = A^T @ G."""

    @staticmethod
    def forward(ctx, a, b):
        a, b = np.asarray(a), np.asarray(b)
        if a.ndim == 0 or b.ndim == 0 or a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
            raise ValueError(
                f"matmul: shapes {a.shape} and {b.shape} do not fit; the last axis of the first must equal the "
                f"{'second-to-last' if b.ndim > 1 else 'only'} axis of the second"
            )
        ctx.a, ctx.b = a, b
        return a @ b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.a, ctx.b
        # treat vectors as matrices (a row for A, a column for B) so one formula covers every case
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        g2 = grad.reshape(np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2]) + (a2.shape[-2], b2.shape[-1]))
        ga = gb = None
        if ctx.needs_input_grad[0]:
            ga = unbroadcast(g2 @ np.swapaxes(b2, -1, -2), a2.shape).reshape(a.shape)
        if ctx.needs_input_grad[1]:
            gb = unbroadcast(np.swapaxes(a2, -1, -2) @ g2, b2.shape).reshape(b.shape)
        return ga, gb


def matmul(a, b):
    """a @ b with gradients (see ``MatMul``)."""
    return MatMul.apply(_operand(a), _operand(b))


class Exp(Function):
    """c = exp(a);  dc/da = exp(a) = c."""

    @staticmethod
    def forward(ctx, a):
        ctx.out = np.exp(a)
        return ctx.out

    @staticmethod
    def backward(ctx, grad):
        return (grad * ctx.out,)


class Log(Function):
    """c = log(a);  dc/da = 1 / a."""

    @staticmethod
    def forward(ctx, a):
        ctx.a = a
        return np.log(a)

    @staticmethod
    def backward(ctx, grad):
        return (grad / ctx.a,)


class Sqrt(Function):
    """c = sqrt(a);  dc/da = 1 / (2 sqrt(a))."""

    @staticmethod
    def forward(ctx, a):
        ctx.out = np.sqrt(a)
        return ctx.out

    @staticmethod
    def backward(ctx, grad):
        return (grad / (2 * ctx.out),)


class Abs(Function):
    """c = |a|;  dc/da = sign(a), taken as 0 at a = 0 (as PyTorch)."""

    @staticmethod
    def forward(ctx, a):
        ctx.a = a
        return np.abs(a)

    @staticmethod
    def backward(ctx, grad):
        return (grad * np.sign(ctx.a),)


class Clip(Function):
    """c = min(max(a, lo), hi);  dc/da = 1[lo <= a <= hi] (as PyTorch's clamp, boundaries included)."""

    @staticmethod
    def forward(ctx, a, lo, hi):
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"clip: lo={lo} is greater than hi={hi}")
        ctx.mask = np.ones(np.shape(a), dtype=bool)
        if lo is not None:
            ctx.mask &= a >= lo
        if hi is not None:
            ctx.mask &= a <= hi
        return np.clip(a, lo, hi)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.mask, None, None


class Maximum(Function):
    """c = max(a, b) elementwise;  the gradient goes to the larger input, split in half on a tie (as PyTorch)."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = np.shape(a), np.shape(b)
        ctx.share_a = (a > b) + 0.5 * (a == b)
        return np.maximum(a, b)

    @staticmethod
    def backward(ctx, grad):
        return unbroadcast(grad * ctx.share_a, ctx.shapes[0]), unbroadcast(grad * (1 - ctx.share_a), ctx.shapes[1])


class Minimum(Function):
    """c = min(a, b) elementwise;  the gradient goes to the smaller input, split in half on a tie."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = np.shape(a), np.shape(b)
        ctx.share_a = (a < b) + 0.5 * (a == b)
        return np.minimum(a, b)

    @staticmethod
    def backward(ctx, grad):
        return unbroadcast(grad * ctx.share_a, ctx.shapes[0]), unbroadcast(grad * (1 - ctx.share_a), ctx.shapes[1])


def maximum(a, b):
    return Maximum.apply(_operand(a), _operand(b))


def minimum(a, b):
    return Minimum.apply(_operand(a), _operand(b))


class ReLU(Function):
    """relu(a) = max(a, 0);  d/da relu(a) = 1[a > 0]."""

    @staticmethod
    def forward(ctx, a):
        ctx.mask = a > 0
        return a * ctx.mask

    @staticmethod
    def backward(ctx, grad):
        return (grad * ctx.mask,)


class Sigmoid(Function):
    """s(a) = 1 / (1 + exp(-a));  ds/da = s (1 - s). Computed without overflow for large |a|."""

    @staticmethod
    def forward(ctx, a):
        e = np.exp(-np.abs(a))
        ctx.out = np.where(a >= 0, 1 / (1 + e), e / (1 + e)).astype(a.dtype, copy=False)
        return ctx.out

    @staticmethod
    def backward(ctx, grad):
        return (grad * ctx.out * (1 - ctx.out),)


class Tanh(Function):
    """t = tanh(a);  dt/da = 1 - t^2."""

    @staticmethod
    def forward(ctx, a):
        ctx.out = np.tanh(a)
        return ctx.out

    @staticmethod
    def backward(ctx, grad):
        return (grad * (1 - ctx.out * ctx.out),)


def _reduction_axis(a, axis, op):
    """``axis`` for NumPy; a 0-d tensor reduced over axis 0 or -1 is reduced over everything (as PyTorch)."""
    if a.ndim == 0 and axis is not None:
        if any(ax not in (0, -1) for ax in (axis if isinstance(axis, tuple) else (axis,))):
            raise ValueError(f"{op}: axis={axis} is out of range for a 0-d tensor; allowed: 0, -1 or None")
        return None
    return axis


def _expand_reduced(grad, shape, axis, keepdims):
    """Undo a reduction's loss of axes, so ``grad`` broadcasts against the input of shape ``shape``."""
    if axis is not None and not keepdims:
        grad = np.expand_dims(grad, axis)
    return np.broadcast_to(grad, shape)


class Sum(Function):
    """c = sum(a over axis);  dc/da = 1 for every summed entry."""

    @staticmethod
    def forward(ctx, a, axis, keepdims):
        axis = _reduction_axis(a, axis, "sum")
        ctx.shape, ctx.axis, ctx.keepdims = a.shape, axis, keepdims
        return np.sum(a, axis=axis, keepdims=keepdims)

    @staticmethod
    def backward(ctx, grad):
        return _expand_reduced(grad, ctx.shape, ctx.axis, ctx.keepdims).copy(), None, None


class Mean(Function):
    """c = mean(a over axis) = sum / n;  dc/da = 1 / n."""

    @staticmethod
    def forward(ctx, a, axis, keepdims):
        if a.size == 0:
            raise ValueError(f"mean: the tensor is empty (shape {a.shape}); the mean of nothing is undefined")
        axis = _reduction_axis(a, axis, "mean")
        ctx.shape, ctx.axis, ctx.keepdims = a.shape, axis, keepdims
        out = np.mean(a, axis=axis, keepdims=keepdims)
        ctx.n = a.size // max(np.size(out), 1)
        return out

    @staticmethod
    def backward(ctx, grad):
        return _expand_reduced(grad, ctx.shape, ctx.axis, ctx.keepdims) / ctx.n, None, None


class Max(Function):
    """c = max(a over axis);  the gradient goes to the maximal entries, shared equally among ties (as torch.amax)."""

    @staticmethod
    def forward(ctx, a, axis, keepdims):
        if a.size == 0:
            raise ValueError(f"max: the tensor is empty (shape {a.shape})")
        axis = _reduction_axis(a, axis, "max")
        ctx.axis, ctx.keepdims = axis, keepdims
        out = np.max(a, axis=axis, keepdims=True)
        winners = a == out
        ctx.share = winners / winners.sum(axis=axis, keepdims=True)
        return out if keepdims else np.squeeze(out, axis=axis)

    @staticmethod
    def backward(ctx, grad):
        return _expand_reduced(grad, ctx.share.shape, ctx.axis, ctx.keepdims) * ctx.share, None, None


class Reshape(Function):
    """c = a reshaped;  the gradient is reshaped back."""

    @staticmethod
    def forward(ctx, a, shape):
        ctx.shape = a.shape
        try:
            return a.reshape(shape)
        except ValueError:
            raise ValueError(f"reshape: cannot reshape a tensor of shape {a.shape} ({a.size} entries) into {shape}") from None

    @staticmethod
    def backward(ctx, grad):
        return grad.reshape(ctx.shape), None


class Transpose(Function):
    """c = a with its axes permuted;  the gradient is permuted back by the inverse permutation."""

    @staticmethod
    def forward(ctx, a, axes):
        out = np.transpose(a, axes)
        # argsort inverts a permutation only when its axes are written 0..n-1: -1 becomes n-1 first
        ctx.axes = None if axes is None else tuple(ax % a.ndim for ax in axes)
        return out

    @staticmethod
    def backward(ctx, grad):
        return np.transpose(grad, None if ctx.axes is None else np.argsort(ctx.axes)), None


class GetItem(Function):
    """c = a[index];  the gradient is scattered back into zeros, adding up repeated indices."""

    @staticmethod
    def forward(ctx, a, index):
        ctx.shape, ctx.dtype, ctx.index = a.shape, a.dtype, index
        return a[index]

    @staticmethod
    def backward(ctx, grad):
        out = np.zeros(ctx.shape, dtype=ctx.dtype)
        np.add.at(out, ctx.index, grad)
        return out, None


class Concatenate(Function):
    """c = [a1, a2, ...] joined along ``axis``;  each input gets its slice of the gradient."""

    @staticmethod
    def forward(ctx, *arrays, axis=0):
        ctx.axis = axis
        ctx.splits = np.cumsum([np.shape(a)[axis] for a in arrays])[:-1]
        return np.concatenate(arrays, axis=axis)

    @staticmethod
    def backward(ctx, grad):
        return tuple(np.split(grad, ctx.splits, axis=ctx.axis))


def concatenate(tensors, axis=0):
    """Join tensors along an existing axis (np.concatenate with gradients)."""
    tensors = [_operand(t) for t in tensors]
    if not tensors:
        raise ValueError("concatenate: needs at least one tensor")
    return Concatenate.apply(*tensors, axis=axis)


class Pad(Function):
    """c = a padded with a constant;  the gradient is the central (unpadded) part."""

    @staticmethod
    def forward(ctx, a, pad_width, value):
        pad_width = np.broadcast_to(np.asarray(pad_width, dtype=int), (a.ndim, 2))
        if (pad_width < 0).any():
            raise ValueError(f"pad: pad_width must be >= 0, got {pad_width.tolist()}")
        ctx.slices = tuple(slice(lo, n + lo) for (lo, _), n in zip(pad_width, a.shape))
        return np.pad(a, pad_width, constant_values=value)

    @staticmethod
    def backward(ctx, grad):
        return grad[ctx.slices], None, None


def pad(x, pad_width, value=0.0):
    """np.pad(x, pad_width, constant_values=value) with gradients."""
    return Pad.apply(_operand(x), pad_width, value)


class Where(Function):
    """c = a where cond else b;  the gradient goes to a where cond holds, to b elsewhere."""

    @staticmethod
    def forward(ctx, cond, a, b):
        ctx.cond, ctx.shapes = cond, (np.shape(a), np.shape(b))
        return np.where(cond, a, b)

    @staticmethod
    def backward(ctx, grad):
        zero = np.zeros((), dtype=grad.dtype)
        ga = unbroadcast(np.where(ctx.cond, grad, zero), ctx.shapes[0])
        gb = unbroadcast(np.where(ctx.cond, zero, grad), ctx.shapes[1])
        return None, ga, gb


def where(cond, a, b):
    """Elementwise choice: ``a`` where ``cond`` (a boolean array) is true, else ``b``."""
    return Where.apply(np.asarray(_value(cond), dtype=bool), _operand(a), _operand(b))
