"""Frozen MiniLM text embeddings kept beside the encoder export they came from, so a text is
encoded once per machine: by the first Trainer of a run that needs it, then read by the
other Trainer (retrieval, then ranking, read the same catalog) and by later runs (a shop's
next run encodes only its new items).

Layout: ``<export root>/embeddings_v1/shard-*.npz``, each shard holding ``keys`` (uint8 [n, 16]:
the first 16 bytes of the SHA-256 of the UTF-8 text) and ``embeddings`` (float32 [n, H]). The
export root's name already pins the weights package, the sequence length and the backbone
(trainer/text/encoder.cache_key), so a key needs only the text. A run writes one new shard
with what it encoded (a temporary file renamed into place: readers never see half a shard,
concurrent writers never share a file). The trainers store catalog item texts only, never
search queries (personal data, docs/privacy.md), and the store keeps no raw text.

Exactness: texts are encoded in batches of one token length with a fixed number of rows
(trainer/text/cache.same_length_batches), so an embedding does not depend on which other texts
were encoded with it: what the store returns equals a fresh encoding bit for bit, and a run
gives the same models with an empty or a full store. Set ``reuse_text_embeddings`` false in
the trainer config to encode everything afresh all the same.
"""
import hashlib
import os
import tempfile
import time
import uuid
from typing import Sequence, Tuple

from absl import logging
import numpy as np

# Bump the version when what encode_tables computes for a text changes (batching, pooling):
# embeddings stored before are then not read.
STORE_DIR = "embeddings_v1"
KEY_BYTES = 16


def text_key(text) -> bytes:
    """The store's key of one text (str or UTF-8 bytes)."""
    data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    return hashlib.sha256(data).digest()[:KEY_BYTES]


class EmbeddingStore:
    """The stored embeddings of one encoder export (``root``: its directory)."""

    def __init__(self, root: str, width: int):
        self.directory = os.path.join(root, STORE_DIR)
        self.width = int(width)

    @classmethod
    def of(cls, paths) -> "EmbeddingStore":
        """The store of a ``trainer.text.encoder.TextEncoderPaths`` export."""
        return cls(paths.root, paths.info()["hidden_dim"])

    def shards(self):
        if not os.path.isdir(self.directory):
            return []
        return sorted(os.path.join(self.directory, name) for name in os.listdir(self.directory)
                      if name.startswith("shard-") and name.endswith(".npz"))

    def _read(self, path):
        """(keys [n, 16], embeddings [n, H]) of a shard, or None (with a warning) when the
        file cannot be read or has the wrong shapes: the store is a cache, a bad shard costs
        an encoding, never a run."""
        try:
            with np.load(path, allow_pickle=False) as shard:
                keys, embeddings = shard["keys"], shard["embeddings"]
        except (OSError, ValueError, KeyError) as e:
            logging.warning("text embedding store: ignoring unreadable shard %s (%s)", path, e)
            return None
        if (keys.dtype != np.uint8 or keys.ndim != 2 or keys.shape[1] != KEY_BYTES
                or embeddings.shape != (len(keys), self.width)):
            logging.warning("text embedding store: ignoring shard %s (keys %s %s, embeddings "
                            "%s; expected [n, %d] uint8 and [n, %d])", path, keys.dtype,
                            keys.shape, embeddings.shape, KEY_BYTES, self.width)
            return None
        return keys, embeddings.astype(np.float32, copy=False)

    def lookup(self, texts: Sequence) -> Tuple[np.ndarray, np.ndarray]:
        """(embeddings float32 [n, H], found bool [n]) of ``texts``; rows not found are 0."""
        wanted = {}
        for i, text in enumerate(texts):
            wanted.setdefault(text_key(text), []).append(i)
        out = np.zeros([len(texts), self.width], np.float32)
        found = np.zeros([len(texts)], bool)
        for path in self.shards():
            if found.all():
                break
            shard = self._read(path)
            if shard is None:
                continue
            for key, embedding in zip(*shard):
                rows = wanted.get(key.tobytes())
                if rows is not None and not found[rows[0]]:
                    out[rows], found[rows] = embedding, True
        return out, found

    def add(self, texts: Sequence, embeddings: np.ndarray) -> str:
        """Stores ``embeddings`` [n, H] of ``texts`` as one new shard; returns its path ("" when
        there is nothing to store)."""
        embeddings = np.asarray(embeddings, np.float32)
        if embeddings.shape != (len(texts), self.width):
            raise ValueError(f"embeddings of shape {embeddings.shape} for {len(texts)} texts; "
                             f"expected [{len(texts)}, {self.width}]")
        if not len(texts):
            return ""
        keys = np.frombuffer(b"".join(text_key(t) for t in texts), np.uint8).reshape(
            -1, KEY_BYTES)
        os.makedirs(self.directory, exist_ok=True)
        # named by time, so the oldest shard is read first and decides a text stored twice
        # (two runs encoding it at once)
        name = f"shard-{time.time_ns():020d}-{uuid.uuid4().hex}.npz"
        path = os.path.join(self.directory, name)
        handle, tmp = tempfile.mkstemp(prefix=".tmp-shard-", suffix=".npz", dir=self.directory)
        try:
            with os.fdopen(handle, "wb") as f:
                np.savez(f, keys=keys, embeddings=embeddings)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return path
