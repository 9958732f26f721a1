"""Writes numbered batches of events with event ids into a SQLite event store and prints
``ack <batch>`` after each add returned (test_crash.py kills it with SIGKILL).

    python -m tests.serving.events.crash_writer DB BATCHES BATCH_SIZE [synchronous]
"""
from __future__ import annotations

import sys

import numpy as np
import pandas as pd

from pipeline.contract import spec
from serving.events.store import SqliteEventStore

T0 = 1_750_000_000


def batch(number: int, size: int) -> pd.DataFrame:
    """Batch ``number``: ``size`` clicks of user ``user<number % 7>`` with event ids
    ``b<number>-<i>`` (the same frame every time it is built: a retry sends it again)."""
    return pd.DataFrame({
        spec.USER_ID: [f"user{number % 7}"] * size,
        spec.ITEM_ID: [f"item{(number * size + i) % 97}" for i in range(size)],
        spec.EVENT_TYPE: ["click"] * size,
        spec.VALUE: [np.nan] * size,
        spec.QUERY: [""] * size,
        spec.SESSION_ID: [f"s{number}"] * size,
        spec.TIMESTAMP: [T0 + number * size + i for i in range(size)],
        spec.EVENT_ID: [f"b{number}-{i}" for i in range(size)],
    })


def main(argv: list[str]) -> int:
    path, batches, size = argv[0], int(argv[1]), int(argv[2])
    store = SqliteEventStore(path, synchronous=argv[3] if len(argv) > 3 else "NORMAL")
    print("ready", flush=True)
    for number in range(batches):
        store.add_batch(batch(number, size), received_at=T0)
        print(f"ack {number}", flush=True)       # only after the commit returned
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
