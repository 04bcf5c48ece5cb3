"""Gradient checking: compare backward against central finite differences, in float64.

With a random upstream gradient u, backward computes J^T u for the Jacobian J of ``fn``. Numerically,
entry i of J^T u is d/dx_i <u, fn(x)> ~ (<u, fn(x + eps e_i)> - <u, fn(x - eps e_i)>) / (2 eps).
A random u (not all ones) catches errors that cancel out when every output is weighted the same.
"""

import numpy as np

from .tensor import Tensor, no_grad


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, seed=0):
    """Check the gradients of ``fn(*tensors)`` with respect to each array in ``inputs`` (float64).

    Returns True, or raises AssertionError naming the input, the entry and both values.
    """
    arrays = [np.array(x, dtype=np.float64) for x in inputs]
    tensors = [Tensor(a, requires_grad=True) for a in arrays]
    out = fn(*tensors)
    u = np.random.default_rng(seed).standard_normal(out.shape)
    out.backward(u)

    def objective():
        with no_grad():
            return float(np.sum(fn(*[Tensor(a) for a in arrays]).data * u))

    for k, (a, t) in enumerate(zip(arrays, tensors)):
        analytic = np.zeros_like(a) if t.grad is None else t.grad
        numeric = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            old = a[idx]
            a[idx] = old + eps
            f_plus = objective()
            a[idx] = old - eps
            f_minus = objective()
            a[idx] = old
            numeric[idx] = (f_plus - f_minus) / (2 * eps)
        if not np.allclose(analytic, numeric, atol=atol, rtol=rtol):
            worst = np.unravel_index(np.argmax(np.abs(analytic - numeric)), a.shape)
            raise AssertionError(
                f"gradcheck: input {k} (shape {a.shape}) entry {worst}: backward gives {analytic[worst]:.8g}, "
                f"finite differences give {numeric[worst]:.8g}"
            )
    return True
