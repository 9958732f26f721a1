"""Search terms in the API (serving/api/search_terms.py): the pipeline's file of what shoppers
searched before choosing each item, read by search's BM25 word index
(serving/api/search_text.py, serving/api/lexical.py)."""
from __future__ import annotations

import json
import types

import numpy as np
import pytest
from fastapi.testclient import TestClient

from serving.api.app import create_app
from serving.api.lexical import Bm25
from serving.api.pushed_files import VersionShelf
from serving.api.search_terms import TERMS_FILE, SearchTerms
from serving.api.search_text import TextIndex
from tests.serving.api.setup import (api_model_server, api_serving_dir, api_shop,  # noqa: F401
                                     make_settings)

TITLES = ["Ceiling fan 52 in.", "Toilet seat round", "Toilet flange kit", "Garden hose 50 ft"]


class _Catalog(types.SimpleNamespace):
    """What TextIndex reads of a catalog."""

    def __len__(self):
        return len(self.titles)


def catalog(titles=TITLES):
    n = len(titles)
    return _Catalog(ids=np.array([f"i{r}" for r in range(n)], dtype=object),
                    titles=list(titles), brands=[""] * n, categories=[""] * n,
                    descriptions=[""] * n)


def write_terms(base, version, items):
    folder = base / str(version)
    folder.mkdir(parents=True)
    (folder / TERMS_FILE).write_text(json.dumps({"min_users": 2, "items": items}))
    return folder


def test_a_typo_is_read_as_the_catalogs_word_and_also_matches_the_same_typo_in_terms():
    texts = ["toilet seat", "toilet flange", "garden hose"]
    plain = Bm25(texts, typo_tolerance=True)
    with_terms = Bm25([texts[0], texts[1] + " toliet wax ring", texts[2]],
                      typo_tolerance=True, spelled_from=texts)
    assert plain.spelling("toliet") == with_terms.spelling("toliet") == {"toliet": "toilet"}
    before, after = plain.scores("toliet"), with_terms.scores("toliet")
    assert before[0] > 0 and before[1] > 0 and before[2] == 0
    assert after[1] > after[0] > 0          # shoppers who typed "toliet" chose the flange
    # a word only shoppers used is matched, never offered as a correction
    assert with_terms.spelling("wax") == {} and with_terms.scores("wax")[1] > 0
    assert with_terms.spelling("ringg") == {}          # "ring" is not a catalog word


def test_without_terms_keeping_the_typed_word_changes_no_score():
    texts = ["toilet seat", "toilet flange", "garden hose"]
    index = Bm25(texts, typo_tolerance=True)
    np.testing.assert_array_equal(index.scores("toliet seat"),
                                  index.scores_of_tokens(index.tokenize(["toilet seat"])[0]))


def test_the_word_index_reads_an_items_terms_and_set_terms_swaps_them():
    c = catalog()
    index = TextIndex(c, background=False)
    assert index.scores("stocking stuffer", len(c)).max() == 0
    index = TextIndex(c, background=False,
                      terms=SearchTerms("3", {"i3": "stocking stuffer", "i0": "fan"}))
    found = index.scores("stocking stuffer", len(c))
    assert found.argmax() == 3 and np.count_nonzero(found) == 1
    assert index.scores("stocking stuffer", len(c), "ngrams")[3] == \
        TextIndex(c, background=False).scores("stocking stuffer", len(c), "ngrams")[3]
    assert index.words_of(3) == frozenset({"garden", "hose", "50", "ft"})   # never shown
    assert index.set_terms(SearchTerms("3", {})) is False                   # same version
    assert index.set_terms(SearchTerms("4", {"i1": "stocking stuffer"})) is True
    assert index.scores("stocking stuffer", len(c)).argmax() == 1 and index.terms_version == "4"
    assert index.set_terms(None) is True
    assert index.scores("stocking stuffer", len(c)).max() == 0
    grown = TextIndex(catalog(TITLES + ["Leaf blower"]), background=False,
                      previous=TextIndex(c, background=False,
                                         terms=SearchTerms("5", {"i2": "stocking stuffer"})))
    assert grown.terms_version == "5" and grown.scores("stocking stuffer", 5).argmax() == 2


def test_a_malformed_file_loads_nothing_and_names_what_is_wrong(tmp_path):
    write_terms(tmp_path, 2, {"i0": ["fan with light"]})
    bad = tmp_path / "3"
    bad.mkdir()
    (bad / TERMS_FILE).write_text(json.dumps({"items": {"i0": "not a list"}}))
    with pytest.raises(ValueError, match=r"items\['i0'\] must be a list of strings"):
        SearchTerms.load(str(bad))
    served = {"version": 3}
    shelf = VersionShelf(str(tmp_path), (TERMS_FILE,), lambda: served["version"],
                         SearchTerms.load, "search terms")
    assert shelf.current() is None                      # version 3 unreadable: nothing
    served["version"] = 2
    assert shelf.current().items == {"i0": "fan with light"}
    served["version"] = 8                      # none for it: the newest (3, unreadable)
    assert shelf.current() is None
    assert VersionShelf("", (TERMS_FILE,), lambda: 2, SearchTerms.load, "x").current() is None


@pytest.fixture(scope="module")
def terms_apis(api_shop, api_model_server, tmp_path_factory):  # noqa: F811
    """(API with the pushed search terms, API without); search fusion ``linear`` (the
    default; ``union`` leaves the order to the ranking model)."""
    folder = tmp_path_factory.mktemp("terms_api")
    # the synthetic models are version 1; shoppers who searched "stocking stuffer" chose toy4
    write_terms(folder / "search_terms", 1, {"toy4": ["stocking stuffer"]})
    settings = [make_settings(api_shop, api_model_server.grpc_port, folder / f"events{i}.db",
                              search_fusion="linear", **extra)
                for i, extra in enumerate(({"search_terms_dir": str(folder / "search_terms")},
                                           {}))]
    with TestClient(create_app(settings[0])) as with_terms, \
            TestClient(create_app(settings[1])) as without:
        yield with_terms, without


def test_search_finds_an_item_by_what_shoppers_searched_before_choosing_it(terms_apis):
    def answer(client):
        response = client.get("/v1/search", params={"q": "stocking stuffer", "k": 5})
        assert response.status_code == 200, response.text
        return response.json()["items"]

    with_terms, without = (answer(client) for client in terms_apis)
    found = [item["item_id"] for item in with_terms]
    assert "toy4" in found and "toy4" not in [item["item_id"] for item in without]
    # its reason is the shopper's own search, not words its text does not have
    assert "related_to_search" in json.dumps(with_terms[found.index("toy4")])
    assert [client.get("/readyz").json()["search_terms_version"]
            for client in terms_apis] == ["1", None]
