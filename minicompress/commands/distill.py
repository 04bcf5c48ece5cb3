"""`minicompress distill --teacher teacher.npz --student mlp:784-30-30-10 [--labels N] [--compare] [--out FILE]`

Trains a small student from a trained teacher checkpoint with the knowledge-distillation loss
L = alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) + (1 - alpha) * CE(y, z_s) (Hinton et al. 2015;
--no-T2 drops the T^2 as Intel's Distiller does). The teacher is frozen; its logits on the training images are
computed once. With --labels N the student sees the labels of only N training images while the teacher's soft
targets cover all of them (Hinton et al.'s transfer set). With --compare the same student (same initial
weights, as many optimizer steps) is also trained on the labels alone, so the two test accuracies can be compared.

Where distillation helps. With every label, the 30-30 student distilled from a 96.6% lenet300_100 teacher does
no better than on the labels alone (-0.55, 0.00, -0.40 points at seeds 0, 1, 2; 6 epochs): 10,000 labels already
teach it all it can hold. With the labels of only 1,000 images (--labels 1000), the teacher's soft targets on all
10,000 lift it by 2.95, 4.50, 4.30 points (89.7% -> 93.6% on average): what the 9,000 unlabelled images hold, the
student learns from the teacher.
"""
import time
from pathlib import Path

import numpy as np

from minicompress import checkpoint, models, optim
from minicompress.cli import CLIError
from minicompress.commands._paths import add_force_argument, check_output
from minicompress.commands import DATASETS, add_data_arguments, load_dataset, loaders, positive_float, positive_int
from minicompress.data import DataLoader
from minicompress.distillation import MAX_T, distill, precompute_teacher_logits
from minicompress.train import evaluate, fit, predict, set_seed


def add_parser(subparsers):
    p = subparsers.add_parser("distill", help="train a small student from a teacher (knowledge distillation)",
                              description=__doc__.split("\n\n")[1], epilog=__doc__.split("\n\n")[2])
    p.add_argument("--teacher", type=Path, required=True, help="teacher checkpoint (.npz from `minicompress train`; required)")
    p.add_argument("--student", default="mlp:784-30-30-10", metavar="SPEC",
                   help="student zoo model (default: %(default)s)")
    p.add_argument("--T", type=positive_float, default=4.0, help="temperature T > 0 (default: %(default)s)")
    p.add_argument("--alpha", type=float, default=0.9, help="weight of the soft term, in [0, 1] (default: %(default)s)")
    p.add_argument("--no-T2", action="store_true", help="do not multiply the soft term by T^2 (Distiller's loss)")
    p.add_argument("--epochs", type=positive_int, default=5, help="distillation epochs (default: %(default)s)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="batch size (default: %(default)s)")
    p.add_argument("--lr", type=positive_float, default=2e-3, help="Adam learning rate (default: %(default)s)")
    p.add_argument("--labels", type=positive_int, default=None, metavar="N",
                   help="the student sees the labels of only N training images (random, chosen by --seed); the "
                        "teacher's soft targets cover all of them (default: every label)")
    p.add_argument("--compare", action="store_true",
                   help="also train the same student on the labels alone (the N labelled images with --labels)")
    add_data_arguments(p, default_dataset=None)
    p.add_argument("--seed", type=int, default=0, help="seed for initialisation and shuffling (default: %(default)s)")
    p.add_argument("--out", type=Path, default=None, help="write the distilled student here (.npz; default: not written)")
    add_force_argument(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
    return p


def _student(spec, seed):
    set_seed(seed)
    try:
        return models.from_spec(spec)
    except ValueError as exc:
        raise CLIError(f"--student {spec}: {exc}") from exc


def labelled_mask(n_images, n_labels, seed):
    """bool (n_images,): the n_labels images, drawn at random with ``seed``, whose labels the student may see."""
    mask = np.zeros(n_images, bool)
    mask[np.random.default_rng(seed).permutation(n_images)[:n_labels]] = True
    return mask


class _Passes:
    """``steps`` batches per epoch from repeated passes over ``loader`` (reshuffled at each pass): an epoch of the
    student on a few labelled images as long, in optimizer steps, as an epoch over the whole training set."""

    def __init__(self, loader, steps):
        self.loader, self.steps = loader, steps

    def __len__(self):
        return self.steps

    def __iter__(self):
        taken = 0
        while taken < self.steps:
            for batch in self.loader:
                yield batch
                taken += 1
                if taken == self.steps:
                    return


def train_students(spec, teacher, x, y, test_loader, epochs, seed, labels=None, T=4.0, alpha=0.9, scale_T2=True,
                   lr=2e-3, batch_size=64, compare=True, progress=True, teacher_logits=None, log=print):
    """Distil ``spec`` from ``teacher`` and, with ``compare``, train the same student on the labels alone.

    x, y: raw training images uint8 (N, 28, 28) and labels; the loaders standardise them like test_loader.
    labels: None (every label), or n: the student sees the labels of only n images (labelled_mask(N, n, seed))
    while the teacher's soft targets cover all N. The distilled student takes ``epochs`` passes over the N
    images; the one on the labels alone as many optimizer steps per epoch over its labelled images (repeated
    passes), from the same initial weights, with the same cosine learning-rate schedule.
    Returns dict(student=the distilled model, history, distilled=its test accuracy, alone=test accuracy on the
    labels alone or None, mask=the labelled mask or None).
    """
    mask = None if labels is None else labelled_mask(len(x), labels, seed)

    def loader(images, targets):
        return DataLoader(images, targets, batch_size, shuffle=True, seed=seed, normalize="standard",
                          mean=test_loader.mean, std=test_loader.std)

    train_loader = loader(x, y)
    if teacher_logits is None:
        teacher_logits = precompute_teacher_logits(teacher, train_loader)
    student = _student(spec, seed)
    opt = optim.Adam(student.parameters(), lr=lr)
    stage = "distill: student" + ("" if mask is None else f" ({labels:,} labels + soft targets on {len(x):,})")
    history = distill(student, teacher, train_loader, epochs, opt, T=T, alpha=alpha, scale_T2=scale_T2,
                      teacher_logits=teacher_logits, test_loader=test_loader, labeled=mask,
                      scheduler=optim.CosineAnnealingLR(opt, T_max=epochs), progress=progress, desc=stage)
    result = dict(student=student, history=history, distilled=history["test_accuracy"][-1], alone=None, mask=mask)
    if compare:
        alone = _student(spec, seed)
        alone_loader = loader(x, y) if mask is None else _Passes(loader(x[mask], y[mask]), len(train_loader))
        opt = optim.Adam(alone.parameters(), lr=lr)
        stage = "distill: same student, labels only" + ("" if mask is None else f" ({labels:,} images)")
        fit(alone, alone_loader, epochs, opt, scheduler=optim.CosineAnnealingLR(opt, T_max=epochs),
            progress=progress, desc=stage)
        result["alone"] = evaluate(alone, test_loader, progress=False)
    return result


def run(args):
    if not 0.0 <= args.alpha <= 1.0:
        raise ValueError(f"--alpha {args.alpha}: must be in [0, 1] (the weight of the soft term)")
    if args.T > MAX_T:
        raise CLIError(f"--T {args.T:g}: must be <= {MAX_T:g}; past it the soft term T^2 * KL is mostly float32 "
                       "rounding error")
    check_output(args.out, [args.teacher], args.force)
    teacher = checkpoint.load(args.teacher, kind="model")
    meta = teacher.checkpoint_meta
    dataset = args.dataset or (meta.get("dataset") if meta.get("dataset") in DATASETS else "mnist")
    x, y, xt, yt, description = load_dataset(dataset, args.data_dir)
    if args.labels is not None and args.labels > len(x):
        raise CLIError(f"--labels {args.labels}: the training set has only {len(x):,} images")
    train_loader, test_loader = loaders(dataset, x, y, xt, yt, args.batch_size, args.seed)
    student = _student(args.student, args.seed)
    probe = train_loader.transform(x[:1, None])
    classes_t, classes_s = predict(teacher, probe).shape[1], predict(student, probe).shape[1]
    if classes_t != classes_s:
        raise CLIError(f"--student {args.student}: it has {classes_s} outputs but the teacher has {classes_t} classes")
    progress = not args.no_progress

    teacher_acc = evaluate(teacher, test_loader, progress=progress)
    print(f"teacher {getattr(teacher, 'spec', '?')}: test accuracy {teacher_acc:.2%} ({description})")
    T2 = "" if args.no_T2 else " x T^2"
    seen = ("every label" if args.labels is None else
            f"the labels of {args.labels:,} of the {len(x):,} training images, the teacher's soft targets on all")
    print(f"distilling into {args.student}: T = {args.T:g}, alpha = {args.alpha:g} (soft term{T2}), "
          f"{args.epochs} epochs of Adam, lr {args.lr:g}; the student sees {seen}")
    start = time.perf_counter()
    result = train_students(args.student, teacher, x, y, test_loader, args.epochs, args.seed, args.labels, args.T,
                            args.alpha, not args.no_T2, args.lr, args.batch_size, args.compare, progress)
    history = result["history"]
    for epoch, (loss, acc) in enumerate(zip(history["loss"], history["test_accuracy"])):
        print(f"epoch {epoch + 1}: kd loss {loss:.4f}  test accuracy {acc:.2%}")
    distilled = result["distilled"]
    n_test = len(yt)
    print(f"distilled student: test accuracy {distilled:.2%} ({round((1 - distilled) * n_test)} errors of "
          f"{n_test:,}), {time.perf_counter() - start:.1f} s")
    if args.compare:
        acc = result["alone"]
        where = "" if args.labels is None else f" of the {args.labels:,} labelled images, as many steps"
        print(f"student on labels alone{where}: test accuracy {acc:.2%} ({round((1 - acc) * n_test)} errors); "
              f"teacher {round((1 - teacher_acc) * n_test)} errors")
        print(f"distillation {'gains' if distilled > acc else 'does not gain'}: {100 * (distilled - acc):+.2f} "
              "points of test accuracy")
    if args.out:
        checkpoint.save(result["student"], args.out,
                        meta={"dataset": dataset, "test_accuracy": distilled, "T": args.T, "alpha": args.alpha,
                              "scale_T2": not args.no_T2, "teacher": str(args.teacher), "seed": args.seed,
                              "labels": args.labels or len(x)}, overwrite=args.force)
        print(f"wrote {args.out}")
    return 0


DEMO_STUDENT, DEMO_T, DEMO_ALPHA = "mlp:784-30-30-10", 4.0, 0.9


def demo_labels(n_train):
    """Labelled images of the demo's distillation row: a tenth of the training set (1,000 of the shipped 10,000)."""
    return max(10, n_train // 10)


def demo_row(ctx):
    """`minicompress demo` row: Hinton et al.'s transfer set. The student (mlp:784-30-30-10) sees the labels of a
    tenth of the training images; the baseline, as teacher, gives soft targets (T = 4, alpha = 0.9) on all of
    them. The note gives the same student trained on those labels alone (same initial weights, as many steps)."""
    epochs = 1 if ctx.quick else ctx.epochs
    labels = demo_labels(len(ctx.x_train))
    result = train_students(DEMO_STUDENT, ctx.model, ctx.x_train, ctx.y_train, ctx.test_loader, epochs, ctx.seed,
                            labels, DEMO_T, DEMO_ALPHA, progress=ctx.progress)
    student = result["student"]
    accuracy = ctx.accuracy(ctx.model_predict(student))
    size = int(sum(4 * np.prod(p.shape) for p in student.parameters()))
    ctx.log(f"student {DEMO_STUDENT}, T={DEMO_T:g}, alpha={DEMO_ALPHA:g}: gain over the labels alone "
            f"{100 * (accuracy - result['alone']):+.2f} points")
    return dict(technique=f"distillation -> {DEMO_STUDENT.split(':')[1]}", accuracy=accuracy, bytes=size,
                ratio=ctx.dense_bytes / size, infer_ms=ctx.infer_ms(ctx.model_predict(student)),
                note=f"{labels:,} labels + teacher's soft targets on all {len(ctx.x_train):,} images; "
                     f"same student on the {labels:,} labels alone: {result['alone']:.2%}")
