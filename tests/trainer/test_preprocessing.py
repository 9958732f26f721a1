"""preprocessing_fn through tf.Transform on Beam, on a handful of hand-made raw examples."""
import functools

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam

from tests.trainer import synthetic_shop
from trainer import features as F
from trainer.preprocessing import preprocessing_fn

ITEMS = {
    "A": dict(brand="Acme", category="Skin > Face > Serum", top="Skin", price=9.0),
    "C": dict(brand="", category="Hair > Care", top="Hair", price=99.0),
    "Z": dict(brand="Zeta", category="New > Thing", top="New", price=0.0),
}


def _row(user, item, history, query="", clicked=1, purchased=0, length=F.HISTORY_LENGTH):
    info = ITEMS[item]
    history = (history + [""] * length)[:length]
    row = {F.USER_ID: user, F.HISTORY_ITEM_IDS: history,
           F.NUM_HISTORY: sum(1 for h in history if h), F.QUERY: query, F.TIMESTAMP: 1,
           F.ITEM_ID: item, F.TITLE: f"title {item}", F.DESCRIPTION: f"about {item}",
           F.BRAND: info["brand"], F.CATEGORY: info["category"], F.TOP_CATEGORY: info["top"],
           F.PRICE: info["price"], F.IN_STOCK: 1, F.CLICKED: clicked, F.ADDED_TO_CART: 0,
           F.PURCHASED: purchased, F.RATING: 0.0, F.HAS_RATING: 0}
    # Instance dicts for FixedLenFeature([n]): every value is a list.
    return {k: [v.encode() if isinstance(v, str) else v for v in (v if isinstance(v, list)
                                                                  else [v])]
            for k, v in row.items()}


TRAIN = [
    _row("u1", "A", ["B"], query="serum"),
    _row("u1", "A", ["A", "B"], purchased=1),
    _row("u2", "C", [], clicked=0),
    _row("u3", "A", ["D"]),
]
EVAL = [_row("u9", "Z", ["A", "Z"])]


@pytest.fixture(scope="module")
def transformed(tmp_path_factory):
    temp = str(tmp_path_factory.mktemp("tft"))
    metadata = tft.DatasetMetadata.from_feature_spec(F.raw_feature_spec())
    with tft_beam.Context(temp_dir=temp, force_tf_compat_v1=False):
        (train, _), transform_fn = ((TRAIN, metadata)
                                    | tft_beam.AnalyzeAndTransformDataset(preprocessing_fn))
        evaluation, _ = ((EVAL, metadata), transform_fn) | tft_beam.TransformDataset()
        _ = transform_fn | tft_beam.WriteTransformFn(temp)
    return train, evaluation, tft.TFTransformOutput(temp)


def test_item_vocabulary_covers_targets_and_histories(transformed):
    train, _, output = transformed
    vocab = [v.decode() for v in output.vocabulary_by_name(F.vocab_name(F.ITEM_ID))]
    assert vocab[:2] == ["A", "B"]                  # by frequency: A x4, B x2
    assert sorted(vocab[2:]) == ["C", "D"]          # D only ever appears in a history
    index = {item: i + 1 for i, item in enumerate(vocab)}
    assert [r[F.idx(F.ITEM_ID)] for r in train] == [index["A"], index["A"], index["C"],
                                                    index["A"]]
    np.testing.assert_array_equal(train[1][F.idx(F.HISTORY_ITEM_IDS)],
                                  [index["A"], index["B"]] + [0] * (F.HISTORY_LENGTH - 2))
    np.testing.assert_array_equal(train[2][F.idx(F.HISTORY_ITEM_IDS)],
                                  [0] * F.HISTORY_LENGTH)   # "" padding -> 0
    assert train[3][F.idx(F.HISTORY_ITEM_IDS)][0] == index["D"]


def test_unknown_values_map_to_the_oov_index(transformed):
    _, evaluation, output = transformed
    row = evaluation[0]
    oov_item = output.vocabulary_size_by_name(F.ITEM_ID) + 1
    assert row[F.idx(F.ITEM_ID)] == oov_item
    assert list(row[F.idx(F.HISTORY_ITEM_IDS)][:3]) == [1, oov_item, 0]
    assert row[F.idx(F.USER_ID)] == output.vocabulary_size_by_name(F.USER_ID) + 1
    assert row[F.idx(F.BRAND)] == output.vocabulary_size_by_name(F.BRAND) + 1


def test_other_vocabularies_reserve_zero_for_empty(transformed):
    train, _, output = transformed
    assert output.vocabulary_by_name(F.BRAND) == [b"Acme"]   # "" is not a token
    assert train[2][F.idx(F.BRAND)] == 0
    assert train[0][F.idx(F.BRAND)] == 1
    assert {r[F.idx(F.TOP_CATEGORY)] for r in train} == {1, 2}
    assert train[0][F.idx(F.CATEGORY)] != train[2][F.idx(F.CATEGORY)]   # full paths


def test_price_is_z_scored_log1p_from_train(transformed):
    train, evaluation, _ = transformed
    logs = np.log1p([9.0, 9.0, 99.0, 9.0])
    mean, std = logs.mean(), logs.std()
    np.testing.assert_allclose([r[F.PRICE_Z] for r in train], (logs - mean) / std, rtol=1e-4)
    np.testing.assert_allclose(evaluation[0][F.PRICE_Z], (0.0 - mean) / std, rtol=1e-4)


def test_strings_and_labels_pass_through(transformed):
    train, _, output = transformed
    row = train[1]
    assert row[F.ITEM_ID] == b"A" and row[F.TITLE] == b"title A" and row[F.QUERY] == b""
    assert row[F.CATEGORY] == b"Skin > Face > Serum" and row[F.BRAND] == b"Acme"
    assert row[F.PURCHASED] == 1 and row[F.CLICKED] == 1 and row[F.IN_STOCK] == 1
    assert list(row[F.HISTORY_ITEM_IDS][:3]) == [b"A", b"B", b""]
    spec = output.transformed_feature_spec()
    assert spec[F.idx(F.HISTORY_ITEM_IDS)].shape == [F.HISTORY_LENGTH]
    assert spec[F.idx(F.ITEM_ID)].shape == [] and spec[F.PRICE_Z].shape == []


def test_retrieval_score_passes_through_only_when_the_schema_has_it(transformed, tmp_path):
    train, _, _ = transformed
    assert all(F.RETRIEVAL_SCORE not in row for row in train)   # the shop pipeline's schema
    spec = dict(F.raw_feature_spec(),
                **{F.RETRIEVAL_SCORE: tf.io.FixedLenFeature([1], tf.float32)})
    rows = [dict(row, **{F.RETRIEVAL_SCORE: [score]}) for row, score in zip(TRAIN, (0.5, -1.25,
                                                                                   3.0, 0.0))]
    with tft_beam.Context(temp_dir=str(tmp_path), force_tf_compat_v1=False):
        (out, _), _ = ((rows, tft.DatasetMetadata.from_feature_spec(spec))
                       | tft_beam.AnalyzeAndTransformDataset(preprocessing_fn))
    assert [float(row[F.RETRIEVAL_SCORE]) for row in out] == [0.5, -1.25, 3.0, 0.0]


def _transform_rows(rows, spec, temp, custom_config=None):
    fn = (preprocessing_fn if custom_config is None
          else functools.partial(preprocessing_fn, custom_config=custom_config))
    with tft_beam.Context(temp_dir=temp, force_tf_compat_v1=False):
        (out, _), transform_fn = ((rows, tft.DatasetMetadata.from_feature_spec(spec))
                                  | tft_beam.AnalyzeAndTransformDataset(fn))
        _ = transform_fn | tft_beam.WriteTransformFn(temp)
    return out, tft.TFTransformOutput(temp)


@pytest.mark.parametrize("custom_config", [None, {"history_length": 20}])
def test_the_history_width_comes_from_the_schema_and_the_custom_config(custom_config,
                                                                       tmp_path):
    """history_length 20 (the Transform component's custom_config, as the pipeline passes it,
    or only the schema's width): the transformed histories and their spec have 20 entries."""
    history = [f"h{i}" for i in range(14)]
    rows = [_row("u1", "A", history, length=20), _row("u2", "C", history[:3], length=20)]
    out, output = _transform_rows(rows, F.raw_feature_spec(20), str(tmp_path), custom_config)
    spec = output.transformed_feature_spec()
    assert spec[F.idx(F.HISTORY_ITEM_IDS)].shape == [20] == spec[F.HISTORY_ITEM_IDS].shape
    assert F.history_length_of(spec) == 20
    assert [len(row[F.idx(F.HISTORY_ITEM_IDS)]) for row in out] == [20, 20]
    assert [h.decode() for h in out[0][F.HISTORY_ITEM_IDS]] == history + [""] * 6
    assert int(np.count_nonzero(out[0][F.idx(F.HISTORY_ITEM_IDS)])) == 14


def test_a_custom_config_width_other_than_the_schemas_is_refused(tmp_path):
    rows = [_row("u1", "A", ["B"])]
    with pytest.raises(ValueError, match=r"history_length'\] is 20 but the raw schema's "
                                         r"'history_item_ids' has 10 entries"):
        _transform_rows(rows, F.raw_feature_spec(), str(tmp_path), {"history_length": 20})
    with pytest.raises(ValueError, match=r"custom_config\['history_length'\]=0"):
        _transform_rows(rows, F.raw_feature_spec(), str(tmp_path), {"history_length": 0})
