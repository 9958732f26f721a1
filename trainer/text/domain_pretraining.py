"""Domain-adaptive pretraining: continue masked-LM training of MiniLM on catalog texts.

Runs in a Keras-3 process (keras-hub; no `TF_USE_LEGACY_KERAS`):

    python -m trainer.text.domain_pretraining --texts titles.txt --out DIR --steps 500 --seed 0 \
        [--seq-len 32] [--batch-size 32] [--learning-rate 5e-5] [--export-seq-len 32]

The all-MiniLM-L6-v2 checkpoint carries no MLM head, so the `BertMaskedLM` head starts random
(its output projection is tied to the token embeddings). A short head-only warm-up with the
backbone frozen comes first; the held-out MLM loss after it is the "before" number (the
pretrained backbone with a fitted head), the loss after full training is "after", both on the
same fixed held-out masks. Tokenisation is trainer/text/tokenizer.py (accents stripped) and the
backbone uses exact GELU, as in the export.

Writes `DIR/backbone/` (keras-hub preset: `--backbone` of trainer.text.export, `backbone=` of
trainer.text.encoder.ensure_text_encoder), `DIR/domain_pretraining.json` (the report) and,
with `--export-seq-len`, `DIR/text_encoder/` (tokenizer + encoder export of the adapted model).
"""
import argparse
import json
import logging
import math
import os
import sys
import time

import numpy as np

from trainer.text import encoder as spec

BACKBONE_DIR = "backbone"
EXPORT_DIR = "text_encoder"
REPORT_FILE = "domain_pretraining.json"
log = logging.getLogger(__name__)


def read_texts(path):
    """Non-empty lines of a UTF-8 text file, one catalog text per line."""
    with open(path, encoding="utf-8") as f:
        texts = [line.strip() for line in f if line.strip()]
    if len(texts) < 2:
        raise ValueError(f"{path}: need at least 2 non-empty lines (texts), got {len(texts)}")
    return texts


def split_heldout(texts, fraction, seed):
    """Deterministic (train, heldout) split; heldout gets at least one text."""
    order = np.random.default_rng(seed).permutation(len(texts))
    n_heldout = min(len(texts) - 1, max(1, int(round(len(texts) * fraction))))
    return ([texts[i] for i in order[n_heldout:]], [texts[i] for i in order[:n_heldout]])


def _masker(tokenizer, seq_len, mask_rate):
    import keras_hub
    from trainer.text.tokenizer import read_vocab
    vocab = read_vocab(os.path.join(spec.package_model_dir(), "vocab.txt"))
    return keras_hub.layers.MaskedLMMaskGenerator(
        vocabulary_size=tokenizer.vocab_size, mask_selection_rate=mask_rate,
        mask_token_id=vocab.index("[MASK]"),
        mask_selection_length=max(1, math.ceil(seq_len * mask_rate)) + 1,
        unselectable_token_ids=[0, tokenizer.cls_id, tokenizer.sep_id])


def _mlm_batch(tokens, masked):
    """Model inputs, labels and weights for BertMaskedLM from tokenizer + masker outputs."""
    import tensorflow as tf
    x = {"token_ids": tf.cast(masked["token_ids"], tf.int32),
         "segment_ids": tf.zeros_like(tokens["token_ids"]),
         "padding_mask": tokens["padding_mask"],
         "mask_positions": tf.cast(masked["mask_positions"], tf.int32)}
    return x, masked["mask_ids"], masked["mask_weights"]


def heldout_loss(model, batches):
    """Mean cross-entropy over all masked positions of the fixed held-out batches."""
    import tensorflow as tf
    total, weight = 0.0, 0.0
    for x, y, w in batches:
        logits = model(x, training=False)
        ce = _ce(y, logits)                                          # [B, P]
        total += float(tf.reduce_sum(ce * tf.cast(w, ce.dtype)))
        weight += float(tf.reduce_sum(tf.cast(w, tf.float32)))
    return total / max(weight, 1.0)


def _ce(labels, logits):
    """Per-position cross-entropy: labels [B, P], logits [B, P, V] -> [B, P]."""
    import keras
    return keras.ops.sparse_categorical_crossentropy(labels, logits, from_logits=True)


def pretrain(texts, out_dir, steps, seed=0, seq_len=32, batch_size=32, learning_rate=5e-5,
             head_steps=None, heldout_fraction=0.1, mask_rate=0.15, backbone_preset=None,
             export_seq_len=None):
    """Continue MLM training; write the adapted backbone preset and the report (a dict)."""
    if steps < 0 or (head_steps is not None and head_steps < 0):
        raise ValueError(f"steps and head_steps must be >= 0, got {steps}, {head_steps}")
    from trainer.text.export import require_keras3_process, export, load_backbone
    require_keras3_process()
    start = time.time()
    import keras
    import keras_hub
    import tensorflow as tf
    from trainer.text.tokenizer import BertTokenizerModule
    keras.utils.set_random_seed(seed)
    head_steps = max(1, steps // 4) if head_steps is None else head_steps
    train_texts, heldout_texts = split_heldout(texts, heldout_fraction, seed)
    tokenizer = BertTokenizerModule(os.path.join(spec.package_model_dir(), "vocab.txt"),
                                    seq_len)
    masker = _masker(tokenizer, seq_len, mask_rate)

    heldout = []                                     # fixed masks: same positions every eval
    for i in range(0, len(heldout_texts), batch_size):
        tokens = tokenizer(tf.constant(heldout_texts[i:i + batch_size]))
        heldout.append(_mlm_batch(tokens, masker(tokens["token_ids"])))

    train_tokens = tokenizer(tf.constant(train_texts))
    dataset = (tf.data.Dataset.from_tensor_slices(train_tokens)
               .shuffle(len(train_texts), seed=seed, reshuffle_each_iteration=True)
               .repeat().batch(batch_size, drop_remainder=len(train_texts) >= batch_size)
               .map(lambda t: _mlm_batch(t, masker(t["token_ids"])))
               .prefetch(tf.data.AUTOTUNE))

    backbone = load_backbone(backbone_preset)
    model = keras_hub.models.BertMaskedLM(backbone, preprocessor=None)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    loss_random_head = heldout_loss(model, heldout)
    log.info("held-out MLM loss with the random head %.4f; %d head-only steps next",
             loss_random_head, head_steps)

    backbone.trainable = False                        # 1) fit the new head only
    if head_steps > 0:
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss_fn)
        model.fit(dataset, steps_per_epoch=head_steps, epochs=1, verbose=0)
    loss_before = heldout_loss(model, heldout)
    log.info("held-out MLM loss before adaptation %.4f; %d full steps next", loss_before,
             steps)

    backbone.trainable = True                         # 2) adapt the whole model
    if steps > 0:
        model.compile(optimizer=keras.optimizers.AdamW(learning_rate, weight_decay=0.01),
                      loss=loss_fn)
        model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0)
    loss_after = heldout_loss(model, heldout)
    log.info("held-out MLM loss after adaptation %.4f", loss_after)

    os.makedirs(out_dir, exist_ok=True)
    backbone_dir = os.path.join(out_dir, BACKBONE_DIR)
    backbone.save_to_preset(backbone_dir)
    report = {
        "heldout_mlm_loss_before": round(loss_before, 4),
        "heldout_mlm_loss_after": round(loss_after, 4),
        "heldout_mlm_loss_random_head": round(loss_random_head, 4),
        "steps": steps, "head_steps": head_steps, "seed": seed, "seq_len": seq_len,
        "batch_size": batch_size, "learning_rate": learning_rate, "mask_rate": mask_rate,
        "num_train_texts": len(train_texts), "num_heldout_texts": len(heldout_texts),
        "start_backbone": os.path.abspath(backbone_preset) if backbone_preset else "package",
        "backbone": backbone_dir,
        "train_seconds": round(time.time() - start, 1),
    }
    if export_seq_len:
        export_dir = os.path.join(out_dir, EXPORT_DIR)
        os.makedirs(export_dir, exist_ok=True)
        export(export_dir, export_seq_len, backbone_dir, seed)
        report["text_encoder"] = export_dir
    with open(os.path.join(out_dir, REPORT_FILE), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m trainer.text.domain_pretraining",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--texts", required=True, help="UTF-8 file, one catalog text per line")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--steps", type=int, required=True, help="full-model MLM steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seq-len", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--head-steps", type=int, default=None,
                        help="head-only warm-up steps (default: steps // 4, at least 1)")
    parser.add_argument("--heldout-fraction", type=float, default=0.1)
    parser.add_argument("--mask-rate", type=float, default=0.15)
    parser.add_argument("--backbone", default=None,
                        help="keras-hub preset dir to start from (default: the package)")
    parser.add_argument("--export-seq-len", type=int, default=None,
                        help="also export tokenizer + encoder of the adapted model to "
                             "OUT/text_encoder with this sequence length")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    report = pretrain(read_texts(args.texts), args.out, args.steps, args.seed, args.seq_len,
                      args.batch_size, args.learning_rate, args.head_steps,
                      args.heldout_fraction, args.mask_rate, args.backbone,
                      args.export_seq_len)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
