"""`minicompress train`: train a zoo model on MNIST or Fashion-MNIST and save it as a checkpoint."""
import time
from pathlib import Path

from minicompress import checkpoint, models, optim
from minicompress.cli import CLIError
from minicompress.commands._paths import add_force_argument, check_output
from minicompress.commands import add_data_arguments, load_dataset, loaders, positive_float, positive_int
from minicompress.train import TrainingDiverged, fit, set_seed


def add_parser(subparsers):
    p = subparsers.add_parser(
        "train", help="train a model and save it",
        description="Train a zoo model (Adam, cosine learning-rate schedule, standardised inputs) on the embedded "
                    "MNIST subset or on full MNIST / Fashion-MNIST, then save it with its test accuracy.")
    p.add_argument("--model", default="lenet300_100", metavar="SPEC",
                   help="lenet300_100, lenet5 or mlp:784-30-30-10 (default: %(default)s)")
    p.add_argument("--epochs", type=positive_int, default=3, help="training epochs (default: %(default)s)")
    add_data_arguments(p)
    p.add_argument("--batch-size", type=positive_int, default=64, help="batch size (default: %(default)s)")
    p.add_argument("--lr", type=positive_float, default=2e-3, help="Adam learning rate (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed for initialisation and shuffling (default: %(default)s)")
    p.add_argument("--out", type=Path, default=Path("model.npz"), help="checkpoint to write (default: %(default)s)")
    add_force_argument(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args):
    check_output(args.out, force=args.force)
    x, y, xt, yt, description = load_dataset(args.dataset, args.data_dir)
    for split, images in (("training", x), ("test", xt)):
        if len(images) == 0:
            raise CLIError(f"--data-dir {args.data_dir}: the {split} split holds 0 images; there is nothing to "
                           f"{'train on' if split == 'training' else 'measure the accuracy on'}")
    set_seed(args.seed)
    try:
        model = models.from_spec(args.model)
    except ValueError as exc:
        raise CLIError(f"--model {args.model}: {exc}") from exc
    train_loader, test_loader = loaders(args.dataset, x, y, xt, yt, args.batch_size, args.seed)
    print(f"training {args.model} on {description} for {args.epochs} epochs")
    opt = optim.Adam(model.parameters(), lr=args.lr)
    start = time.perf_counter()
    try:
        history = fit(model, train_loader, args.epochs, opt, test_loader=test_loader,
                      scheduler=optim.CosineAnnealingLR(opt, T_max=args.epochs), progress=not args.no_progress, desc=f"train: {args.model}")
    except TrainingDiverged as exc:
        raise CLIError(f"--lr {args.lr:g}: {exc}") from exc
    seconds = time.perf_counter() - start
    for epoch, (loss, acc, test_acc) in enumerate(zip(history["loss"], history["accuracy"],
                                                      history["test_accuracy"])):
        print(f"epoch {epoch + 1}: loss {loss:.4f}  train accuracy {acc:.2%}  test accuracy {test_acc:.2%}")
    accuracy = history["test_accuracy"][-1]
    checkpoint.save(model, args.out, meta={"dataset": args.dataset, "test_accuracy": accuracy,
                                            "epochs": args.epochs, "seed": args.seed,
                                            "data": "embedded" if args.data_dir is None else "full"}, overwrite=args.force)
    print(f"test accuracy {accuracy:.2%} after {seconds:.1f} s; saved {args.out}")
