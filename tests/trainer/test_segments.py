"""trainer/segments.py: planted groups are recovered, small segments dissolved, the report
holds aggregates only."""
import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from trainer import segments as S


def _planted(rng, sizes, dims=24, spread=0.35):
    """Vectors around one random centre per group, and the group of each."""
    centres = rng.normal(size=(len(sizes), dims))
    groups = np.repeat(np.arange(len(sizes)), sizes)
    return centres[groups] + spread * rng.normal(size=(len(groups), dims)), groups


def _engagements(users, groups, rng, per_user=6):
    """Engagements whose top category is the user's group (80 %) or any other."""
    tops = [f"Top{g}" for g in range(groups.max() + 1)]
    rows = []
    for user, group in zip(users, groups):
        for j in range(per_user):
            top = tops[group] if rng.random() < 0.8 else tops[rng.integers(len(tops))]
            rows.append({"user_id": user, "item_id": f"{top}-item{rng.integers(30)}",
                         "category": f"{top} > Leaf{rng.integers(3)}",
                         "brand": f"{top}-brand{rng.integers(2)}",
                         "price": float(10 * (group + 1) + rng.random()),
                         "timestamp": 1_700_000_000 + 86_400 * j})
    return pd.DataFrame(rows)


def test_kmeans_with_silhouette_recovers_planted_groups():
    rng = np.random.default_rng(0)
    x, groups = _planted(rng, [120, 90, 60, 40])
    seg = S.segment(x, S.SegmentConfig(k_min=2, k_max=8, min_segment_size=20))
    assert seg.k_chosen == 4, seg.k_scores
    assert adjusted_rand_score(groups, seg.labels) > 0.95
    assert np.bincount(seg.labels).tolist() == sorted(np.bincount(seg.labels), reverse=True)


def test_category_shares_rescue_uninformative_vectors():
    """Vectors of pure noise say nothing; next to the users' top-category shares the
    planted groups come back (the pipeline's default, category_weight 1)."""
    rng = np.random.default_rng(1)
    users = [f"p_{i:04d}" for i in range(300)]
    groups = np.repeat(np.arange(3), 100)
    engaged = _engagements(users, groups, rng)
    shares, tops = S.category_shares(users, engaged)
    assert tops == ["Top0", "Top1", "Top2"]
    noise = rng.normal(size=(300, 32))
    cfg = S.SegmentConfig(k_min=2, k_max=6)
    alone = S.segment(S.features(noise, shares, 0.0), cfg)
    both = S.segment(S.features(noise, shares, 1.0), cfg)
    assert adjusted_rand_score(groups, alone.labels) < 0.2
    assert adjusted_rand_score(groups, both.labels) > 0.8


def test_segments_below_min_size_are_dissolved_into_the_nearest():
    rng = np.random.default_rng(2)
    x, groups = _planted(rng, [100, 80, 12, 7])
    seg = S.segment(x, S.SegmentConfig(k_min=4, k_max=4, min_segment_size=20))
    sizes = np.bincount(seg.labels)
    assert len(sizes) == 2 and sizes.min() >= 20 and sizes.sum() == len(x), sizes
    assert seg.dissolved == 2
    # the two large groups stay intact
    assert adjusted_rand_score(groups[groups < 2], seg.labels[groups < 2]) == 1.0


def test_fewer_users_than_min_size_give_no_segments():
    x = np.random.default_rng(3).normal(size=(15, 8))
    seg = S.segment(x, S.SegmentConfig(min_segment_size=20))
    assert seg.count == 0 and (seg.labels == -1).all()


def test_config_is_validated():
    with pytest.raises(ValueError, match="k_min"):
        S.SegmentConfig(k_min=1).validate()
    with pytest.raises(ValueError, match="min_query_users"):
        S.SegmentConfig(min_query_users=1).validate()


def test_profiles_name_the_planted_category_and_hold_no_user_id(tmp_path):
    rng = np.random.default_rng(4)
    users = [f"p_{i:032x}" for i in range(240)]
    groups = np.repeat(np.arange(3), [120, 80, 40])
    engaged = _engagements(users, groups, rng)
    shares, _ = S.category_shares(users, engaged)
    cfg = S.SegmentConfig(k_min=2, k_max=6, min_segment_size=20, min_query_users=5)
    seg = S.segment(S.features(rng.normal(size=(240, 16)), shares, 1.0), cfg)
    # searches: "lamp" typed by 30 members of group 0, "my secret" by one user only
    searches = pd.DataFrame({"user_id": users[:30] + users[:1],
                             "query": ["Lamp "] * 30 + ["my secret"]})
    profiles = S.profiles(users, seg.labels, engaged, searches, cfg)
    named = {}
    for p in profiles:
        members = groups[seg.labels == p["segment"]]
        named[int(np.bincount(members).argmax())] = p["top_categories"][0]["name"]
        assert p["size"] >= 20 and p["price"]["band"] in S.PRICE_BANDS
        assert p["popular_items"] and p["label"]
    assert named == {0: "Top0", 1: "Top1", 2: "Top2"}
    by_top = {p["top_categories"][0]["name"]: p for p in profiles}
    assert by_top["Top0"]["typical_searches"] == [{"query": "lamp", "users": 30}]
    assert by_top["Top2"]["price"]["band"] == "high" and by_top["Top0"]["price"]["band"] == "low"
    report = S.report(seg, profiles, cfg)
    text = json.dumps(report)
    assert not any(u in text for u in users)
    assert "my secret" not in text
    assert report["segments"] == 3 and report["k_chosen"] == 3
    S.plot(seg, profiles, str(tmp_path / "segments.png"))
    assert (tmp_path / "segments.png").stat().st_size > 10_000
