"""BertTokenizerModule: Hugging Face-identical ids, accent stripping, fixed length, SavedModel."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text as tf_text

from trainer.text.encoder import package_model_dir
from trainer.text.tokenizer import BertTokenizerModule, read_vocab

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "minilm_reference.json")
VOCAB = os.path.join(package_model_dir(), "vocab.txt")


@pytest.fixture(scope="module")
def reference():
    with open(FIXTURE, encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def vocab():
    return read_vocab(VOCAB)


def _rows(out):
    ids, mask = out["token_ids"].numpy(), out["padding_mask"].numpy()
    return [list(row[:n]) for row, n in zip(ids, mask.sum(axis=1))]


def test_ids_match_hugging_face_tokenizer(reference):
    tokenizer = BertTokenizerModule(VOCAB, seq_len=32)
    assert _rows(tokenizer(tf.constant(reference["sentences"]))) == reference["token_ids"]


def test_accents_are_stripped_not_unknown(vocab):
    """Correction 1: without accent stripping "crème"/"naïve" become [UNK] (keras-hub default)."""
    text = tf.constant(["Crème brûlée", "naïve café"])
    unk = vocab.index("[UNK]")
    ours = _rows(BertTokenizerModule(VOCAB, seq_len=16)(text))
    assert all(unk not in row for row in ours)
    assert ours[1][1:-1] == [vocab.index("naive"), vocab.index("cafe")]
    keep_accents = tf_text.BertTokenizer(VOCAB, lower_case=False, token_out_type=tf.int64)
    uncorrected = keep_accents.tokenize(tf_text.case_fold_utf8(text)).merge_dims(-2, -1)
    assert all(unk in row for row in uncorrected.to_list())


def test_fixed_length_truncation_and_padding(vocab):
    tokenizer = BertTokenizerModule(VOCAB, seq_len=5)
    out = tokenizer(tf.constant(["", "a b c d e f g"]))
    cls, sep = vocab.index("[CLS]"), vocab.index("[SEP]")
    a, b, c = (vocab.index(t) for t in "abc")
    np.testing.assert_array_equal(out["token_ids"].numpy(),
                                  [[cls, sep, 0, 0, 0], [cls, a, b, c, sep]])
    np.testing.assert_array_equal(out["padding_mask"].numpy(), [[1, 1, 0, 0, 0], [1] * 5])
    assert out["token_ids"].dtype == tf.int32 and out["padding_mask"].dtype == tf.int32


def test_savedmodel_round_trip_carries_its_vocab(tmp_path, reference):
    tokenizer = BertTokenizerModule(VOCAB, seq_len=24)
    tf.saved_model.save(tokenizer, str(tmp_path / "tok"))
    assert os.listdir(tmp_path / "tok" / "assets") == ["vocab.txt"]
    loaded = tf.saved_model.load(str(tmp_path / "tok"))
    text = tf.constant(reference["sentences"])
    expected, got = tokenizer(text), loaded(text)
    for key in ("token_ids", "padding_mask"):
        np.testing.assert_array_equal(got[key].numpy(), expected[key].numpy())


def test_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="seq_len"):
        BertTokenizerModule(VOCAB, seq_len=1)
    with pytest.raises(FileNotFoundError, match="vocabulary"):
        BertTokenizerModule(str(tmp_path / "missing.txt"), seq_len=8)
    bad = tmp_path / "vocab.txt"
    bad.write_text("hello\nworld\n")
    with pytest.raises(ValueError, match=r"\[CLS\]"):
        BertTokenizerModule(str(bad), seq_len=8)
