"""Lab 0, autograd: the checks of tutorials/labs/00_autograd_lab.ipynb (the library's answers: minicompress.tensor
and minicompress.functional).

0.1 the backward of a multiply, as a Function     0.4 the topological order of a graph
0.2 the backward of exp, as a Function            0.5 the gradient of softmax + cross-entropy
0.3 unbroadcast: the gradient of broadcasting
"""

import numpy as np

from .. import functional as F
from ..tensor import Exp, Mul, Tensor, topological_order, unbroadcast
from .checking import Case, Check, Lab, Mistake, each, same

LAB = Lab(0, "Autograd: the engine every technique stands on")
_rng = np.random.default_rng(0)


def _random(*shape):
    return _rng.standard_normal(shape)  # float64: gradients are compared in double precision


# --------------------------------------------------------------------------------------------------------------------
# 1. Two Functions: forward and backward side by side
# --------------------------------------------------------------------------------------------------------------------


def _run_binary(function, a, b, g):
    """(c, dL/da, dL/db) for c = function(a, b) and upstream gradient g."""
    ta, tb = Tensor(a, requires_grad=True), Tensor(b, requires_grad=True)
    out = function.apply(ta, tb)
    out.backward(g)
    return out.data, ta.grad, tb.grad


def _run_unary(function, a, g):
    ta = Tensor(a, requires_grad=True)
    out = function.apply(ta)
    out.backward(g)
    return out.data, ta.grad


@LAB.exercise("mul_function")
def check_mul_function():
    values = each(same(rtol=1e-9), names=("forward a * b", "gradient of a", "gradient of b"))
    return Check(
        reference=lambda a, b, g: _run_binary(Mul, a, b, g), call=_run_binary, names=("a", "b", "upstream grad"),
        compare=values,
        cases=[(np.array([2.0, 3.0]), np.array([4.0, -1.0]), np.array([1.0, 1.0])),
               (_random(2, 3), _random(2, 3), _random(2, 3)), (np.zeros(3), _random(3), _random(3))],
        hint="forward: c = a * b (save a and b on ctx); backward: return (grad * b, grad * a)",
        mistakes=[Mistake(lambda a, b, g: (a * b, g * a, g * b),
                          "dc/da = b and dc/db = a: each input's gradient is grad times the *other* input"),
                  Mistake(lambda a, b, g: (a * b, b, a),
                          "chain rule: multiply by the upstream gradient `grad` (the check uses a random one, "
                          "not ones)")])


@LAB.exercise("exp_function")
def check_exp_function():
    values = each(same(rtol=1e-9), names=("forward exp(a)", "gradient of a"))
    return Check(
        reference=lambda a, g: _run_unary(Exp, a, g), call=_run_unary, names=("a", "upstream grad"),
        compare=values,
        cases=[(np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 1.0])), (_random(2, 3), _random(2, 3)),
               (np.array([-30.0, 5.0]), np.array([2.0, -0.5]))],
        hint="forward: c = exp(a) (save it on ctx); backward: grad * exp(a), the saved output",
        mistakes=[Mistake(lambda a, g: (np.exp(a), g * a), "d/da exp(a) = exp(a): multiply grad by the saved "
                                                            "output, not by the input a"),
                  Mistake(lambda a, g: (np.exp(a), np.exp(a)), "chain rule: multiply exp(a) by the upstream "
                                                                "gradient `grad`"),
                  Mistake(lambda a, g: (np.exp(a), g), "the local derivative of exp is exp(a), not 1")])


# --------------------------------------------------------------------------------------------------------------------
# 2. Broadcasting
# --------------------------------------------------------------------------------------------------------------------


@LAB.exercise("unbroadcast")
def check_unbroadcast():
    def leading_only(grad, shape):
        while grad.ndim > len(shape):
            grad = grad.sum(axis=0)
        return grad

    def no_keepdims(grad, shape):
        grad = leading_only(grad, shape)
        axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
        return grad.sum(axis=axes) if axes else grad

    return Check(
        reference=unbroadcast, names=("grad", "shape"), compare=same(rtol=1e-9),
        cases=[(np.ones((2, 3)), (3,)), (_random(2, 3, 4), (3, 1)), (_random(2, 3), (2, 3)),
               (_random(2, 3), (1, 3)), (_random(4, 1, 5), (4, 1, 1)), (_random(4), ())],
        hint="sum grad over the extra leading axes, then (with keepdims=True) over every axis where `shape` has "
             "size 1 but grad does not; the result has exactly `shape`",
        mistakes=[Mistake(leading_only, "also sum the axes where `shape` has size 1 (broadcast from 1 to n): each "
                                        "entry was used n times, its gradient is the sum"),
                  Mistake(no_keepdims, "keep the size-1 axes when summing them (keepdims=True): the gradient must "
                                       "have the input's shape"),
                  Mistake(lambda grad, shape: np.full(shape, grad.sum()), "sum only over the broadcast axes, not "
                                                                          "over everything")])


# --------------------------------------------------------------------------------------------------------------------
# 3. The order of the backward pass
# --------------------------------------------------------------------------------------------------------------------


def _leaf(name, value):
    t = Tensor(np.array(value), requires_grad=True)
    t.name = name
    return t


def _named(t, name):
    t.name = name
    return t


def _graph_reused():
    a = _leaf("a", 2.0)
    b = _named(a + a, "b")
    return _named(b * b, "c")


def _graph_diamond():
    x, w = _leaf("x", [1.0, 2.0]), _leaf("w", [0.5, -1.0])
    u = _named(x * w, "u")
    v = _named(u.exp(), "v")
    s = _named(u + v, "s")
    return _named((s * x).sum(), "loss")


def _graph_constant():
    x = _leaf("x", [1.0, -1.0])
    k = Tensor(np.array([3.0, 3.0]))  # a constant: requires_grad=False
    k.name = "constant"
    y = _named(x * k, "y")
    return _named(y.relu().sum(), "out")


def _names(nodes):
    return [getattr(n, "name", "?") for n in nodes]


def _valid_order(expected, obtained):
    """Any topological order is right: every node once, each after all of its inputs that require grad."""
    if obtained is None:
        return "your function returned None: is a `return` missing?"
    try:
        obtained = list(obtained)
    except TypeError:
        return f"expected a list of tensors, got a {type(obtained).__name__}"
    names = _names(obtained)
    for name in dict.fromkeys(names):
        if names.count(name) > 1:
            return (f"node {name} appears {names.count(name)} times: remember the visited nodes, so a reused node "
                    f"is listed once")
    extra = [n for n in obtained if not n.requires_grad]
    if extra:
        return f"{_names(extra)} do not require grad: skip inputs that are constants (requires_grad=False)"
    missing = set(_names(expected)) - set(names)
    if missing:
        return f"missing {sorted(missing)}: visit every input that requires grad, recursively, leaves included"
    position = {id(n): i for i, n in enumerate(obtained)}
    for node in obtained:
        for parent in node._inputs:
            if isinstance(parent, Tensor) and parent.requires_grad and position[id(parent)] > position[id(node)]:
                return (f"{node.name} comes before its input {parent.name}: a node must come after all of its "
                        f"inputs (append it after visiting them)")
    return None


@LAB.exercise("topological_order")
def check_topological_order():
    return Check(
        reference=lambda root: _Shown(topological_order(root)), names=("root",), compare=_valid_order,
        cases=[Case((_graph_reused(),), "graph b = a + a, c = b * b, root c"),
               Case((_graph_diamond(),), "graph u = x * w, v = exp(u), s = u + v, loss = sum(s * x), root loss"),
               Case((_graph_constant(),), "graph y = x * constant, out = sum(relu(y)), root out")],
        hint="depth-first search: visit a node's inputs (those that are Tensors with requires_grad) first, then "
             "append the node; keep a set of visited nodes (by id) so each appears once",
        summary="any valid order is accepted; includes the reused node b = a + a")


class _Shown(list):
    """The library's order, shown by node names (any valid order is accepted)."""

    def __repr__(self):
        return "[" + ", ".join(_names(self)) + "] (or another valid order)"


# --------------------------------------------------------------------------------------------------------------------
# 4. The gradient of softmax + cross-entropy
# --------------------------------------------------------------------------------------------------------------------


@LAB.exercise("cross_entropy_grad")
def check_cross_entropy_grad():
    def reference(z, y):
        t = Tensor(z, requires_grad=True)
        F.cross_entropy(t, y).backward()
        return t.grad

    def softmax(z):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def onehot(y, c):
        return np.eye(c)[y]

    return Check(
        reference=reference, names=("z", "y"), compare=same(rtol=1e-7, atol=1e-12),
        cases=[(np.array([[2.0, 1.0, 0.1]]), np.array([0])), (_random(4, 5), np.array([0, 3, 4, 1])),
               (np.array([[1000.0, 0.0, -1000.0], [0.0, 0.0, 0.0]]), np.array([1, 2]))],
        hint="dL/dz = (softmax(z) - onehot(y)) / N for the mean loss over N samples; subtract each row's max "
             "before exp",
        mistakes=[Mistake(lambda z, y: softmax(z) - onehot(y, z.shape[1]),
                          "the loss is the mean over the N samples, so divide the gradient by N"),
                  Mistake(lambda z, y: softmax(z) / len(y), "subtract the one-hot target: dL/dz = (p - onehot(y)) / N"),
                  Mistake(lambda z, y: (onehot(y, z.shape[1]) - softmax(z)) / len(y),
                          "sign: dL/dz = (p - onehot(y)) / N; the gradient points away from the target"),
                  Mistake(lambda z, y: (np.exp(z) / np.exp(z).sum(axis=1, keepdims=True) - onehot(y, z.shape[1]))
                          / len(y), "exp(1000) overflows to inf and inf / inf is NaN: subtract each row's max "
                                    "before exp (softmax does not change)")])
