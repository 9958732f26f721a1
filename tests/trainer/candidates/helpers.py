"""Hand-built candidate sources for the candidate-stage tests (here and in the Beauty
re-ranking benchmark's tests)."""
import numpy as np

from trainer.candidates import CandidateStage, RetrievalSource
from trainer.candidates.context_features import log_count
from trainer.candidates.sources import CandidateSource


def fixed_scores(rows):
    """A scores callable over fixed per-user rows [users, n_items], keyed by the history's
    first item."""
    rows = np.asarray(rows)
    return lambda histories: np.stack([rows[int(h[0])] for h in histories])


class FixedSource(CandidateSource):
    """A source with fixed per-user scores (``fixed_scores``); ``counts``: its feature is the
    log count, else the score itself."""

    def __init__(self, name, rows, counts=False):
        self.name, self._scores, self.counts = name, fixed_scores(rows), counts

    def scores(self, histories):
        return self._scores(histories)

    def feature(self, picked):
        return log_count(picked) if self.counts else picked


def two_sources(retrieval, transitions, top_n, extra, brands=None, more=(), exclude="none"):
    """Retrieval's top ``top_n`` of fixed scores, then ``extra`` of fixed transition counts,
    then the ``more`` (source, count) pairs; every item brandless unless ``brands``."""
    brands = np.full(np.shape(retrieval)[1], -1) if brands is None else brands
    return CandidateStage([(RetrievalSource(fixed_scores(retrieval)), top_n),
                           (FixedSource("transition_score", transitions, counts=True), extra),
                           *more], brands, exclude=exclude)
