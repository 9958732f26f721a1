"""The served candidate pool of one user context: what the API ranks, and what the
pipeline's two-stage ranking rows are made of (pipeline/components/candidate_examples.py), so
the ranker learns and is judged on exactly the candidates it sees at serving time.

``build_pool``: retrieval's top K (allowed, best first) first, then each item-to-item
source's best allowed items that the history gives evidence for (an item it explains by a
history item), at most its count; every source gives its feature (trainer/features.py
names) and the brand affinity features follow. An item outside retrieval's top K takes just
below the K-th score as its retrieval score (an upper bound of its own: the model did not
return it).
"""
import dataclasses

import numpy as np

from trainer.candidates.sources import RetrievalSource
from trainer.candidates.stage import CandidateStage


@dataclasses.dataclass
class Pool:
    """Candidates on their way through ranking and diversity: catalog ``rows`` [C] with
    ``scores`` [C] (retrieval's, then the ranking model's), the index of the ``source`` that
    added each (into ``sources``, the stage's sources; 0: retrieval), the history row that
    explains it (``because``, -1: none) and the candidate stage's ``features`` by name ([C]
    each). ``sources`` is kept with the pool: the API's model watcher may swap the tables
    while a request runs."""

    rows: np.ndarray
    scores: np.ndarray
    source: np.ndarray
    because: np.ndarray
    features: dict
    sources: list = dataclasses.field(default_factory=list)

    def take(self, order) -> "Pool":
        return Pool(self.rows[order], self.scores[order], self.source[order],
                    self.because[order], {k: v[order] for k, v in self.features.items()},
                    self.sources)

    def __len__(self) -> int:
        return len(self.rows)


def build_pool(history_rows, rows, scores, n_items, brand_codes, allowed, tables=None,
               counts=(), expand=True) -> Pool:
    """The pool of one context (module docstring). ``history_rows``: catalog rows, oldest
    first; ``rows`` / ``scores``: retrieval's top K (allowed, best first, K >= 1);
    ``brand_codes``: ``context_features.brand_codes`` of the catalog; ``allowed``: bool
    [n_items] or None; ``tables``: the item-to-item sources (e.g. ``ServedTables.sources``)
    or None; ``counts``: the number of candidates each of them may add; ``expand`` False:
    they add none but still give their feature."""
    rows, scores = np.asarray(rows, np.int64), np.asarray(scores, np.float64)
    if not len(rows) or len(rows) != len(scores):
        raise ValueError(f"retrieval must give >= 1 rows with a score each, got {len(rows)} "
                         f"rows and {len(scores)} scores")
    history_rows = np.asarray(history_rows, np.int64)
    retrieved = np.full(n_items, np.nextafter(scores.min(), -np.inf), np.float64)
    retrieved[rows] = scores
    quotas = [(RetrievalSource(lambda histories: retrieved[None, :]), len(rows))]
    if tables is not None:
        if len(tables) != len(counts):
            raise ValueError(f"{len(tables)} item-to-item sources but {len(counts)} counts")
        expand = expand and len(history_rows) > 0
        for source, count in zip(tables, counts):
            # At most the items it has evidence for, and only new items fit.
            room = n_items - sum(c for _, c in quotas)
            count = min(int(count), len(source.supported(history_rows)), room)
            quotas.append((source, count if expand else 0))
    stage = CandidateStage(quotas, brand_codes, allowed=allowed)
    found = stage([history_rows])
    items, source = found.items[0], found.origin[0]
    because = np.full(len(items), -1, np.int64)
    for index, (src, _) in enumerate(quotas[1:], 1):
        mine = source == index
        because[mine] = src.because(history_rows, items[mine])
    keep = found.valid[0] & ((source == 0) | (because >= 0))
    features = {name: values[0][keep] for name, values in found.features.items()}
    return Pool(items[keep], retrieved[items[keep]], source[keep], because[keep], features,
                [src for src, _ in quotas])
