"""Leave-one-out split and full-ranking metrics (Recall@K, NDCG@K), evaluated in batches.

Split, per user with sequence ``s`` of length n >= 3:

- train sequence ``s[:-2]`` (models are fitted on these only);
- validation: history ``s[:-2]``, target ``s[-2]``;
- test: history ``s[:-1]`` (includes the validation item), target ``s[-1]``.

Users with fewer than 3 items keep their whole sequence in train and are not evaluated.

Ranking is over every catalog item. Ranks, the tie rule (ties broken by item index, lower
first) and the metrics are trainer/metrics.py's, shared with the trainer's offline eval.
Variants:

- ``unfiltered``: nothing removed;
- ``filtered``: the user's history items are removed from the ranking (except the target
  itself, should it occur in the history).

Recall@K = 1 if rank < K; NDCG@K = 1 / log2(rank + 2) if rank < K (one relevant item).
"""
import dataclasses

import numpy as np

from trainer import beyond_accuracy, metrics
from trainer.metrics import target_ranks  # noqa: F401  (re-exported)

KS = (5, 10)
LIST_K = beyond_accuracy.LIST_K
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


def metrics_from_ranks(ranks, ks=KS):
    """Mean Recall@K and NDCG@K over users from 0-based target ranks."""
    return metrics.metrics_from_ranks(ranks, ks)


def evaluate(scorer, eval_set, n_items, batch_size=1024, ks=KS, progress=None,
             variants=VARIANTS, facts=None):
    """Score ``eval_set`` in batches with ``scorer(histories) -> [B, n_items]``.

    Returns {"unfiltered": {...}, "filtered": {...}} of mean metrics (those of ``variants``),
    and "users". ``progress``: optional callable wrapping the batch iterator (e.g. tqdm).
    ``facts``: a ``trainer.beyond_accuracy.ItemFacts``; then also "beyond_accuracy", the
    beyond-accuracy metrics of each user's top ``LIST_K`` with the history removed (what a
    shop would show).
    """
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown variant(s) {sorted(unknown)}; use {VARIANTS}")
    ranks = {v: [] for v in variants}
    lists = []
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
        if facts is not None:
            lists.append(beyond_accuracy.top_lists(scores, LIST_K, exclude=hist))
    result = {v: metrics_from_ranks(np.concatenate(r) if r else np.zeros(0), ks)
              for v, r in ranks.items()}
    result["users"] = len(eval_set)
    if facts is not None:
        result["beyond_accuracy"] = beyond_accuracy.measure(
            np.concatenate(lists) if lists else np.zeros((0, LIST_K), np.int64), facts)
    return result


def item_facts(train, items):
    """The beyond-accuracy facts of the Beauty catalog (``beauty_data.Items``): train
    interaction counts, categories at the first level where items differ, brands, new items
    (trainer/beyond_accuracy.py) and, for diversity, the frozen MiniLM embeddings of the
    titles (benchmarks/beauty_ours.text_embeddings; a few minutes on CPU)."""
    from benchmarks import beauty_ours  # pylint: disable=import-outside-toplevel
    popularity = metrics.item_counts(train, len(items))
    return beyond_accuracy.ItemFacts(
        popularity=popularity, n_users=len(train),
        categories=beyond_accuracy.labels(beyond_accuracy.category_level(items.categories)),
        brands=beyond_accuracy.labels(list(items.brand)),
        embeddings=beauty_ours.text_embeddings(beauty_ours.item_texts(items)),
        is_new=beyond_accuracy.new_items(popularity))
