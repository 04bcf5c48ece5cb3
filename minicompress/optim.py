"""Optimizers and learning-rate schedules, with PyTorch's update rules.

Every update happens in place on ``p.data`` (outside the graph), so parameters keep their identity and dtype.
"""

import math

import numpy as np


class Optimizer:
    """Holds ``param_groups`` (a list of dicts with "params" and hyper-parameters) and per-parameter ``state``."""

    def __init__(self, params, defaults):
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.param_groups = []
        for group in groups:
            full = dict(defaults)
            full.update(group)
            full["params"] = list(full["params"])
            full.setdefault("initial_lr", full["lr"])
            self.param_groups.append(full)
        self.state = {}

    def zero_grad(self):
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, p.grad, group, self.state.setdefault(id(p), {}))

    def _update(self, p, grad, group, state):
        raise NotImplementedError


def _check(name, value, low, opt):
    if not (np.isfinite(value) and value >= low):
        raise ValueError(f"{opt}: {name} must be a finite number >= {low}, got {value!r}")


class SGD(Optimizer):
    """Stochastic gradient descent, as torch.optim.SGD (dampening 0):

        g <- grad + weight_decay * p
        v <- momentum * v + g            (v = g at the first step)
        p <- p - lr * (g + momentum * v if nesterov else v)
    """

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0, nesterov=False):
        for name, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
            _check(name, value, 0, "SGD")
        if nesterov and momentum == 0:
            raise ValueError("SGD: nesterov=True needs momentum > 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov))

    def _update(self, p, grad, group, state):
        if group["weight_decay"]:
            grad = grad + group["weight_decay"] * p.data
        if group["momentum"]:
            if "velocity" not in state:
                state["velocity"] = grad.copy()
            else:
                state["velocity"] *= group["momentum"]
                state["velocity"] += grad
            grad = grad + group["momentum"] * state["velocity"] if group["nesterov"] else state["velocity"]
        p.data -= (group["lr"] * grad).astype(p.dtype, copy=False)


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015), as torch.optim.Adam:

        m <- beta1 m + (1 - beta1) g,   v <- beta2 v + (1 - beta2) g^2
        p <- p - lr * m_hat / (sqrt(v_hat) + eps),   m_hat = m / (1 - beta1^t), v_hat = v / (1 - beta2^t)
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        _check("lr", lr, 0, "Adam")
        _check("weight_decay", weight_decay, 0, "Adam")
        if not all(0 <= b < 1 for b in betas):
            raise ValueError(f"Adam: betas must be in [0, 1), got {betas!r}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    def _update(self, p, grad, group, state):
        (beta1, beta2), eps = group["betas"], group["eps"]
        if group["weight_decay"]:
            grad = grad + group["weight_decay"] * p.data
        if not state:
            state.update(t=0, m=np.zeros_like(p.data), v=np.zeros_like(p.data))
        state["t"] += 1
        m, v, t = state["m"], state["v"], state["t"]
        m *= beta1
        m += (1 - beta1) * grad
        v *= beta2
        v += (1 - beta2) * grad * grad
        denom = np.sqrt(v) / math.sqrt(1 - beta2**t) + eps
        p.data -= (group["lr"] / (1 - beta1**t) * m / denom).astype(p.dtype, copy=False)


class _Scheduler:
    """Sets each group's lr from its initial lr and the number of ``step()`` calls (one per epoch)."""

    def __init__(self, optimizer):
        self.optimizer, self.epoch = optimizer, 0

    def step(self):
        self.epoch += 1
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(group["initial_lr"], self.epoch)

    def get_last_lr(self):
        return [g["lr"] for g in self.optimizer.param_groups]


class StepLR(_Scheduler):
    """lr = initial_lr * gamma^(epoch // step_size)."""

    def __init__(self, optimizer, step_size, gamma=0.1):
        if not (isinstance(step_size, int) and step_size >= 1):
            raise ValueError(f"StepLR: step_size must be a positive int, got {step_size!r}")
        super().__init__(optimizer)
        self.step_size, self.gamma = step_size, gamma

    def lr_at(self, lr0, epoch):
        return lr0 * self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(_Scheduler):
    """lr = eta_min + (initial_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2."""

    def __init__(self, optimizer, T_max, eta_min=0.0):
        if not (isinstance(T_max, int) and T_max >= 1):
            raise ValueError(f"CosineAnnealingLR: T_max must be a positive int, got {T_max!r}")
        super().__init__(optimizer)
        self.T_max, self.eta_min = T_max, eta_min

    def lr_at(self, lr0, epoch):
        return self.eta_min + (lr0 - self.eta_min) * (1 + math.cos(math.pi * epoch / self.T_max)) / 2
