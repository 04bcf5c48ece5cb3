"""`minicompress evaluate model.npz`: test accuracy of a saved model."""
from pathlib import Path

from minicompress import checkpoint
from minicompress.commands import DATASETS, add_data_arguments, describe, load_split, make_test_loader
from minicompress.train import evaluate


def add_parser(subparsers):
    p = subparsers.add_parser(
        "evaluate", help="test accuracy of a saved model",
        description="Load any file minicompress writes (train, prune, quantize, distill, binarize, compress) and "
                    "measure its test accuracy.")
    p.add_argument("checkpoint", type=Path, help="a .npz written by a minicompress command")
    add_data_arguments(p, default_dataset=None)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args):
    model = checkpoint.load(args.checkpoint)
    meta = model.checkpoint_meta
    # By default, the dataset the model was trained on.
    dataset = args.dataset or (meta.get("dataset") if meta.get("dataset") in DATASETS else "mnist")
    xt, yt = load_split(dataset, args.data_dir, "test")
    accuracy = evaluate(model, make_test_loader(dataset, xt, yt), progress=not args.no_progress)
    # float models count parameters; quantized and binary ones store integers / bits instead
    n_params = sum(p.size for p in model.parameters()) if meta["kind"] in ("model", "pruned") else None
    what = "" if n_params is None else f", {n_params:,} parameters"
    print(f"{args.checkpoint}: {meta['kind']} {meta.get('spec') or 'model'}{what}, "
          f"{args.checkpoint.stat().st_size:,} bytes")
    print(f"test accuracy {accuracy:.2%} on {len(yt):,} test images ({describe(dataset, args.data_dir)})")
