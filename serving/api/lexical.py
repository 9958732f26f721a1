"""BM25 over item texts: the lexical stage of search (issue #17).

``bm25s`` (Lucene's BM25 scoring) with its English stop words and the Snowball English
stemmer (PyStemmer), so "brackets" finds "bracket" and "the" finds nothing. The API builds
the index from its catalog (``search_text.TextIndex``); the search benchmark's BM25 baseline
is this class too, so the baseline and the product's lexical stage are one implementation.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

STOPWORDS = "en"            # bm25s' English list (33 words, as Lucene's English analyzer)
STEMMER = "english"         # Snowball English stemmer (PyStemmer)
METHOD = "lucene"           # Lucene's BM25 (idf log(1 + (N - df + 0.5) / (df + 0.5)))
K1, B = 1.2, 0.75           # Lucene's defaults (on Home Depot titles the tuned 0.3 / 1.0
                            # scored the same within a standard error: benchmarks/README.md)


class Bm25:
    """BM25 over ``texts`` (one per document): lower-cased, the library's token pattern
    (words of two or more characters), ``stopwords`` removed, Snowball ``stemmer`` (None:
    none). ``scores`` gives every document's score for each query text."""

    def __init__(self, texts: Sequence[str] | None, k1: float = K1, b: float = B,
                 stopwords: str | None = STOPWORDS, stemmer: str | None = STEMMER,
                 tokens=None):
        import bm25s  # pylint: disable=import-outside-toplevel
        if k1 < 0 or not 0 <= b <= 1:
            raise ValueError(f"BM25 needs k1 >= 0 and b in [0, 1], got k1={k1}, b={b}")
        self.k1, self.b, self.stopwords, self.stemmer_name = k1, b, stopwords, stemmer
        self._stemmer = None
        if stemmer:
            import Stemmer  # pylint: disable=import-outside-toplevel
            self._stemmer = Stemmer.Stemmer(stemmer)
        self.tokens = tokens if tokens is not None else self.tokenize(texts)
        self.model = bm25s.BM25(k1=k1, b=b, method=METHOD)
        self.model.index(self.tokens, show_progress=False)
        self.size = len(self.tokens)

    def tokenize(self, texts: Sequence[str]) -> list[list[str]]:
        """Each text's tokens, as the index reads them."""
        import bm25s  # pylint: disable=import-outside-toplevel
        return bm25s.tokenize(list(texts), stopwords=self.stopwords, stemmer=self._stemmer,
                              return_ids=False, show_progress=False)

    def with_params(self, k1: float, b: float) -> "Bm25":
        """The same tokens indexed with other k1 and b."""
        return Bm25(None, k1, b, self.stopwords, self.stemmer_name, tokens=self.tokens)

    def scores_of_tokens(self, query_tokens: Sequence[str]) -> np.ndarray:
        """float32 [size]: every document's score for one tokenized query (all 0 when no
        token is in the index)."""
        ids = self.model.get_tokens_ids(list(query_tokens))
        if not ids:
            return np.zeros(self.size, np.float32)
        return np.asarray(self.model.get_scores_from_ids(ids), np.float32)

    def scores(self, query: str) -> np.ndarray:
        """float32 [size]: every document's score for a query text."""
        return self.scores_of_tokens(self.tokenize([query])[0])

    def top(self, query: str, k: int, allowed: np.ndarray | None = None):
        """(rows, scores) of the best ``k`` documents with a score > 0 (and ``allowed``),
        best first; ties by row."""
        scores = self.scores(query)
        if allowed is not None:
            scores = np.where(allowed, scores, 0.0)
        hits = np.flatnonzero(scores > 0)
        hits = hits[np.lexsort((hits, -scores[hits]))][:k]
        return hits, scores[hits].astype(np.float64)
