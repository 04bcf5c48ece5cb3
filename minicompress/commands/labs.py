"""`minicompress labs`: hand out and grade the labs.

    minicompress labs student OUT        write the student versions (solutions stripped) of every lab into OUT
    minicompress labs check NOTEBOOK     execute a student's notebook and print its score table, `score: P / T`

The labs live in tutorials/labs/ of the repository (solutions, marked with nbgrader's ### BEGIN SOLUTION /
### END SOLUTION) and tutorials/labs/student/ (what `labs student` writes). Both need the `labs` extra
(nbformat, nbclient): pip install -e ".[labs]".
"""
from pathlib import Path

from minicompress.cli import CLIError
from minicompress.commands import positive_float

REPO_LABS = Path(__file__).resolve().parents[2] / "tutorials" / "labs"


def add_parser(subparsers):
    p = subparsers.add_parser(
        "labs", help="write student versions of the labs, or grade a student's lab notebook",
        description="Labs are notebooks in which students write the core of each technique and a check compares "
                    "their function with minicompress's own. `student` strips the solutions, `check` grades.")
    sub = p.add_subparsers(dest="labs_command", metavar="ACTION", required=True)
    s = sub.add_parser("student", help="write the student version of every lab into OUT",
                       description="Write each lab of SOURCE with its solutions replaced by "
                                   "`raise NotImplementedError()` and its outputs cleared.")
    s.add_argument("out", type=Path, help="output directory (created if missing)")
    s.add_argument("--source", type=Path, default=REPO_LABS, metavar="DIR",
                   help=f"directory of the solution notebooks (default: {REPO_LABS})")
    s.add_argument("--force", action="store_true", help="overwrite notebooks that already exist in OUT")
    s.set_defaults(func=run_student)
    c = sub.add_parser("check", help="execute a lab notebook and print its score",
                       description="Execute NOTEBOOK in a fresh kernel (the file is not changed) and print one row "
                                   "per exercise (passed / failed with its message / not attempted) and the total.")
    c.add_argument("notebook", type=Path, help="a lab notebook, e.g. 01_pruning_lab.ipynb")
    c.add_argument("--timeout", type=positive_float, default=120.0, metavar="SECONDS",
                   help="time limit per cell (default 120)")
    c.set_defaults(func=run_check)


def _need_nbformat():
    try:
        import nbclient  # noqa: F401
        import nbformat  # noqa: F401
    except ImportError:
        raise CLIError('the labs need nbformat and nbclient: pip install -e ".[labs]"') from None


def run_student(args):
    _need_nbformat()
    from minicompress.labs import notebooks

    sources = notebooks.solution_notebooks(args.source)
    if not sources:
        raise CLIError(f"no lab notebooks (NN_<name>_lab.ipynb) in {args.source}; pass --source DIR")
    if args.out.resolve() == args.source.resolve():
        raise CLIError(f"OUT {args.out} is the source directory: the solutions would be overwritten")
    existing = [args.out / p.name for p in sources if (args.out / p.name).exists()]
    if existing and not args.force:
        raise CLIError(f"{existing[0]} already exists ({len(existing)} of {len(sources)} notebooks); "
                       f"pass --force to overwrite")
    for path in notebooks.write_student_versions(args.source, args.out):
        print(f"wrote {path}")


def run_check(args):
    _need_nbformat()
    from minicompress.labs import notebooks

    result = notebooks.grade(args.notebook, timeout=args.timeout)
    print(f"{args.notebook}:")
    print(result.table())
