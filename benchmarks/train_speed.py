"""How fast does the autograd train, and do the zoo models reach their usual MNIST accuracy?

Speed: one MNIST epoch (60,000 images, batch 64, SGD lr 0.01 momentum 0.9) of LeNet-300-100 and LeNet-5 with
minicompress and, when torch is installed, with PyTorch (2 threads) on the very same batches, alternating the two
``--repeats`` times; prints the median seconds per epoch and the median of the per-repeat ratios.

Accuracy (``--accuracy``): trains each model for ``--epochs`` epochs and prints its test accuracy.

    python benchmarks/train_speed.py                  # speed, full MNIST
    python benchmarks/train_speed.py --accuracy       # accuracy after a few epochs
    python benchmarks/train_speed.py --limit 2000     # smoke run on the first 2000 images
"""

import argparse
import statistics
import time


import minicompress as mc
from minicompress import data, functional as F, models, optim
from minicompress.train import evaluate, fit

from _results import write_results


def load(limit, split="train"):
    root = data.shared_data_dir()
    if root is None:
        raise SystemExit("full MNIST not found (../shared/data or $MINICOMPRESS_DATA); nothing to measure")
    x, y = data.load_mnist(root, split)
    return x[:limit], y[:limit]


def epoch_minicompress(model, batches):
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    start = time.perf_counter()
    for x, y in batches:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def torch_model(spec, torch):
    nn = torch.nn
    if spec == "lenet300_100":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(),
                             nn.Linear(100, 10))
    return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                         nn.Linear(84, 10))


def epoch_torch(model, batches, torch):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    start = time.perf_counter()
    for x, y in batches:
        loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def speed(args):
    try:
        import torch

        torch.set_num_threads(2)
    except ImportError:
        torch = None
        print("torch not installed: minicompress only")
    images, labels = load(args.limit)
    batches = list(data.DataLoader(images, labels, batch_size=64, shuffle=True, seed=0))
    print(f"{len(images)} images, {len(batches)} batches of 64, {args.repeats} repeats, medians")
    figures = {}
    for spec in ("lenet300_100", "lenet5"):
        ours, theirs = [], []
        for _ in range(args.repeats):
            ours.append(epoch_minicompress(models.from_spec(spec), batches))
            if torch is not None:
                theirs.append(epoch_torch(torch_model(spec, torch), batches, torch))
        line = f"{spec:>13}: minicompress {statistics.median(ours):6.2f} s/epoch"
        if theirs:
            ratio = statistics.median(o / t for o, t in zip(ours, theirs))
            line += f" | PyTorch {statistics.median(theirs):6.2f} s/epoch | ratio {ratio:.2f}x"
        print(line, flush=True)
        figures[spec] = {"minicompress_s_per_epoch": ours, "torch_s_per_epoch": theirs,
                         "median_ratio": statistics.median(o / t for o, t in zip(ours, theirs)) if theirs else None}
    settings = {"images": len(images), "batch_size": 64, "repeats": args.repeats,
                "torch": None if torch is None else torch.__version__}
    write_results("train_speed", settings, figures, quick=args.limit is not None)


def accuracy(args):
    x_train, y_train = load(args.limit)
    x_test, y_test = load(None, "test")
    test = data.DataLoader(x_test, y_test, batch_size=1000)
    figures = {}
    for spec, lr in (("lenet300_100", 0.05), ("lenet5", 0.05)):
        mc.manual_seed(0)
        model = models.from_spec(spec)
        train = data.DataLoader(x_train, y_train, batch_size=64, shuffle=True, seed=0)
        opt = optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        sched = optim.CosineAnnealingLR(opt, T_max=args.epochs)
        start = time.perf_counter()
        fit(model, train, args.epochs, opt, scheduler=sched, progress=not args.quiet, desc=f"train speed: {spec}")
        acc = evaluate(model, test, progress=False)
        print(f"{spec:>13}: test accuracy {acc:.2%} after {args.epochs} epochs "
              f"(SGD lr {lr} momentum 0.9, cosine schedule, {time.perf_counter() - start:.0f} s)", flush=True)
        figures[spec] = {"test_accuracy": acc, "lr": lr, "seconds": time.perf_counter() - start}
    write_results("train_accuracy", {"images": len(x_train), "epochs": args.epochs, "batch_size": 64}, figures,
                  quick=args.limit is not None)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None, help="use only the first LIMIT training images")
    parser.add_argument("--accuracy", action="store_true", help="train several epochs and report test accuracy")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args()
    accuracy(args) if args.accuracy else speed(args)
