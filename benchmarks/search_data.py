"""Reader of a product-search evaluation folder (e.g. homedepot_search_relevance).

Folder layout (tab-separated, one header row, UTF-8, no quoting; see the folder's
PROVENANCE.md):

- ``products.tsv``: ``product_id``, ``title``; optional ``description``, ``brand``,
  ``categories`` (levels joined with ``|`` or ``>``; may be empty). Row order is the tie-break
  order of every ranking: product index i is on line i + 2.
- ``queries.tsv``: ``query_id``, ``query``, ``split`` (``train`` or ``test``).
- ``judgments.tsv``: ``query_id``, ``product_id``, ``grade`` (integer >= 0, higher = more
  relevant); other columns (``relevance``) are ignored. Each pair at most once.

Every malformed line fails with ``SearchDataError`` naming the file and the line. The data is
licensed for research only: it is read from ``--data``, never copied into the repository.
"""
import dataclasses
import os

import numpy as np

from benchmarks import folders
from pipeline.contract import spec

PRODUCTS_FILE = "products.tsv"
QUERIES_FILE = "queries.tsv"
JUDGMENTS_FILE = "judgments.tsv"
PRODUCT_COLUMNS = ("product_id", "title")
OPTIONAL_PRODUCT_COLUMNS = ("description", "brand", "categories")
QUERY_COLUMNS = ("query_id", "query", "split")
JUDGMENT_COLUMNS = ("query_id", "product_id", "grade")
SPLITS = ("train", "test")


class SearchDataError(ValueError):
    """The data folder is missing or malformed; the message names file and line."""


@dataclasses.dataclass
class Products:
    """The catalog; product index i = row i of products.tsv (the tie-break order)."""

    product_id: list
    title: list
    description: list
    brand: list
    categories: list          # list of category levels per product
    columns: tuple            # the optional text columns with at least one value

    def __len__(self):
        return len(self.product_id)


@dataclasses.dataclass
class Query:
    """One query and its judged products (indices into Products) with their grades."""

    query_id: str
    text: str
    split: str
    products: np.ndarray      # int64 product indices, in file order
    grades: np.ndarray        # int64, same length

    @property
    def counted(self):
        """Whether the protocol counts it: at least one judgment of grade > 0."""
        return bool(self.grades.size and self.grades.max() > 0)


@dataclasses.dataclass
class SearchData:
    products: Products
    queries: list             # Query, in queries.tsv order

    def split(self, name, counted_only=True):
        """The queries of split ``name`` (by default only those the protocol counts)."""
        return [q for q in self.queries if q.split == name and (q.counted or not counted_only)]


def _rows(folder, name, required):
    """(path, column index by name, iterator of (where, fields)) of one TSV file."""
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        raise SearchDataError(f"{path}: file not found. --data must be a search evaluation "
                              f"folder with {PRODUCTS_FILE}, {QUERIES_FILE} and "
                              f"{JUDGMENTS_FILE}, e.g. ../shared/data/homedepot_search_relevance")
    with open(path, "rb") as f:
        raw = f.read().split(b"\n")
    if raw and raw[-1] == b"":
        raw.pop()
    lines = []
    for lineno, line in enumerate(raw, start=1):
        try:
            lines.append(line.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError as err:
            raise SearchDataError(f"{path}:{lineno}: not valid UTF-8 ({err.reason} at byte "
                                  f"{err.start})") from None
    if not lines:
        raise SearchDataError(f"{path}: empty file; expected a header row")
    header = lines[0].split("\t")
    missing = [c for c in required if c not in header]
    if missing:
        raise SearchDataError(f"{path}:1: header lacks column(s) {', '.join(missing)}; "
                              f"found {header}")
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if duplicated:
        raise SearchDataError(f"{path}:1: column(s) {', '.join(duplicated)} more than once")

    def rows():
        for lineno, line in enumerate(lines[1:], start=2):
            fields = line.split("\t")
            where = f"{path}:{lineno}"
            if len(fields) != len(header):
                raise SearchDataError(f"{where}: expected {len(header)} tab-separated fields "
                                      f"({', '.join(header)}), found {len(fields)}")
            yield where, fields
    return path, {c: i for i, c in enumerate(header)}, rows()


def _id(fields, col, name, where):
    value = fields[col[name]].strip()
    if not value:
        raise SearchDataError(f"{where}: empty {name}")
    return value


def _unique_id(fields, col, name, where, seen):
    """The row's id in column ``name``; empty or already in ``seen`` (id -> line) fails."""
    value = _id(fields, col, name, where)
    if value in seen:
        raise SearchDataError(f"{where}: {name} {value!r} already on line {seen[value]}")
    seen[value] = where.rsplit(":", 1)[1]
    return value


def _text(fields, col, name, where, owner):
    """The stripped, non-empty text in column ``name`` (``owner`` names the row)."""
    value = fields[col[name]].strip()
    if not value:
        raise SearchDataError(f"{where}: {owner} has an empty {name}")
    return value


def read_products(folder):
    path, col, rows = _rows(folder, PRODUCTS_FILE, PRODUCT_COLUMNS)
    out = {c: [] for c in ("product_id", "title", "description", "brand", "categories")}
    seen = {}
    for where, fields in rows:
        pid = _unique_id(fields, col, "product_id", where, seen)
        out["product_id"].append(pid)
        out["title"].append(_text(fields, col, "title", where, f"product {pid!r}"))
        for name in ("description", "brand"):
            out[name].append(fields[col[name]].strip() if name in col else "")
        cats = fields[col["categories"]] if "categories" in col else ""
        out["categories"].append(
            [c.strip() for c in cats.replace(">", "|").split("|") if c.strip()])
    if not seen:
        raise SearchDataError(f"{path}: no products after the header")
    filled = tuple(c for c in OPTIONAL_PRODUCT_COLUMNS if any(out[c]))
    return Products(columns=filled, **out)


def read_queries(folder):
    """[(query_id, text, split)] in file order."""
    path, col, rows = _rows(folder, QUERIES_FILE, QUERY_COLUMNS)
    out, seen = [], {}
    for where, fields in rows:
        qid = _unique_id(fields, col, "query_id", where, seen)
        text = _text(fields, col, "query", where, f"query {qid!r}")
        split = fields[col["split"]].strip()
        if split not in SPLITS:
            raise SearchDataError(f"{where}: split {split!r}, expected one of {SPLITS}")
        out.append((qid, text, split))
    if not out:
        raise SearchDataError(f"{path}: no queries after the header")
    return out


def read_judgments(folder, query_ids, product_index):
    """{query_id: ([product index], [grade])} in file order."""
    path, col, rows = _rows(folder, JUDGMENTS_FILE, JUDGMENT_COLUMNS)
    out, seen = {}, {}
    for where, fields in rows:
        qid = _id(fields, col, "query_id", where)
        pid = _id(fields, col, "product_id", where)
        if qid not in query_ids:
            raise SearchDataError(f"{where}: query_id {qid!r} is not in {QUERIES_FILE}")
        if pid not in product_index:
            raise SearchDataError(f"{where}: product_id {pid!r} is not in {PRODUCTS_FILE}")
        grade = fields[col["grade"]].strip()
        if not grade.isdigit():
            raise SearchDataError(f"{where}: grade {grade!r} is not an integer >= 0")
        if (qid, pid) in seen:
            raise SearchDataError(f"{where}: pair (query {qid}, product {pid}) already judged "
                                  f"on line {seen[qid, pid]}")
        seen[qid, pid] = where.rsplit(":", 1)[1]
        products, grades = out.setdefault(qid, ([], []))
        products.append(product_index[pid])
        grades.append(int(grade))
    if not seen:
        raise SearchDataError(f"{path}: no judgments after the header")
    return out


def load_search(folder):
    """Read and check the three files of ``folder`` (see the module docstring)."""
    if not os.path.isdir(folder):
        raise SearchDataError(f"{folder}: not a directory. --data must be a search evaluation "
                              f"folder, e.g. ../shared/data/homedepot_search_relevance")
    products = read_products(folder)
    rows = read_queries(folder)
    index = {pid: i for i, pid in enumerate(products.product_id)}
    judged = read_judgments(folder, {r[0] for r in rows}, index)
    queries = [Query(qid, text, split, np.asarray(judged.get(qid, ([], []))[0], np.int64),
                     np.asarray(judged.get(qid, ([], []))[1], np.int64))
               for qid, text, split in rows]
    return SearchData(products, queries)


def bm25_texts(products):
    """The text BM25 indexes per product: title, brand, category levels and description,
    joined by spaces (each part only when present)."""
    return [" ".join(part for part in (products.title[i], products.brand[i],
                                       " ".join(products.categories[i]),
                                       products.description[i]) if part)
            for i in range(len(products))]


def encoder_texts(products):
    """The text the product's MiniLM reads per product: ``trainer.text.cache.item_text``
    ("title | brand | category path"), as the retrieval trainer builds it."""
    from trainer.text.cache import item_text  # pylint: disable=import-outside-toplevel
    paths = [spec.CATEGORY_SEPARATOR.join(levels) for levels in products.categories]
    return [t.decode("utf-8") for t in item_text(products.title, products.brand,
                                                  paths).numpy()]


def describe(folder, data):
    """``{"title", "path", "products", "queries", "judgments", "text_columns" (those with a
    value for some product), per-split counts, "sha256"}`` of a loaded folder."""
    path = os.path.abspath(folder)
    splits = {}
    for name in SPLITS:
        all_queries = data.split(name, counted_only=False)
        splits[name] = {"queries": len(all_queries),
                        "counted_queries": sum(q.counted for q in all_queries),
                        "judgments": int(sum(q.grades.size for q in all_queries))}
    return {
        "title": folders.provenance_title(path) or os.path.basename(os.path.normpath(path)),
        "path": path,
        "products": len(data.products),
        "queries": len(data.queries),
        "judgments": int(sum(q.grades.size for q in data.queries)),
        "text_columns": ["title", *data.products.columns],
        "splits": splits,
        "sha256": {name: folders.sha256(os.path.join(path, name))
                   for name in (PRODUCTS_FILE, QUERIES_FILE, JUDGMENTS_FILE)},
    }
