"""pipeline/sample_shop/truth.py: the planted groups of exactly the users generate_shop
writes, and nothing of them in the shop folder."""
import pandas as pd

from pipeline.sample_shop.catalog import TOPS
from pipeline.sample_shop.generate import generate_shop
from pipeline.sample_shop.truth import latent_groups


def test_latent_groups_are_the_shops_users_and_stay_out_of_the_shop(tmp_path):
    generate_shop(tmp_path, seed=5, scale=0.05)
    truth = latent_groups(seed=5, scale=0.05)
    users = pd.read_csv(tmp_path / "users.csv")
    assert truth["user_id"].tolist() == users["user_id"].tolist()
    assert set(truth["main_top"]) <= set(TOPS) and set(truth["preferred_top"]) <= set(TOPS)
    # the seed of the tastes and the tastes mostly agree, not always
    agree = (truth["main_top"] == truth["preferred_top"]).mean()
    assert 0.5 < agree < 1.0, agree
    assert latent_groups(seed=5, scale=0.05).equals(truth)
    for path in tmp_path.iterdir():
        assert "preferred_top" not in path.read_text(encoding="utf-8", errors="ignore")
