"""Crafted files: every way a forger who has read minicompress could edit a file, written with a valid digest.

For each kind minicompress writes (a trained model, pruned, statically and dynamically quantized, Deep Compression,
binary), one small file is built; then every metadata value (every leaf and container of the JSON, except format,
version and kind) is replaced by each of 16 hostile values (True, -1, 2^40, 1e308, "x", None, [], {}, ...) and every
array by each of 10 hostile versions (flattened, empty, float64, int8, bool, negated, times 1e30, all NaN / the
largest integer, transposed, doubled). Each crafted file is written with write_npz, so its SHA-256 digest is valid,
and loaded with checkpoint.load. The only outcomes allowed: CheckpointError, or a model that loads and maps a zero
input to finite logits (load runs it once). Anything else is printed with where it was raised; so is a load that
takes more than half a second.

    python benchmarks/hostile_files.py    # 2,920 files: 11 s of CPU (43 s wall on a busy 2-core machine)
"""

import collections
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from hostile_files import KINDS, build  # noqa: E402  (the test suite's builders: one file of each kind)
from test_file_fuzz import HOSTILE_VALUES, _hostile_array, _leaves  # noqa: E402

from minicompress import checkpoint  # noqa: E402


def crafted(arrays, meta):
    """(description, arrays, meta) of every crafted variant of one file."""
    for path, _ in _leaves(meta):
        if path and path[0] not in ("format", "version", "kind"):
            for value in HOSTILE_VALUES:
                yield f"meta {list(path)} = {value!r}", path, value
    for key in sorted(arrays):
        for how in range(10):
            yield f"array {key!r} variant {how}", key, how


def main():
    outcomes, failures, slow = collections.Counter(), [], []
    with tempfile.TemporaryDirectory() as folder:
        for kind in KINDS:
            source = build(kind, Path(folder) / f"{kind}.npz")
            for description, where, change in crafted(*checkpoint.read_npz(source)):
                arrays, meta = checkpoint.read_npz(source)
                if isinstance(where, tuple):
                    *parent, last = where
                    target = meta
                    for key in parent:
                        target = target[key]
                    target[last] = change
                else:
                    arrays[where] = _hostile_array(arrays[where], change)
                path = Path(folder) / "crafted.npz"
                try:
                    checkpoint.write_npz(path, arrays, meta)
                except ValueError:  # write_npz itself refuses it (e.g. a NaN in the metadata)
                    outcomes[kind, "not writable"] += 1
                    continue
                start = time.perf_counter()
                try:
                    checkpoint.load(path)
                    outcomes[kind, "loaded and ran"] += 1
                except checkpoint.CheckpointError:
                    outcomes[kind, "CheckpointError"] += 1
                except Exception as exc:  # noqa: BLE001  (the point: anything else is a finding)
                    frame = traceback.extract_tb(exc.__traceback__)[-1]
                    failures.append(f"{kind}: {description}: {type(exc).__name__} at {Path(frame.filename).name}:"
                                    f"{frame.lineno}: {str(exc)[:120]}")
                    outcomes[kind, "other exception"] += 1
                if time.perf_counter() - start > 0.5:
                    slow.append(f"{kind}: {description}: {time.perf_counter() - start:.2f} s")
    print(f"{'kind':<12}{'CheckpointError':>16}{'loaded and ran':>16}{'not writable':>14}{'other exception':>17}")
    for kind in KINDS:
        print(f"{kind:<12}" + "".join(f"{outcomes[kind, o]:>{w}}" for o, w in (
            ("CheckpointError", 16), ("loaded and ran", 16), ("not writable", 14), ("other exception", 17))))
    total = sum(outcomes.values())
    print(f"{total} crafted files; other exceptions: {len(failures)}; loads over 0.5 s: {len(slow)}")
    for line in failures + slow:
        print("  " + line)
    return 1 if failures or slow else 0


if __name__ == "__main__":
    sys.exit(main())
