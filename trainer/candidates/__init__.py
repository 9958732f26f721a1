"""The candidate stage of the two-stage recommender: which items the ranking model scores for
a user, and the context features it scores them with.

- ``sources``: candidate sources (retrieval scores, item-to-item transitions and
  co-occurrence, text similarity and its table form, the text neighbours), each scoring
  every catalog item for a history;
- ``item_to_item``: the transition and co-occurrence tables the item-to-item sources fit on
  the shop's train sequences;
- ``stage``: ``CandidateStage``, the union of the sources' best items per user under the
  exclusion rules, with per-source counts;
- ``context_features``: the ranking features of each candidate computed outside the model
  (relative retrieval score, log counts, brand affinity; names from trainer/features.py).

Items are catalog row indices (0 .. n_items - 1) and histories arrays of them, oldest first.
numpy and scipy only, no TensorFlow: the serving API imports this package.
"""
from trainer.candidates.context_features import brand_codes
from trainer.candidates.sources import (CandidateSource, CooccurrenceSource, RetrievalSource,
                                        TextNeighbourSource, TextSimilaritySource,
                                        TransitionSource)
from trainer.candidates.stage import EXCLUDE_RULES, Candidates, CandidateStage

__all__ = ["CandidateSource", "CandidateStage", "Candidates", "CooccurrenceSource",
           "EXCLUDE_RULES", "RetrievalSource", "TextNeighbourSource", "TextSimilaritySource",
           "TransitionSource", "brand_codes"]
