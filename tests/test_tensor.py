"""The autograd engine: every elementary op against NumPy and finite differences, and the classic traps."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis.extra.numpy import mutually_broadcastable_shapes

import minicompress as mc
from minicompress import gradcheck, tensor

rng = np.random.default_rng(0)


def positive(*shape):
    return rng.random(shape) + 0.5


def normal(*shape):
    return rng.standard_normal(shape)


# One list of unary ops, each checked for its value (against NumPy) and its gradient (against finite differences).
UNARY = [
    ("neg", lambda t: -t, lambda a: -a, normal),
    ("exp", lambda t: t.exp(), np.exp, normal),
    ("log", lambda t: t.log(), np.log, positive),
    ("sqrt", lambda t: t.sqrt(), np.sqrt, positive),
    ("abs", lambda t: t.abs(), np.abs, normal),
    ("relu", lambda t: t.relu(), lambda a: np.maximum(a, 0), normal),
    ("sigmoid", lambda t: t.sigmoid(), lambda a: 1 / (1 + np.exp(-a)), normal),
    ("tanh", lambda t: t.tanh(), np.tanh, normal),
    ("pow3", lambda t: t**3, lambda a: a**3, normal),
    ("pow-half", lambda t: t**-0.5, lambda a: a**-0.5, positive),
    ("clip", lambda t: t.clip(-0.5, 0.5), lambda a: np.clip(a, -0.5, 0.5), normal),
    ("sum", lambda t: t.sum(), np.sum, normal),
    ("sum-axis", lambda t: t.sum(axis=1), lambda a: a.sum(axis=1), normal),
    ("sum-keepdims", lambda t: t.sum(axis=0, keepdims=True), lambda a: a.sum(axis=0, keepdims=True), normal),
    ("mean", lambda t: t.mean(axis=(0, 2)), lambda a: a.mean(axis=(0, 2)), normal),
    ("max", lambda t: t.max(axis=1), lambda a: a.max(axis=1), normal),
    ("max-all", lambda t: t.max(), np.max, normal),
    ("reshape", lambda t: t.reshape(6, 4), lambda a: a.reshape(6, 4), normal),
    ("transpose", lambda t: t.transpose(2, 0, 1), lambda a: a.transpose(2, 0, 1), normal),
    ("T", lambda t: t.T, lambda a: a.T, normal),
    ("flatten", lambda t: t.flatten(1), lambda a: a.reshape(2, -1), normal),
    ("getitem", lambda t: t[1, ::2], lambda a: a[1, ::2], normal),
    ("getitem-repeat", lambda t: t[[0, 0, 1]], lambda a: a[[0, 0, 1]], normal),
    ("pad", lambda t: mc.pad(t, ((0, 0), (1, 2), (0, 1))), lambda a: np.pad(a, ((0, 0), (1, 2), (0, 1))), normal),
]


@pytest.mark.parametrize("name,op,reference,make", UNARY, ids=[u[0] for u in UNARY])
def test_unary_op_value_and_gradient(name, op, reference, make):
    a = make(2, 3, 4)
    np.testing.assert_allclose(op(tensor(a)).data, reference(a), rtol=1e-12)
    assert gradcheck(op, [a])


BINARY = [
    ("add", lambda a, b: a + b, np.add),
    ("sub", lambda a, b: a - b, np.subtract),
    ("mul", lambda a, b: a * b, np.multiply),
    ("div", lambda a, b: a / b, np.divide),
    ("maximum", mc.maximum, np.maximum),
    ("minimum", mc.minimum, np.minimum),
    ("where", lambda a, b: mc.where(a.data > 0.9, a, b), lambda a, b: np.where(a > 0.9, a, b)),
]


@pytest.mark.parametrize("name,op,reference", BINARY, ids=[b[0] for b in BINARY])
@settings(max_examples=8, deadline=None)
@given(shapes=mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=3))
def test_binary_op_broadcasts_value_and_gradient(name, op, reference, shapes):
    """Every binary op with every broadcast: the gradient of each operand has that operand's shape."""
    a, b = positive(*shapes.input_shapes[0]), positive(*shapes.input_shapes[1])
    out = op(tensor(a, requires_grad=True), tensor(b, requires_grad=True))
    np.testing.assert_allclose(out.data, reference(a, b))
    assert gradcheck(op, [a, b])


def test_unbroadcast_sums_over_broadcast_axes():
    grad = np.arange(24.0).reshape(2, 3, 4)
    np.testing.assert_array_equal(mc.unbroadcast(grad, (3, 1)), grad.sum(axis=0).sum(axis=1, keepdims=True))
    np.testing.assert_array_equal(mc.unbroadcast(grad, ()), grad.sum())
    assert mc.unbroadcast(grad, (2, 3, 4)) is grad


@pytest.mark.parametrize("shapes", [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((4,), (4, 5)), ((3, 4), (4,)),
                                    ((2, 1, 3, 4), (5, 4, 2)), ((4,), (4,))])
def test_matmul_batched_and_vectors(shapes):
    a, b = normal(*shapes[0]), normal(*shapes[1])
    np.testing.assert_allclose((tensor(a) @ tensor(b)).data, a @ b)
    assert gradcheck(lambda x, y: x @ y, [a, b])


def test_concatenate_value_and_gradient():
    a, b, c = normal(2, 3), normal(2, 1), normal(2, 2)
    np.testing.assert_array_equal(mc.concatenate([tensor(a), tensor(b), tensor(c)], axis=1).data,
                                  np.concatenate([a, b, c], axis=1))
    assert gradcheck(lambda x, y, z: mc.concatenate([x, y, z], axis=1), [a, b, c])


def test_max_shares_gradient_among_ties_and_maximum_splits_ties():
    t = tensor([1.0, 3.0, 3.0], requires_grad=True)
    t.max().backward()
    np.testing.assert_array_equal(t.grad, [0, 0.5, 0.5])
    a, b = tensor([2.0], requires_grad=True), tensor([2.0], requires_grad=True)
    mc.maximum(a, b).backward(np.ones(1))
    assert a.grad[0] == b.grad[0] == 0.5


def test_abs_gradient_at_zero_is_zero_and_clip_passes_boundaries():
    t = tensor([0.0, -2.0, 1.0], requires_grad=True)
    t.abs().sum().backward()
    np.testing.assert_array_equal(t.grad, [0, -1, 1])
    t = tensor([-1.0, 0.0, 1.0, 2.0], requires_grad=True)
    t.clip(-1, 1).sum().backward()
    np.testing.assert_array_equal(t.grad, [1, 1, 1, 0])


# ---- the classic traps ---------------------------------------------------------------------------------------------


def test_reused_non_leaf_collects_all_uses_before_passing_on():
    """b = a + a; c = b * b: dc/da = 2 * 2b * ... = 8a. Without a topological order b's gradient would be half."""
    a = tensor([1.0, -2.0, 3.0], requires_grad=True)
    b = a + a
    c = b * b
    c.sum().backward()
    np.testing.assert_array_equal(a.grad, 8 * a.data)
    np.testing.assert_array_equal(b.grad, 2 * b.data)


def test_diamond_graph_and_leaf_used_in_many_places():
    x = tensor([0.5, 1.5], requires_grad=True)
    y = (x * x).exp() + (x * 3).sigmoid() * x
    assert gradcheck(lambda t: (t * t).exp() + (t * 3).sigmoid() * t, [x.data.astype(np.float64)])
    y.sum().backward()
    assert x.grad.shape == (2,)


def test_backward_accumulates_until_zero_grad():
    w = tensor([1.0, 2.0], requires_grad=True)
    (w * w).sum().backward()
    first = w.grad.copy()
    (w * w).sum().backward()
    np.testing.assert_array_equal(w.grad, 2 * first)
    w.zero_grad()
    (w * w).sum().backward()
    np.testing.assert_array_equal(w.grad, first)


def test_deep_graph_needs_no_recursion():
    x = tensor([1.0], requires_grad=True)
    y = x
    for _ in range(5000):
        y = y * 1.0001
    y.backward()
    np.testing.assert_allclose(x.grad, [1.0001**5000], rtol=1e-3)


def test_float32_in_float32_grads_out():
    x = tensor(np.ones((2, 3), dtype=np.float32), requires_grad=True)
    y = (x * np.float64(0.5) + 1).exp().sum(axis=1) / 3.0
    assert y.dtype == np.float32
    y.backward(np.ones(2, dtype=np.float32))
    assert x.grad.dtype == np.float32


def test_default_dtype_is_float32_and_float64_arrays_are_kept():
    assert tensor([1, 2]).dtype == np.float32
    assert tensor(3.0).dtype == np.float32
    assert tensor(np.zeros(2)).dtype == np.float64


def test_ndarray_on_the_left_defers_to_tensor():
    t = tensor([1.0, 2.0], requires_grad=True)
    out = np.array([3.0, 4.0], dtype=np.float32) * t
    assert isinstance(out, mc.Tensor)
    out.sum().backward()
    np.testing.assert_array_equal(t.grad, [3, 4])


def test_no_grad_and_detach_record_nothing():
    x = tensor([1.0], requires_grad=True)
    with mc.no_grad():
        assert not mc.is_grad_enabled()
        y = x * 2
    assert mc.is_grad_enabled()
    assert not y.requires_grad
    assert not (x.detach() * 2).requires_grad


def test_comparisons_give_boolean_arrays():
    t = tensor([-1.0, 0.0, 2.0])
    np.testing.assert_array_equal(t > 0, [False, False, True])
    np.testing.assert_array_equal(t <= 0, [True, True, False])


# ---- errors that explain themselves --------------------------------------------------------------------------------


def test_backward_on_non_scalar_without_grad_explains():
    y = tensor([1.0, 2.0], requires_grad=True) * 2
    with pytest.raises(RuntimeError, match=r"single-element output.*shape \(2,\).*grad="):
        y.backward()
    with pytest.raises(ValueError, match=r"grad has shape \(3,\)"):
        y.backward(np.ones(3))


def test_backward_on_tensor_without_grad_explains():
    with pytest.raises(RuntimeError, match="does not require grad"):
        tensor([1.0]).sum().backward()


def test_matmul_shape_mismatch_names_shapes():
    with pytest.raises(ValueError, match=r"matmul: shapes \(2, 3\) and \(4, 5\)"):
        tensor(np.ones((2, 3))) @ tensor(np.ones((4, 5)))


def test_broadcast_mismatch_names_op_and_shapes():
    with pytest.raises(ValueError, match=r"add: shapes \(2, 3\) and \(4,\) cannot be broadcast"):
        tensor(np.ones((2, 3))) + tensor(np.ones(4))


def test_reshape_and_other_bad_arguments():
    with pytest.raises(ValueError, match=r"reshape: cannot reshape a tensor of shape \(2, 3\)"):
        tensor(np.ones((2, 3))).reshape(4, 2)
    with pytest.raises(ValueError, match="mean: the tensor is empty"):
        tensor(np.ones((0, 3))).mean()
    with pytest.raises(ValueError, match="clip: lo=1 is greater than hi=0"):
        tensor([1.0]).clip(1, 0)
    with pytest.raises(TypeError, match="exponent must be a Python number"):
        tensor([1.0]) ** tensor([2.0])


def test_custom_function_straight_through():
    """The extension point the techniques use: a Function with its own backward."""

    class Round(mc.Function):
        @staticmethod
        def forward(ctx, x):
            return np.round(x)

        @staticmethod
        def backward(ctx, grad):
            return (grad,)

    x = tensor([0.4, 1.6], requires_grad=True)
    y = Round.apply(x) * 3
    y.sum().backward()
    np.testing.assert_array_equal(y.data, [0, 6])
    np.testing.assert_array_equal(x.grad, [3, 3])


def test_against_torch_on_a_composite_expression():
    torch = pytest.importorskip("torch")
    a, b = normal(3, 4), positive(4, 2)

    def expression(lib_a, lib_b, exp, tanh):
        h = tanh(lib_a @ lib_b) * 2 + lib_b.sum() / 3
        return (exp(-h) + h * h).sum()

    ta, tb = (tensor(x, requires_grad=True) for x in (a, b))
    expression(ta, tb, lambda t: t.exp(), lambda t: t.tanh()).backward()
    pa, pb = (torch.tensor(x, requires_grad=True) for x in (a, b))
    out = expression(pa, pb, torch.exp, torch.tanh)
    out.backward()
    np.testing.assert_allclose(ta.grad, pa.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(tb.grad, pb.grad.numpy(), rtol=1e-10)


def test_topological_order_puts_every_node_after_its_inputs():
    a = tensor([1.0], requires_grad=True)
    b = a + a
    c = b * b + a
    order = mc.topological_order(c)
    assert order[-1] is c and order[0] is a
    position = {id(n): i for i, n in enumerate(order)}
    for node in order:
        for parent in node._inputs:
            if isinstance(parent, mc.Tensor) and parent.requires_grad:
                assert position[id(parent)] < position[id(node)]


def test_flatten_and_pad_bad_arguments_explain():
    with pytest.raises(ValueError, match=r"flatten\(start_dim=3\): start_dim must be in \[0, 2\)"):
        tensor(np.ones((2, 3))).flatten(3)
    with pytest.raises(ValueError, match=r"pad: pad_width must be >= 0"):
        mc.pad(tensor(np.ones((2, 3))), ((0, 0), (-1, 1)))
    with pytest.raises(ValueError, match="concatenate: needs at least one tensor"):
        mc.concatenate([])


# ---- issue 13: degenerate autograd cases -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, bool])
def test_only_floating_point_tensors_can_require_grad(dtype):
    with pytest.raises(TypeError, match=f"only floating-point tensors can require gradients.*{np.dtype(dtype)}"):
        mc.Tensor(np.arange(3), dtype=dtype, requires_grad=True)
    t = mc.Tensor(np.arange(3), dtype=dtype)
    with pytest.raises(TypeError, match="only floating-point"):
        t.requires_grad = True
    assert not t.requires_grad
    t.requires_grad = False  # switching it off is always allowed


@pytest.mark.parametrize("axes", [(-2, -1, 1, 0), (-1, 0, -2, 1), (3, -3, 0, -2)])
def test_permute_with_negative_axes_inverts_the_permutation(axes):
    # all sizes equal: a wrong inverse permutation would give the right shape and the wrong values
    x = normal(3, 3, 3, 3)
    assert np.array_equal(mc.Tensor(x).permute(*axes).data, np.transpose(x, axes))
    assert gradcheck(lambda t: t.permute(*axes), [x])
    assert gradcheck(lambda t: t.permute(*axes), [normal(2, 3, 4, 5)])


def test_permute_against_torch_with_negative_axes():
    torch = pytest.importorskip("torch")
    x, u = normal(2, 3, 4, 5), normal(4, 5, 3, 2)
    t = mc.Tensor(x, requires_grad=True)
    t.permute(-2, -1, 1, 0).backward(u)
    ref = torch.tensor(x, requires_grad=True)
    ref.permute(-2, -1, 1, 0).backward(torch.tensor(u))
    assert t.grad.shape == x.shape
    assert np.array_equal(t.grad, ref.grad.numpy())


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
@pytest.mark.parametrize("axis", [0, -1, (0,), (-1,), None])
@pytest.mark.parametrize("keepdims", [False, True])
def test_reducing_a_0d_tensor_over_axis_0_is_the_identity_as_in_torch(reduce, axis, keepdims):
    x = np.array(1.7)
    out = getattr(mc.Tensor(x), reduce)(axis=axis, keepdims=keepdims)
    assert out.shape == () and out.item() == pytest.approx(1.7)
    assert gradcheck(lambda t: getattr(t, reduce)(axis=axis, keepdims=keepdims), [x])
    torch = pytest.importorskip("torch")
    if axis is not None:
        dim = axis if isinstance(axis, int) else axis[0]
        ref = {"sum": torch.sum, "mean": torch.mean, "max": torch.amax}[reduce](torch.tensor(1.7), dim, keepdims)
        assert out.shape == tuple(ref.shape)


def test_reducing_a_0d_tensor_over_another_axis_explains():
    with pytest.raises(ValueError, match=r"sum: axis=1 is out of range for a 0-d tensor; allowed: 0, -1 or None"):
        mc.Tensor(np.array(1.0)).sum(axis=1)
