"""The machinery shared by every lab: run a student's function, compare it with the library, say what broke.

A check is a teacher, not a judge. It runs the student's function on the tutorial's concrete numbers, on seeded
random cases and on edge cases (ties, amount 0 and 1, constant tensors, zero, large logits), compares each answer
with minicompress's own implementation, and prints exactly one line:

    [passed] 1.2 unstructured_mask: 9 cases, including the tutorial's numbers
    [not attempted] 1.2 unstructured_mask: replace `raise NotImplementedError()` with your code
    [failed] 1.2 unstructured_mask: w=[...], amount=0.25: expected [...], got [...]. Hint: ...

The hint names the formula or convention that was broken. Where the wrong answer is one a known mistake would
give (the *mistake catalogue* of each exercise: floor instead of round, w instead of |w|, ...), the hint is that
mistake's; otherwise it restates the formula. A check never prints the reference code, only values, and an
exception in the student's code becomes part of the line, never a crash of the notebook.

Set the environment variable MINICOMPRESS_LABS_STRICT=1 to make a check that does not pass raise AssertionError
after printing its line: nbgrader counts a test cell as passed when it does not raise.
"""

import copy
import functools
import os
import traceback
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..tensor import Tensor

PASSED, FAILED, NOT_ATTEMPTED = "passed", "failed", "not attempted"
STATUSES = (PASSED, FAILED, NOT_ATTEMPTED)
LINE_PATTERN = r"^\[(passed|failed|not attempted)\] (\d+\.\d+) (\w+): (.*)$"
"""Regular expression of a check's line; the autograder reads scores from it."""


# --------------------------------------------------------------------------------------------------------------------
# 1. Exercises, cases and mistakes
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class Case:
    """One input of a check: positional arguments, and optionally how to show them (default: name=value)."""

    args: tuple
    shown: str | None = None


@dataclass
class Mistake:
    """A plausible wrong solution and the hint for it. ``wrong`` takes the case's arguments; ``hint`` is a string
    or a function of the case's arguments returning one (to quote the case's own numbers)."""

    wrong: Callable
    hint: Any


@dataclass
class Check:
    """What one exercise's check needs.

    reference: the library's answer for a case's arguments. call: how to run the student's object on the arguments
    (default fn(*args)). compare(expected, obtained) -> None when they agree, else a short reason.
    names: the argument names shown in a failure. hint: the formula, shown when no known mistake explains a failure.
    errors: hints for exceptions a known mistake raises (a ZeroDivisionError when eps was forgotten).
    """

    reference: Callable
    cases: list
    names: tuple
    hint: str
    compare: Callable = None
    mistakes: list = field(default_factory=list)
    call: Callable = None
    summary: str = ""
    errors: dict = field(default_factory=dict)  # exception type name -> hint, for mistakes that raise


@dataclass
class Result:
    number: str
    name: str
    status: str
    message: str

    def line(self):
        return f"[{self.status}] {self.number} {self.name}: {self.message}"


class Lab:
    """The exercises of one lab, in order. ``Lab.exercise`` turns a function returning a Check into the public
    ``check_<name>(fn)`` that a notebook calls."""

    def __init__(self, number, title):
        self.number, self.title = number, title
        self.exercises = {}  # exercise name -> number "L.k"

    def exercise(self, name):
        number = f"{self.number}.{len(self.exercises) + 1}"
        self.exercises[name] = number

        def register(make_check):
            @functools.wraps(make_check)
            def check(fn):
                result = run(number, name, fn, make_check())
                print(result.line())
                if result.status != PASSED and os.environ.get("MINICOMPRESS_LABS_STRICT", "0") not in ("", "0"):
                    raise AssertionError(result.line())

            check.__doc__ = (f"Exercise {number}: check your `{name}`. Prints one line: passed, not attempted, or "
                             f"failed with the input, the expected and the obtained value and a hint.")
            return check

        return register


# --------------------------------------------------------------------------------------------------------------------
# 2. Running a student's function
# --------------------------------------------------------------------------------------------------------------------


def _quietly(fn, *args):
    """fn(*args) with NumPy's warnings silenced: a check prints one line, whatever the code inside does."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return fn(*copy.deepcopy(args))


def _where(exc):
    """The student's line that raised, if the traceback reaches one (frames outside NumPy and the labs)."""
    here = os.path.dirname(__file__)
    numpy_dir = os.path.dirname(np.__file__)
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.startswith((here, numpy_dir)) and f.line]
    return f" at `{frames[-1].line.strip()}`" if frames else ""


def run(number, name, fn, check):
    """Run the student's ``fn`` on every case of ``check``; the Result of the first failure, or passed."""
    if fn is None or not callable(fn):
        return Result(number, name, FAILED, f"pass your function (or class) itself, got {_fmt(fn)}")
    call = check.call or (lambda f, *args: f(*args))
    compare = check.compare or same()
    for case in check.cases:
        case = case if isinstance(case, Case) else Case(tuple(case))
        expected = _quietly(check.reference, *case.args)
        try:
            obtained = _quietly(call, fn, *case.args)
        except NotImplementedError:
            return Result(number, name, NOT_ATTEMPTED, "replace `raise NotImplementedError()` with your code")
        except Exception as exc:  # the student's bug, reported as part of the line
            text = " ".join(str(exc).split())[:300]
            return Result(number, name, FAILED, f"{_show(case, check.names)}: your code raised "
                          f"{type(exc).__name__}: {text}{_where(exc)}. "
                          f"Hint: {check.errors.get(type(exc).__name__, check.hint)}")
        problem = compare(expected, obtained)
        if problem is None:
            continue
        hint = _diagnose(case, obtained, check, compare) or check.hint
        return Result(number, name, FAILED, f"{_show(case, check.names)}: expected {_fmt(expected)}, got "
                      f"{_fmt(obtained)} ({problem}). Hint: {hint}")
    summary = check.summary or "including the tutorial's numbers and edge cases"
    return Result(number, name, PASSED, f"{len(check.cases)} cases, {summary}")


def _diagnose(case, obtained, check, compare):
    """The hint of the first catalogued mistake that gives exactly the student's answer on this case."""
    for mistake in check.mistakes:
        try:
            wrong = _quietly(mistake.wrong, *case.args)
        except Exception:
            continue
        if compare(wrong, obtained) is None:
            return mistake.hint(*case.args) if callable(mistake.hint) else mistake.hint
    return None


# --------------------------------------------------------------------------------------------------------------------
# 3. Comparing answers
# --------------------------------------------------------------------------------------------------------------------


def _array(x):
    return x.data if isinstance(x, Tensor) else np.asarray(x)


def same(rtol=1e-5, atol=1e-7, exact=False):
    """Compare arrays (or numbers): same shape, then equal (exact) or close; NaN only matches NaN."""

    def compare(expected, obtained):
        if obtained is None:
            return "your function returned None: is a `return` missing?"
        try:
            o = _array(obtained)
            if o.dtype == object:
                raise ValueError
            o = o.astype(np.float64) if o.dtype.kind in "biuf" else o
        except (ValueError, TypeError):
            return f"expected numbers, got {type(obtained).__name__}"
        e = _array(expected).astype(np.float64)
        if o.shape != e.shape:
            return f"shape {o.shape} instead of {e.shape}"
        if o.dtype.kind != "f":
            return f"expected numbers, got dtype {o.dtype}"
        if np.isnan(o).any() and not np.isnan(e).any():
            return "your result contains NaN"
        if np.isinf(o).any() and not np.isinf(e).any():
            return "your result contains inf"
        ok = np.array_equal(e, o, equal_nan=True) if exact else np.allclose(o, e, rtol=rtol, atol=atol, equal_nan=True)
        if ok:
            return None
        wrong = ~np.isclose(o, e, rtol=0 if exact else rtol, atol=0 if exact else atol, equal_nan=True)
        return "values differ" if e.ndim == 0 else f"{int(wrong.sum())} of {e.size} values differ"

    return compare


def each(*compares, names=None):
    """Compare tuples (or lists) element by element with one compare per element (or the same for all)."""

    def compare(expected, obtained):
        if not isinstance(obtained, (tuple, list)) or len(obtained) != len(expected):
            n = len(expected)
            return f"expected {n} values{' (' + ', '.join(names) + ')' if names else ''}, got {_kind(obtained)}"
        for i, (e, o) in enumerate(zip(expected, obtained)):
            c = compares[i] if len(compares) > 1 else compares[0]
            problem = c(e, o)
            if problem is not None:
                label = names[i] if names else f"value {i + 1}"
                return f"{label}: {problem}"
        return None

    return compare


def _kind(x):
    return f"{len(x)} values" if isinstance(x, (tuple, list)) else f"a {type(x).__name__}"


# --------------------------------------------------------------------------------------------------------------------
# 4. Showing values in one line
# --------------------------------------------------------------------------------------------------------------------


def _fmt(x):
    """A value as the student would read it: arrays on one line (long ones shortened), dtype when it matters."""
    if isinstance(x, Tensor):
        return _fmt(x.data)
    if isinstance(x, np.ndarray):
        text = np.array2string(x, separator=", ", threshold=24, edgeitems=3, max_line_width=10**6,
                               formatter={"float_kind": lambda v: f"{v:.7g}"})
        text = " ".join(text.split())
        if x.dtype not in (np.float64, np.int64, np.bool_):
            text += f" ({x.dtype})"
        return text
    if isinstance(x, np.generic):
        value = f"{x.item():.8g}" if isinstance(x, np.floating) else repr(x.item())
        return value if x.dtype in (np.float64, np.int64) else f"{value} ({x.dtype})"
    if isinstance(x, float):
        return f"{x:.8g}"
    if isinstance(x, (tuple, list)) and type(x) not in (tuple, list):
        return repr(x)  # a list subclass that knows how to show itself
    if isinstance(x, (tuple, list)) and x and all(isinstance(v, Tensor) and hasattr(v, "name") for v in x):
        return "[" + ", ".join(v.name for v in x) + "]"  # graph nodes, by name
    if isinstance(x, (tuple, list)):
        inner = ", ".join(_fmt(v) for v in x)
        return f"({inner})" if isinstance(x, tuple) else f"[{inner}]"
    if callable(x):
        return getattr(x, "__name__", type(x).__name__)
    text = repr(x)
    return text if len(text) <= 200 else text[:200] + "..."


def _show(case, names):
    if case.shown is not None:
        return case.shown
    return ", ".join(f"{n}={_fmt(a)}" for n, a in zip(names, case.args))
