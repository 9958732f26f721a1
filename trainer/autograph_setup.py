"""Keep AutoGraph out of tf-keras internals (imported for its effect by trainer.layers).

AutoGraph skips the `keras` package but not `tf_keras` (Keras 2 under TF 2.16), so the first
`fit` of a TFRS model transpiles hundreds of Keras functions and takes several times longer
(measured in docs/DESIGN.md, "Models and BERT"). Keras code is written for plain tracing (it was never
converted while it lived in `keras`), so skipping it restores TF <= 2.15 behaviour. TFRS
and our own code are still converted.
"""
from absl import logging


def skip_autograph_for_tf_keras() -> bool:
    """Adds a DoNotConvert('tf_keras') AutoGraph rule once; False if TF's layout changed."""
    try:
        # pylint: disable-next=import-outside-toplevel
        from tensorflow.python.autograph.core import config
    except ImportError:  # private module moved: training is only slower
        logging.warning("AutoGraph config not found; tf_keras internals will be converted")
        return False
    rule = config.DoNotConvert("tf_keras")
    if not any(str(r) == str(rule) for r in config.CONVERSION_RULES):
        config.CONVERSION_RULES = (rule,) + tuple(config.CONVERSION_RULES)
    return True


skip_autograph_for_tf_keras()
