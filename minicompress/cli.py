"""The `minicompress` command line (also `python -m minicompress`).

Each name in COMMANDS is a module minicompress/commands/<name>.py exposing add_parser(subparsers), which
registers its subparser and sets func=run; run(args) returns an exit code (None means 0).
A technique adds its command by appending its module name here (list only modules that exist).

User errors (bad arguments, missing or invalid files) and every OSError (permission denied, disk full, a folder
given as a file) print one line to stderr naming the path and the reason, and exit with code 2; set
MINICOMPRESS_DEBUG=1 to see the full traceback instead.

BLAS threads: minicompress's matrices are small, so several BLAS threads gain little, and on a busy machine they
spin against each other: the demo measured 12 s with one thread and 180 s with two on a loaded 2-core machine.
BLAS reads its thread count once, when NumPy is first imported, which has already happened when main() runs;
so the command restarts itself once with OPENBLAS_NUM_THREADS=1 unless the user set a thread count.
"""
import argparse
import importlib
import os
import sys

_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

COMMANDS = ["train", "evaluate", "demo", "prune", "quantize", "distill", "binarize", "compress"]
COMMANDS += ["labs"]  # hand out and grade the labs (tutorials/labs/)
COMMANDS += ["export", "import_model"]  # TensorFlow Lite / ONNX out, ONNX / safetensors in (minicompress.export)
# command names that differ from their module's name (`import` is a Python keyword)
COMMAND_NAMES = {"import_model": "import"}


class CLIError(Exception):
    """An error in what the user asked for; printed as one line, exit code 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error message instead of the usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> ArgumentParser:
    from minicompress import __version__

    parser = ArgumentParser(prog="minicompress",
                            description="Model compression from scratch in NumPy: train, prune, quantize, distill, "
                                        "binarize small networks on MNIST.")
    parser.add_argument("--version", action="version", version=f"minicompress {__version__}")
    # Subparsers are created with this class too, so their errors are one line as well.
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"minicompress.commands.{name}").add_parser(subparsers)
    return parser


def _restart_single_threaded() -> None:
    """Re-run this command in a fresh interpreter with one BLAS thread (see the module docstring)."""
    if os.name == "nt" or any(var in os.environ for var in _THREAD_VARS):
        return
    os.environ.update({var: "1" for var in _THREAD_VARS})
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, "-m", "minicompress", *sys.argv[1:]])


def _one_line(exc: BaseException) -> str:
    """The error as one line; an OSError (disk full, permission denied, a folder where a file was expected...) as
    "<path>: <reason>", without the errno noise."""
    if isinstance(exc, OSError) and exc.strerror:
        paths = [p for p in (exc.filename, exc.filename2) if p is not None]
        text = f"{' -> '.join(map(str, paths))}: {exc.strerror}" if paths else exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def main(argv=None) -> int:
    """Parse `argv` (default sys.argv[1:]), run the subcommand, return the exit code."""
    if argv is None:
        _restart_single_threaded()
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except (CLIError, ValueError, OSError) as exc:
        if os.environ.get("MINICOMPRESS_DEBUG"):
            raise
        print(f"minicompress {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"minicompress {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0 if code is None else code
