"""Words of the catalog's item texts: why a result matches a search, and a lexical search
that answers when the retrieval model cannot (model server down)."""
from __future__ import annotations

import re
from collections import defaultdict

import numpy as np

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
STOP_WORDS = frozenset({"a", "an", "and", "for", "in", "of", "on", "or", "the", "to", "with"})


def words(text: str) -> list[str]:
    """Lower-case words of a text, without stop words."""
    return [w for w in _WORD.findall(text.casefold()) if w not in STOP_WORDS]


class TextIndex:
    """Inverted index over title, brand and category of every catalog item."""

    def __init__(self, catalog):
        self.catalog = catalog
        self._words: list[frozenset[str]] = []
        postings: dict[str, list[int]] = defaultdict(list)
        for row, parts in enumerate(zip(catalog.titles, catalog.brands, catalog.categories)):
            item_words = frozenset(words(" ".join(parts)))
            self._words.append(item_words)
            for word in item_words:
                postings[word].append(row)
        self._postings = {w: np.array(rows, dtype=np.int64) for w, rows in postings.items()}

    def words_of(self, row: int) -> frozenset[str]:
        return self._words[row]

    def search(self, query_words: set[str], allowed: np.ndarray,
               k: int) -> list[tuple[int, float]]:
        """Up to k allowed rows matching the most query words (ties: more popular first);
        score = share of the query words matched."""
        if not query_words:
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
