"""Prints top-N recommendations (with titles) for a few users, read from the pushed SavedModels.

  python -m serving.demo.show_recommendations --serving-dir serving_models --data sample_shop

Loads the newest pushed retrieval model with TensorFlow alone (its `top_k` signature takes raw
features and scores the full catalog). Each user's context is their most recent engaged items from the shop's
events (the same history rule as training, pipeline/examples.py).
"""
import argparse
import os
import sys

import numpy as np

from pipeline.contract.load import DataContractError, load_shop
from pipeline.examples import ENGAGEMENT_EVENTS, history_before, pad_history


def latest_version_dir(base: str) -> str:
    """The highest numeric version folder under `base` (TF Serving's 'latest' policy)."""
    if not os.path.isdir(base):
        raise FileNotFoundError(f"no pushed model at {base!r}: run the pipeline first")
    versions = [d for d in os.listdir(base) if d.isdigit()
                and os.path.exists(os.path.join(base, d, "saved_model.pb"))]
    if not versions:
        raise FileNotFoundError(f"{base!r} holds no version folder with a saved_model.pb")
    return os.path.join(base, max(versions, key=int))


def user_histories(events, user_ids):
    """{user_id: [item ids]}: each user's distinct engaged items, most recent first."""
    engaged = events[events["event_type"].isin(sorted(ENGAGEMENT_EVENTS))]
    out = {}
    for user_id in user_ids:
        rows = engaged[engaged["user_id"] == user_id].to_dict("records")
        out[user_id] = history_before(rows, timestamp=2**62) if rows else []
    return out


def pick_users(events, count: int, seed: int):
    """`count` users with engagements, chosen reproducibly."""
    engaged = events[events["event_type"].isin(sorted(ENGAGEMENT_EVENTS))]
    users = sorted(engaged["user_id"].unique())
    rng = np.random.default_rng(seed)
    return [users[i] for i in sorted(rng.choice(len(users), size=min(count, len(users)),
                                                replace=False))]


def recommend(serving_dir: str, user_ids, histories, k: int):
    """[(item_id, score)] per user from the retrieval model's top-K over the full catalog."""
    import tensorflow as tf  # plain TensorFlow (+ tensorflow_text ops): nothing else needed
    import tensorflow_text  # noqa: F401  registers the tokeniser ops of the BERT text tower

    retrieval = tf.saved_model.load(latest_version_dir(os.path.join(serving_dir, "retrieval")))
    padded = [pad_history(histories[u]) for u in user_ids]
    out = retrieval.signatures["top_k"](
        user_id=tf.constant(user_ids), history_item_ids=tf.constant(padded),
        query=tf.constant([""] * len(user_ids)))
    ids = out["item_ids"].numpy().astype(str)
    scores = out["scores"].numpy()
    return [list(zip(ids[i][:k], scores[i][:k].tolist())) for i in range(len(user_ids))]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--serving-dir", default="serving_models")
    p.add_argument("--data", default="sample_shop", help="the shop folder the models came from")
    p.add_argument("--users", nargs="*", help="user ids (default: --num-users picked at random)")
    p.add_argument("--num-users", type=int, default=3)
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.k < 1 or args.num_users < 1:
        p.error("-k and --num-users must be >= 1")
    try:
        shop = load_shop(args.data, on_bad_rows="quarantine")
    except (DataContractError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    users = args.users or pick_users(shop.events, args.num_users, args.seed)
    histories = user_histories(shop.events, users)
    titles = dict(zip(shop.items["item_id"], shop.items["title"]))
    try:
        results = recommend(args.serving_dir, users, histories, args.k)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for user_id, recs in zip(users, results):
        recent = " · ".join(titles.get(item_id, item_id) for item_id in histories[user_id][:3])
        header = f"user {user_id}, recently engaged with: {recent or '(nothing)'}"
        print("\n" + (header if len(header) <= 110 else header[:109] + "…"))
        print(f"  top-{args.k} recommendations:")
        for rank, (item_id, score) in enumerate(recs, 1):
            print(f"  {rank:2d}. {titles.get(item_id, '?'):<70.70} ({item_id}, {score:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
