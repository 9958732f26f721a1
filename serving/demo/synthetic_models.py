"""Synthetic retrieval and ranking SavedModels with the production signatures.

For tests, benchmarks and demos that need models without a trained pipeline. Built from a
catalog (the items frame of ``load_shop``) and per-item engagement counts; their scores
are simple and known, so tests can check real behaviour:

* candidate embedding = [``category_weight`` * one-hot(top category), popularity prior,
  item noise] (dimension ``dim``: top categories + 1 + noise dimensions);
* query embedding = [``category_weight`` * (history top-category shares + query-word
  category shares), 1, mean noise of the history items]; query words vote for the top
  category they mostly appear in (titles and category paths);
* ``top_k`` = brute-force dot product over the whole catalog (``k`` best, like
  ``tfrs.layers.factorized_top_k.BruteForce``);
* ranking ``score``: click = sigmoid(4 * affinity + 2 * prior + 5 * match - 2), where affinity
  is the share of the history in the item's top category and match the share of the search
  query's words found in the item's title or category path (0 without a query: ``score``);
  purchase = sigmoid(logit - 1) if in stock; score = 0.7 * click + 0.3 * purchase.
  ``score_with_query`` and ``rank_candidates`` (one user context, N candidates) add the query.

Signatures and tensor names/dtypes/shapes match ``trainer/signatures.py`` (the ranking
model has no ``serving_default``: it is TFMA's). Each version carries TF Serving warm-up
requests for every signature (``trainer/warmup.py``), as the trainers' exports do.
"""
from __future__ import annotations

import collections
import os
import re
import tempfile
from typing import Mapping

import numpy as np
import pandas as pd
import tensorflow as tf

from pipeline.contract.spec import top_category
from trainer import features as F
from trainer import warmup

RETRIEVAL, RANKING = "retrieval", "ranking"
TOP_K = 100
CATEGORY_WEIGHT = 1.0
QUERY_WEIGHT = 5.0         # ranking logit per share of query words matched (> history)
PRIOR_SCALE = 0.5          # popularity prior of the most engaged item
NOISE_SCALE = 0.3          # norm of an item's noise vector (item individuality)
WORD_SHARE = 0.6           # a word votes for a category holding >= this share of its uses
_WORD_SPLIT = "[^a-z0-9]+"

_HISTORY = tf.TensorSpec([None, None], tf.string, name=F.HISTORY_ITEM_IDS)


def _spec(key, dtype=tf.string):
    return tf.TensorSpec([None], dtype, name=key)


def words(text: str) -> list[str]:
    """Lower-case alphanumeric words (the same split the models apply to queries)."""
    return [w for w in re.split(_WORD_SPLIT, text.lower()) if w]


def word_categories(items: pd.DataFrame, categories: list[str]) -> dict[str, int]:
    """word -> index of the top category it mostly appears in (titles + category paths)."""
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    index = {c: i for i, c in enumerate(categories)}
    for title, path in zip(items[F.TITLE], items["categories"]):
        cat = index[top_category(path)]
        for word in set(words(f"{title} {path}")):
            counts[word][cat] += 1
    out = {}
    for word, counter in counts.items():
        cat, n = counter.most_common(1)[0]
        if n >= WORD_SHARE * sum(counter.values()):
            out[word] = cat
    return out


class _Tables(tf.Module):
    """Lookups shared by both models: item row, top category index, noise and prior."""

    def __init__(self, items: pd.DataFrame, popularity: Mapping[str, float], dim: int,
                 seed: int):
        super().__init__()
        ids = items["item_id"].astype(str).tolist()
        tops = [top_category(p) for p in items["categories"]]
        self.categories = sorted(set(tops))
        n_cat = len(self.categories)
        self.noise_dims = dim - n_cat - 1
        if self.noise_dims < 0:
            raise ValueError(f"dim={dim} is smaller than top categories + 1 ({n_cat + 1})")
        counts = np.array([float(popularity.get(i, 0.0)) for i in ids])
        prior = PRIOR_SCALE * np.log1p(counts) / max(np.log1p(counts.max()), 1e-9)
        rng = np.random.default_rng(seed)
        noise = rng.normal(size=(len(ids), self.noise_dims))
        noise *= NOISE_SCALE / np.maximum(np.linalg.norm(noise, axis=1, keepdims=True), 1e-9)
        cat_index = {c: i for i, c in enumerate(self.categories)}
        self.item_row = _table(ids, np.arange(len(ids), dtype=np.int64))
        self.category = _table(self.categories, np.arange(n_cat, dtype=np.int64))
        word_cats = word_categories(items, self.categories)
        self.word = _table(list(word_cats) or ["\x00"],
                           np.array(list(word_cats.values()) or [-1], dtype=np.int64))
        self.item_category = tf.Variable(np.array([cat_index[t] for t in tops], np.int64),
                                         trainable=False)
        self.noise = tf.Variable(noise.astype(np.float32), trainable=False)
        self.prior = tf.Variable(prior.astype(np.float32), trainable=False)
        self.n_cat = n_cat

    def rows(self, item_ids):
        """Catalog row of each id (-1 = unknown), any shape."""
        return self.item_row.lookup(item_ids)

    def gather(self, variable, rows):
        """variable[rows], zeros where rows == -1."""
        values = tf.gather(variable, tf.maximum(rows, 0))
        mask = tf.cast(rows >= 0, values.dtype)
        if values.shape.rank > rows.shape.rank:
            mask = mask[..., None]
        return values * mask

    def category_onehot(self, category):
        """[B] category paths -> [B, n_cat] one-hot of the top category (zeros if unknown)."""
        top = tf.strings.regex_replace(category, " > .*$", "")
        return tf.one_hot(self.category.lookup(tf.strings.strip(top)), self.n_cat)

    def history_profile(self, history):
        """[B, H] ids -> ([B, n_cat] top-category shares, [B, noise] mean noise, [B] count)."""
        rows = self.rows(history)
        valid = tf.cast(rows >= 0, tf.float32)
        count = tf.reduce_sum(valid, axis=1)
        denom = tf.maximum(count, 1.0)[:, None]
        cats = tf.one_hot(tf.where(rows >= 0, tf.gather(self.item_category,
                                                        tf.maximum(rows, 0)), -1), self.n_cat)
        shares = tf.reduce_sum(cats, axis=1) / denom
        noise = tf.reduce_sum(self.gather(self.noise, rows), axis=1) / denom
        return shares, noise, count

    def query_profile(self, query):
        """[B] text -> [B, n_cat] category shares of its known words (zeros if none)."""
        text = tf.strings.regex_replace(tf.strings.lower(query), _WORD_SPLIT, " ")
        cats = tf.ragged.map_flat_values(self.word.lookup, tf.strings.split(text))
        onehot = tf.reduce_sum(tf.ragged.map_flat_values(tf.one_hot, cats, self.n_cat), axis=1)
        return onehot / tf.maximum(tf.reduce_sum(onehot, axis=1, keepdims=True), 1.0)


def _table(keys, values) -> tf.lookup.StaticHashTable:
    init = tf.lookup.KeyValueTensorInitializer(tf.constant(keys, tf.string),
                                               tf.constant(values, tf.int64))
    return tf.lookup.StaticHashTable(init, default_value=-1)


class SyntheticRetrieval(tf.Module):
    """Two-tower-shaped retrieval model: query/candidate embeddings and top-K."""

    def __init__(self, items: pd.DataFrame, popularity: Mapping[str, float], dim: int,
                 k: int, seed: int):
        super().__init__()
        self.tables = _Tables(items, popularity, dim, seed)
        self.k = min(k, len(items))
        self.ids = tf.Variable(items["item_id"].astype(str).tolist(), dtype=tf.string,
                               trainable=False)
        rows = np.arange(len(items))
        onehot = np.eye(self.tables.n_cat, dtype=np.float32)[
            self.tables.item_category.numpy()[rows]]
        index = np.concatenate([CATEGORY_WEIGHT * onehot,
                                self.tables.prior.numpy()[:, None],
                                self.tables.noise.numpy()], axis=1)
        self.index = tf.Variable(index.astype(np.float32), trainable=False)

    def _query(self, user_id, history_item_ids, query):
        shares, noise, _ = self.tables.history_profile(history_item_ids)
        pref = shares + self.tables.query_profile(query)
        bias = tf.ones_like(tf.strings.length(user_id), tf.float32)[:, None]
        return tf.concat([CATEGORY_WEIGHT * pref, bias, noise], axis=1)

    @tf.function(input_signature=[_spec(F.USER_ID), _HISTORY, _spec(F.QUERY)])
    def query_embedding(self, user_id, history_item_ids, query):
        return {"embedding": self._query(user_id, history_item_ids, query)}

    @tf.function(input_signature=[
        _spec(F.ITEM_ID), _spec(F.TITLE), _spec(F.DESCRIPTION), _spec(F.BRAND),
        _spec(F.CATEGORY), _spec(F.PRICE, tf.float32), _spec(F.IN_STOCK, tf.int64)])
    def candidate_embedding(self, item_id, title, description, brand, category, price,
                            in_stock):
        rows = self.tables.rows(item_id)
        prior = self.tables.gather(self.tables.prior, rows)[:, None]
        noise = self.tables.gather(self.tables.noise, rows)
        onehot = self.tables.category_onehot(category)
        return {"embedding": tf.concat([CATEGORY_WEIGHT * onehot, prior, noise], axis=1)}

    @tf.function(input_signature=[_spec(F.USER_ID), _HISTORY, _spec(F.QUERY)])
    def top_k(self, user_id, history_item_ids, query):
        scores = tf.matmul(self._query(user_id, history_item_ids, query), self.index,
                           transpose_b=True)
        best, rows = tf.math.top_k(scores, k=self.k)
        return {"item_ids": tf.gather(self.ids, rows), "scores": best}


class SyntheticRanking(tf.Module):
    """Multi-task-shaped ranking model: click, purchase and their weighted score."""

    def __init__(self, items: pd.DataFrame, popularity: Mapping[str, float], dim: int,
                 seed: int):
        super().__init__()
        self.tables = _Tables(items, popularity, dim, seed)

    def _scores(self, history_item_ids, item_id, category, in_stock, match):
        shares, _, _ = self.tables.history_profile(history_item_ids)
        affinity = tf.reduce_sum(shares * self.tables.category_onehot(category), axis=1)
        prior = self.tables.gather(self.tables.prior, self.tables.rows(item_id))
        logit = 4.0 * affinity + 2.0 * prior + QUERY_WEIGHT * match - 2.0
        click = tf.sigmoid(logit)
        purchase = tf.sigmoid(logit - 1.0) * tf.cast(in_stock > 0, tf.float32)
        return {"click": click, "purchase": purchase, "score": 0.7 * click + 0.3 * purchase}

    @staticmethod
    def _match(query, title, category):
        """[N] share of each query's distinct words found in the title or category path."""
        def word_sets(text):
            text = tf.strings.regex_replace(tf.strings.lower(text), _WORD_SPLIT, " ")
            return tf.strings.split(text).to_sparse()

        asked = word_sets(query)
        found = tf.sets.size(tf.sets.intersection(
            asked, word_sets(tf.strings.join([title, category], " "))))
        share = tf.cast(found, tf.float32) / tf.maximum(
            tf.cast(tf.sets.size(asked), tf.float32), 1.0)
        return tf.reshape(share, [-1])

    @tf.function(input_signature=[
        _spec(F.USER_ID), _HISTORY, _spec(F.ITEM_ID), _spec(F.BRAND), _spec(F.CATEGORY),
        _spec(F.PRICE, tf.float32), _spec(F.IN_STOCK, tf.int64)])
    def score(self, user_id, history_item_ids, item_id, brand, category, price, in_stock):
        return self._scores(history_item_ids, item_id, category, in_stock,
                            tf.zeros_like(price))

    @tf.function(input_signature=[
        _spec(F.USER_ID), _HISTORY, _spec(F.QUERY), _spec(F.TITLE), _spec(F.ITEM_ID),
        _spec(F.BRAND), _spec(F.CATEGORY), _spec(F.PRICE, tf.float32),
        _spec(F.IN_STOCK, tf.int64)])
    def score_with_query(self, user_id, history_item_ids, query, title, item_id, brand,
                         category, price, in_stock):
        return self._scores(history_item_ids, item_id, category, in_stock,
                            self._match(query, title, category))

    @tf.function(input_signature=[
        tf.TensorSpec([], tf.string, name=F.USER_ID),
        tf.TensorSpec([None], tf.string, name=F.HISTORY_ITEM_IDS),
        tf.TensorSpec([], tf.string, name=F.QUERY), _spec(F.TITLE), _spec(F.ITEM_ID),
        _spec(F.BRAND), _spec(F.CATEGORY), _spec(F.PRICE, tf.float32),
        _spec(F.IN_STOCK, tf.int64)])
    def rank_candidates(self, user_id, history_item_ids, query, title, item_id, brand,
                        category, price, in_stock):
        n = tf.shape(item_id)[0]
        history = tf.tile(history_item_ids[tf.newaxis], [n, 1])
        return self._scores(history, item_id, category, in_stock,
                            self._match(tf.fill([n], query), title, category))


def warmup_samples(items: pd.DataFrame, popularity: Mapping[str, float]) -> warmup.Samples:
    """Warm-up request values from the catalog: its first 8 items, a history of the most
    engaged items and a query of title words."""
    head = items.head(8)
    titles = head[F.TITLE].fillna("").astype(str).tolist()
    history = sorted(popularity, key=lambda i: -popularity[i])[:3] or \
        head["item_id"].astype(str).tolist()[:3]
    query = " ".join(words(titles[0])[:2])
    return warmup.Samples(items={
        F.ITEM_ID: head["item_id"].astype(str).tolist(), F.TITLE: titles,
        F.DESCRIPTION: head[F.DESCRIPTION].fillna("").astype(str).tolist()
        if F.DESCRIPTION in head else [""] * len(head),
        F.BRAND: head[F.BRAND].fillna("").astype(str).tolist(),
        F.CATEGORY: head["categories"].astype(str).tolist(),
        F.PRICE: head[F.PRICE].fillna(0.0).astype(float).tolist(),
        F.IN_STOCK: head[F.IN_STOCK].astype(bool).astype(int).tolist()},
        users=[("warmup-user", history, query), ("", [], "")])


def _save(module: tf.Module, signatures: dict, base_path: str, version: int,
          samples: warmup.Samples | None = None) -> str:
    """Save under base_path/<version> atomically (save elsewhere, then rename), with
    warm-up requests from ``samples``."""
    os.makedirs(base_path, exist_ok=True)
    target = os.path.join(base_path, str(version))
    if os.path.exists(target):
        raise FileExistsError(f"{target} already exists; versions are immutable")
    staging = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=base_path)
    tf.saved_model.save(module, staging, signatures=signatures)
    if samples is not None:
        warmup.write(staging, samples, os.path.basename(base_path))
    os.rename(staging, target)
    return target


def write_models(items: pd.DataFrame, popularity: Mapping[str, float], serving_dir: str,
                 version: int = 1, dim: int | None = None, k: int = TOP_K,
                 seed: int = 0, with_warmup: bool = True) -> dict[str, str]:
    """Write ``serving_dir/{retrieval,ranking}/<version>``; returns model name -> path.

    ``dim`` defaults to top categories + 1 + 8 noise dimensions. ``with_warmup`` writes
    TF Serving warm-up requests into each version (assets.extra).
    """
    if len(items) == 0:
        raise ValueError("the catalog is empty")
    n_cat = len({top_category(p) for p in items["categories"]})
    dim = dim or n_cat + 9
    retrieval = SyntheticRetrieval(items, popularity, dim, k, seed)
    ranking = SyntheticRanking(items, popularity, dim, seed)
    top_k = retrieval.top_k.get_concrete_function()
    samples = warmup_samples(items, popularity) if with_warmup else None
    return {
        RETRIEVAL: _save(retrieval, {
            "serving_default": top_k, "top_k": top_k,
            "query_embedding": retrieval.query_embedding.get_concrete_function(),
            "candidate_embedding": retrieval.candidate_embedding.get_concrete_function()},
            os.path.join(serving_dir, RETRIEVAL), version, samples),
        RANKING: _save(ranking, {
            "score": ranking.score.get_concrete_function(),
            "score_with_query": ranking.score_with_query.get_concrete_function(),
            "rank_candidates": ranking.rank_candidates.get_concrete_function()},
            os.path.join(serving_dir, RANKING), version, samples),
    }
