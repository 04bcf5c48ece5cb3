"""The model zoo: the networks of the papers in TARGETS.md. Every model takes (N, 1, 28, 28) images and returns
(N, 10) logits, and carries a ``spec`` string from which ``from_spec`` rebuilds it (used by checkpoints)."""

from . import nn


def mlp(sizes, activation="relu", dropout=0.0):
    """Fully connected network, e.g. ``mlp([784, 300, 100, 10])``: Flatten, then Linear layers with an activation
    between them (none after the last). dropout > 0 adds Dropout(dropout) after each hidden activation, as in
    Hinton et al.'s and Srivastava et al.'s regularised MLPs."""
    sizes = list(sizes)
    if len(sizes) < 2 or not all(isinstance(s, int) and s > 0 for s in sizes):
        raise ValueError(f"mlp: sizes must be at least two positive ints, got {sizes!r}")
    acts = {"relu": nn.ReLU, "tanh": nn.Tanh}
    if activation not in acts:
        raise ValueError(f"mlp: activation must be one of {sorted(acts)}, got {activation!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"mlp: dropout must be a number in [0, 1), got {dropout!r}")
    layers = [nn.Flatten()]
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(acts[activation]())
            if dropout:
                layers.append(nn.Dropout(dropout))
    model = nn.Sequential(*layers)
    model.spec = ("mlp:" + "-".join(map(str, sizes)) + ("" if activation == "relu" else f":{activation}")
                  + (f":dropout={dropout:g}" if dropout else ""))
    return model


def lenet300_100():
    """LeNet-300-100 (LeCun et al. 1998; Han et al. 2015): 784-300-100-10 with ReLU, 266,610 parameters."""
    model = mlp([784, 300, 100, 10])
    model.spec = "lenet300_100"
    return model


def lenet5():
    """LeNet-5 as in Han et al. 2015 (Caffe's variant with ReLU and max pooling), 61,706 parameters:
    conv 6@5x5 (padding 2) - pool 2 - conv 16@5x5 - pool 2 - fc 120 - fc 84 - fc 10."""
    model = nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, 10),
    )  # fmt: skip
    model.spec = "lenet5"
    return model


def lenet5_caffe():
    """The LeNet-5 of Han et al. 2015/2016 (Caffe's example), 431,080 parameters: conv 20@5x5 - pool 2 -
    conv 50@5x5 - pool 2 - fc 500 (ReLU) - fc 10, no activation after the convolutions, as in Caffe.
    Deep Compression's "LeNet-5, 1720 KB" is this network, 7x larger than ``lenet5``."""
    model = nn.Sequential(
        nn.Conv2d(1, 20, 5), nn.MaxPool2d(2),
        nn.Conv2d(20, 50, 5), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(800, 500), nn.ReLU(),
        nn.Linear(500, 10),
    )  # fmt: skip
    model.spec = "lenet5_caffe"
    return model


def from_spec(spec):
    """Build a model from its spec: "lenet300_100", "lenet5", "lenet5_caffe" or "mlp:784-30-30-10", the mlp
    optionally followed by ":tanh" and / or ":dropout=0.5"."""
    if spec == "lenet300_100":
        return lenet300_100()
    if spec == "lenet5":
        return lenet5()
    if spec == "lenet5_caffe":
        return lenet5_caffe()
    if isinstance(spec, str) and spec.startswith("mlp:"):
        parts = spec.split(":")
        try:
            sizes = [int(s) for s in parts[1].split("-")]
            options = {}
            for part in parts[2:]:
                key, value = ("dropout", float(part[8:])) if part.startswith("dropout=") else ("activation", part)
                if key in options:
                    raise ValueError
                options[key] = value
        except ValueError:
            sizes = None
        if sizes:
            return mlp(sizes, **options)
    raise ValueError(
        f"from_spec: unknown model {spec!r}; use 'lenet300_100', 'lenet5', 'lenet5_caffe' or 'mlp:784-30-30-10' "
        "(optionally ':tanh', ':dropout=0.5')"
    )


_FIXED_COUNTS = {"lenet300_100": 266_610, "lenet5": 61_706, "lenet5_caffe": 431_080}


def parameter_count(spec):
    """Number of parameters of ``from_spec(spec)``, computed from the spec without building the model (so a file
    declaring absurd layer sizes can be refused before anything is allocated). Raises ValueError like from_spec."""
    if spec in _FIXED_COUNTS:
        return _FIXED_COUNTS[spec]
    if isinstance(spec, str) and spec.startswith("mlp:"):
        try:
            sizes = [int(s) for s in spec.split(":")[1].split("-")]
        except ValueError:
            sizes = []
        if len(sizes) >= 2 and all(s > 0 for s in sizes):
            return sum(a * b + b for a, b in zip(sizes, sizes[1:]))
    from_spec(spec)  # raises the ValueError that names the allowed specs
    raise ValueError(f"parameter_count: cannot count {spec!r}")
