"""Words of the catalog's item texts: why a result matches a search, and a lexical search
that answers when the retrieval model cannot (model server down)."""
from __future__ import annotations

import re
import threading
from collections import defaultdict

import numpy as np

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
STOP_WORDS = frozenset({"a", "an", "and", "for", "in", "of", "on", "or", "the", "to", "with"})
BUILD_WAIT_S = 30.0      # a fallback search waits this long for the index at most


def words(text: str) -> list[str]:
    """Lower-case words of a text, without stop words."""
    return [w for w in _WORD.findall(text.casefold()) if w not in STOP_WORDS]


class TextIndex:
    """Words of title, brand and category per item; the inverted index for the lexical
    fallback is built in a background thread (seconds for 100k items), off the startup
    path, since it is only needed when the model server is down."""

    def __init__(self, catalog, background: bool = True):
        self.catalog = catalog
        self._postings: dict[str, np.ndarray] = {}
        self._built = threading.Event()
        if background:
            threading.Thread(target=self._build, name="text-index", daemon=True).start()
        else:
            self._build()

    def words_of(self, row: int) -> frozenset[str]:
        """The item's words (title, brand, category), without stop words."""
        c = self.catalog
        return frozenset(words(f"{c.titles[row]} {c.brands[row]} {c.categories[row]}"))

    def _build(self) -> None:
        postings: dict[str, list[int]] = defaultdict(list)
        for row in range(len(self.catalog)):
            for word in self.words_of(row):
                postings[word].append(row)
        self._postings = {w: np.array(rows, dtype=np.int64) for w, rows in postings.items()}
        self._built.set()

    def search(self, query_words: set[str], allowed: np.ndarray,
               k: int) -> list[tuple[int, float]]:
        """Up to k allowed rows matching the most query words (ties: more popular first);
        score = share of the query words matched."""
        if not query_words or not self._built.wait(BUILD_WAIT_S):
            return []
        hits = np.zeros(len(self.catalog), dtype=np.float64)
        for word in query_words:
            rows = self._postings.get(word)
            if rows is not None:
                hits[rows] += 1.0
        candidates = np.flatnonzero((hits > 0) & allowed)
        order = np.lexsort((candidates, -self.catalog.popularity[candidates],
                            -hits[candidates]))
        return [(int(r), hits[r] / len(query_words)) for r in candidates[order][:k]]
