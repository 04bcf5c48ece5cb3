"""Pruning: remove the weights that matter least.

The whole technique rests on one formula, the importance of a weight (Han et al. 2015):

    I(w) = |w|

Train, rank the weights by I(w), set the least important ones to zero, fine-tune. This module builds
everything else on top of `importance`:

1. Masks.  `l1_unstructured`, `random_unstructured`, `ln_structured`, `global_unstructured`,
   `custom_from_mask`, `remove`, `is_pruned` with the semantics of `torch.nn.utils.prune`:
   pruning `weight` turns it into a trainable `weight_orig` and a buffer `weight_mask`, and a forward
   pre-hook recomputes `weight = weight_orig * weight_mask` before every forward. Because the mask
   multiplies the weight inside the graph, dL/dweight_orig = dL/dweight * mask: pruned weights get
   zero gradient and stay pruned while the model is fine-tuned.
2. Schedules and loops.  The cubic schedule of Zhu & Gupta (2017) as a training callback
   (`GradualPruning`), iterative prune -> fine-tune rounds (`iterative_pruning`), lottery-ticket
   rewinding (`snapshot`, `rewind`), per-layer sensitivity (`sensitivity_analysis`).
3. Making it real.  A mask alone makes nothing smaller or faster: the zeros are still stored and still
   multiplied. `sparsity_report` counts them, `encode_sparse` / `save_sparse` store only the survivors
   (bitmask + values, CSR or COO, whichever is smallest, with its exact byte count), and `shrink`
   physically removes dead neurons / filters to give a smaller dense model with the same outputs.

Conventions (docs/CONVENTIONS.md, section 2):
- `amount`: a float in [0, 1] is a fraction and prunes round(amount * n) entries (Python's round, half
  to even); an int is an absolute count. n is the number of entries (or channels) still unpruned, so
  pruning twice with 0.5 leaves 25%.
- Ties: the entries with the smallest importance are pruned first; among equal importances the lowest
  flat index (for structured pruning: the lowest channel index; for global pruning: the earliest
  parameter in the list, then the lowest flat index) is pruned first (a stable sort). PyTorch leaves
  this choice unspecified, so masks can differ from PyTorch's only on exact ties.
- amount = 0 still reparametrises (all-ones mask), amount = 1 prunes every entry, as in PyTorch.
- Magnitude methods refuse NaN weights (a NaN has no rank); so does `random_unstructured`, for the
  same message everywhere.
"""
import copy
import math
import numbers
import time

import numpy as np

import minicompress as mc
from minicompress import checkpoint, nn


# ---------------------------------------------------------------------------------------------------
# 1. The formula
# ---------------------------------------------------------------------------------------------------

def importance(w):
    """Importance of each weight, I(w) = |w| (same shape as w); every magnitude method ranks by it."""
    return np.abs(_array(w))


def _array(x):
    return x.data if isinstance(x, mc.Tensor) else np.asarray(x)


def _n_to_prune(amount, n, where):
    """Number of entries to prune out of n: round(amount * n) for a float amount, amount for an int."""
    if isinstance(amount, bool) or not isinstance(amount, numbers.Real):
        raise TypeError(f"{where}: amount must be a float in [0, 1] (a fraction) or an int >= 0 "
                        f"(a count), got {amount!r}")
    if isinstance(amount, numbers.Integral):
        if not 0 <= amount <= n:
            raise ValueError(f"{where}: amount={int(amount)} entries, but only {n} are left to prune; "
                             f"allowed 0..{n}")
        return int(amount)
    amount = float(amount)
    if math.isnan(amount) or not 0.0 <= amount <= 1.0:
        raise ValueError(f"{where}: amount={amount} as a fraction must be in [0, 1] "
                         f"(use an int for a count)")
    return round(amount * n)


def _check_finite(w, what, where):
    bad = np.isnan(w)
    if bad.any():
        raise ValueError(f"{where}: {what} contains {int(bad.sum())} NaN value(s) out of {w.size}; "
                         f"NaN weights cannot be ranked, fix the training first")


# ---------------------------------------------------------------------------------------------------
# 2. Masks as plain NumPy (mask == 1: kept, mask == 0: pruned)
# ---------------------------------------------------------------------------------------------------

def unstructured_mask(scores, amount, mask=None, where="unstructured_mask"):
    """Mask pruning the entries with the lowest scores among those still unpruned.

    scores: array of any shape; mask: previous 0/1 mask of the same shape (default all ones).
    Prunes k = round(amount * m) (or k = amount for an int) of the m entries with mask == 1.
    Ties: stable sort, so the lowest flat index is pruned first.
    """
    scores = np.asarray(scores)
    mask = np.ones(scores.shape) if mask is None else np.asarray(mask)
    alive = np.flatnonzero(mask.reshape(-1))          # ascending flat indices
    k = _n_to_prune(amount, alive.size, where)
    order = np.argsort(scores.reshape(-1)[alive], kind="stable")
    new = mask.reshape(-1).copy()
    new[alive[order[:k]]] = 0
    return new.reshape(mask.shape)


def ln_norm(w, n, dim):
    """Ln norm of every slice of w along `dim`: (sum |w|^n)^(1/n) over all other axes, shape (w.shape[dim],).

    n = inf gives max |w|. Li et al. (2017) rank filters with n = 1.
    """
    w = _array(w)
    axes = tuple(a for a in range(w.ndim) if a != dim)
    magnitude = importance(w).astype(np.float64)
    if n == np.inf:
        return magnitude.max(axis=axes)
    return (magnitude ** n).sum(axis=axes) ** (1.0 / n)


def structured_mask(w, amount, n, dim, mask=None, where="structured_mask"):
    """Mask pruning whole slices of w along `dim` (neurons: dim 0 of a Linear weight, filters: dim 0 of a
    Conv2d weight) with the lowest Ln norm, among the slices that are not already entirely pruned.

    k = round(amount * c) (or amount for an int) of the c live slices are pruned; the rest of the
    previous mask is kept. Ties: lowest slice index pruned first. Pass the masked weights as w (as
    PyTorch does) so that earlier pruning counts in the norms.
    """
    w = _array(w)
    if w.ndim < 2:
        raise ValueError(f"{where}: structured pruning needs a tensor with at least 2 dimensions, "
                         f"got shape {w.shape}")
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or not -w.ndim <= dim < w.ndim:
        raise IndexError(f"{where}: dim={dim!r} is out of range for a tensor of shape {w.shape}; "
                         f"allowed {-w.ndim}..{w.ndim - 1}")
    if not (n == np.inf or (isinstance(n, numbers.Real) and not isinstance(n, bool) and n > 0)):
        raise ValueError(f"{where}: n={n!r} must be a number > 0 or inf (the order of the norm)")
    dim = int(dim) % w.ndim
    mask = np.ones(w.shape) if mask is None else np.asarray(mask)
    axes = tuple(a for a in range(w.ndim) if a != dim)
    alive = np.flatnonzero(mask.sum(axis=axes) != 0)
    k = _n_to_prune(amount, alive.size, where)
    norms = ln_norm(w, n, dim)
    pruned = alive[np.argsort(norms[alive], kind="stable")[:k]]
    new = mask.copy()
    index = [slice(None)] * w.ndim
    index[dim] = pruned
    new[tuple(index)] = 0
    return new


# ---------------------------------------------------------------------------------------------------
# 3. Reparametrisation: weight = weight_orig * weight_mask, recomputed before every forward
# ---------------------------------------------------------------------------------------------------

class PruningHook:
    """Forward pre-hook of a pruned parameter: sets module.<name> = <name>_orig * <name>_mask.

    The product is part of the autograd graph, so d loss / d <name>_orig = d loss / d <name> * mask.
    """

    def __init__(self, name):
        self.name = name
        self.handle = None

    def __call__(self, module, inputs):
        setattr(module, self.name, _masked(module, self.name))


def _masked(module, name):
    return getattr(module, name + "_orig") * getattr(module, name + "_mask")


def _hook(module, name):
    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, PruningHook) and hook.name == name:
            return hook
    return None


def _own_parameters(module):
    return [n for n, _ in module.named_parameters() if "." not in n]


def _orig_and_mask(module, name, where):
    """(values of the parameter, current mask) of module.<name>, pruned or not; checks the name."""
    if _hook(module, name) is not None:
        return getattr(module, name + "_orig").data, getattr(module, name + "_mask").data
    param = getattr(module, name, None)
    if not isinstance(param, nn.Parameter):
        raise AttributeError(f"{where}: {type(module).__name__} has no parameter {name!r}; "
                             f"its parameters are {_own_parameters(module)}")
    return param.data, np.ones_like(param.data)


def _apply_mask(module, name, mask):
    """Install (first call) or update (later calls) the reparametrisation with the given mask."""
    hook = _hook(module, name)
    if hook is None:
        param = getattr(module, name)
        delattr(module, name)
        module.register_parameter(name + "_orig", param)   # same object: optimizers keep working
        module.register_buffer(name + "_mask", mask.astype(param.data.dtype))
        hook = PruningHook(name)
        hook.handle = module.register_forward_pre_hook(hook)
    else:
        buffer = getattr(module, name + "_mask")
        buffer.data = mask.astype(buffer.data.dtype)
    setattr(module, name, _masked(module, name))
    return module


def l1_unstructured(module, name, amount):
    """Prune the entries of module.<name> with the smallest I(w) = |w| (PyTorch's l1_unstructured)."""
    w, mask = _orig_and_mask(module, name, "l1_unstructured")
    _check_finite(w, f"{type(module).__name__}.{name}", "l1_unstructured")
    return _apply_mask(module, name, unstructured_mask(importance(w * mask), amount, mask, "l1_unstructured"))


def random_unstructured(module, name, amount, seed=None):
    """Prune round(amount * m) of the m unpruned entries of module.<name> chosen uniformly at random."""
    w, mask = _orig_and_mask(module, name, "random_unstructured")
    _check_finite(w, f"{type(module).__name__}.{name}", "random_unstructured")
    scores = np.random.default_rng(seed).random(w.shape)
    return _apply_mask(module, name, unstructured_mask(scores, amount, mask, "random_unstructured"))


def ln_structured(module, name, amount, n, dim):
    """Prune whole slices along `dim` of module.<name> with the smallest Ln norm (PyTorch's ln_structured).

    dim=0 of a Linear weight (out, in) removes neurons, dim=0 of a Conv2d weight (out, in, kh, kw)
    removes filters; dim=1 removes inputs.
    """
    w, mask = _orig_and_mask(module, name, "ln_structured")
    _check_finite(w, f"{type(module).__name__}.{name}", "ln_structured")
    return _apply_mask(module, name, structured_mask(w * mask, amount, n, dim, mask, "ln_structured"))


def global_unstructured(parameters, amount):
    """Prune the entries with the smallest I(w) = |w| across all (module, name) pairs with one threshold.

    amount counts over the union of the still-unpruned entries. Unlike PyTorch there is no
    pruning_method argument: global pruning is always by magnitude.
    """
    parameters = list(parameters)
    if not parameters:
        raise ValueError("global_unstructured: parameters is empty; pass a list of (module, name) pairs")
    values, masks = [], []
    for module, name in parameters:
        w, mask = _orig_and_mask(module, name, "global_unstructured")
        _check_finite(w, f"{type(module).__name__}.{name}", "global_unstructured")
        values.append(w * mask)
        masks.append(mask)
    flat = unstructured_mask(importance(np.concatenate([v.reshape(-1) for v in values])), amount,
                             np.concatenate([m.reshape(-1) for m in masks]), "global_unstructured")
    start = 0
    for (module, name), v in zip(parameters, values):
        _apply_mask(module, name, flat[start:start + v.size].reshape(v.shape))
        start += v.size


def custom_from_mask(module, name, mask):
    """Prune module.<name> with a given 0/1 mask (combined with an existing mask by multiplication)."""
    w, old = _orig_and_mask(module, name, "custom_from_mask")
    mask = _array(mask)
    if mask.shape != w.shape:
        raise ValueError(f"custom_from_mask: mask has shape {mask.shape}, "
                         f"{type(module).__name__}.{name} has shape {w.shape}")
    if not np.isin(mask, (0, 1)).all():
        raise ValueError("custom_from_mask: mask must contain only 0 and 1")
    return _apply_mask(module, name, old * mask)


def remove(module, name):
    """Make pruning permanent: module.<name> becomes a plain Parameter equal to orig * mask.

    The Parameter object is the former <name>_orig, so optimizers that hold it keep working.
    """
    hook = _hook(module, name)
    if hook is None:
        raise ValueError(f"remove: parameter {name!r} of {type(module).__name__} has to be pruned "
                         f"before pruning can be removed")
    orig = getattr(module, name + "_orig")
    w = orig.data * getattr(module, name + "_mask").data
    hook.handle.remove()
    delattr(module, name)
    delattr(module, name + "_orig")
    delattr(module, name + "_mask")
    orig.data = w
    module.register_parameter(name, orig)
    return module


def is_pruned(module):
    """True if module or any of its submodules carries a pruning reparametrisation."""
    return any(isinstance(h, PruningHook) for m in module.modules()
               for h in m._forward_pre_hooks.values())


def restore_pruning(model, state):
    """Re-create the reparametrisations recorded in a state dict (keys '<prefix>.<name>_orig' and
    '<prefix>.<name>_mask') on a freshly built model, so that model.load_state_dict(state) then fits.

    Used by checkpoint.load and load_sparse: a pruned model comes back pruned, with the same masks.
    """
    modules = dict(model.named_modules())
    for key in state:
        if not key.endswith("_mask") or key[:-5] + "_orig" not in state:
            continue
        prefix, _, name = key[:-5].rpartition(".")
        module = modules.get(prefix)
        if module is None:
            raise KeyError(f"restore_pruning: state has {key!r} but the model has no module {prefix!r}")
        if _hook(module, name) is None:
            custom_from_mask(module, name, np.asarray(state[key]))
    return model


# ---------------------------------------------------------------------------------------------------
# 4. Which parameters, how sparse
# ---------------------------------------------------------------------------------------------------

def prunable(model):
    """The (module, "weight") pairs of every Linear and Conv2d layer of model, in order."""
    return [(m, "weight") for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def mask_of(module, name):
    """Current 0/1 mask of module.<name> (all ones if it is not pruned)."""
    return _orig_and_mask(module, name, "mask_of")[1]


def effective(module, name):
    """The weights the forward pass uses: orig * mask if pruned, else the parameter itself."""
    w, mask = _orig_and_mask(module, name, "effective")
    return w * mask


def _sparsities(sparsity, n, where="prune_to_sparsity"):
    if isinstance(sparsity, numbers.Real):
        sparsity = [sparsity] * n
    sparsity = [float(s) for s in sparsity]
    if len(sparsity) != n:
        raise ValueError(f"{where}: got {len(sparsity)} sparsities for {n} parameters")
    for s in sparsity:
        if math.isnan(s) or not 0.0 <= s <= 1.0:
            raise ValueError(f"{where}: sparsity={s} must be in [0, 1]")
    return sparsity


def prune_to_sparsity(parameters, sparsity, scope="layer"):
    """Prune by magnitude until the masks of `parameters` hold round(sparsity * size) zeros.

    scope="layer": each parameter reaches its own sparsity (a float, or one float per parameter);
    scope="global": the parameters together reach it (one float), with one threshold.
    Only prunes more, never un-prunes: a parameter already sparser than asked is left alone.
    """
    parameters = list(parameters)
    masks = [mask_of(m, n) for m, n in parameters]
    if scope == "global":
        (s,) = _sparsities(sparsity, 1)
        total = sum(mask.size for mask in masks)
        k = round(s * total) - sum(int((mask == 0).sum()) for mask in masks)
        if k > 0:
            global_unstructured(parameters, amount=k)
    elif scope == "layer":
        for (module, name), mask, s in zip(parameters, masks, _sparsities(sparsity, len(parameters))):
            k = round(s * mask.size) - int((mask == 0).sum())
            if k > 0:
                l1_unstructured(module, name, amount=k)
    else:
        raise ValueError(f"prune_to_sparsity: scope={scope!r}, allowed 'layer' or 'global'")


def _names(model):
    return {id(m): name for name, m in model.named_modules()}


def _label(names, module, name):
    prefix = names.get(id(module), "?")
    return f"{prefix}.{name}" if prefix else name


def sparsity_report(model):
    """One row per parameter tensor and a final 'total' row: dict(name, params, zeros, left).

    zeros counts entries that are exactly zero in the weights the forward pass uses (orig * mask),
    left = 1 - zeros / params.
    """
    names = _names(model)
    rows = []
    for module in model.modules():
        own = [n for n in _own_parameters(module) if not n.endswith("_orig")] + _pruned_names(module)
        for name in sorted(own, key=lambda n: (n != "weight", n)):
            w = effective(module, name)
            zeros = int((w == 0).sum())
            rows.append(dict(name=_label(names, module, name), params=w.size, zeros=zeros,
                             left=1.0 - zeros / w.size))
    params = sum(r["params"] for r in rows)
    zeros = sum(r["zeros"] for r in rows)
    rows.append(dict(name="total", params=params, zeros=zeros, left=1.0 - zeros / max(params, 1)))
    return rows


def _pruned_names(module):
    return [h.name for h in module._forward_pre_hooks.values() if isinstance(h, PruningHook)]


def format_report(rows):
    """The sparsity report as a text table."""
    lines = [f"{'parameter':<16}{'params':>10}{'zeros':>10}{'% left':>9}"]
    for r in rows:
        lines.append(f"{r['name']:<16}{r['params']:>10}{r['zeros']:>10}{100 * r['left']:>8.2f}%")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# 5. Schedules and loops
# ---------------------------------------------------------------------------------------------------

def agp_sparsity(t, s_f, s_i=0.0, t0=0, n=10, dt=1):
    """Zhu & Gupta (2017) cubic schedule: s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt))^3.

    Before t0 the sparsity is s_i, after t0 + n * dt it stays s_f. n (pruning steps) is an int >= 1, dt > 0.
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"agp_sparsity: n={n!r} is the number of pruning steps and must be an int >= 1")
    if isinstance(dt, bool) or not isinstance(dt, numbers.Real) or not 0 < dt < math.inf:
        raise ValueError(f"agp_sparsity: dt={dt!r} is the number of training steps between prunings and must be > 0")
    for name, value in (("t", t), ("t0", t0)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"agp_sparsity: {name}={value!r} must be a finite number (a training step)")
    s_f, s_i = _sparsities([s_f, s_i], 2, "agp_sparsity")
    progress = min(max((t - t0) / (n * dt), 0.0), 1.0)
    return s_f + (s_i - s_f) * (1.0 - progress) ** 3


class GradualPruning:
    """Training callback for minicompress.train.fit: gradual (cubic) magnitude pruning.

    At steps t = t0, t0 + dt, ..., t0 + n * dt the parameters are pruned to s_t = agp_sparsity(t, ...)
    (per layer with scope="layer", with one global threshold with scope="global"). Training continues
    between pruning steps, so the network recovers from each small cut. final_sparsity (and
    initial_sparsity) is a float, or with scope="layer" one float per parameter.
    self.history holds (t, s_t), s_t a float or a list like final_sparsity.
    """

    def __init__(self, parameters, final_sparsity, initial_sparsity=0.0, start_step=0, n_steps=10,
                 frequency=100, scope="layer"):
        for name, value, low in (("n_steps", n_steps, 1), ("frequency", frequency, 1), ("start_step", start_step, 0)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"GradualPruning: {name}={value!r} must be an int >= {low} (training steps)")
        if scope not in ("layer", "global"):
            raise ValueError(f"GradualPruning: scope={scope!r}, allowed 'layer' or 'global'")
        self.parameters = list(parameters)
        count = 1 if scope == "global" else len(self.parameters)
        self.s_f = _sparsities(final_sparsity, count, "GradualPruning")
        self.s_i = _sparsities(initial_sparsity, count, "GradualPruning")
        self.t0, self.n, self.dt, self.scope = start_step, n_steps, frequency, scope
        self._scalar = isinstance(final_sparsity, numbers.Real)
        self.history = []

    def on_step_end(self, model, step, loss):
        t = step
        if t < self.t0 or t > self.t0 + self.n * self.dt or (t - self.t0) % self.dt:
            return
        s_t = [agp_sparsity(t, s_f, s_i, self.t0, self.n, self.dt) for s_f, s_i in zip(self.s_f, self.s_i)]
        prune_to_sparsity(self.parameters, s_t if self.scope == "layer" else s_t[0], self.scope)
        self.history.append((t, s_t[0] if self._scalar else s_t))


def snapshot(model):
    """Copy of every parameter's values by name (for rewinding); pruned names map to their _orig."""
    return {name: p.data.copy() for name, p in model.named_parameters()}


def rewind(model, state):
    """Lottery ticket (Frankle & Carbin 2019): reset every parameter to its value in `state` (a
    snapshot taken before training), keeping all masks, so only the surviving weights matter."""
    for name, p in model.named_parameters():
        key = name if name in state else name[:-5] if name.endswith("_orig") else None
        if key not in state:
            raise KeyError(f"rewind: no value for parameter {name!r} in the snapshot")
        p.data = state[key].astype(p.data.dtype, copy=True)
    for module in model.modules():
        for name in _pruned_names(module):
            setattr(module, name, _masked(module, name))


def iterative_pruning(model, sparsity, rounds, finetune, evaluate=None, parameters=None, rewind_to=None,
                      scope="layer"):
    """Han et al. (2015): `rounds` times, prune by magnitude, then fine-tune.

    Round k (1..rounds) prunes to s_k = 1 - (1 - s)^(k / rounds), so each round removes the same
    fraction of what is left. sparsity: a float, or one float per parameter (scope="layer").
    parameters: (module, name) pairs, default `prunable(model)`. finetune(model, k) trains the model;
    evaluate(model) -> accuracy (optional). rewind_to: a `snapshot`; if given, the survivors are reset
    to it before each fine-tune (lottery ticket). Returns a list of dict(round, sparsity, accuracy).
    """
    parameters = prunable(model) if parameters is None else list(parameters)
    if isinstance(rounds, bool) or not isinstance(rounds, numbers.Integral) or rounds < 1:
        raise ValueError(f"iterative_pruning: rounds={rounds!r} must be an int >= 1")
    targets = _sparsities(sparsity, 1 if scope == "global" else len(parameters), "iterative_pruning")
    history = []
    for k in range(1, rounds + 1):
        s_k = [1.0 - (1.0 - s) ** (k / rounds) for s in targets]
        prune_to_sparsity(parameters, s_k if scope == "layer" else s_k[0], scope)
        if rewind_to is not None:
            rewind(model, rewind_to)
        finetune(model, k)
        masks = [mask_of(m, n) for m, n in parameters]
        history.append(dict(round=k, sparsity=sum(int((m == 0).sum()) for m in masks)
                            / sum(m.size for m in masks),
                            accuracy=None if evaluate is None else float(evaluate(model))))
    return history


def sensitivity_analysis(model, evaluate, sparsities=(0.5, 0.7, 0.8, 0.9, 0.95, 0.99), parameters=None):
    """Prune each layer alone (l1, on a copy of model) at each sparsity and evaluate the copy.

    evaluate(model) -> accuracy. Returns rows dict(layer, sparsity, accuracy), layer = parameter name.
    """
    parameters = prunable(model) if parameters is None else list(parameters)
    names = _names(model)
    rows = []
    for module, name in parameters:
        prefix = names[id(module)]
        for s in sparsities:
            trial = copy.deepcopy(model)
            prune_to_sparsity([(dict(trial.named_modules())[prefix], name)], s)
            rows.append(dict(layer=_label(names, module, name), sparsity=float(s),
                             accuracy=float(evaluate(trial))))
    return rows


# ---------------------------------------------------------------------------------------------------
# 6. Why is my pruned model not smaller? Sparse storage
# ---------------------------------------------------------------------------------------------------
# A pruned float32 tensor still holds n * 4 bytes, zeros included. Storing only the k survivors needs
# their values (4k bytes) plus where they are: a bitmask (ceil(n / 8) bytes), or one index per survivor
# (CSR: a column index per survivor and a row pointer per row; COO: one flat index per survivor), with
# the smallest unsigned integer type that fits. A bitmask wins above k/n = 1/16 with 2-byte indices.

SPARSE_FORMATS = ("dense", "bitmask", "csr", "coo")


def _index_dtype(largest):
    """Smallest unsigned integer dtype that holds 0..largest."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if largest <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


def sparse_candidates(w, mask=None):
    """Every storage of the array w: dict format -> dict of arrays (the exact payload, nothing implied).

    Kept entries: mask == 1 if a mask is given (the mask itself is then recoverable), else w != 0.
    dense: all values (only without a mask). bitmask: packbits(kept) + kept values. csr: w viewed as
    (shape[0], rest), values + column index per kept entry + row_ptr (rows + 1). coo: values + flat index.
    """
    w = _array(w)
    kept = (w != 0) if mask is None else (_array(mask) != 0)
    flat_kept = kept.reshape(-1)
    values = w.reshape(-1)[flat_kept]
    rows = w.shape[0] if w.ndim >= 1 and w.size else 1
    grid = kept.reshape(rows, -1)
    r, c = np.nonzero(grid)                                   # row-major, the order of `values`
    row_ptr = np.concatenate([[0], np.cumsum(grid.sum(axis=1))])
    candidates = {
        "bitmask": dict(bits=np.packbits(flat_kept), values=values),
        "csr": dict(values=values, col=c.astype(_index_dtype(max(grid.shape[1] - 1, 0))),
                    row_ptr=row_ptr.astype(_index_dtype(values.size))),
        "coo": dict(values=values, index=np.flatnonzero(flat_kept).astype(_index_dtype(max(w.size - 1, 0)))),
    }
    if mask is None:
        candidates = {"dense": dict(values=w.copy()), **candidates}
    return candidates


def payload_bytes(arrays):
    """Exact number of bytes of a stored format: the sum of its arrays' sizes (no container overhead)."""
    return sum(a.nbytes for a in arrays.values())


def encode_sparse(w, mask=None):
    """The smallest storage of w (see `sparse_candidates`): (format, arrays). Ties keep SPARSE_FORMATS order."""
    candidates = sparse_candidates(w, mask)
    best = min(candidates, key=lambda f: (payload_bytes(candidates[f]), SPARSE_FORMATS.index(f)))
    return best, candidates[best]


def decode_sparse(fmt, arrays, shape, dtype=np.float32):
    """Inverse of `encode_sparse`: (values of the given shape, kept mask as bool or None for dense)."""
    shape, n = tuple(shape), math.prod(shape)
    if fmt == "dense":
        return arrays["values"].astype(dtype).reshape(shape), None
    if fmt == "bitmask":
        kept = np.unpackbits(arrays["bits"], count=n).astype(bool)
    elif fmt == "csr":
        rows = shape[0] if len(shape) >= 1 and n else 1
        row = np.repeat(np.arange(rows), np.diff(arrays["row_ptr"].astype(np.int64)))
        grid = np.zeros((rows, n // rows if rows else 0), dtype=bool)
        grid[row, arrays["col"].astype(np.int64)] = True
        kept = grid.reshape(-1)
    elif fmt == "coo":
        kept = np.zeros(n, dtype=bool)
        kept[arrays["index"].astype(np.int64)] = True
    else:
        raise ValueError(f"decode_sparse: unknown format {fmt!r}, allowed {SPARSE_FORMATS}")
    values = np.zeros(n, dtype=dtype)
    values[kept] = arrays["values"]
    return values.reshape(shape), kept.reshape(shape)


def _storage_plan(model):
    """(key, values, mask or None) per tensor of the state dict; pruned pairs become one entry."""
    state = model.state_dict()
    plan = []
    for key, value in state.items():
        if key.endswith("_mask") and key[:-5] + "_orig" in state:
            continue
        if key.endswith("_orig") and key[:-5] + "_mask" in state:
            mask = state[key[:-5] + "_mask"]
            plan.append((key[:-5], value * mask, mask))
        else:
            plan.append((key, value, None))
    return plan


def sparse_size(model):
    """Per tensor and in total: dict(name, format, dense_bytes, bytes), the chosen storage's exact size.

    dense_bytes is what the same tensor takes as a plain array (float32: 4 bytes per entry); masks are
    not counted there because a dense model does not need them.
    """
    rows = []
    for key, values, mask in _storage_plan(model):
        if np.issubdtype(values.dtype, np.floating):
            fmt, arrays = encode_sparse(values, mask)
        else:
            fmt, arrays = "dense", dict(values=values)
        rows.append(dict(name=key, format=fmt, dense_bytes=values.nbytes, bytes=payload_bytes(arrays)))
    rows.append(dict(name="total", format="", dense_bytes=sum(r["dense_bytes"] for r in rows),
                     bytes=sum(r["bytes"] for r in rows)))
    return rows


def save_sparse(model, path, overwrite=True):
    """Save a (pruned) zoo model storing each tensor in its smallest format (checkpoint kind "pruned").

    Lossless for everything the model computes with: the effective weights orig * mask and the masks
    themselves are restored exactly. The entries of <name>_orig under a zero mask are not stored (they
    are multiplied by 0 and receive zero gradient); they come back as 0.
    Returns the payload size in bytes (the file adds the npz container and the JSON metadata).
    """
    spec = getattr(model, "spec", None)
    arrays, tensors = {}, []
    for key, values, mask in _storage_plan(model):
        if np.issubdtype(values.dtype, np.floating):
            fmt, parts = encode_sparse(values, mask)
        else:
            fmt, parts = "dense", dict(values=values)
        tensors.append(dict(key=key, format=fmt, shape=list(values.shape), dtype=str(values.dtype),
                            pruned=mask is not None))
        arrays.update({f"{key}:{part}": a for part, a in parts.items()})
    checkpoint.write_npz(path, arrays, dict(kind="pruned", spec=spec, tensors=tensors), overwrite=overwrite)
    return sum(a.nbytes for a in arrays.values())


def load_sparse(path, model=None):
    """Load a file written by `save_sparse`: rebuild the zoo model from its spec (or fill `model`),
    re-create the pruning reparametrisations, and copy the values in. A corrupt or crafted file raises
    checkpoint.CheckpointError naming the file and the field."""
    return checkpoint.load(path, kind="pruned", model=model)


def _check_sparse(fmt, parts, shape, dtype, where):
    """Every structural fact decode_sparse relies on: sizes, index dtypes, ranges and order."""
    n = math.prod(shape)
    if fmt not in SPARSE_FORMATS:
        raise checkpoint.CheckpointError(f"{where}: unknown sparse format {fmt!r}, allowed {SPARSE_FORMATS}")
    values = checkpoint.array(parts, "values", where, kinds="biuf" if fmt == "dense" else "f",
                             ndim=None if fmt == "dense" else 1)
    if fmt == "dense":
        kept = values.size if values.shape in (shape, (n,)) else -1
    elif fmt == "bitmask":
        bits = checkpoint.array(parts, "bits", where, kinds="u", ndim=1)
        if bits.dtype != np.uint8 or bits.size != -(-n // 8) or np.unpackbits(bits)[n:].any():
            raise checkpoint.CheckpointError(f"{where}: bitmask of {bits.size} bytes does not fit {n} entries")
        kept = int(np.unpackbits(bits, count=n).sum())
    elif fmt == "csr":
        rows = shape[0] if len(shape) >= 1 and n else 1
        cols = n // rows if rows else 0
        ptr = checkpoint.array(parts, "row_ptr", where, kinds="iu", ndim=1).astype(np.int64)
        col = checkpoint.array(parts, "col", where, kinds="iu", ndim=1).astype(np.int64)
        if ptr.size != rows + 1 or ptr[0] != 0 or (np.diff(ptr) < 0).any() or ptr[-1] != col.size:
            raise checkpoint.CheckpointError(f"{where}: CSR row pointers do not describe {rows} rows of "
                                             f"{col.size} entries")
        row = np.repeat(np.arange(rows), np.diff(ptr))
        flat = row * cols + col
        if col.size and (col.min() < 0 or col.max() >= cols or (np.diff(flat) <= 0).any()):
            raise checkpoint.CheckpointError(f"{where}: CSR column indices out of [0, {cols}) or not increasing")
        kept = col.size
    else:
        index = checkpoint.array(parts, "index", where, kinds="iu", ndim=1).astype(np.int64)
        if index.size and (index.min() < 0 or index.max() >= n or (np.diff(index) <= 0).any()):
            raise checkpoint.CheckpointError(f"{where}: COO indices out of [0, {n}) or not increasing")
        kept = index.size
    if values.size != kept:
        raise checkpoint.CheckpointError(f"{where}: {values.size} values for {kept} kept entries")
    if fmt != "dense" and dtype.kind != "f":
        raise checkpoint.CheckpointError(f"{where}: sparse format {fmt!r} for dtype {dtype}")


def _build_sparse(arrays, meta, where, model=None):
    """checkpoint builder of kind "pruned" (see save_sparse)."""
    if model is None:
        model, _ = checkpoint.build_zoo_model(meta.get("spec"), where)
    tensors = checkpoint.field(meta, "tensors", list, where)
    own = {k.removesuffix("_orig"): v.shape for k, v in model.state_dict().items() if not k.endswith("_mask")}
    state, used = {}, set()
    for i, t in enumerate(tensors):
        at = f"{where}: tensors[{i}]"
        key = checkpoint.field(t, "key", str, at)
        fmt = checkpoint.field(t, "format", str, at)
        shape = checkpoint.shape_field(t, "shape", at)
        dtype = np.dtype(checkpoint.field(t, "dtype", str, at))
        if dtype.kind not in "biuf" or dtype.fields is not None:
            raise checkpoint.CheckpointError(f"{at}: dtype {dtype} is not a numeric dtype")
        pruned = checkpoint.field(t, "pruned", bool, at)
        if own.get(key) != shape:  # before decoding: a declared shape cannot make us allocate more than the model
            raise checkpoint.CheckpointError(f"{at}: {key!r} of shape {list(shape)} does not fit the model "
                                             f"({own.get(key, 'no such tensor')})")
        parts = {k.rpartition(":")[2]: a for k, a in arrays.items() if k.rpartition(":")[0] == key}
        used.update(f"{key}:{part}" for part in parts)
        _check_sparse(fmt, parts, shape, dtype, f"{at} ({key})")
        values, kept = decode_sparse(fmt, parts, shape, dtype)
        if pruned:
            if kept is None:
                raise checkpoint.CheckpointError(f"{at} ({key}): a pruned tensor stored without its mask")
            state[key + "_orig"] = values
            state[key + "_mask"] = kept.astype(values.dtype)
        else:
            state[key] = values
    if set(arrays) - used:
        raise checkpoint.CheckpointError(f"{where}: arrays {sorted(set(arrays) - used)[:5]} belong to no tensor")
    checkpoint.check_running_var(state, where)
    try:
        restore_pruning(model, state)
        model.load_state_dict(state)
    except (KeyError, ValueError) as exc:
        raise checkpoint.CheckpointError(f"{where}: the tensors do not fit the model ({exc})") from exc
    return model


checkpoint.register_kind("pruned", _build_sparse)


# ---------------------------------------------------------------------------------------------------
# 7. Why is my pruned model not faster? Physically removing neurons and filters
# ---------------------------------------------------------------------------------------------------
# A zero weight costs as much as any other in a dense matmul. Only removing whole rows (neurons) or
# filters shrinks the matrices: a unit j of layer L can go when its output is never used (column j of
# the next layer is zero) or when its weights are all zero, so that it outputs the constant act(b_j);
# that constant is then folded into the next layer's bias: b' = b + W[:, j] * act(b_j).

_PASS_THROUGH = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.Identity, nn.Dropout, nn.MaxPool2d, nn.Flatten)


def _layer_chain(model):
    """Pairs (i, j, between) of consecutive Linear/Conv2d layers of a Sequential with only pass-through
    modules (activations, pooling, flatten, dropout) between them."""
    layers = list(model)
    pairs, last = [], None
    for j, m in enumerate(layers):
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            if last is not None and all(_passes_constant(x) for x in layers[last + 1:j]):
                pairs.append((last, j, layers[last + 1:j]))
            last = j
    return pairs


def _passes_constant(m):
    """True for modules that map a constant channel to a constant channel (pooling only unpadded)."""
    return isinstance(m, _PASS_THROUGH) and not (isinstance(m, nn.MaxPool2d) and m.padding)


def _constant_through(between, c):
    """Value after the pass-through modules of a unit whose pre-activation is the constant c."""
    x = np.array(c, dtype=np.float64)
    for m in between:
        if isinstance(m, nn.ReLU):
            x = np.maximum(x, 0.0)
        elif isinstance(m, nn.Tanh):
            x = np.tanh(x)
        elif isinstance(m, nn.Sigmoid):
            x = 1.0 / (1.0 + np.exp(-x))
    return x                                         # pooling, flatten, dropout (eval) keep a constant


def shrink(model):
    """A smaller dense copy of a Sequential model without its removable neurons / filters.

    For each pair of consecutive Linear/Conv2d layers (L, N), unit j of L (row j of a Linear weight,
    filter j of a Conv2d) is removed together with the matching inputs of N (columns, input channels,
    or the block of flattened features of channel j) when either
      - N does not use it (those inputs of N are all zero), or
      - L's weights of unit j are all zero, so it outputs the constant a_j = act(b_j); a_j is folded
        into N's bias (b_N += sum of N's weights on unit j * a_j), exact when N is a Linear or an
        unpadded Conv2d (a padded Conv2d would see zeros at the border instead of a_j, so then unit j
        is kept unless a_j = 0).
    The result is in eval mode, uses the effective weights orig * mask, carries no pruning
    reparametrisation, and gives the same outputs up to float rounding. Output units are never removed.
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"shrink: expects an nn.Sequential, got {type(model).__name__}")
    small = copy.deepcopy(model)
    for module in small.modules():
        for name in _pruned_names(module):
            remove(module, name)
    layers = list(small)
    for i, j, between in _layer_chain(small):
        L, N = layers[i], layers[j]
        W = L.weight.data
        b = L.bias.data if L.bias is not None else np.zeros(W.shape[0], W.dtype)
        V = N.weight.data
        units = W.shape[0]
        if V.shape[1] % units:
            continue
        # a Linear after Flatten sees channel j as a block of H * W features (NCHW order)
        V_units = V.reshape(V.shape[0], units, -1)
        dead = ~W.reshape(units, -1).any(axis=1)
        unused = ~V_units.any(axis=(0, 2))
        a = _constant_through(between, b)
        padded = isinstance(N, nn.Conv2d) and max(N.padding) > 0
        fold = dead & ~unused & ~(padded & (a != 0))
        removable = unused | fold
        if not removable.any() or removable.all():
            continue
        if N.bias is None and (fold & (a != 0)).any():
            N.register_parameter("bias", nn.Parameter(np.zeros(V.shape[0], dtype=V.dtype)))
        if (fold & (a != 0)).any():
            N.bias.data = (N.bias.data + (V_units[:, fold].sum(axis=2) @ a[fold])).astype(V.dtype)
        keep = ~removable
        layers[i] = _shrunk_out(L, keep)
        layers[j] = _shrunk_in(N, keep, V_units)
    result = nn.Sequential(*layers)
    result.eval()
    spec = _mlp_spec(result)
    if spec:
        result.spec = spec                       # a shrunk MLP is again a zoo MLP: checkpoint.save works
    return result


def _mlp_spec(model):
    """The models.mlp spec that builds a network of model's structure, or None."""
    from minicompress import models
    linears = [m for m in model if isinstance(m, nn.Linear)]
    if not linears or not isinstance(model[0], nn.Flatten):
        return None
    twin = models.mlp([linears[0].in_features] + [m.out_features for m in linears])
    same = [type(m) for m in twin] == [type(m) for m in model] and all(m.bias is not None for m in linears)
    return twin.spec if same else None


def _shrunk_out(L, keep):
    """Copy of layer L with only the output units where keep is True."""
    if isinstance(L, nn.Linear):
        new = nn.Linear(L.in_features, int(keep.sum()), bias=L.bias is not None)
    else:
        new = nn.Conv2d(L.in_channels, int(keep.sum()), L.kernel_size, L.stride, L.padding, bias=L.bias is not None)
    new.weight.data = L.weight.data[keep].copy()
    if L.bias is not None:
        new.bias.data = L.bias.data[keep].copy()
    return new


def _shrunk_in(N, keep, V_units):
    """Copy of layer N with only the inputs belonging to the kept units of the previous layer."""
    V = V_units[:, keep]
    if isinstance(N, nn.Linear):
        new = nn.Linear(V.shape[1] * V.shape[2], N.out_features, bias=N.bias is not None)
        new.weight.data = V.reshape(N.out_features, -1).copy()
    else:
        new = nn.Conv2d(int(keep.sum()), N.out_channels, N.kernel_size, N.stride, N.padding, bias=N.bias is not None)
        new.weight.data = V.reshape((N.out_channels, -1) + N.kernel_size).copy()
    if N.bias is not None:
        new.bias.data = N.bias.data.copy()
    return new


def inference_ms(model, x, repeats=20):
    """Median wall time in milliseconds of one forward pass of model on x (eval mode, no_grad)."""
    was_training = model.training
    model.eval()
    times = []
    with mc.no_grad():
        model(x)                                          # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    model.train(was_training)
    return 1000.0 * float(np.median(times))
