"""`minicompress quantize model.npz --bits 8 [--per-channel] [--mode dynamic|static|qat] [--out FILE]`

Quantizes a trained checkpoint and prints the test accuracy before / after and the bytes before (dense
float32) / after (integers, scales, zero points, as stored).

  dynamic  int weights now, activations quantized batch by batch at run time (Linear layers only; as
           torch.ao.quantization.quantize_dynamic)
  static   post-training quantization: batch norm folded, ranges observed on --calib training images,
           then an integer-only model (int32 accumulation, fixed-point requantization)
  qat      quantization-aware training: activation ranges calibrated on --calib images (MSE search) and
           frozen, --qat-epochs of fine-tuning through fake quantization, then the same integer-only model
           as static
"""
import tempfile
from pathlib import Path

from minicompress import checkpoint, optim, train
from minicompress import quantization as Q
from minicompress.commands._paths import add_force_argument, check_output
from minicompress.commands import DATASETS, add_data_arguments, load_dataset, loaders, positive_float, positive_int, size_change

MODES = ("dynamic", "static", "qat")


def add_parser(subparsers):
    p = subparsers.add_parser("quantize", help="quantize a trained model to n-bit integers",
                              description=__doc__.split("\n\n")[1])
    p.add_argument("checkpoint", type=Path, help="a .npz written by `minicompress train`")
    p.add_argument("--bits", type=int, default=8, help="bits per weight and activation: 2..8, dynamic: 2..16 (default: %(default)s)")
    p.add_argument("--per-channel", action="store_true", help="one scale per output channel (default: per tensor)")
    p.add_argument("--mode", choices=MODES, default="static", help="dynamic, static or qat (default: %(default)s)")
    p.add_argument("--calib", type=positive_int, default=1024, help="calibration images (default: %(default)s)")
    p.add_argument("--qat-epochs", type=positive_float, default=1.0,
                   help="QAT fine-tuning epochs, fractions allowed (default: %(default)s)")
    p.add_argument("--lr", type=positive_float, default=0.001,
                   help="QAT learning rate, SGD with momentum 0.9 (default: %(default)s)")
    p.add_argument("--out", type=Path, default=None, help="write the quantized model here (.npz; default: not written)")
    add_force_argument(p)
    add_data_arguments(p, default_dataset=None)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
    return p


def fine_tune_steps(model, loader, steps, lr, progress, desc="quantize: QAT fine-tune"):
    """SGD (momentum 0.9) on ``model`` for exactly ``steps`` batches."""

    opt = optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    train.fit(model, loader, -(-steps // len(loader)), opt, progress=progress, max_steps=steps,
              desc=f"{desc} ({steps} steps)")
    return model


def quantize_model(model, mode, bits, per_channel, calib_batches, train_loader=None, qat_steps=0, lr=0.001,
                   progress=False):
    """The quantized model for one of MODES (calibration batches: list of float inputs)."""
    if mode == "dynamic":
        return Q.quantize_dynamic(model, bits=bits, per_channel=per_channel)
    if mode == "static":
        return Q.quantize_static(model, calib_batches, bits=bits, per_channel=per_channel)
    qat = Q.prepare_qat(model, bits=bits, per_channel=per_channel, init_batches=calib_batches)
    fine_tune_steps(qat, train_loader, qat_steps, lr, progress)
    return Q.convert(qat.eval())


def run(args):
    if isinstance(args.bits, bool) or not 2 <= args.bits <= (16 if args.mode == "dynamic" else 8):
        raise ValueError(f"--bits {args.bits}: must be in [2, {16 if args.mode == 'dynamic' else 8}] "
                         f"for --mode {args.mode}")
    check_output(args.out, [args.checkpoint], args.force)
    model = checkpoint.load(args.checkpoint, kind="model")
    meta = getattr(model, "checkpoint_meta", {}) or {}
    dataset = args.dataset or (meta.get("dataset") if meta.get("dataset") in DATASETS else "mnist")
    x, y, xt, yt, description = load_dataset(dataset, args.data_dir)
    train_loader, test_loader = loaders(dataset, x, y, xt, yt)
    progress = not args.no_progress
    model.eval()
    before = train.evaluate(model, test_loader, progress=progress)
    calib = _calibration_batches(train_loader, args.calib)
    steps = max(1, round(args.qat_epochs * len(train_loader)))
    qmodel = quantize_model(model, args.mode, args.bits, args.per_channel, calib, train_loader, steps, args.lr,
                            progress)
    after = train.evaluate(qmodel, test_loader, progress=progress)
    dense, stored = Q.float_nbytes(model), Q.quantized_nbytes(qmodel)
    scheme = "per-channel" if args.per_channel else "per-tensor"
    print(f"{args.mode} {args.bits}-bit {scheme} quantization of {getattr(model, 'spec', 'the model')}")
    print(f"test accuracy: before {before:.2%}, after {after:.2%} ({description})")
    print(f"bytes: before {dense:,} (dense float32), after {stored:,} (integers + scales + zero points), "
          f"{size_change(dense, stored)}")
    if args.out:
        Q.save_quantized(qmodel, args.out, overwrite=args.force)  # load with minicompress.quantization.load_quantized
        print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes on disk)")
    return 0


def _calibration_batches(loader, n_images):
    batches, seen = [], 0
    for x, _ in loader:
        batches.append(x)
        seen += len(x)
        if seen >= n_images:
            break
    return batches


def demo_row(ctx):
    """Rows for `minicompress demo`: int8 static per-channel (integer-only inference) and 4-bit QAT."""
    calib = _calibration_batches(ctx.train_loader, 256 if ctx.quick else 1024)
    steps = 5 if ctx.quick else max(1, len(ctx.train_loader) // 2)
    rows = []
    for name, mode, bits, note in (
        ("int8 static PTQ (per-channel)", "static", 8, "integer-only: int32 sums, fixed-point requantization"),
        ("int4 QAT (per-channel)", "qat", 4, f"fake-quant fine-tuning for {steps} steps, then integer-only"),
    ):
        qmodel = quantize_model(ctx.copy_model().eval(), mode, bits, True, calib, ctx.train_loader, steps, 0.001,
                                ctx.progress)
        with tempfile.TemporaryDirectory() as tmp:
            Q.save_quantized(qmodel, Path(tmp) / "q.npz")  # the stored format must round-trip
        size = Q.quantized_nbytes(qmodel)
        predict = ctx.model_predict(qmodel)
        rows.append(dict(technique=name, accuracy=ctx.accuracy(predict), bytes=size, ratio=ctx.dense_bytes / size,
                         infer_ms=ctx.infer_ms(predict), note=note))
    return rows
