"""Reader of the search folder layout: what it reads, and errors naming file and line."""
import os

import pytest

from benchmarks import search_data
from benchmarks.search_data import SearchDataError

PRODUCTS = ("product_id\ttitle\tdescription\tbrand\tcategories\n"
            "p1\tSteel Angle Bracket\t\tSimpson\tHardware|Brackets\n"
            "p2\tL Bracket 2 in.\tA zinc corner brace.\t\tHardware > Brackets\n"
            "p3\tWhite Paint 1 gal.\t\t\t\n")
QUERIES = ("query_id\tquery\tsplit\n"
           "1\tangle bracket\ttrain\n"
           "2\twhite paint\ttest\n"
           "3\tgallon of paint\ttest\n")
JUDGMENTS = ("query_id\tproduct_id\trelevance\tgrade\n"
             "1\tp1\t3\t2\n"
             "1\tp2\t2.33\t1\n"
             "2\tp3\t2.67\t2\n"
             "2\tp1\t1\t0\n"
             "3\tp2\t1.33\t0\n")


def write_folder(path, products=PRODUCTS, queries=QUERIES, judgments=JUDGMENTS):
    os.makedirs(path, exist_ok=True)
    for name, text in (("products.tsv", products), ("queries.tsv", queries),
                       ("judgments.tsv", judgments)):
        with open(os.path.join(path, name), "w", encoding="utf-8") as f:
            f.write(text)
    return str(path)


def test_load_reads_products_queries_and_graded_judgments(tmp_path):
    data = search_data.load_search(write_folder(tmp_path))
    assert data.products.product_id == ["p1", "p2", "p3"]
    assert data.products.categories == [["Hardware", "Brackets"], ["Hardware", "Brackets"], []]
    assert data.products.columns == ("description", "brand", "categories")
    q1 = data.queries[0]
    assert (q1.query_id, q1.text, q1.split) == ("1", "angle bracket", "train")
    assert q1.products.tolist() == [0, 1] and q1.grades.tolist() == [2, 1]
    # Query 3 has only a grade-0 judgment: not counted by the protocol.
    assert [q.query_id for q in data.split("test")] == ["2"]
    assert [q.query_id for q in data.split("test", counted_only=False)] == ["2", "3"]


def test_texts_use_the_columns_that_are_present(tmp_path):
    products = search_data.load_search(write_folder(tmp_path)).products
    assert search_data.bm25_texts(products) == [
        "Steel Angle Bracket Simpson Hardware Brackets",
        "L Bracket 2 in. Hardware Brackets A zinc corner brace.",
        "White Paint 1 gal."]
    assert search_data.encoder_texts(products)[:2] == [
        "Steel Angle Bracket | Simpson | Hardware > Brackets",
        "L Bracket 2 in. | Hardware > Brackets"]      # the product's item text: no description


def test_titles_only_folder_and_description(tmp_path):
    folder = write_folder(tmp_path, products="product_id\ttitle\np1\tA\np2\tB\np3\tC\n")
    data = search_data.load_search(folder)
    assert data.products.columns == ()
    info = search_data.describe(folder, data)
    assert info["text_columns"] == ["title"] and info["products"] == 3
    assert info["splits"]["test"] == {"queries": 2, "counted_queries": 1, "judgments": 3}
    assert set(info["sha256"]) == {"products.tsv", "queries.tsv", "judgments.tsv"}


@pytest.mark.parametrize("file, text, where, message", [
    ("products.tsv", "product_id\tname\n", "products.tsv:1", r"lacks column\(s\) title"),
    ("products.tsv", PRODUCTS + "p4\tonly two\n", "products.tsv:5", "expected 5 tab-sep"),
    ("products.tsv", PRODUCTS + "p1\tAgain\t\t\t\n", "products.tsv:5", "already on line 2"),
    ("products.tsv", PRODUCTS + "p4\t \t\t\t\n", "products.tsv:5",
     "product 'p4' has an empty title"),
    ("queries.tsv", QUERIES + "4\tnails\tvalidation\n", "queries.tsv:5", "split 'validation'"),
    ("queries.tsv", QUERIES + "5\t\ttest\n", "queries.tsv:5", "query '5' has an empty query"),
    ("judgments.tsv", JUDGMENTS + "9\tp1\t3\t2\n", "judgments.tsv:7", "query_id '9' is not"),
    ("judgments.tsv", JUDGMENTS + "1\tp9\t3\t2\n", "judgments.tsv:7",
     "product_id 'p9' is not"),
    ("judgments.tsv", JUDGMENTS + "1\tp3\t3\t2.5\n", "judgments.tsv:7", "grade '2.5'"),
    ("judgments.tsv", JUDGMENTS + "1\tp1\t3\t2\n", "judgments.tsv:7", "already judged on line 2"),
])
def test_errors_name_file_and_line(tmp_path, file, text, where, message):
    folder = write_folder(tmp_path, **{file.split(".")[0]: text})
    with pytest.raises(SearchDataError, match=message) as err:
        search_data.load_search(folder)
    assert where in str(err.value)


def test_missing_folder_file_and_bad_encoding(tmp_path):
    with pytest.raises(SearchDataError, match="not a directory"):
        search_data.load_search(str(tmp_path / "nowhere"))
    folder = write_folder(tmp_path)
    os.remove(os.path.join(folder, "judgments.tsv"))
    with pytest.raises(SearchDataError, match="judgments.tsv: file not found"):
        search_data.load_search(folder)
    write_folder(tmp_path)
    with open(os.path.join(folder, "queries.tsv"), "ab") as f:
        f.write(b"4\tcaf\xe9\ttest\n")
    with pytest.raises(SearchDataError, match=r"queries.tsv:5: not valid UTF-8"):
        search_data.load_search(folder)
