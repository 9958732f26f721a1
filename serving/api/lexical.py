"""BM25 over item texts: the lexical stage of search (issue #17).

``bm25s`` (Lucene's BM25 scoring) with its English stop words and the Snowball English
stemmer (PyStemmer), so "brackets" finds "bracket" and "the" finds nothing. The API builds
the index from its catalog (``search_text.TextIndex``); the search benchmark's BM25 baseline
is this class too, so the baseline and the product's lexical stage are one implementation.

Typo tolerance (``typo_tolerance``): a query word whose stem the index does not know is read
as the catalog word closest in optimal-string-alignment distance (rapidfuzz; a swap of two
letters counts one edit) within ``max_edits`` (1 for 4-7 letters, 2 from 8; none for
shorter words or words with digits, which are model numbers and sizes), the most frequent
one on ties. ``spelling`` says what was replaced ("toliet" -> "toilet"), for a "did you
mean".

``CharNgramBm25`` is BM25 over the words' character n-grams (``#toilet#`` -> ``#to``,
``toi``, ...): a misspelled, split or joined word ("fiber glass" for "fiberglass") still
shares most of its n-grams with the catalog's spelling where whole words share nothing.
Search fuses it beside the word index (serving/api/search_fusion.py).
"""
from __future__ import annotations

import collections
import re
from typing import Sequence

import numpy as np

from serving.api.search_fusion import top_rows

STOPWORDS = "en"            # bm25s' English list (33 words, as Lucene's English analyzer)
STEMMER = "english"         # Snowball English stemmer (PyStemmer)
METHOD = "lucene"           # Lucene's BM25 (idf log(1 + (N - df + 0.5) / (df + 0.5)))
K1, B = 1.2, 0.75           # Lucene's defaults (on Home Depot titles the tuned 0.3 / 1.0
                            # scored the same within a standard error: benchmarks/README.md)
CACHE_SIZE = 10_000         # corrections remembered (a dict cleared when full)
TOKEN = re.compile(r"(?u)\b\w\w+\b")    # bm25s' token pattern (words of 2+ characters)
NGRAM = 3                   # character n-grams (on Home Depot's train queries 3 beat 4 and
                            # 3-5 in the fusion: docs/DESIGN.md "Character n-grams")
_NGRAM_WORD = re.compile(r"(?u)\w+")   # words of any length: "2" in "2 in." counts


def word_counts(texts: Sequence[str]) -> collections.Counter:
    """Lower-cased words (``TOKEN``) of the texts and how often each occurs."""
    counts: collections.Counter = collections.Counter()
    for text in texts:
        counts.update(TOKEN.findall(text.lower()))
    return counts


def max_edits(word: str) -> int:
    """Edits a misspelled word may be away from its correction."""
    if len(word) < 4 or any(c.isdigit() for c in word):
        return 0
    return 1 if len(word) <= 7 else 2


class Bm25:
    """BM25 over ``texts`` (one per document): lower-cased, the library's token pattern
    (words of two or more characters), ``stopwords`` removed, Snowball ``stemmer`` (None:
    none). ``scores`` gives every document's score for each query text.

    ``spelled_from`` (with ``typo_tolerance``): the texts whose words count as spelled
    right and are what a misspelled word is read as (default: ``texts``). The API indexes
    each item's text with the search texts shoppers typed before choosing it, misspellings
    included; corrections still go to the catalog's own words, and a corrected query also
    keeps the word as typed, which then matches the items shoppers chose after the same
    misspelling."""

    def __init__(self, texts: Sequence[str] | None, k1: float = K1, b: float = B,
                 stopwords: str | None = STOPWORDS, stemmer: str | None = STEMMER,
                 tokens=None, typo_tolerance: bool = False, words=None,
                 spelled_from: Sequence[str] | None = None, known=None):
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
        self.typo_tolerance = typo_tolerance
        # the catalog's lower-cased words and their counts: what a misspelled word may be
        source = spelled_from if spelled_from is not None else texts
        self._words = words if words is not None else (
            word_counts(source) if typo_tolerance and source is not None else None)
        self._vocabulary = sorted(self._words) if self._words else []
        # stems spelled right: the index's own, or those of ``spelled_from``'s words
        self._known = known if known is not None else (
            frozenset(map(self._stem, self._words)) if spelled_from is not None
            and self._words is not None else None)
        self._nearest_cache: dict[str, str | None] = {}

    def tokenize(self, texts: Sequence[str]) -> list[list[str]]:
        """Each text's tokens, as the index reads them."""
        import bm25s  # pylint: disable=import-outside-toplevel
        return bm25s.tokenize(list(texts), stopwords=self.stopwords, stemmer=self._stemmer,
                              return_ids=False, show_progress=False)

    def with_params(self, k1: float, b: float) -> "Bm25":
        """The same tokens indexed with other k1 and b."""
        return Bm25(None, k1, b, self.stopwords, self.stemmer_name, tokens=self.tokens,
                    typo_tolerance=self.typo_tolerance, words=self._words, known=self._known)

    def _stem(self, word: str) -> str:
        return self._stemmer.stemWord(word) if self._stemmer is not None else word

    def _nearest(self, word: str) -> str | None:
        """The catalog word closest to ``word`` within its edits (most frequent on ties),
        or None; remembered for the last ``CACHE_SIZE`` words asked."""
        if word not in self._nearest_cache:
            if len(self._nearest_cache) >= CACHE_SIZE:
                self._nearest_cache.clear()
            self._nearest_cache[word] = self._search_nearest(word)
        return self._nearest_cache[word]

    def _search_nearest(self, word: str) -> str | None:
        from rapidfuzz import distance, process  # pylint: disable=import-outside-toplevel
        edits = max_edits(word)
        if not edits or not self._vocabulary:
            return None
        found = process.extract(word, self._vocabulary, scorer=distance.OSA.distance,
                                score_cutoff=edits, limit=None)
        if not found:
            return None
        best = min(d for _, d, _ in found)
        return max((w for w, d, _ in found if d == best), key=lambda w: (self._words[w], w))

    def spelling(self, query: str) -> dict[str, str]:
        """{query word (lower case): the catalog word it is read as} for each word whose
        stem the index does not know and that has a catalog word within its edits (empty
        without ``typo_tolerance``)."""
        if not self.typo_tolerance:
            return {}
        out = {}
        known = self._known if self._known is not None else self.model.vocab_dict
        for word in TOKEN.findall(query.lower()):
            if word in out or self._stem(word) in known:
                continue
            nearest = self._nearest(word)
            if nearest is not None:
                out[word] = nearest
        return out

    def scores_of_tokens(self, query_tokens: Sequence[str]) -> np.ndarray:
        """float32 [size]: every document's score for one tokenized query (all 0 when no
        token is in the index)."""
        ids = self.model.get_tokens_ids(list(query_tokens))
        if not ids:
            return np.zeros(self.size, np.float32)
        return np.asarray(self.model.get_scores_from_ids(ids), np.float32)

    def scores(self, query: str) -> np.ndarray:
        """float32 [size]: every document's score for a query text (its misspelled words
        read as ``spelling`` says, with ``typo_tolerance``, and kept as typed too: a word
        the index does not hold adds nothing)."""
        spelling = self.spelling(query)
        corrected = did_you_mean(query, spelling)
        if corrected is not None:
            typed = [word for word, read in spelling.items() if word != read]
            query = " ".join([corrected, *typed])
        return self.scores_of_tokens(self.tokenize([query])[0])

    def top(self, query: str, k: int, allowed: np.ndarray | None = None):
        """(rows, scores) of the best ``k`` documents with a score > 0 (and ``allowed``),
        best first; ties by row."""
        scores = self.scores(query)
        matched = scores > 0 if allowed is None else (scores > 0) & allowed
        hits = top_rows(scores, matched, k)
        return hits, scores[hits].astype(np.float64)


def did_you_mean(query: str, spelling: dict[str, str]) -> str | None:
    """The query with each replaced word (any case) written as ``spelling`` reads it, or
    None when nothing was replaced."""
    if not spelling:
        return None
    return TOKEN.sub(lambda m: spelling.get(m.group(0).lower(), m.group(0)), query)


def char_ngrams(text: str, n: int = NGRAM) -> list[str]:
    """The ``n``-character pieces of each lower-cased word of ``text``, the word marked at
    both ends (``#``) so that beginnings and ends count: "Tile" -> "#ti", "til", "ile",
    "le#"; a word shorter than ``n`` - 2 letters is one piece."""
    out = []
    for word in _NGRAM_WORD.findall(text.lower()):
        marked = f"#{word}#"
        out.extend(marked[i:i + n] for i in range(max(1, len(marked) - n + 1)))
    return out


class CharNgramBm25:
    """BM25 (bm25s, Lucene scoring, ``k1``/``b`` Lucene's defaults) over the character
    ``n``-grams of ``texts`` (``char_ngrams``): no stop words, no stemming (the n-grams
    already match a word's variants). ``scores`` gives every document's score for a query
    text."""

    def __init__(self, texts: Sequence[str], n: int = NGRAM, k1: float = K1, b: float = B):
        import bm25s  # pylint: disable=import-outside-toplevel
        if n < 2:
            raise ValueError(f"character n-grams need n >= 2, got {n}")
        self.n = n
        self.model = bm25s.BM25(k1=k1, b=b, method=METHOD)
        tokens = [char_ngrams(text, n) for text in texts]
        self.model.index(tokens, show_progress=False)
        self.size = len(tokens)

    def scores(self, query: str) -> np.ndarray:
        """float32 [size]: every document's score for the query's n-grams (all 0 when none
        is in the index)."""
        ids = self.model.get_tokens_ids(char_ngrams(query, self.n))
        if not ids:
            return np.zeros(self.size, np.float32)
        return np.asarray(self.model.get_scores_from_ids(ids), np.float32)
