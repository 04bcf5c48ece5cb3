"""`minicompress export MODEL --format tflite|onnx --out FILE`: run a model in the runtimes that ship models.

MODEL is a float checkpoint (`minicompress train`) or an integer-only model (`minicompress quantize --mode static`
or `--mode qat`, --out). Float models become float32 graphs; integer models become TFLite's int8 scheme (int8
weights per channel, int8 activations, int32 biases) or ONNX's QLinearConv graphs. After writing, the file is run
in its runtime (LiteRT / ONNX Runtime) on test digits of the MNIST subset shipped with minicompress, and the
outputs are compared with minicompress's.
"""
from pathlib import Path

import numpy as np

from minicompress import checkpoint, data
from minicompress import quantization as Q
from minicompress.cli import CLIError
from minicompress.commands._paths import add_force_argument, check_output

FORMATS = ("tflite", "onnx")
CHECK_IMAGES = 200


def add_parser(subparsers):
    p = subparsers.add_parser("export", help="write a model as TensorFlow Lite (.tflite) or ONNX (.onnx)",
                              description=__doc__.split("\n\n")[1])
    p.add_argument("model", type=Path, help="a .npz from `minicompress train` or `minicompress quantize --out`")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="tflite or onnx (default: from the --out suffix)")
    p.add_argument("--out", type=Path, required=True, help="the file to write")
    add_force_argument(p)
    p.add_argument("--no-check", action="store_true", help="do not run the written file in its runtime")
    p.set_defaults(func=run)
    return p


def load_model(path: Path):
    """A float zoo model or an integer-only model from a minicompress .npz (kind "model" or "quantized")."""
    _, meta = checkpoint.read_npz(path)
    if meta.get("kind") == "model":
        return checkpoint.load(path).eval()
    if meta.get("kind") == "quantized":
        if meta.get("mode") != "integer":
            raise CLIError(f"{path}: a dynamically quantized model (float activations) cannot be exported; "
                           "quantize with --mode static or --mode qat")
        return Q.load_quantized(path)
    raise CLIError(f"{path}: holds kind {meta.get('kind')!r}; export reads float checkpoints and integer-only "
                   "quantized models")


def _test_digits(n=CHECK_IMAGES):
    x, y = data.load_mnist(None, "test")
    loader = data.DataLoader(x[:n], y[:n], n, normalize="standard")
    return loader.transform(x[:n]).reshape(-1, 1, 28, 28)


def _codes(qmodel, x):
    h = x
    for m in list(qmodel)[:-1]:
        h = m(h)
    return h.q.astype(np.int32)


def run(args):
    from minicompress import export

    fmt = args.format or {".tflite": "tflite", ".onnx": "onnx"}.get(args.out.suffix.lower())
    if fmt is None:
        raise CLIError(f"--out {args.out}: cannot tell the format from the suffix; pass --format tflite or onnx")
    check_output(args.out, [args.model], args.force)
    model = load_model(args.model)
    try:
        _export_and_check(model, fmt, args)
    except export.MissingExtraError as exc:
        raise CLIError(str(exc)) from None
    return 0


def _export_and_check(model, fmt, args):
    """Write the file, then (unless --no-check) run it in its runtime on test digits and compare."""
    from minicompress import export

    integer = export.lowering.is_integer_model(model)
    size = (export.save_tflite if fmt == "tflite" else export.save_onnx)(model, args.out, overwrite=args.force)
    kind = "int8" if integer else "float32"
    print(f"wrote {args.out}: {kind} {fmt}, {size:,} bytes ({getattr(model, 'spec', None) or 'model'})")
    if args.no_check:
        return
    x = _test_digits()
    if fmt == "tflite":
        out = export.run_tflite(args.out.read_bytes(), x, return_codes=integer)
    else:
        out = export.run_onnx(args.out.read_bytes(), x, return_codes=integer)
    runtime = "LiteRT (reference kernels)" if fmt == "tflite" else "ONNX Runtime"
    if integer:
        out, codes = out
        mine = _codes(model, x) - (128 if fmt == "tflite" else 0)
        same = int((codes.astype(np.int32) == mine).all(axis=1).sum())
        step = int(np.abs(codes.astype(np.int32) - mine).max())
        print(f"{runtime} on {len(x)} test digits: {same}/{len(x)} with the very same output integers as "
              f"minicompress (largest difference: {step} step{'s' if step != 1 else ''})")
    else:
        diff = float(np.abs(out - model(x).data).max())
        print(f"{runtime} on {len(x)} test digits: largest difference from minicompress's float outputs {diff:.2g}")


def demo_row(ctx):
    """Rows for `minicompress demo`: the baseline and its int8 static PTQ model exported to TensorFlow Lite and run
    in LiteRT (accuracy, .tflite file size, LiteRT's time), and the int8 ONNX file's size."""
    from minicompress import export
    from minicompress.commands.quantize import _calibration_batches, quantize_model

    try:
        for module in ("flatbuffers", "tflite", "ai_edge_litert", "onnx", "onnxruntime"):
            export.require(module, "demo export rows")
    except export.MissingExtraError as exc:
        ctx.log(f"skipped: {exc}")
        return []
    calib = _calibration_batches(ctx.train_loader, 256 if ctx.quick else 1024)
    qmodel = quantize_model(ctx.copy_model().eval(), "static", 8, True, calib)
    rows = []
    for name, model in (("float32 .tflite in LiteRT", ctx.copy_model().eval()), ("int8 .tflite in LiteRT", qmodel)):
        content = export.to_tflite(model)
        predict = export.tflite.tflite_predictor(content)
        note = "exported with minicompress.export, run by LiteRT (ai-edge-litert)"
        if model is qmodel:
            _, codes = export.run_tflite(content, ctx.x_test_input, return_codes=True)
            same = int((codes.astype(np.int32) == _codes(qmodel, ctx.x_test_input) - 128).all(axis=1).sum())
            onnx_bytes = len(export.to_onnx(qmodel).SerializeToString())
            note = (f"{same:,}/{len(codes):,} test outputs bit-identical to minicompress's integers; "
                    f"int8 .onnx: {onnx_bytes:,} bytes")
        rows.append(dict(technique=name, accuracy=ctx.accuracy(predict), bytes=len(content),
                         infer_ms=ctx.infer_ms(predict), note=note))
    return rows
