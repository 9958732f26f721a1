"""In-graph BERT WordPiece tokenisation with tensorflow_text ops only (no Keras).

The module is exported as its own SavedModel (see trainer/text/export.py) and loads in any
process that imports `tensorflow_text` (TF Serving links those ops). It reproduces the
Hugging Face `BertTokenizer(do_lower_case=True)` used by all-MiniLM-L6-v2: lowercase, NFD and
accent stripping (keras-hub's default keeps accents, which turns "crème" into [UNK]),
punctuation and CJK splitting, WordPiece with the "##" suffix indicator.
Known difference: ICU case folding maps "ß" to "ss" where Python's lower() keeps "ß".
"""
import os

import tensorflow as tf
import tensorflow_text as tf_text

CLS_TOKEN = "[CLS]"
SEP_TOKEN = "[SEP]"
PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
MASK_TOKEN = "[MASK]"


def read_vocab(vocab_path):
    """Vocabulary tokens in id order (one per line of vocab.txt)."""
    with tf.io.gfile.GFile(vocab_path, "r") as f:
        return [line.rstrip("\n") for line in f]


class BertTokenizerModule(tf.Module):
    """Raw strings [B] -> token_ids [B, L] int32, padding_mask [B, L] int32.

    Each row is `[CLS] wordpieces [SEP]` truncated to `seq_len` (the [SEP] is kept) and
    right-padded with [PAD] = 0; `padding_mask` is 1 on real tokens.
    """

    def __init__(self, vocab_path, seq_len, name="bert_tokenizer"):
        super().__init__(name=name)
        if seq_len < 2:
            raise ValueError(f"seq_len must be >= 2 to hold [CLS] and [SEP], got {seq_len}")
        if not tf.io.gfile.exists(vocab_path):
            raise FileNotFoundError(f"vocabulary file not found: {vocab_path}")
        vocab = read_vocab(vocab_path)
        for token in (CLS_TOKEN, SEP_TOKEN, PAD_TOKEN, UNK_TOKEN):
            if token not in vocab:
                raise ValueError(f"{vocab_path} has no {token} token; is it a BERT vocab.txt?")
        if vocab.index(PAD_TOKEN) != 0:
            raise ValueError(f"{vocab_path}: {PAD_TOKEN} must have id 0")
        self.seq_len = seq_len
        self.vocab_size = len(vocab)
        self.cls_id = vocab.index(CLS_TOKEN)
        self.sep_id = vocab.index(SEP_TOKEN)
        self.unk_id = vocab.index(UNK_TOKEN)
        # Given a file path, tensorflow_text builds the lookup table from a TextFileInitializer,
        # which tracks the file as an asset: the SavedModel carries its own assets/vocab.txt.
        self._tokenizer = tf_text.BertTokenizer(
            os.path.abspath(vocab_path), lower_case=True, token_out_type=tf.int64,
            unknown_token=UNK_TOKEN)

    def wordpieces(self, text):
        """Strings [B] -> ragged wordpiece ids [B, (n)] int64, without [CLS]/[SEP]."""
        return self._tokenizer.tokenize(text).merge_dims(-2, -1)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def __call__(self, text):
        """Strings [B] -> {"token_ids": [B, L] int32, "padding_mask": [B, L] int32}."""
        pieces = self.wordpieces(text)[:, : self.seq_len - 2]
        batch = pieces.nrows()
        cls = tf.fill([batch, 1], tf.constant(self.cls_id, tf.int64))
        sep = tf.fill([batch, 1], tf.constant(self.sep_id, tf.int64))
        ids = tf.concat([cls, pieces, sep], axis=1)
        token_ids = ids.to_tensor(default_value=0, shape=[None, self.seq_len])
        padding_mask = tf.sequence_mask(ids.row_lengths(), self.seq_len, dtype=tf.int32)
        return {"token_ids": tf.cast(token_ids, tf.int32), "padding_mask": padding_mask}
