"""Labs: exercises a student solves in NumPy, each checked against minicompress's own implementation.

Each tutorial has a lab (tutorials/labs/NN_<name>_lab.ipynb) in which the student writes the piece the tutorial
explained, and each exercise ends with one call to a check from the lab's module here::

    from minicompress.labs import pruning as lab
    def importance(w):
        ...
    lab.check_importance(importance)   # [passed] 1.1 importance: 4 cases, ...

Modules, in the order of the course: ``autograd`` (lab 0), ``pruning`` (1), ``quantization`` (2),
``distillation`` (3), ``binary`` (4), ``pipeline`` (5); the shared machinery is in ``checking``, and
``notebooks`` turns solution notebooks into student versions and grades an executed notebook.
"""

import importlib

# notebook stem -> module of its checks
LABS = {
    "00_autograd_lab": "autograd",
    "01_pruning_lab": "pruning",
    "02_quantization_lab": "quantization",
    "03_distillation_lab": "distillation",
    "04_binary_lab": "binary",
    "05_pipeline_lab": "pipeline",
}


def lab_module(name):
    """The module of lab ``name`` ("pruning" or its notebook stem "01_pruning_lab")."""
    name = LABS.get(name, name)
    if name not in LABS.values():
        raise ValueError(f"minicompress.labs: unknown lab {name!r}; the labs are {', '.join(LABS.values())}")
    return importlib.import_module(f"minicompress.labs.{name}")
