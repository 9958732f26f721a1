"""The search terms the pipeline pushed (pipeline/components/search_terms.py): per item, what
shoppers searched before they chose it, texts of at least ``min_users`` distinct users. The
API's BM25 word index reads each item's text followed by its terms (serving/api/search_text.py),
so a product is found by the words shoppers use for it, not only by its title's.

``<search_terms_dir>/<retrieval version>/search_terms.json``; the API reads the folder of the
retrieval version it serves (serving/api/pushed_files.py). The terms only ever move items in
a ranking: no answer shows them (a text of two users is not shown anywhere, unlike
autocomplete's suggestions of at least ``autocomplete_min_users``).
"""
from __future__ import annotations

import json
import os

TERMS_FILE = "search_terms.json"        # what pipeline/components/search_terms.py writes


class SearchTerms:
    """One pushed file: ``version`` (its folder) and ``items`` (item id -> its terms joined
    into one text)."""

    def __init__(self, version: str, items: dict[str, str]):
        self.version, self.items = version, items

    @classmethod
    def load(cls, folder: str) -> "SearchTerms":
        """The file in ``folder``; a ValueError names what is malformed."""
        path = os.path.join(folder, TERMS_FILE)
        with open(path, encoding="utf-8") as f:
            report = json.load(f)
        items = report.get("items") if isinstance(report, dict) else None
        if not isinstance(items, dict):
            raise ValueError(f"{path}: expected an object with 'items' (item id -> list of "
                             "search texts)")
        out = {}
        for item_id, terms in items.items():
            if not isinstance(terms, list) or not all(isinstance(t, str) for t in terms):
                raise ValueError(f"{path}: items[{item_id!r}] must be a list of strings")
            out[str(item_id)] = " ".join(terms)
        return cls(os.path.basename(os.path.normpath(folder)), out)
