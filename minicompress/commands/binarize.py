"""`minicompress binarize --model mlp:784-512-512-10 --epochs N [--activations] [--xnor] [--out FILE]`

Trains a binary MLP from scratch (BinaryConnect: binary weights, real ReLU activations; with --activations,
BNN: binary weights and activations) with Adam, a cosine learning rate, batch norm after every layer and the
latent weights clipped to [-1, 1] after every step. Then packs it to 1 bit per weight, checks that the packed
model (XOR + popcount for binary activations) gives exactly the float +-1 logits, and prints the test accuracy,
the bytes per layer and the inference time of both.
"""
import time

import numpy as np

from minicompress import binary, optim, train
from minicompress.commands._paths import add_force_argument, check_output
from minicompress.commands import add_data_arguments, load_dataset, loaders, positive_float, positive_int


def add_parser(subparsers):
    p = subparsers.add_parser("binarize", help="train a binary MLP (BinaryConnect / BNN) and pack it to bits",
                              description=__doc__.split("\n\n")[1])  # fmt: skip
    p.add_argument("--model", default="mlp:784-512-512-10", help="layer sizes as mlp:784-512-512-10 (default: %(default)s)")
    p.add_argument("--epochs", type=positive_int, default=5, help="training epochs (default: %(default)s)")
    p.add_argument("--activations", action="store_true", help="binary activations too (BNN)")
    p.add_argument("--xnor", action="store_true", help="XNOR-Net scaling alpha = mean(|W|) per output")
    p.add_argument("--lr", type=positive_float, default=0.01, help="Adam learning rate (default: %(default)s)")
    p.add_argument("--batch-size", type=positive_int, default=100, help="batch size (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation and shuffling (default: %(default)s)")
    p.add_argument("--out", default=None, help="write the packed model here (.npz; read with binary.load; default: not written)")
    add_force_argument(p)
    add_data_arguments(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
    return p


def train_binary(sizes, activations, xnor, train_loader, epochs, lr, seed, progress, test_loader=None):
    """Build, train and return a binary MLP (Adam, cosine learning rate, latent weights clipped after each step)."""
    train.set_seed(seed)
    model = binary.binary_mlp(sizes, binary_activations=activations, xnor=xnor)
    opt = optim.Adam(model.parameters(), lr=lr)
    stage = f"binarize: {'BNN' if activations else 'BinaryConnect'} {'-'.join(map(str, sizes))}"
    train.fit(model, train_loader, epochs, opt, test_loader=test_loader, callbacks=[binary.ClipLatentWeights()],
              scheduler=optim.CosineAnnealingLR(opt, T_max=epochs), progress=progress, desc=stage)  # fmt: skip
    return model


def _sizes(spec):
    """[784, 512, 512, 10] from "mlp:784-512-512-10" (binary.from_spec checks the spec)."""
    layers = [layer for _, layer in binary.binary_layers(binary.from_spec(spec))]
    return [layers[0].in_features] + [layer.out_features for layer in layers]


def _accuracy_and_ms(predict, loader):
    correct = seen = 0
    start = time.perf_counter()
    for x, y in loader:
        correct += int((predict(x).argmax(axis=1) == y).sum())
        seen += len(y)
    return correct / seen, 1000 * (time.perf_counter() - start)


def run(args):
    check_output(args.out, force=args.force)
    sizes = _sizes(args.model)
    if sizes[0] != 784 or sizes[-1] != 10:
        raise ValueError(f"--model {args.model}: MNIST needs 784 inputs and 10 outputs, got {sizes[0]} and {sizes[-1]}")
    x, y, xt, yt, description = load_dataset(args.dataset, args.data_dir)
    train_loader, test_loader = loaders(args.dataset, x, y, xt, yt, batch_size=args.batch_size, seed=args.seed)
    progress = not args.no_progress
    model = train_binary(sizes, args.activations, args.xnor, train_loader, args.epochs, args.lr, args.seed, progress)
    model.eval()
    packed = binary.pack_model(model)

    float_acc, float_ms = _accuracy_and_ms(lambda xb: train.predict(model, xb, batch_size=len(xb)), test_loader)
    packed_acc, packed_ms = _accuracy_and_ms(packed, test_loader)
    xb = next(iter(test_loader))[0]
    exact = np.array_equal(train.predict(model, xb, batch_size=len(xb)), packed(xb))

    kind = "BNN (binary weights and activations)" if args.activations else "BinaryConnect (binary weights)"
    print(f"{model.spec}: {kind}{', XNOR scaling' if args.xnor else ''}; {args.epochs} epochs on {description}")
    print(f"{'layer':<6}{'type':<20}{'weights':>10}{'float32 B':>12}{'packed B':>10}{'ratio':>8}{'scale+bias B':>14}")
    for r in packed.size_report():
        print(f"{r['layer']:<6}{r['type']:<20}{r['weights']:>10,}{r['float32_bytes']:>12,}{r['packed_bytes']:>10,}"
              f"{r['ratio']:>7.1f}x{r['scale_bias_bytes']:>14,}")  # fmt: skip
    dense = sum(4 * p.size for p in model.parameters()) + sum(4 * b.size for b in model.buffers())
    print(f"model bytes: float32 {dense:,} -> packed {packed.nbytes:,} ({dense / packed.nbytes:.1f}x smaller, "
          "batch norm kept in float32)")
    print(f"test accuracy: float +-1 model {float_acc:.2%} ({float_ms:.0f} ms), packed {packed_acc:.2%} "
          f"({packed_ms:.0f} ms); packed logits equal the float ones exactly: {exact}")
    if args.out:
        binary.save(packed, args.out, overwrite=args.force)
        print(f"wrote {args.out}")
    return 0 if exact else 1


def demo_row(ctx):
    """One row for `minicompress demo`: a BNN (binary weights and activations) with the baseline's layer sizes
    when it is an MLP (else 784-256-256-10), trained from scratch, packed to bits and run with XOR + popcount."""
    spec = getattr(ctx, "spec", "") or ""
    sizes = _sizes(spec) if spec.startswith("mlp:") else [784, 300, 100, 10] if spec == "lenet300_100" else [
        784, 256, 256, 10]  # fmt: skip
    epochs = 1 if ctx.quick else max(2, ctx.epochs)
    model = train_binary(sizes, True, False, ctx.train_loader, epochs, 0.01, ctx.seed, ctx.progress)
    packed = binary.pack_model(model.eval())
    return dict(technique="binary MLP (BNN, 1 bit)", accuracy=ctx.accuracy(packed), bytes=packed.nbytes,
                ratio=ctx.dense_bytes / packed.nbytes, infer_ms=ctx.infer_ms(packed),
                note=f"{'-'.join(map(str, sizes))} trained from scratch; XOR + popcount for hidden layers")  # fmt: skip
