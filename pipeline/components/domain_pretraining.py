"""DomainPretraining: optional masked-LM adaptation of MiniLM on the shop's catalog text.

Reads the catalog split of ShopExampleGen's examples, builds each item's encoder text exactly
as the retrieval model does (`trainer.text.cache.item_text_of`: title | brand | category path,
then the description's first `description_chars` characters when that setting is on),
and runs `python -m trainer.text.domain_pretraining` in a Keras-3 child process (keras-hub's
`BertMaskedLM`; the TFRS trainers run on tf-keras). The output Model artifact holds, under
`Format-Serving/` (the path TFX hands a Trainer as `fn_args.base_model`):

    backbone/                   keras-hub preset of the adapted encoder
    domain_pretraining.json     held-out MLM loss before / after, steps, seed, sizes, seconds

The retrieval Trainer takes it as `base_model` and encodes with the adapted weights
(`trainer/retrieval.py`). The held-out losses are also recorded as custom properties of the
artifact, so they show up in ML Metadata and the run report.
"""
import json
import os
import subprocess
import sys
import tempfile

from absl import logging
from tfx import v1 as tfx
from tfx.types import standard_artifact_utils as artifact_utils
from tfx.utils import path_utils

from trainer import features as F
from trainer.text.domain_pretraining import BACKBONE_DIR, REPORT_FILE  # noqa: F401  (re-exported)


def catalog_texts(split_uri: str, description_chars: int = 0) -> list[str]:
    """Unique non-empty encoder texts of the catalog examples under `split_uri`, in file
    order (gzipped tf.Example TFRecords, as ShopExampleGen writes them)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from trainer.text.cache import item_text_of  # pylint: disable=import-outside-toplevel
    files = sorted(tf.io.gfile.glob(os.path.join(split_uri, "*")))
    if not files:
        raise ValueError(f"DomainPretraining: no catalog example files under {split_uri}")
    spec = {key: tf.io.FixedLenFeature([], tf.string, default_value="")
            for key in (F.TITLE, F.BRAND, F.CATEGORY, F.DESCRIPTION)}
    texts: dict[str, None] = {}
    for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(1024):
        parsed = tf.io.parse_example(batch, spec)
        for text in item_text_of(parsed, description_chars).numpy():
            if text:
                texts.setdefault(text.decode("utf-8"), None)
    return list(texts)


def run_pretraining(texts: list[str], out_dir: str, steps: int, seed: int, seq_len: int,
                    batch_size: int, learning_rate: float) -> dict:
    """Runs trainer.text.domain_pretraining in a child process without TF_USE_LEGACY_KERAS (it
    needs Keras 3); returns its report. The child's log is forwarded on failure."""
    if len(texts) < 2:
        raise ValueError(f"DomainPretraining: the catalog has {len(texts)} distinct item "
                         "texts; masked-LM adaptation needs at least 2")
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "texts.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(t.replace("\n", " ") for t in texts) + "\n")
        env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
        cmd = [sys.executable, "-m", "trainer.text.domain_pretraining", "--texts", path,
               "--out", out_dir, "--steps", str(steps), "--seed", str(seed),
               "--seq-len", str(seq_len), "--batch-size", str(batch_size),
               "--learning-rate", str(learning_rate)]
        logging.info("DomainPretraining: %d catalog texts, %s", len(texts), " ".join(cmd))
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"trainer.text.domain_pretraining failed (exit {proc.returncode}):\n"
                           + proc.stderr[-4000:])
    with open(os.path.join(out_dir, REPORT_FILE), encoding="utf-8") as f:
        return json.load(f)


@tfx.dsl.components.component
def DomainPretraining(  # pylint: disable=invalid-name
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    model: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.Model],
    steps: tfx.dsl.components.Parameter[int],
    seed: tfx.dsl.components.Parameter[int] = 0,
    seq_len: tfx.dsl.components.Parameter[int] = 32,
    batch_size: tfx.dsl.components.Parameter[int] = 32,
    learning_rate: tfx.dsl.components.Parameter[float] = 5e-5,
    catalog_split: tfx.dsl.components.Parameter[str] = F.CATALOG_SPLIT,
    description_chars: tfx.dsl.components.Parameter[int] = 0,
):
    """Continues masked-LM training of MiniLM on the catalog's item texts."""
    if steps < 1:
        raise ValueError(f"DomainPretraining: steps must be >= 1, got {steps}")
    splits = artifact_utils.decode_split_names(examples.split_names)
    if catalog_split not in splits:
        raise ValueError(f"DomainPretraining: examples have no split {catalog_split!r} "
                         f"(splits: {splits})")
    texts = catalog_texts(artifact_utils.get_split_uri([examples], catalog_split),
                          description_chars)
    report = run_pretraining(texts, path_utils.serving_model_path(model.uri), steps, seed,
                             seq_len, batch_size, learning_rate)
    for key in ("heldout_mlm_loss_before", "heldout_mlm_loss_after"):
        model.set_float_custom_property(key, float(report[key]))
    logging.info("DomainPretraining: held-out MLM loss %.4f -> %.4f (%d steps, %.0f s)",
                 report["heldout_mlm_loss_before"], report["heldout_mlm_loss_after"],
                 report["steps"], report["train_seconds"])
