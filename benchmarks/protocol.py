"""Leave-one-out split and full-ranking metrics (Recall@K, NDCG@K), evaluated in batches.

Split, per user with sequence ``s`` of length n >= 3:

- train sequence ``s[:-2]`` (models are fitted on these only);
- validation: history ``s[:-2]``, target ``s[-2]``;
- test: history ``s[:-1]`` (includes the validation item), target ``s[-1]``.

Users with fewer than 3 items keep their whole sequence in train and are not evaluated.

Ranking is over every catalog item. The rank of the target is the number of items ranked
before it: items with a higher score, plus items with an equal score and a lower item index
(ties are broken by item index, so results do not depend on sort stability). Variants:

- ``unfiltered``: nothing removed;
- ``filtered``: the user's history items are removed from the ranking (except the target
  itself, should it occur in the history).

Recall@K = 1 if rank < K; NDCG@K = 1 / log2(rank + 2) if rank < K (one relevant item).
"""
import dataclasses

import numpy as np

KS = (5, 10)
VARIANTS = ("unfiltered", "filtered")


@dataclasses.dataclass
class EvalSet:
    """Histories (arrays of 0-based item indices, oldest first) and one target per user."""

    histories: list
    targets: np.ndarray

    def __len__(self):
        return len(self.targets)


@dataclasses.dataclass
class Split:
    """The leave-one-out split of a dataset."""

    train: list            # one int32 array per user (all users, incl. unevaluated ones)
    validation: EvalSet
    test: EvalSet
    n_items: int
    n_skipped_users: int   # users with < 3 items: train only


def leave_one_out(sequences, n_items):
    """Split chronological sequences of item indices (see the module docstring)."""
    train, v_hist, v_tgt, t_hist, t_tgt = [], [], [], [], []
    skipped = 0
    for seq in sequences:
        seq = np.asarray(seq, dtype=np.int32)
        if seq.size and (seq.min() < 0 or seq.max() >= n_items):
            raise ValueError(f"item index outside 0..{n_items - 1} in a sequence")
        if len(seq) < 3:
            train.append(seq)
            skipped += 1
            continue
        train.append(seq[:-2])
        v_hist.append(seq[:-2])
        v_tgt.append(seq[-2])
        t_hist.append(seq[:-1])
        t_tgt.append(seq[-1])
    return Split(train=train,
                 validation=EvalSet(v_hist, np.asarray(v_tgt, dtype=np.int64)),
                 test=EvalSet(t_hist, np.asarray(t_tgt, dtype=np.int64)),
                 n_items=n_items, n_skipped_users=skipped)


def target_ranks(scores, targets, histories=None):
    """0-based rank of each target among all items, ties broken by item index.

    scores: float [U, n_items]; targets: int [U]; histories: if given, each user's history
    items (other than the target) are removed from the ranking (the ``filtered`` variant).
    """
    scores = np.asarray(scores)
    targets = np.asarray(targets, dtype=np.int64)
    if scores.ndim != 2 or scores.shape[0] != targets.shape[0]:
        raise ValueError(f"scores must be [U, n_items] with U = {targets.shape[0]}, "
                         f"got shape {scores.shape}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or infinite values")
    rows = np.arange(len(targets))
    target_scores = scores[rows, targets][:, None]
    before = (scores > target_scores)
    before |= (scores == target_scores) & (np.arange(scores.shape[1])[None, :] < targets[:, None])
    if histories is not None:
        for u, hist in enumerate(histories):
            hist = np.asarray(hist, dtype=np.int64)
            before[u, hist[hist != targets[u]]] = False
    return before.sum(axis=1)


def metrics_from_ranks(ranks, ks=KS):
    """Mean Recall@K and NDCG@K over users from 0-based target ranks."""
    ranks = np.asarray(ranks)
    out = {}
    for k in ks:
        hit = ranks < k
        out[f"recall@{k}"] = float(hit.mean()) if ranks.size else 0.0
        gains = np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0)
        out[f"ndcg@{k}"] = float(gains.mean()) if ranks.size else 0.0
    return out


def evaluate(scorer, eval_set, n_items, batch_size=1024, ks=KS, progress=None,
             variants=VARIANTS):
    """Score ``eval_set`` in batches with ``scorer(histories) -> [B, n_items]``.

    Returns {"unfiltered": {...}, "filtered": {...}} of mean metrics (those of ``variants``),
    and "users". ``progress``: optional callable wrapping the batch iterator (e.g. tqdm).
    """
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown variant(s) {sorted(unknown)}; use {VARIANTS}")
    ranks = {v: [] for v in variants}
    starts = range(0, len(eval_set), batch_size)
    for start in (progress(starts) if progress else starts):
        hist = eval_set.histories[start:start + batch_size]
        tgt = eval_set.targets[start:start + batch_size]
        scores = np.asarray(scorer(hist))
        if scores.shape != (len(hist), n_items):
            raise ValueError(f"scorer returned shape {scores.shape}, expected "
                             f"{(len(hist), n_items)}")
        for variant in variants:
            ranks[variant].append(target_ranks(scores, tgt,
                                               hist if variant == "filtered" else None))
    result = {v: metrics_from_ranks(np.concatenate(r) if r else np.zeros(0), ks)
              for v, r in ranks.items()}
    result["users"] = len(eval_set)
    return result
