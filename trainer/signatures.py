"""Serving signatures of the exported SavedModels (raw features or serialized tf.Examples in).

Every signature runs the tf.Transform graph itself, so clients send raw data as in the data
contract (trainer/features.py). The Transform graph needs every raw feature: features a
signature does not take are filled with defaults ("" / 0) of the request's batch size.
Exports load with plain `tensorflow` (no TFRS, tf-keras, TFT or TFX at serving time); retrieval
exports with a BERT text tower also need the tensorflow_text ops (`import tensorflow_text`).
The Trainers add TF Serving warm-up requests to each export (`write_warmup`, trainer/warmup.py).

Histories: the raw-feature signatures take `history_item_ids` of any width (most recent
first, "" padding) and fit them to the model's width L (PipelineConfig.history_length, the
Transform schema's): a longer history is cut to its L most recent items, a shorter one padded.
The retrieval `top_k` and `query_embedding` also return `history_used` [B, L], the history as
the model read it; its static width in the signature (TF Serving's model metadata) tells
clients L without a call (the API's candidate stage reads that many items, as the pipeline's
two-stage rows do).
"""
import re
from typing import Dict, Mapping

import numpy as np
import tensorflow as tf

from pipeline.contract.spec import CATEGORY_SEPARATOR
from trainer import features as F
from trainer import warmup

_HISTORY = tf.TensorSpec([None, None], tf.string, name=F.HISTORY_ITEM_IDS)
HISTORY_USED = "history_used"     # retrieval output [B, L]: the history the model read
_EXAMPLES = tf.TensorSpec([None], tf.string, name="examples")


def _spec(key, dtype=tf.string):
    return tf.TensorSpec([None], dtype, name=key)


def _default(dtype: tf.DType):
    return "" if dtype == tf.string else np.zeros((), dtype.as_numpy_dtype).item()


def lenient_parse_spec(raw_spec: Mapping) -> Dict:
    """`raw_spec` with a default for every fixed-length feature (labels may be absent)."""
    spec = {}
    for key, feature in raw_spec.items():
        if isinstance(feature, tf.io.FixedLenFeature) and feature.default_value is None:
            default = np.full(feature.shape, _default(feature.dtype),
                              object if feature.dtype == tf.string else None)
            feature = tf.io.FixedLenFeature(feature.shape, feature.dtype, default.tolist())
        spec[key] = feature
    return spec


def _fit_width(x: tf.Tensor, width: int, default) -> tf.Tensor:
    """[B, n] -> [B, width]: truncated (the first `width` columns: a history's most recent
    items), or padded on the right with `default`."""
    x = x[:, :width]
    x = tf.pad(x, [[0, 0], [0, width - tf.shape(x)[1]]], constant_values=default)
    return tf.reshape(x, [-1, width])                  # static width


def fill_raw_features(raw_spec: Mapping, given: Mapping[str, tf.Tensor]) -> Dict:
    """Raw-feature dict for the Transform layer: `given` ([B] or [B, n]) shaped like
    `raw_spec`, every other feature filled with its default for batch size B."""
    batch = tf.shape(next(iter(given.values())))[0]
    out = {}
    for key, feature in raw_spec.items():
        default = _default(feature.dtype)
        value = given.get(key)
        if value is None:
            value = tf.fill([batch, 0], tf.constant(default, feature.dtype))
        value = tf.cast(tf.reshape(value, [batch, -1]), feature.dtype)
        if isinstance(feature, tf.io.FixedLenFeature):
            width = int(np.prod(feature.shape))
            value = _fit_width(value, width, default)
            out[key] = tf.reshape(value, [-1] + list(feature.shape))
        elif isinstance(feature, tf.io.VarLenFeature):
            if feature.dtype == tf.string:  # "" marks padding in string lists
                out[key] = tf.sparse.from_dense(value)
            else:
                out[key] = tf.RaggedTensor.from_tensor(value).to_sparse()
        else:
            raise ValueError(f"raw feature {key!r}: unsupported feature spec {feature}; the "
                             "schema should give fixed-shape (infer_feature_shape) features")
    return out


def write_warmup(fn_args, tft_output, model_name: str) -> str:
    """Writes `assets.extra/tf_serving_warmup_requests` into the run's export
    (`fn_args.serving_model_dir`): requests for every signature, from the run's catalog and
    train examples, which TF Serving replays before serving the version. Returns its path."""
    return warmup.write_for_run(fn_args, tft_output, model_name)


def top_category_of(category: tf.Tensor) -> tf.Tensor:
    """First level of a category path, in the graph: pipeline.contract.spec.top_category for
    the paths the example generator writes (levels already stripped)."""
    return tf.strings.regex_replace(category, re.escape(CATEGORY_SEPARATOR) + ".*$", "")


class _BruteForce(tf.Module):
    """Exact top-K by dot product over the whole catalog: queries [B, D] -> scores [B, k]
    (best first), ids [B, k]."""

    def __init__(self, ids: np.ndarray, embeddings: np.ndarray, k: int):
        super().__init__(name="index")
        self.k = k
        self.ids = tf.Variable(tf.constant(ids, tf.string), trainable=False, name="ids")
        self.embeddings = tf.Variable(np.asarray(embeddings, np.float32), trainable=False,
                                      name="embeddings")

    def __call__(self, queries: tf.Tensor, k: int):
        scores, rows = tf.math.top_k(
            tf.matmul(queries, self.embeddings, transpose_b=True), k=k)
        return scores, tf.gather(self.ids, rows)


def _transformer(tft_layer, raw_spec):
    return lambda given: tft_layer(fill_raw_features(raw_spec, given))


def export_retrieval(export_dir: str, model, tft_output, catalog_ids: np.ndarray,
                     catalog_embeddings: np.ndarray, k: int, text=None, related=None) -> None:
    """Saves the retrieval SavedModel with signatures `query_embedding`,
    `candidate_embedding`, `top_k` (= `serving_default`) and `eval_hit_at_k`; the top-K
    index holds the whole catalog (ids [N] bytes, embeddings [N, D]). `query_embedding` and
    `top_k` take histories of any width and also return `history_used` [B, L] (module
    docstring).

    `related`: a trainer.related_items.RelatedItems (the candidate stage's item-to-item
    tables fitted with this model) adds the `related_items` signature: item ids [N] -> each
    item's transition / co-occurrence partners and engagement count.

    `text`: the model's trainer.text.tower.TextEmbedder (BERT text modes), which turns the
    raw strings into text embeddings in-graph. Such exports use tensorflow_text ops: load
    them after `import tensorflow_text` (TF Serving links those ops).
    """
    k = min(k, len(catalog_ids))
    module = tf.Module()
    # The towers' variables, not the Keras towers: saving Keras objects traces and serialises
    # every layer for Keras reloading, which serving never uses (export 2-3x slower).
    module.tower_variables = list(model.query_tower.variables) + list(
        model.candidate_tower.variables)
    module.text = text
    module.index = _BruteForce(catalog_ids, catalog_embeddings, k)
    module.tft_layer = tft_output.transform_features_layer()
    raw_spec = tft_output.raw_feature_spec()
    transform = _transformer(module.tft_layer, raw_spec)
    parse_spec = lenient_parse_spec(raw_spec)
    history_length = F.history_length_of(raw_spec)

    def embed_queries(features):
        if module.text is not None:
            features = module.text.query_features(features)
        return model.query_tower(features, training=False)

    def embed_candidates(features):
        if module.text is not None:
            features = module.text.candidate_features(features)
        return model.candidate_tower(features, training=False)

    def query_features(user_id, history_item_ids, query):
        return transform({F.USER_ID: user_id, F.HISTORY_ITEM_IDS: history_item_ids,
                          F.QUERY: query})

    @tf.function(autograph=False, input_signature=[_spec(F.USER_ID), _HISTORY, _spec(F.QUERY)])
    def query_embedding(user_id, history_item_ids, query):
        features = query_features(user_id, history_item_ids, query)
        return {"embedding": embed_queries(features),
                HISTORY_USED: _fit_width(history_item_ids, history_length, "")}

    @tf.function(autograph=False, input_signature=[
        _spec(F.ITEM_ID), _spec(F.TITLE), _spec(F.DESCRIPTION), _spec(F.BRAND),
        _spec(F.CATEGORY), _spec(F.PRICE, tf.float32), _spec(F.IN_STOCK, tf.int64)])
    def candidate_embedding(item_id, title, description, brand, category, price, in_stock):
        features = transform({
            F.ITEM_ID: item_id, F.TITLE: title, F.DESCRIPTION: description, F.BRAND: brand,
            F.CATEGORY: category, F.TOP_CATEGORY: top_category_of(category), F.PRICE: price,
            F.IN_STOCK: in_stock})
        return {"embedding": embed_candidates(features)}

    @tf.function(autograph=False, input_signature=[_spec(F.USER_ID), _HISTORY, _spec(F.QUERY)])
    def top_k(user_id, history_item_ids, query):
        features = query_features(user_id, history_item_ids, query)
        scores, ids = module.index(embed_queries(features), k=k)
        return {"item_ids": ids, "scores": scores,
                HISTORY_USED: _fit_width(history_item_ids, history_length, "")}

    @tf.function(autograph=False, input_signature=[_EXAMPLES])
    def eval_hit_at_k(examples):
        features = module.tft_layer(tf.io.parse_example(examples, parse_spec))
        _, ids = module.index(embed_queries(features), k=k)
        hit = tf.reduce_any(tf.equal(ids, features[F.ITEM_ID][:, tf.newaxis]), axis=1)
        return {"hit_at_k": tf.cast(hit, tf.float32)}

    module.query_embedding = query_embedding
    module.candidate_embedding = candidate_embedding
    module.top_k = top_k
    module.eval_hit_at_k = eval_hit_at_k
    signatures = {
        "serving_default": top_k.get_concrete_function(),
        "top_k": top_k.get_concrete_function(),
        "query_embedding": query_embedding.get_concrete_function(),
        "candidate_embedding": candidate_embedding.get_concrete_function(),
        "eval_hit_at_k": eval_hit_at_k.get_concrete_function(),
    }
    if related is not None:
        module.related = related

        @tf.function(autograph=False, input_signature=[_spec(F.ITEM_ID)])
        def related_items(item_id):
            return module.related(item_id)

        module.related_items = related_items
        signatures["related_items"] = related_items.get_concrete_function()
    tf.saved_model.save(module, export_dir, signatures=signatures)


def export_ranking(export_dir: str, model, tft_output, score_weights: Mapping[str, float],
                   text=None) -> None:
    """Saves the ranking SavedModel. Every signature returns the model outputs [N] (click and
    purchase probabilities, rating in stars) and the combined `score` = sum(score_weights[h]
    * output h), the order the API serves.

    - `serving_default(examples)`: serialized raw tf.Examples (TFMA); external features
      that the Transform graph does not pass through are read beside it (0.0 if absent).
    - `score(raw item + user features)`: one row per (user, item) pair, no search context.
    - `score_with_query`: `score` for units after a search (adds the query and the item
      title, whose word match drives clicks).
    - `rank_candidates`: ONE user context (user_id, history_item_ids [L], query, all
      scalars/vectors without a batch dimension) and a list of N candidates (item_id, title,
      brand, category, price, in_stock, each [N]).

    Models trained with `external_features` (e.g. `retrieval_score`) take each of them [N]
    (float) in the three raw-feature signatures too.

    `text`: trainer.ranking.RankingText (models with the MiniLM text feature): adds the text
    embeddings in-graph; such exports need the tensorflow_text ops (`import tensorflow_text`).
    """
    module = tf.Module()
    module.model = model
    module.text = text
    module.tft_layer = tft_output.transform_features_layer()
    raw_spec = tft_output.raw_feature_spec()
    transform = _transformer(module.tft_layer, raw_spec)
    heads = list(score_weights)
    externals = tuple(getattr(getattr(model, "config", None), "external_features", ()))
    # External features the Transform graph does not pass through (its raw schema lacked
    # them: two-stage rows beside the shop's examples) go to the model as given.
    beside = [key for key in externals if key not in raw_spec]
    parse_spec = dict(lenient_parse_spec(raw_spec), **{
        key: tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0]) for key in beside})

    def with_beside(transformed, given):
        return dict(transformed, **{key: tf.reshape(tf.cast(given[key], tf.float32), [-1])
                                    for key in beside})

    def predict(features):
        if module.text is not None:
            features = module.text(features)
        outputs = dict(module.model(features, training=False))
        outputs["score"] = tf.add_n([score_weights[head] * outputs[head] for head in heads])
        return outputs

    @tf.function(input_signature=[_EXAMPLES])
    def serving_default(examples):
        parsed = tf.io.parse_example(examples, parse_spec)
        return predict(with_beside(
            module.tft_layer({k: v for k, v in parsed.items() if k in raw_spec}), parsed))

    def scored(raw):
        raw[F.TOP_CATEGORY] = top_category_of(raw[F.CATEGORY])
        return predict(with_beside(transform(raw), raw))

    # Candidate-side inputs of the raw-feature signatures, [N] each; models trained with
    # external_features also take those values of the candidates.
    extra = [_spec(key, tf.float32) for key in externals]

    def signature(specs, to_raw):
        """A tf.function over `specs` (named TensorSpecs; the signature's input names) that
        scores `to_raw({name: tensor})`."""
        names = [spec.name for spec in specs]

        @tf.function(input_signature=specs)
        def run(*args):
            return scored(to_raw(dict(zip(names, args))))
        return run

    item_specs = [_spec(F.ITEM_ID), _spec(F.BRAND), _spec(F.CATEGORY),
                  _spec(F.PRICE, tf.float32), _spec(F.IN_STOCK, tf.int64)]
    # One row per (user, item) pair, without search context.
    score = signature([_spec(F.USER_ID), _HISTORY] + item_specs + extra, dict)
    # Units after a search: the query and the item title (its word match drives clicks).
    score_with_query = signature(
        [_spec(F.USER_ID), _HISTORY, _spec(F.QUERY), _spec(F.TITLE)] + item_specs + extra, dict)

    def one_user(given):
        """The user context (scalars, history [L]) repeated for each of the N candidates."""
        n = tf.shape(given[F.ITEM_ID])[0]
        return dict(given, **{
            F.USER_ID: tf.fill([n], given[F.USER_ID]),
            F.HISTORY_ITEM_IDS: tf.tile(given[F.HISTORY_ITEM_IDS][tf.newaxis], [n, 1]),
            F.QUERY: tf.fill([n], given[F.QUERY])})

    rank_candidates = signature([
        tf.TensorSpec([], tf.string, name=F.USER_ID),
        tf.TensorSpec([None], tf.string, name=F.HISTORY_ITEM_IDS),
        tf.TensorSpec([], tf.string, name=F.QUERY), _spec(F.TITLE)] + item_specs + extra,
        one_user)

    module.serving_default = serving_default
    module.score = score
    module.score_with_query = score_with_query
    module.rank_candidates = rank_candidates
    tf.saved_model.save(module, export_dir, signatures={
        "serving_default": serving_default.get_concrete_function(),
        "score": score.get_concrete_function(),
        "score_with_query": score_with_query.get_concrete_function(),
        "rank_candidates": rank_candidates.get_concrete_function(),
    })
