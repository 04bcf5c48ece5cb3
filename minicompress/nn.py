"""Modules: containers of parameters, buffers and sub-modules, and the layers built from them (PyTorch's API).

A ``Module`` registers whatever is assigned to it: an ``nn.Parameter`` becomes a trainable parameter, another
``Module`` a child, and ``register_buffer`` adds state that is saved but not trained (running statistics, masks).
Pruning relies on two PyTorch mechanisms kept here: parameters can be deleted and replaced (``del m.weight``), and
forward pre-hooks run before every ``forward`` (they recompute ``weight = weight_orig * weight_mask``).
"""

import math
from collections import OrderedDict, namedtuple

import numpy as np

from . import functional as F
from .tensor import Tensor, default_rng


class Parameter(Tensor):
    """A Tensor that is a trainable parameter of a Module (requires_grad=True)."""

    def __init__(self, data, requires_grad=True):
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


class RemovableHandle:
    """Returned by ``register_forward_pre_hook``; ``handle.remove()`` unregisters the hook."""

    _next_id = 0

    def __init__(self, hooks):
        self.hooks, self.id = hooks, RemovableHandle._next_id
        RemovableHandle._next_id += 1

    def remove(self):
        self.hooks.pop(self.id, None)


IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class Module:
    """Base class of every layer and model: subclasses set attributes in ``__init__`` and define ``forward``."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_forward_pre_hooks", OrderedDict())
        object.__setattr__(self, "training", True)

    # ---- registration ---------------------------------------------------------------------------------------------

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before assigning attributes")
        if isinstance(value, Parameter):
            if name not in self._parameters:
                self._forget(name)
            self._parameters[name] = value  # an existing name keeps its place in the order
        elif isinstance(value, Module):
            if name not in self._modules:
                self._forget(name)
            self._modules[name] = value  # replacing a child keeps its position (Sequential order)
        elif name in self._parameters or name in self._modules:
            if value is not None:
                kind = "parameter" if name in self._parameters else "sub-module"
                raise TypeError(
                    f"{type(self).__name__}: cannot assign {type(value).__name__} to {kind} '{name}' "
                    "(assign an nn.Parameter / Module, or delete the attribute first)"
                )
            (self._parameters if name in self._parameters else self._modules)[name] = None
        elif name in self._buffers:
            self._buffers[name] = _as_buffer(value)
        else:
            object.__setattr__(self, name, value)

    def _forget(self, name):
        for store in (self._parameters, self._buffers, self._modules):
            store.pop(name, None)
        self.__dict__.pop(name, None)

    def __getattr__(self, name):
        # only called when normal lookup fails: look in the registries
        for store in ("_parameters", "_buffers", "_modules"):
            registry = self.__dict__.get(store)
            if registry is not None and name in registry:
                return registry[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        for store in (self._parameters, self._buffers, self._modules):
            if name in store:
                del store[name]
                return
        object.__delattr__(self, name)

    def register_parameter(self, name, param):
        """Add (or with ``None``, declare absent) a parameter called ``name``."""
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter('{name}'): expected nn.Parameter or None, got {type(param).__name__}")
        self._forget(name)
        self._parameters[name] = param

    def register_buffer(self, name, value):
        """Add state that is saved in ``state_dict`` but not trained (running statistics, pruning masks)."""
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"register_buffer: name must be a non-empty string without '.', got {name!r}")
        self._forget(name)
        self._buffers[name] = _as_buffer(value)

    def register_forward_pre_hook(self, hook):
        """Run ``hook(module, inputs)`` before every forward; it may return new inputs (a tuple or one value)."""
        handle = RemovableHandle(self._forward_pre_hooks)
        self._forward_pre_hooks[handle.id] = hook
        return handle

    # ---- calling --------------------------------------------------------------------------------------------------

    def __call__(self, *inputs):
        return self.forward(*self._run_pre_hooks(inputs))

    def _run_pre_hooks(self, inputs):
        for hook in list(self._forward_pre_hooks.values()):
            result = hook(self, inputs)
            if result is not None:
                inputs = result if isinstance(result, tuple) else (result,)
        return inputs

    def forward(self, *inputs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    # ---- walking the tree -----------------------------------------------------------------------------------------

    def named_modules(self, prefix=""):
        """(name, module) for this module and every descendant, depth first; the root is named ''."""
        stack = [(prefix, self)]
        while stack:
            name, module = stack.pop()
            yield name, module
            children = [(f"{name}.{n}" if name else n, m) for n, m in module._modules.items() if m is not None]
            stack.extend(reversed(children))

    def modules(self):
        return (m for _, m in self.named_modules())

    def named_children(self):
        return ((n, m) for n, m in self._modules.items() if m is not None)

    def children(self):
        return (m for _, m in self.named_children())

    def _named_members(self, registry, recurse=True):
        modules = self.named_modules() if recurse else [("", self)]
        for prefix, module in modules:
            for name, value in getattr(module, registry).items():
                if value is not None:
                    yield (f"{prefix}.{name}" if prefix else name), value

    def named_parameters(self, recurse=True):
        return self._named_members("_parameters", recurse)

    def parameters(self, recurse=True):
        return (p for _, p in self.named_parameters(recurse))

    def named_buffers(self, recurse=True):
        return self._named_members("_buffers", recurse)

    def buffers(self, recurse=True):
        return (b for _, b in self.named_buffers(recurse))

    def apply(self, fn):
        """Call ``fn(module)`` on every module of the tree (children first, as PyTorch)."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    def train(self, mode=True):
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    # ---- state ----------------------------------------------------------------------------------------------------

    def state_dict(self):
        """Copies of every parameter and buffer, keyed by dotted name ("0.weight", "features.3.running_mean")."""
        state = OrderedDict()
        for prefix, module in self.named_modules():
            for registry in (module._parameters, module._buffers):
                for name, value in registry.items():
                    if value is not None:
                        state[f"{prefix}.{name}" if prefix else name] = value.data.copy()
        return state

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays into the parameters and buffers of the same names.

        Shapes must match. With ``strict`` a missing or unexpected key is an error; otherwise they are returned.
        """
        own = OrderedDict()
        for prefix, module in self.named_modules():
            for registry in (module._parameters, module._buffers):
                for name, value in registry.items():
                    if value is not None:
                        own[f"{prefix}.{name}" if prefix else name] = value
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        name = type(self).__name__
        if strict and (missing or unexpected):
            raise KeyError(
                f"{name}.load_state_dict: missing keys {missing}, unexpected keys {unexpected} "
                "(pass strict=False to load the matching keys only)"
            )
        for key, target in own.items():
            if key not in state_dict:
                continue
            value = np.asarray(state_dict[key].data if isinstance(state_dict[key], Tensor) else state_dict[key])
            if value.shape != target.shape:
                raise ValueError(
                    f"{name}.load_state_dict: '{key}' has shape {value.shape} in the state dict but {target.shape} in the model"
                )
            np.copyto(target.data, value, casting="same_kind")
        return IncompatibleKeys(missing, unexpected)

    # ---- printing -------------------------------------------------------------------------------------------------

    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"({n}): " + repr(m).replace("\n", "\n  ") for n, m in self._modules.items()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        return head + ("\n  " + "\n  ".join(lines) + "\n)" if lines else ")")


def _as_buffer(value):
    if value is None or isinstance(value, Tensor):
        return value
    array = np.asarray(value)
    return Tensor(array, dtype=array.dtype)


def _shape(x):
    return x.shape if isinstance(x, Tensor) else np.shape(x)


def _uniform(shape, bound):
    return default_rng().uniform(-bound, bound, size=shape).astype(np.float32)


# --------------------------------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------------------------------


class Linear(Module):
    """y = x W^T + b with W of shape (out_features, in_features).

    Initialised as PyTorch: W and b uniform in [-1/sqrt(in_features), 1/sqrt(in_features)].
    """

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        _check_positive(self, in_features=in_features, out_features=out_features)
        self.in_features, self.out_features = in_features, out_features
        bound = 1 / math.sqrt(in_features)
        self.weight = Parameter(_uniform((out_features, in_features), bound))
        if bias:
            self.bias = Parameter(_uniform((out_features,), bound))
        else:
            self.register_parameter("bias", None)

    def forward(self, x):
        shape = _shape(x)
        if not shape or shape[-1] != self.in_features:
            raise ValueError(
                f"Linear(in_features={self.in_features}): input has {shape[-1] if shape else 0} features in its "
                f"last axis, shape {shape}"
            )
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Conv2d(Module):
    """2-D convolution with weight (out_channels, in_channels, kh, kw), as PyTorch (including its initialisation:
    uniform in [-1/sqrt(fan_in), 1/sqrt(fan_in)], fan_in = in_channels * kh * kw)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        super().__init__()
        _check_positive(self, in_channels=in_channels, out_channels=out_channels)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = F._pair(kernel_size, "kernel_size", "Conv2d")
        self.stride, self.padding = F._pair(stride, "stride", "Conv2d"), F._pair(padding, "padding", "Conv2d")
        if min(self.kernel_size) < 1 or min(self.stride) < 1:
            raise ValueError(f"Conv2d: kernel_size and stride must be >= 1, got {kernel_size!r} and {stride!r}")
        bound = 1 / math.sqrt(in_channels * self.kernel_size[0] * self.kernel_size[1])
        self.weight = Parameter(_uniform((out_channels, in_channels) + self.kernel_size, bound))
        if bias:
            self.bias = Parameter(_uniform((out_channels,), bound))
        else:
            self.register_parameter("bias", None)

    def forward(self, x):
        self._check_input(x)
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)

    def _check_input(self, x):
        shape = _shape(x)
        if len(shape) != 4 or shape[1] != self.in_channels:
            got = f"{shape[1]} channels" if len(shape) == 4 else "not 4-D (N, C, H, W)"
            raise ValueError(f"Conv2d(in_channels={self.in_channels}): input has {got}, shape {shape}")

    def extra_repr(self):
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}"
        )


class _Pool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride or self.kernel_size}"


class MaxPool2d(_Pool2d):
    """Maximum over each window (stride defaults to the kernel size)."""

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)


class AvgPool2d(_Pool2d):
    """Mean over each window (stride defaults to the kernel size)."""

    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding)


class ReLU(Module):
    def forward(self, x):
        return F.relu(x)


class Tanh(Module):
    def forward(self, x):
        return F._as_tensor(x).tanh()


class Sigmoid(Module):
    def forward(self, x):
        return F._as_tensor(x).sigmoid()


class Identity(Module):
    def forward(self, x):
        return x


class Flatten(Module):
    """(N, C, H, W) -> (N, C * H * W): keeps the batch axis."""

    def forward(self, x):
        return F._as_tensor(x).flatten(1)


class Dropout(Module):
    """Inverted dropout with probability p while training; the identity in eval mode."""

    def __init__(self, p=0.5):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"Dropout(p={p!r}): p must be in [0, 1]")
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class _BatchNorm(Module):
    """Batch normalisation with learnable gamma (``weight``) and beta (``bias``) and running statistics."""

    _input_ndim = None

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True):
        super().__init__()
        _check_positive(self, num_features=num_features)
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        if affine:
            self.weight = Parameter(np.ones(num_features, dtype=np.float32))
            self.bias = Parameter(np.zeros(num_features, dtype=np.float32))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.register_buffer("running_mean", np.zeros(num_features, dtype=np.float32))
        self.register_buffer("running_var", np.ones(num_features, dtype=np.float32))

    def forward(self, x):
        shape = _shape(x)
        if len(shape) != self._input_ndim or shape[1] != self.num_features:
            raise ValueError(
                f"{type(self).__name__}(num_features={self.num_features}): expected a {self._input_ndim}-D input with "
                f"{self.num_features} channels on axis 1, got shape {shape}"
            )
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, self.training, self.momentum, self.eps
        )

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class BatchNorm1d(_BatchNorm):
    """Batch norm of (N, C) inputs, per feature."""

    _input_ndim = 2


class BatchNorm2d(_BatchNorm):
    """Batch norm of (N, C, H, W) inputs, per channel."""

    _input_ndim = 4


class Sequential(Module):
    """Modules applied one after another; children are named "0", "1", ...

    A ``Conv2d``, an optional ``ReLU`` and a ``MaxPool2d(2)`` in a row run as one fused function,
    ``F.conv2d_relu_maxpool2d`` (same values and gradients, applying bias and ReLU after the pool, on a 4x smaller
    array). The Conv2d's forward pre-hooks (pruning masks, shared weights) run first, as they would unfused. The
    chain is left unfused when the ReLU or the pool has hooks, when a layer is a subclass (its own forward), or
    when ``fuse`` is set to False on the model.
    """

    fuse = True

    def __init__(self, *modules):
        super().__init__()
        for i, module in enumerate(modules):
            if not isinstance(module, Module):
                raise TypeError(f"Sequential: argument {i} is a {type(module).__name__}, not a Module")
            self._modules[str(i)] = module

    def __getitem__(self, index):
        items = list(self._modules.values())
        if isinstance(index, slice):
            return Sequential(*items[index])
        return items[index]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module):
        self._modules[str(len(self._modules))] = module
        return self

    def forward(self, x):
        modules = list(self._modules.values())
        i = 0
        while i < len(modules):
            length = _fusable_chain(modules, i) if self.fuse else 0
            if length:
                conv = modules[i]
                (x,) = conv._run_pre_hooks((x,))
                conv._check_input(x)
                x = F.conv2d_relu_maxpool2d(x, conv.weight, conv.bias, conv.stride, conv.padding, relu=length == 3)
                i += length
            else:
                x = modules[i](x)
                i += 1
        return x


def _fusable_chain(modules, i):
    """How many modules from ``modules[i]`` form Conv2d -> [ReLU] -> MaxPool2d(2) (3 or 2), or 0 if they don't."""
    def plain(module, cls, hooks_allowed=False):  # the class's own forward, not a subclass's or a patched one
        return (type(module) is cls and "forward" not in module.__dict__
                and (hooks_allowed or not module._forward_pre_hooks))

    if not plain(modules[i], Conv2d, hooks_allowed=True):
        return 0
    j = i + 1
    if j < len(modules) and plain(modules[j], ReLU):
        j += 1
    pool = modules[j] if j < len(modules) else None
    if (plain(pool, MaxPool2d) and pool.kernel_size in (2, (2, 2)) and pool.stride in (None, 2, (2, 2))
            and pool.padding in (0, (0, 0))):
        return j - i + 1
    return 0


def _check_positive(layer, **sizes):
    for name, value in sizes.items():
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{type(layer).__name__}: {name} must be a positive int, got {value!r}")
