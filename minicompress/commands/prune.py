"""`minicompress prune model.npz --amount 0.9 [--method l1|global|structured] [--finetune-epochs N] [--out FILE]`

Prunes a trained checkpoint by magnitude, optionally fine-tunes it, and prints the sparsity report (for
--method structured: every layer's shapes before and after shrink), the test accuracy before pruning, after
pruning and after fine-tuning, and the bytes before (dense float32) / after (sparse payload, or the smaller dense
model for --method structured).

  l1          every Linear / Conv2d weight loses `amount` of its entries (smallest |w| first)
  global      one threshold across all those weights: `amount` of all of them together
  structured  every hidden layer loses `amount` of its neurons / filters (smallest L2 norm), which are then
              physically removed with the matching inputs of the next layer (pruning.shrink)
"""
import math
import tempfile
from pathlib import Path

from minicompress import checkpoint, optim, train
from minicompress import pruning as prune
from minicompress.commands._paths import add_force_argument, check_output
from minicompress.commands import DATASETS, add_data_arguments, load_dataset, loaders, positive_float, size_change

METHODS = ("l1", "global", "structured")


def add_parser(subparsers):
    p = subparsers.add_parser("prune", help="prune a trained model by weight magnitude",
                              description=__doc__.split("\n\n")[1])
    p.add_argument("checkpoint", type=Path, help="a .npz written by `minicompress train`")
    p.add_argument("--amount", type=float, default=0.9, help="fraction to prune, in [0, 1] (default: %(default)s)")
    p.add_argument("--method", choices=METHODS, default="l1", help="l1 (per layer), global or structured (default: %(default)s)")
    p.add_argument("--finetune-epochs", type=int, default=0, help="epochs of fine-tuning after pruning (default: %(default)s)")
    p.add_argument("--lr", type=positive_float, default=0.005,
                   help="fine-tuning learning rate, SGD with momentum 0.9 (default: %(default)s)")
    p.add_argument("--out", type=Path, default=None, help="write the pruned model here (.npz; default: not written)")
    add_force_argument(p)
    add_data_arguments(p, default_dataset=None)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
    return p


def prune_model(model, amount, method):
    """Prune `model` in place with one of METHODS; returns the model to deploy (shrunk for structured)."""
    layers = prune.prunable(model)
    if method == "l1":
        for module, name in layers:
            prune.l1_unstructured(module, name, amount)
    elif method == "global":
        prune.global_unstructured(layers, amount)
    else:
        for module, name in layers[:-1]:                # never remove output classes
            prune.ln_structured(module, name, amount, n=2, dim=0)
    return prune.shrink(model) if method == "structured" else model


def shape_report(model, small) -> str:
    """Structured pruning: each Linear / Conv2d parameter's shape and size before (pruned, masks in place) and
    after ``shrink`` (the smaller dense model), as a text table with a total row."""
    lines = [f"{'parameter':<12}{'shape before':>18}{'shape after':>18}{'params before':>15}{'params after':>14}"]
    total_before = total_after = 0
    for i, (big, little) in enumerate(zip(model, small)):
        for name in ("weight", "bias"):
            if getattr(little, name, None) is None:
                continue
            before, after = prune.effective(big, name).shape, getattr(little, name).data.shape
            n_before, n_after = math.prod(before), math.prod(after)
            total_before, total_after = total_before + n_before, total_after + n_after
            lines.append(f"{f'{i}.{name}':<12}{str(before):>18}{str(after):>18}{n_before:>15,}{n_after:>14,}")
    lines.append(f"{'total':<12}{'':>18}{'':>18}{total_before:>15,}{total_after:>14,}")
    return "\n".join(lines)


def run(args):
    if math.isnan(args.amount) or not 0.0 <= args.amount <= 1.0:
        raise ValueError(f"--amount {args.amount}: must be a fraction in [0, 1]")
    if args.finetune_epochs < 0:
        raise ValueError(f"--finetune-epochs {args.finetune_epochs}: must be >= 0")
    check_output(args.out, [args.checkpoint], args.force)
    model = checkpoint.load(args.checkpoint, kind="model")
    meta = model.checkpoint_meta
    dataset = args.dataset or (meta.get("dataset") if meta.get("dataset") in DATASETS else "mnist")
    x, y, xt, yt, description = load_dataset(dataset, args.data_dir)
    train_loader, test_loader = loaders(dataset, x, y, xt, yt)
    progress = not args.no_progress
    before = train.evaluate(model, test_loader, progress=progress)
    bytes_before = prune.sparse_size(model)[-1]["dense_bytes"]

    deployed = prune_model(model, args.amount, args.method)
    pruned = train.evaluate(deployed, test_loader, progress=progress)
    after = pruned
    if args.finetune_epochs:
        opt = optim.SGD(deployed.parameters(), lr=args.lr, momentum=0.9)
        train.fit(deployed, train_loader, args.finetune_epochs, opt, progress=progress,
                  desc=f"prune: fine-tune after {args.method} {args.amount:.0%}")
        after = train.evaluate(deployed, test_loader, progress=progress)

    if args.method == "structured":  # every weight left is nonzero: what changed is the shapes
        print(shape_report(model, deployed))
    else:
        print(prune.format_report(prune.sparsity_report(model)))
    if args.method == "structured":
        bytes_after, how = prune.sparse_size(deployed)[-1]["dense_bytes"], "a smaller dense model"
    else:
        bytes_after, how = prune.sparse_size(deployed)[-1]["bytes"], "sparse payload, smallest format per tensor"
    tuned = (f", after {args.finetune_epochs} epoch{'s' * (args.finetune_epochs > 1)} of fine-tuning {after:.2%}"
             if args.finetune_epochs else " (no fine-tuning: --finetune-epochs 0)")
    print(f"test accuracy: before pruning {before:.2%}, after pruning {pruned:.2%}{tuned} ({description})")
    print(f"bytes: before {bytes_before:,} (dense float32), after {bytes_after:,} ({how}), "
          f"{size_change(bytes_before, bytes_after)}")
    if args.out:
        if args.method == "structured" and getattr(deployed, "spec", None):
            checkpoint.save(deployed, args.out, meta={"dataset": dataset}, overwrite=args.force)
        else:
            prune.save_sparse(model, args.out, overwrite=args.force)          # load with minicompress.pruning.load_sparse
        print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes on disk)")
    return 0


def demo_row(ctx):
    """Two rows for `minicompress demo`: 90% magnitude pruning per layer + fine-tuning, stored sparse (smaller,
    not faster); and 50% of the hidden neurons / filters removed by structured pruning + shrink (faster)."""
    epochs = 1 if ctx.quick else max(1, ctx.epochs // 2)
    rows = []
    for method, amount, name in (("l1", 0.9, "pruning 90% + fine-tune"),
                                 ("structured", 0.5, "structured pruning 50% + shrink")):
        model = ctx.copy_model()
        deployed = prune_model(model, amount, method)
        train.fit(deployed, ctx.train_loader, epochs, optim.SGD(deployed.parameters(), lr=0.005, momentum=0.9),
                  progress=ctx.progress, desc=f"prune: fine-tune after {name.split(' +')[0]}")
        if method == "structured":
            size, note = prune.sparse_size(deployed)[-1]["dense_bytes"], "dead neurons removed: smaller and faster"
        else:
            with tempfile.TemporaryDirectory() as tmp:
                size = prune.save_sparse(model, Path(tmp) / "pruned.npz")
            note = "bitmask/CSR storage; the masked model still multiplies every zero"
        predict = ctx.model_predict(deployed)
        rows.append(dict(technique=name, accuracy=ctx.accuracy(predict), bytes=size, ratio=ctx.dense_bytes / size,
                         infer_ms=ctx.infer_ms(predict), note=note))
    return rows
