"""Reading the transformed examples written by the Transform component."""
import re
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from trainer import features as F

_SPLIT_DIR = re.compile(r"Split-" + F.TRAIN_SPLIT + r"(?=/|$)")


def num_buckets(tft_output, key: str) -> int:
    """Embedding-table size of a vocabulary feature: V known + padding 0 + one OOV bucket."""
    return tft_output.vocabulary_size_by_name(F.vocab_name(key)) + 2


def catalog_patterns(train_files: Sequence[str]) -> List[str]:
    """`.../Split-train/*` -> `.../Split-catalog/*`; raises if the catalog split is absent."""
    patterns = []
    for pattern in train_files:
        if not _SPLIT_DIR.search(pattern):
            raise ValueError(
                f"cannot derive the catalog split from train file pattern {pattern!r}: "
                f"expected a 'Split-{F.TRAIN_SPLIT}' directory in it (TFX Transform output)")
        catalog = _SPLIT_DIR.sub("Split-" + F.CATALOG_SPLIT, pattern)
        if not tf.io.gfile.glob(catalog):
            raise ValueError(
                f"the '{F.CATALOG_SPLIT}' split is missing: no files match {catalog!r}. "
                f"Let ExampleGen emit a '{F.CATALOG_SPLIT}' split and Transform transform it "
                "(splits_config transform=[train, eval, catalog]).")
        patterns.append(catalog)
    return patterns


def _files(patterns: Iterable[str]) -> List[str]:
    files = sorted(f for p in patterns for f in tf.io.gfile.glob(p))
    if not files:
        raise ValueError(f"no files match {list(patterns)}")
    return files


def _compression(path: str) -> str:
    """'GZIP' for gzipped TFRecords (what TFX writes), '' for plain ones."""
    with tf.io.gfile.GFile(path, "rb") as f:
        return "GZIP" if f.read(2) == b"\x1f\x8b" else ""


def feature_names(patterns: Sequence[str]) -> set:
    """The feature names of the first example of ``patterns`` (all examples of a split
    written by one writer carry the same features)."""
    files = _files(patterns)
    for record in tf.data.TFRecordDataset(files[:1], compression_type=_compression(files[0])):
        return set(tf.train.Example.FromString(record.numpy()).features.feature)
    raise ValueError(f"no examples in {files[0]}")


def make_dataset(patterns: Sequence[str], feature_spec: Dict, batch_size: int, *,
                 predicate: Optional[Callable[[Dict[str, tf.Tensor]], tf.Tensor]] = None,
                 shuffle_buffer: int = 0, seed: Optional[int] = None,
                 repeat: bool = False, drop_remainder: bool = False) -> tf.data.Dataset:
    """Batches of parsed examples (dict of tensors), optionally filtered, shuffled, repeated;
    `drop_remainder`: full batches only (DP-SGD's microbatches split every batch alike)."""
    files = _files(patterns)
    ds = tf.data.TFRecordDataset(files, compression_type=_compression(files[0]))
    ds = ds.batch(1024).map(lambda s: tf.io.parse_example(s, feature_spec),
                            num_parallel_calls=tf.data.AUTOTUNE)
    if predicate is not None or shuffle_buffer:
        ds = ds.unbatch()
        if predicate is not None:
            ds = ds.filter(predicate)
        if shuffle_buffer:
            ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    elif batch_size != 1024 or drop_remainder:
        ds = ds.unbatch().batch(batch_size, drop_remainder=drop_remainder)
    if repeat:
        ds = ds.repeat()
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


CONTEXT_SEGMENT = "ranking_context_segment"   # [N] int64: a batch row's context, 0..C-1


def group_sizes(patterns: Sequence[str], key: str) -> np.ndarray:
    """Rows per group of ``key`` (a string feature), in file order; raises unless each
    group's rows are contiguous (what a reader batching whole groups relies on)."""
    values = load_columns(patterns, {key: tf.io.FixedLenFeature([], tf.string)}, [key])[key]
    if not len(values):
        raise ValueError(f"no examples in {list(patterns)}")
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    if len(starts) != len(set(values.tolist())):
        raise ValueError(f"the rows of a '{key}' are not contiguous in {list(patterns)}: a "
                         f"context's rows must be written together (CandidateExamples does)")
    return np.diff(np.r_[starts, len(values)])


def make_context_dataset(patterns: Sequence[str], feature_spec: Dict, key: str,
                         batch_size: int, *, shuffle_buffer: int = 0,
                         seed: Optional[int] = None, repeat: bool = False) -> tf.data.Dataset:
    """Batches of whole groups: the rows sharing ``key`` (contiguous in the files, e.g. the
    two-stage rows of one user context) stay together and groups are shuffled as units.
    A batch holds ``batch_size // largest group`` groups (at least one), flattened: each
    feature [N, ...] over its N rows, plus CONTEXT_SEGMENT [N], the row's group 0..C-1."""
    sizes = group_sizes(patterns, key)
    largest = int(sizes.max())
    files = _files(patterns)
    ds = tf.data.TFRecordDataset(files, compression_type=_compression(files[0]))
    ds = ds.batch(1024).map(lambda s: tf.io.parse_example(s, feature_spec)).unbatch()
    # Consecutive rows of one key form a window; a window closes when full (`largest` rows)
    # or at the end of the input. Keys are hashed: a collision only merges two groups if
    # their windows are open at once, i.e. never for contiguous groups.
    ds = ds.group_by_window(
        key_func=lambda row: tf.strings.to_hash_bucket_fast(row[key], 2 ** 62),
        reduce_func=lambda _, rows: rows.batch(largest), window_size=largest)
    if shuffle_buffer:
        groups = max(1, shuffle_buffer // max(1, int(round(sizes.mean()))))
        ds = ds.shuffle(groups, seed=seed, reshuffle_each_iteration=True)
    ds = ds.ragged_batch(max(1, batch_size // largest))

    def flatten(batch):
        rows = next(iter(batch.values()))
        out = {k: v.values for k, v in batch.items()}
        out[CONTEXT_SEGMENT] = rows.value_rowids()
        return out

    ds = ds.map(flatten, num_parallel_calls=tf.data.AUTOTUNE)
    if repeat:
        ds = ds.repeat()
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def is_positive(label_key: str) -> Callable[[Dict[str, tf.Tensor]], tf.Tensor]:
    """Predicate for `make_dataset`: the example's `label_key` is > 0."""
    return lambda example: tf.reshape(example[label_key], []) > 0


def load_columns(patterns: Sequence[str], feature_spec: Dict, keys: Sequence[str],
                 predicate=None) -> Dict[str, np.ndarray]:
    """All examples' `keys` as numpy arrays (for evaluation on small/medium splits)."""
    spec = {k: feature_spec[k] for k in set(keys) | _predicate_keys(feature_spec, predicate)}
    ds = make_dataset(patterns, spec, 1024, predicate=predicate)
    parts = {k: [] for k in keys}
    for batch in ds:
        for k in keys:
            parts[k].append(batch[k].numpy())
    return {k: (np.concatenate(v) if v else np.zeros((0,) + tuple(spec[k].shape),
                                                     spec[k].dtype.as_numpy_dtype))
            for k, v in parts.items()}


def _predicate_keys(feature_spec, predicate) -> set:
    # Predicates built by `is_positive` read one label; keep every label parsed to be safe.
    return set(F.LABEL_KEYS) & set(feature_spec) if predicate is not None else set()
