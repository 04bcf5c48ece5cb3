"""`minicompress distill --teacher teacher.npz --student mlp:784-30-30-10 --T 4 --alpha 0.9 [--out FILE]`

Trains a small student from a trained teacher checkpoint with the knowledge-distillation loss
L = alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) + (1 - alpha) * CE(y, z_s) (Hinton et al. 2015;
--no-T2 drops the T^2 as Intel's Distiller does). The teacher is frozen; its logits on the training images are
computed once. With --compare the same student (same initial weights, same batches) is also trained on the
labels alone, so the two test accuracies can be compared.
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
                              description=__doc__.split("\n\n")[1])
    p.add_argument("--teacher", type=Path, required=True, help="teacher checkpoint (.npz from `minicompress train`)")
    p.add_argument("--student", default="mlp:784-30-30-10", metavar="SPEC",
                   help="student zoo model (default: %(default)s)")
    p.add_argument("--T", type=positive_float, default=4.0, help="temperature T > 0 (default: %(default)s)")
    p.add_argument("--alpha", type=float, default=0.9, help="weight of the soft term, in [0, 1] (default: %(default)s)")
    p.add_argument("--no-T2", action="store_true", help="do not multiply the soft term by T^2 (Distiller's loss)")
    p.add_argument("--epochs", type=positive_int, default=5, help="default: %(default)s")
    p.add_argument("--batch-size", type=positive_int, default=64, help="default: %(default)s")
    p.add_argument("--lr", type=positive_float, default=2e-3, help="Adam learning rate (default: %(default)s)")
    p.add_argument("--compare", action="store_true", help="also train the student on the labels alone")
    add_data_arguments(p, default_dataset=None)
    p.add_argument("--seed", type=int, default=0, help="seed for initialisation and shuffling (default: %(default)s)")
    p.add_argument("--out", type=Path, default=None, help="write the distilled student here (.npz)")
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
    train_loader, test_loader = loaders(dataset, x, y, xt, yt, args.batch_size, args.seed)
    student = _student(args.student, args.seed)
    probe = train_loader.transform(x[:1, None])
    classes_t, classes_s = predict(teacher, probe).shape[1], predict(student, probe).shape[1]
    if classes_t != classes_s:
        raise CLIError(f"--student {args.student}: it has {classes_s} outputs but the teacher has {classes_t} classes")
    progress = not args.no_progress

    teacher_acc = evaluate(teacher, test_loader, progress=progress)
    print(f"teacher {getattr(teacher, 'spec', '?')}: test accuracy {teacher_acc:.2%} ({description})")
    z_t = precompute_teacher_logits(teacher, train_loader)
    T2 = "" if args.no_T2 else " x T^2"
    print(f"distilling into {args.student}: T = {args.T:g}, alpha = {args.alpha:g} (soft term{T2}), "
          f"{args.epochs} epochs of Adam, lr {args.lr:g}")
    opt = optim.Adam(student.parameters(), lr=args.lr)
    start = time.perf_counter()
    history = distill(student, teacher, train_loader, args.epochs, opt, T=args.T, alpha=args.alpha,
                      scale_T2=not args.no_T2, teacher_logits=z_t, test_loader=test_loader,
                      scheduler=optim.CosineAnnealingLR(opt, T_max=args.epochs), progress=progress)
    for epoch, (loss, acc) in enumerate(zip(history["loss"], history["test_accuracy"])):
        print(f"epoch {epoch + 1}: kd loss {loss:.4f}  test accuracy {acc:.2%}")
    distilled = history["test_accuracy"][-1]
    n_test = len(yt)
    print(f"distilled student: test accuracy {distilled:.2%} ({round((1 - distilled) * n_test)} errors), "
          f"{time.perf_counter() - start:.1f} s")

    if args.compare:
        alone = _student(args.student, args.seed)
        alone_loader = DataLoader(x, y, args.batch_size, shuffle=True, seed=args.seed, normalize="standard",
                                  mean=train_loader.mean, std=train_loader.std)
        opt = optim.Adam(alone.parameters(), lr=args.lr)
        h = fit(alone, alone_loader, args.epochs, opt, test_loader=test_loader,
                scheduler=optim.CosineAnnealingLR(opt, T_max=args.epochs), progress=progress)
        acc = h["test_accuracy"][-1]
        print(f"student on labels alone: test accuracy {acc:.2%} ({round((1 - acc) * n_test)} errors); "
              f"teacher {round((1 - teacher_acc) * n_test)} errors")
    if args.out:
        checkpoint.save(student, args.out, meta={"dataset": dataset, "test_accuracy": distilled, "T": args.T,
                                                 "alpha": args.alpha, "scale_T2": not args.no_T2,
                                                 "teacher": str(args.teacher), "seed": args.seed}, overwrite=args.force)
        print(f"wrote {args.out}")
    return 0


def demo_row(ctx):
    """`minicompress demo` row: the baseline teaches mlp:784-30-30-10 (T = 4, alpha = 0.9); the note gives the
    same student trained on the labels alone, with the same initial weights and batches."""
    spec, T, alpha = "mlp:784-30-30-10", 4.0, 0.9
    epochs = 1 if ctx.quick else ctx.epochs
    accuracies = {}
    for kind in ("alone", "distilled"):
        set_seed(ctx.seed)
        student = models.from_spec(spec)
        # a fresh loader with its own generator, so the demo's shared loader is not advanced
        loader = DataLoader(ctx.x_train, ctx.y_train, 64, shuffle=True, seed=ctx.seed, normalize="standard",
                            mean=ctx.mean, std=ctx.std)
        opt = optim.Adam(student.parameters(), lr=2e-3)
        sched = optim.CosineAnnealingLR(opt, T_max=epochs)
        if kind == "alone":
            fit(student, loader, epochs, opt, scheduler=sched, progress=ctx.progress)
        else:
            distill(student, ctx.model, loader, epochs, opt, T=T, alpha=alpha, scheduler=sched,
                    progress=ctx.progress)
        accuracies[kind] = ctx.accuracy(ctx.model_predict(student))
    size = int(sum(4 * np.prod(p.shape) for p in student.parameters()))
    return dict(technique=f"distillation -> {spec.split(':')[1]}", accuracy=accuracies["distilled"], bytes=size,
                ratio=ctx.dense_bytes / size, infer_ms=ctx.infer_ms(ctx.model_predict(student)),
                note=f"T={T:g}, alpha={alpha:g}; same student on labels alone: {accuracies['alone']:.2%}")
