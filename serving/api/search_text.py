"""Words of the catalog's item texts (why a result matches a search) and the catalog's BM25
indexes (serving/api/lexical.py: words, and character n-grams): search's lexical signals
beside the dense one, and the whole answer when the retrieval model cannot answer (model
server down)."""
from __future__ import annotations

import logging
import re
import threading

import numpy as np

from serving.api.lexical import Bm25, CharNgramBm25

log = logging.getLogger(__name__)
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
STOP_WORDS = frozenset({"a", "an", "and", "for", "in", "of", "on", "or", "the", "to", "with"})
BUILD_WAIT_S = 30.0      # a fallback search waits this long for the index at most


def words(text: str) -> list[str]:
    """Lower-case words of a text, without stop words."""
    return [w for w in _WORD.findall(text.casefold()) if w not in STOP_WORDS]


class TextIndex:
    """Words of title, brand and category per item, and the BM25 indexes (words; character
    n-grams) over title, brand, category path and description, built in a background
    thread (seconds for 100k items),
    off the startup path; a search waits for it at most ``BUILD_WAIT_S``. ``previous``: the
    index of the catalog this one grew from (live catalog changes): it answers, over the rows
    it holds, until this one is built, and lends its search terms.

    ``terms`` (serving/api/search_terms.py, optional): what shoppers searched before choosing
    each item; the word index reads them after the item's text (the n-gram index and the
    words that explain a match do not). ``set_terms`` swaps in another version's terms: the
    word index is rebuilt in the background and the old one answers until then."""

    def __init__(self, catalog, background: bool = True, typo_tolerance: bool = True,
                 previous: "TextIndex | None" = None, terms=None):
        self.catalog, self.typo_tolerance, self.background = catalog, typo_tolerance, background
        self.terms = terms if terms is not None or previous is None else previous.terms
        self._bm25: Bm25 | None = previous._bm25 if previous is not None else None
        self._ngrams: CharNgramBm25 | None = previous._ngrams if previous is not None else None
        self._built = threading.Event()
        self._lock = threading.Lock()
        self._generation = 0          # the newest build's; an older build never swaps in
        if self._bm25 is not None:
            self._built.set()
        self._start(self._build, 0, self.terms)

    def _start(self, build, generation, terms) -> None:
        if self.background:
            threading.Thread(target=build, args=(generation, terms), name="text-index",
                             daemon=True).start()
        else:
            build(generation, terms)

    @property
    def terms_version(self) -> str | None:
        return self.terms.version if self.terms is not None else None

    def set_terms(self, terms) -> bool:
        """Use ``terms`` (None: none) from now on; False when they are the version in use."""
        version = terms.version if terms is not None else None
        with self._lock:
            if version == self.terms_version:
                return False
            self._generation += 1
            self.terms, generation = terms, self._generation
        log.info("search terms version %s: rebuilding the word index of %d items", version,
                 len(self.catalog))
        self._start(self._rebuild_words, generation, terms)
        return True

    def words_of(self, row: int) -> frozenset[str]:
        """The item's words (title, brand, category), without stop words."""
        c = self.catalog
        return frozenset(words(f"{c.titles[row]} {c.brands[row]} {c.categories[row]}"))

    def _texts(self) -> list[str]:
        c = self.catalog
        return [" ".join(part for part in (c.titles[r], c.brands[r], c.categories[r],
                                           c.descriptions[r]) if part)
                for r in range(len(c))]

    def _word_index(self, texts: list[str], terms) -> Bm25:
        """BM25 over each item's text and its search terms; typo tolerance corrects towards
        the catalog's own words (shoppers' misspellings are in the terms)."""
        if terms is None:
            return Bm25(texts, typo_tolerance=self.typo_tolerance)
        ids = self.catalog.ids
        return Bm25([f"{text} {terms.items[ids[r]]}" if ids[r] in terms.items else text
                     for r, text in enumerate(texts)],
                    typo_tolerance=self.typo_tolerance, spelled_from=texts)

    def _build(self, generation: int, terms) -> None:
        texts = self._texts()
        try:
            ngrams = CharNgramBm25(texts)
            bm25 = self._word_index(texts, terms)
            with self._lock:
                self._ngrams = ngrams
                # terms swapped meanwhile: their rebuild replaces this (unless it came first)
                if generation == self._generation or self._bm25 is None:
                    self._bm25 = bm25
        except Exception:  # pylint: disable=broad-except  (search then answers without it)
            log.exception("building the BM25 indexes of %d items failed: search has no "
                          "lexical candidates", len(self.catalog))
        finally:
            self._built.set()

    def _rebuild_words(self, generation: int, terms) -> None:
        try:
            bm25 = self._word_index(self._texts(), terms)
            with self._lock:
                if generation == self._generation:
                    self._bm25 = bm25
        except Exception:  # pylint: disable=broad-except  (the old index keeps answering)
            log.exception("rebuilding the word index of %d items with search terms version "
                          "%s failed; the previous index answers", len(self.catalog),
                          terms.version if terms is not None else None)

    @property
    def ready(self) -> bool:
        return self._bm25 is not None

    def search(self, query: str, allowed: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Up to k allowed rows by BM25 score for the query text (> 0 only), best first,
        ties by row; [] while the index is not built (after waiting ``BUILD_WAIT_S``)."""
        if k < 1 or not query.strip() or not self._built.wait(BUILD_WAIT_S) \
                or self._bm25 is None:
            return []
        bm25 = self._bm25
        rows, scores = bm25.top(query, k, allowed[:bm25.size])
        return list(zip(rows.tolist(), scores.tolist()))

    def scores(self, query: str, size: int, index: str = "words") -> np.ndarray | None:
        """float64 [size]: every row's BM25 score for the query text in the ``index``
        "words" (typo tolerance included) or "ngrams" (character n-grams); 0 for rows the
        index does not hold yet (items added since it was built); None while the indexes
        are not built (after waiting ``BUILD_WAIT_S``)."""
        if index not in ("words", "ngrams"):
            raise ValueError(f"index: expected words or ngrams, got {index!r}")
        if not self._built.wait(BUILD_WAIT_S) or self._bm25 is None:
            return None
        out = np.zeros(size, np.float64)
        if query.strip():
            found = (self._bm25 if index == "words" else self._ngrams).scores(query)[:size]
            out[:found.size] = found
        return out

    def spelling(self, query: str) -> dict[str, str]:
        """The query words typo tolerance read as other catalog words ({} until built)."""
        return self._bm25.spelling(query) if self._bm25 is not None else {}
