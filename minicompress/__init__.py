"""minicompress: model compression taught from scratch on NumPy.

Read in this order: ``tensor`` (autograd), ``functional`` and ``nn`` (layers), ``optim``, ``models``, then the
techniques: ``pruning``, ``quantization``, ``distillation``, ``binary``.
"""

from . import functional, models, nn, optim
from .gradcheck import gradcheck
from .tensor import (
    Function,
    Tensor,
    concatenate,
    default_rng,
    is_grad_enabled,
    manual_seed,
    matmul,
    maximum,
    minimum,
    no_grad,
    pad,
    tensor,
    topological_order,
    unbroadcast,
    where,
)

__version__ = "0.1.0"

__all__ = [
    "Function", "Tensor", "concatenate", "default_rng", "functional", "gradcheck", "is_grad_enabled",
    "manual_seed", "matmul", "maximum", "minimum", "models", "nn", "no_grad", "optim", "pad", "tensor",
    "topological_order", "unbroadcast", "where",
]  # fmt: skip
