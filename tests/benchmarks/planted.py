"""A tiny planted next-item dataset shared by the benchmark model tests."""
import numpy as np

from benchmarks import protocol, registry

N_ITEMS = 100
HOT = (3, 17, 42, 68, 91)          # globally popular items


def planted_sequences(n_users=400, seed=0):
    """10 groups of 10 items; each step goes to the next item of the group (p=0.7) or to a
    hot item (p=0.3). So popularity, transitions and co-occurrence all carry signal."""
    rng = np.random.default_rng(seed)
    sequences = []
    for _ in range(n_users):
        item = int(rng.integers(N_ITEMS))
        seq = [item]
        for _ in range(int(rng.integers(4, 9)) - 1):
            if rng.random() < 0.7:
                item = (item // 10) * 10 + (item % 10 + 1) % 10
            else:
                item = int(rng.choice(HOT))
            seq.append(item)
        sequences.append(np.asarray(seq, dtype=np.int32))
    return sequences


def planted_task(n_users=400, seed=0):
    """(FitTask, Split) of the planted data."""
    split = protocol.leave_one_out(planted_sequences(n_users, seed), N_ITEMS)
    return registry.FitTask(split.train, list(range(N_ITEMS)), N_ITEMS, split.validation,
                            batch_size=64), split


def random_scorer(seed=0):
    rng = np.random.default_rng(seed)
    return lambda histories: rng.random((len(histories), N_ITEMS))
