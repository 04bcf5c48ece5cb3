"""How fast does the autograd train, and do the zoo models reach their usual MNIST accuracy?

Speed: one MNIST epoch (60,000 images, batch 64, SGD lr 0.01 momentum 0.9) of LeNet-300-100 and LeNet-5 with
minicompress and, when torch is installed, with PyTorch on the very same batches and the same model, alternating
the two ``--repeats`` times; prints the median seconds per epoch and the median of the per-repeat ratios
(minicompress / PyTorch, below 1 = minicompress faster). Each thread count (``--threads``, default 1 and 2) runs
in its own subprocess, because BLAS reads its thread count from the environment (OPENBLAS_NUM_THREADS, ...) when
NumPy is imported; PyTorch gets the same count from torch.set_num_threads. Then the profile of one LeNet-5 step:
milliseconds per op, forward and backward (the fused Conv2d -> ReLU -> MaxPool2d is one op), and the optimizer.

Timings are wall-clock (what a user waits for). On a shared machine they are noisy: the alternation and the
medians keep both frameworks under the same load, and the CPU seconds of the one-thread run (less sensitive to
other processes) are printed next to them.

Accuracy (``--accuracy``): trains each model for ``--epochs`` epochs and prints its test accuracy.

    python benchmarks/train_speed.py                  # speed, full MNIST, 1 and 2 threads -> results/train_speed.json
    python benchmarks/train_speed.py --limit 2000     # smoke run on the first 2000 images
    python benchmarks/train_speed.py --accuracy       # accuracy after a few epochs
"""

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import time

SPECS = ("lenet300_100", "lenet5")

from _results import write_results  # noqa: E402  (benchmarks/ is on the path when a benchmark runs)


def load(limit, split="train"):
    from minicompress import data

    root = data.shared_data_dir()
    if root is None:
        raise SystemExit("train_speed: full MNIST not found (../shared/data or $MINICOMPRESS_DATA); nothing to measure")
    x, y = data.load_mnist(root, split)
    return x[:limit], y[:limit]


# ---- 1. one epoch, each framework ------------------------------------------------------------------------------------


def epoch_minicompress(model, batches):
    """Train one epoch; returns (wall seconds, CPU seconds of this process)."""
    from minicompress import functional as F, optim

    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    wall, cpu = time.perf_counter(), time.process_time()
    for x, y in batches:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - wall, time.process_time() - cpu


def torch_model(spec, torch):
    nn = torch.nn
    if spec == "lenet300_100":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(),
                             nn.Linear(100, 10))
    return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                         nn.Linear(84, 10))


def same_weights(model, theirs, torch):
    """Copy minicompress's initial weights into the PyTorch model, so both train the very same network."""
    with torch.no_grad():
        for p, q in zip(model.parameters(), theirs.parameters(), strict=True):
            q.copy_(torch.from_numpy(p.data))


def epoch_torch(model, batches, torch):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batches = [(torch.from_numpy(x), torch.from_numpy(y.astype("int64"))) for x, y in batches]
    wall, cpu = time.perf_counter(), time.process_time()
    for x, y in batches:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - wall, time.process_time() - cpu


# ---- 2. the profile of one step ---------------------------------------------------------------------------------------


def profile_step(spec, x, y, steps):
    """Median CPU milliseconds per op (forward and backward separately) over ``steps`` training steps.

    Wraps every Function's forward and backward with a timer for the duration of the measurement; ops that run
    twice in a step (two convolutions) are told apart by their output shape. CPU time, not wall-clock, so that
    other processes on a shared machine do not land in some op's figure (with 2 threads it adds both threads).
    """
    from minicompress import functional as F, models, optim
    from minicompress.tensor import Function

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    step_times = collections.defaultdict(float)

    def timed(cls, name):
        def wrapper(ctx, *args, **kwargs):
            start = time.process_time()
            out = getattr(cls, "_timed_" + name)(ctx, *args, **kwargs)
            shape = out.shape if name == "forward" else getattr(ctx, "_out_shape", "")
            if name == "forward":
                ctx._out_shape = out.shape
            step_times[f"{cls.__name__} {name} -> {tuple(shape)}"] += time.process_time() - start
            return out

        return staticmethod(wrapper)

    classes = [c for c in set(subclasses(Function)) if "forward" in c.__dict__ and "backward" in c.__dict__]
    for cls in classes:
        for name in ("forward", "backward"):
            setattr(cls, "_timed_" + name, cls.__dict__[name])
            setattr(cls, name, timed(cls, name))
    model = models.from_spec(spec)
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    per_op, totals = collections.defaultdict(list), []
    try:
        for _ in range(steps):
            step_times.clear()
            start = time.process_time()
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            mark = time.process_time()
            opt.step()
            end = time.process_time()
            step_times["optimizer step (SGD)"] = end - mark
            step_times["graph, modules, rest"] = (end - start) - sum(step_times.values())
            totals.append(end - start)
            for key, value in step_times.items():
                per_op[key].append(value)
    finally:
        for cls in classes:
            for name in ("forward", "backward"):
                setattr(cls, name, cls.__dict__["_timed_" + name])
                delattr(cls, "_timed_" + name)
    return {key: 1000 * statistics.median(v) for key, v in per_op.items()}, 1000 * statistics.median(totals)


# ---- 3. one thread count, in a subprocess ------------------------------------------------------------------------------


def worker(args):
    """Measure at one thread count (already set in the environment); print one JSON line."""
    from minicompress import data, models

    try:
        import torch

        torch.set_num_threads(args.worker)
    except ImportError:
        torch = None
    images, labels = load(args.limit)
    batches = list(data.DataLoader(images, labels, batch_size=64, shuffle=True, seed=0))
    result = {"threads": args.worker, "torch": torch.__version__ if torch else None, "models": {}}
    for spec in SPECS:
        ours, theirs = [], []
        for repeat in range(args.repeats):
            import minicompress as mc

            mc.manual_seed(repeat)
            model = models.from_spec(spec)
            if torch is not None:
                reference = torch_model(spec, torch)
                same_weights(model, reference, torch)
            ours.append(epoch_minicompress(model, batches))
            if torch is not None:
                theirs.append(epoch_torch(reference, batches, torch))
        entry = {"minicompress_s": [o[0] for o in ours], "minicompress_cpu_s": [o[1] for o in ours]}
        if theirs:
            entry.update(torch_s=[t[0] for t in theirs], torch_cpu_s=[t[1] for t in theirs],
                         ratio_median=statistics.median(o[0] / t[0] for o, t in zip(ours, theirs)),
                         cpu_ratio_median=statistics.median(o[1] / t[1] for o, t in zip(ours, theirs)))
        result["models"][spec] = entry
    x, y = batches[0]
    result["profile_ms"], result["profile_step_ms"] = profile_step("lenet5", x, y, args.profile_steps)
    print("RESULT " + json.dumps(result), flush=True)


def run_thread_count(threads, args):
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, __file__, "--worker", str(threads), "--repeats", str(args.repeats),
           "--profile-steps", str(args.profile_steps)] + (["--limit", str(args.limit)] if args.limit else [])
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode or not lines:
        raise SystemExit(f"train_speed: the {threads}-thread run failed:\n{out.stderr[-2000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def report(results, n_images):
    med = statistics.median
    print(f"{n_images} images, batch 64, SGD; medians of {len(results[0]['models']['lenet5']['minicompress_s'])} "
          "alternating repeats; wall-clock seconds per epoch (CPU seconds in brackets)")
    for r in results:
        for spec, e in r["models"].items():
            line = (f"{r['threads']} thread{'s' if r['threads'] > 1 else ' '}  {spec:>13}: minicompress "
                    f"{med(e['minicompress_s']):6.2f} s ({med(e['minicompress_cpu_s']):6.2f})")
            if "torch_s" in e:
                line += (f" | PyTorch {med(e['torch_s']):6.2f} s ({med(e['torch_cpu_s']):6.2f}) | ratio "
                         f"{e['ratio_median']:.2f}x (CPU {e['cpu_ratio_median']:.2f}x)")
            print(line)
    for r in results:
        print(f"\nprofile of one LeNet-5 training step, {r['threads']} BLAS thread(s), median CPU ms "
              f"(step {r['profile_step_ms']:.2f} ms):")
        for key, ms in sorted(r["profile_ms"].items(), key=lambda kv: -kv[1]):
            print(f"  {ms:6.2f}  {100 * ms / r['profile_step_ms']:4.0f}%  {key}")


def save(results, args):
    """Write the figures to benchmarks/results/train_speed.json (benchmarks/_results.py: date, commit, machine,
    command); a run on --limit images is a smoke run and writes train_speed-quick.json instead."""
    settings = {"repeats": args.repeats, "limit": args.limit, "threads": args.threads, "batch_size": 64,
                "optimizer": "SGD lr 0.01 momentum 0.9", "profile_steps": args.profile_steps}
    figures = {f"{r['threads']}_threads": r for r in results}
    write_results('train_speed', settings, figures, quick=args.limit is not None)


def speed(args):
    threads = [int(t) for t in args.threads.split(",")]
    if not threads or min(threads) < 1:
        raise SystemExit(f"train_speed: --threads must be positive ints separated by commas, got {args.threads!r}")
    n_images = len(load(args.limit)[0])
    results = [run_thread_count(t, args) for t in threads]
    report(results, n_images)
    save(results, args)


def accuracy(args):
    import minicompress as mc
    from minicompress import data, models, optim
    from minicompress.train import evaluate, fit

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
    parser.add_argument("--threads", default="1,2", help="BLAS / PyTorch thread counts to measure (default 1,2)")
    parser.add_argument("--profile-steps", type=int, default=20, help="steps timed for the per-op profile")
    parser.add_argument("--accuracy", action="store_true", help="train several epochs and report test accuracy")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeats < 1 or args.profile_steps < 1:
        parser.error("--repeats and --profile-steps must be >= 1")
    if args.worker is not None:
        worker(args)
    else:
        accuracy(args) if args.accuracy else speed(args)
