"""`minicompress compress model.npz`: the whole Deep Compression pipeline (prune, share weights, Huffman) to a file."""
import tempfile
from pathlib import Path

from minicompress import checkpoint, pipeline
from minicompress.cli import CLIError
from minicompress.commands._paths import add_force_argument, check_output
from minicompress.commands import DATASETS, add_data_arguments, load_dataset, loaders, positive_int


def _sparsities(text):
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise CLIError(f"--sparsity {text}: expected a number or comma-separated numbers in [0, 1)") from None
    if not all(0 <= v < 1 for v in values):
        raise CLIError(f"--sparsity {text}: every sparsity must be in [0, 1)")
    return values[0] if len(values) == 1 else values


def add_parser(subparsers):
    p = subparsers.add_parser(
        "compress", help="Deep Compression: prune, share weights, Huffman-code, write a file",
        description="Run the Deep Compression pipeline (Han, Mao, Dally 2016) on a checkpoint written by "
                    "`minicompress train`: iterative pruning with fine-tuning, k-means weight sharing with "
                    "codebook fine-tuning, Huffman coding; print accuracy and bytes after every stage.")
    p.add_argument("checkpoint", type=Path, help="a .npz written by `minicompress train`")
    p.add_argument("--sparsity", type=str, default=None, metavar="S[,S...]",
                   help="fraction of weights to prune, one value or one per layer (default: 92%% for hidden "
                        "layers, 75%% for the output layer, 40%% for a first convolution)")
    p.add_argument("--bits", type=positive_int, default=5, help="codebook bits per layer, k = 2^bits (default: 5)")
    p.add_argument("--rounds", type=positive_int, default=3, help="pruning rounds (default: 3)")
    p.add_argument("--epochs", type=positive_int, default=1, help="fine-tuning epochs per stage (default: 1)")
    p.add_argument("--out", type=Path, default=None, help="output file (default: <checkpoint>.dc.npz)")
    add_force_argument(p)
    add_data_arguments(p, default_dataset=None)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def print_stages(stages):
    print(f"{'stage':<30}{'test acc':>9}{'bytes':>11}{'ratio':>8}  note")
    for s in stages:
        print(f"{s['stage']:<30}{s['accuracy']:>9.2%}{s['bytes']:>11,}{s['ratio']:>7.1f}x  {s['note']}")


def print_sizes(dense, payload, file_bytes):
    """The payload (what the table counts) and the file on disk, each with its ratio to dense float32."""
    print(f"payload:      {payload:>9,} bytes, {dense / payload:.1f}x smaller than dense float32 ({dense:,} bytes): "
          "the arrays' bytes (Huffman-coded weights with their code tables and codebooks, float32 biases)")
    print(f"file on disk: {file_bytes:>9,} bytes, {dense / file_bytes:.1f}x: the payload plus the .npz container "
          "(a zip entry and an array header per array) and the JSON layout of the layers")


def run(args):
    if args.bits > 16:
        raise CLIError(f"--bits {args.bits}: at most 16")
    out = check_output(args.out or args.checkpoint.with_suffix(".dc.npz"), [args.checkpoint], args.force)
    model = checkpoint.load(args.checkpoint, kind="model")
    dataset = args.dataset or (model.checkpoint_meta.get("dataset") if model.checkpoint_meta.get("dataset")
                               in DATASETS else "mnist")
    x, y, xt, yt, description = load_dataset(dataset, args.data_dir)
    train_loader, test_loader = loaders(dataset, x, y, xt, yt)
    sparsity = None if args.sparsity is None else _sparsities(args.sparsity)
    print(f"{args.checkpoint} ({model.spec}) on {description}")
    stages = pipeline.deep_compression(model, train_loader, test_loader, out, sparsity=sparsity, bits=args.bits,
                                       prune_rounds=args.rounds, prune_epochs=args.epochs, share_epochs=args.epochs,
                                       progress=not args.no_progress, overwrite=args.force)
    print_stages(stages)
    print_sizes(stages[0]["bytes"], stages[-1]["bytes"], out.stat().st_size)
    print(f"written: {out}")


def demo_row(ctx):
    """The pipeline on a copy of the baseline: one row with the final, Huffman-coded, loaded-back model."""
    model = ctx.copy_model()
    epochs = 1
    rounds = 1 if ctx.quick else 3
    with tempfile.TemporaryDirectory() as folder:
        path = (ctx.out_dir or Path(folder)) / "deep_compression.npz"
        stages = pipeline.deep_compression(model, ctx.train_loader, ctx.test_loader, path, bits=5,
                                           prune_rounds=rounds, prune_epochs=epochs, share_epochs=epochs,
                                           progress=ctx.progress)
        loaded = pipeline.load_compressed(path)
    for s in stages[1:-1]:
        ctx.log(f"{s['stage']:<28} accuracy {s['accuracy']:.2%}, {s['bytes']:,} bytes ({s['ratio']:.1f}x)")
    final = stages[-1]
    return dict(technique="Deep Compression", accuracy=ctx.accuracy(ctx.model_predict(loaded)),
                bytes=final["bytes"], infer_ms=ctx.infer_ms(ctx.model_predict(loaded)),
                note="prune (92%) + 5-bit weight sharing + Huffman; file decoded to float32 to run")
