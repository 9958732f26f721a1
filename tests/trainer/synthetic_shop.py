"""A tiny deterministic shop with a planted preference signal, written as raw tf.Examples.

Every user prefers one top category and clicks mostly there (popular items more often), so a
model that reads the user id / history must beat a global popularity ranking. Some items are
cold (catalog only), some users appear only in eval. Files are gzipped TFRecords in
`<root>/Split-{train,eval,catalog}/`, one example per impression unit as in the data contract.
"""
import os
import random
from typing import Dict, List

from trainer import features as F

CATEGORIES = {
    "Skin": ("Skin > Face > Serum", ["glow", "hydrating", "vitamin"], ["serum", "cream"]),
    "Hair": ("Hair > Care > Shampoo", ["silky", "repair", "volume"], ["shampoo", "mask"]),
    "Makeup": ("Makeup > Lips > Lipstick", ["matte", "velvet", "bold"], ["lipstick", "gloss"]),
    "Nails": ("Nails > Polish", ["chrome", "gel", "pastel"], ["polish", "topcoat"]),
}
WARM_PER_CATEGORY = 12
COLD_PER_CATEGORY = 1
TRAIN_SESSIONS, EVAL_SESSIONS = 9, 3


def _items(rng: random.Random) -> List[Dict]:
    items = []
    for top, (path, adjectives, nouns) in CATEGORIES.items():
        for i in range(WARM_PER_CATEGORY + COLD_PER_CATEGORY):
            noun = nouns[i % len(nouns)]
            items.append({
                F.ITEM_ID: f"{top.lower()}_{i:02d}",
                F.TITLE: f"{rng.choice(adjectives)} {noun} {i}",
                F.DESCRIPTION: f"A {noun} for {top.lower()} lovers.",
                F.BRAND: f"{top} Co {i % 2}" if i % 5 else "",
                F.CATEGORY: path,
                F.TOP_CATEGORY: top,
                F.PRICE: round(rng.uniform(3.0, 80.0), 2),
                F.IN_STOCK: int(i % 7 != 6),
                "cold": i >= WARM_PER_CATEGORY,
                "rank": i,
            })
    return items


def _example(values: Dict) -> bytes:
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    feature = {}
    for key, value in values.items():
        values_list = value if isinstance(value, list) else [value]
        if key in F.FLOAT_FEATURES:
            feature[key] = tf.train.Feature(float_list=tf.train.FloatList(value=values_list))
        elif key in F.INT_FEATURES:
            feature[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=values_list))
        else:
            feature[key] = tf.train.Feature(bytes_list=tf.train.BytesList(
                value=[v.encode() for v in values_list]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _unit(user: str, history: List[str], query: str, ts: int, item: Dict,
          clicked: int, purchased: int, length: int = F.HISTORY_LENGTH) -> Dict:
    padded = (history[:length] + [""] * length)[:length]
    row = {F.USER_ID: user, F.HISTORY_ITEM_IDS: padded,
           F.NUM_HISTORY: min(len(history), length), F.QUERY: query, F.TIMESTAMP: ts}
    row.update({k: item[k] for k in (F.ITEM_ID, F.TITLE, F.DESCRIPTION, F.BRAND, F.CATEGORY,
                                     F.TOP_CATEGORY, F.PRICE, F.IN_STOCK)})
    row.update({F.CLICKED: clicked, F.ADDED_TO_CART: purchased, F.PURCHASED: purchased,
                F.RATING: 5.0 if purchased else 0.0, F.HAS_RATING: purchased})
    return row


def generate(seed: int = 7, num_users: int = 60, eval_only_users: int = 8,
             history_length: int = F.HISTORY_LENGTH) -> Dict[str, List]:
    """Rows (dicts of raw feature values) per split, plus the item table under "items";
    histories have `history_length` entries (the same events whatever the length)."""
    rng = random.Random(seed)
    items = _items(rng)
    tops = list(CATEGORIES)
    warm = [it for it in items if not it["cold"]]
    splits = {F.TRAIN_SPLIT: [], F.EVAL_SPLIT: [], F.CATALOG_SPLIT: []}
    ts0 = 1_700_000_000
    for u in range(num_users + eval_only_users):
        user = f"user_{u:03d}"
        preferred = tops[u % len(tops)]
        liked = [it for it in warm if it[F.TOP_CATEGORY] == preferred]
        history: List[str] = []
        eval_only = u >= num_users
        for s in range(TRAIN_SESSIONS + EVAL_SESSIONS):
            in_eval = s >= TRAIN_SESSIONS
            if eval_only and not in_eval:
                continue
            ts = ts0 + s * 86_400 + u * 60
            pool = liked + ([it for it in items if it["cold"]] if in_eval else [])
            weights = [1.0 / (1 + it["rank"]) for it in pool]
            shown = [rng.choices(pool, weights)[0]] + rng.sample(warm, 2)
            query = rng.choice(CATEGORIES[preferred][2]) if rng.random() < 0.3 else ""
            split = F.EVAL_SPLIT if in_eval else F.TRAIN_SPLIT
            engaged = []
            for item in shown:
                p_click = 0.9 if item[F.TOP_CATEGORY] == preferred else 0.05
                clicked = int(rng.random() < p_click)
                purchased = int(clicked and rng.random() < (0.6 if item[F.PRICE] < 30 else 0.1))
                splits[split].append(
                    _unit(user, list(history), query, ts, item, clicked, purchased,
                          history_length))
                if clicked:
                    engaged.append(item[F.ITEM_ID])
            history = engaged + history
    for item in items:
        splits[F.CATALOG_SPLIT].append(_unit("", [], "", 0, item, 0, 0, history_length))
    splits["items"] = items
    return splits


def write(root: str, seed: int = 7, history_length: int = F.HISTORY_LENGTH) -> Dict[str, List]:
    """Writes the splits as gzipped TFRecords under `root`; returns `generate`'s rows."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    splits = generate(seed, history_length=history_length)
    for split in (F.TRAIN_SPLIT, F.EVAL_SPLIT, F.CATALOG_SPLIT):
        directory = os.path.join(root, f"Split-{split}")
        os.makedirs(directory, exist_ok=True)
        options = tf.io.TFRecordOptions(compression_type="GZIP")
        with tf.io.TFRecordWriter(os.path.join(directory, "data_tfrecord-00000.gz"),
                                  options) as writer:
            for row in splits[split]:
                writer.write(_example(row))
    return splits
