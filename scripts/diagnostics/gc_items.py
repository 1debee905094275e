"""Cost of a full garbage collection over a stream's worth of training items (train/stream.py).

    python scripts/diagnostics/gc_items.py

8 pools × 6,000 items (prompt ids, reply ids, one shared frame array) as the StreamSet keeps them:
with list ids (what encode_example returned before) every item stays tracked by the collector; with
tuple ids (now) the collector untracks them after one pass.
"""

import collections
import gc
import time

import numpy as np


def pools(make):
    frames = np.zeros((8, 84, 168, 3), np.uint8)
    out = [collections.deque(maxlen=6000) for _ in range(8)]
    for q in out:
        for _ in range(6000):
            q.append((make(range(150)), make((5, 6)), frames))
    return out


for name, make in (("lists", list), ("tuples", tuple)):
    keep = pools(make)
    gc.collect()  # first pass: untracks the tuples of atoms
    t0 = time.perf_counter()
    for _ in range(5):
        gc.collect()
    print(f"{name:6s}: full collection {1e3 * (time.perf_counter() - t0) / 5:.1f} ms over {8 * 6000:,} items")
    del keep
