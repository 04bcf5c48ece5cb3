"""`minicompress import FILE --out model.npz`: a network trained elsewhere, as a minicompress checkpoint.

FILE is an ONNX model (e.g. written by torch.onnx.export) or a .safetensors file of weights with --spec naming the
zoo architecture they belong to. The network must be one of the zoo's architectures (lenet5, lenet5_caffe,
lenet300_100, mlp:...) so the checkpoint can be rebuilt; then prune, quantize, distill or export it as any other.
"""
from pathlib import Path

from minicompress import checkpoint
from minicompress.cli import CLIError
from minicompress.commands._paths import add_force_argument, check_output


def add_parser(subparsers):
    p = subparsers.add_parser("import", help="turn an ONNX or safetensors model into a minicompress checkpoint",
                              description=__doc__.split("\n\n")[1])
    p.add_argument("file", type=Path, help="a .onnx file, or a .safetensors file with --spec")
    p.add_argument("--out", type=Path, required=True, help="the checkpoint to write (.npz)")
    p.add_argument("--spec", default=None,
                   help="the zoo model the safetensors weights belong to, e.g. lenet5 or mlp:784-300-100-10 "
                        "(no default: required for .safetensors, not used for .onnx)")
    add_force_argument(p)
    p.set_defaults(func=run)
    return p


def run(args):
    from minicompress import export

    suffix = args.file.suffix.lower()
    if suffix not in (".onnx", ".safetensors"):
        raise CLIError(f"{args.file}: expected a .onnx or .safetensors file")
    if suffix == ".safetensors" and args.spec is None:
        raise CLIError(f"{args.file}: safetensors holds only weights; pass --spec (e.g. --spec lenet5)")
    if not args.file.is_file():
        raise CLIError(f"{args.file}: no such file")
    check_output(args.out, [args.file], args.force)
    try:
        if suffix == ".onnx":
            model = export.from_onnx(args.file)
            if args.spec is not None and model.spec != args.spec:
                raise CLIError(f"{args.file}: the network is {model.spec or 'not a zoo architecture'}, not "
                               f"--spec {args.spec}")
        else:
            model = export.from_safetensors(args.file, args.spec)
    except export.MissingExtraError as exc:
        raise CLIError(str(exc)) from None
    if model.spec is None:
        raise CLIError(f"{args.file}: the network is not one of the zoo's architectures (lenet5, lenet5_caffe, "
                       "lenet300_100, mlp:...), so it cannot be stored as a checkpoint; use "
                       "minicompress.export.from_onnx in Python")
    checkpoint.save(model, args.out, meta={"imported_from": args.file.name}, overwrite=args.force)
    n = sum(p.data.size for p in model.parameters())
    print(f"wrote {args.out}: {model.spec}, {n:,} parameters imported from {args.file.name}")
    return 0
