"""SearchTerms and SearchTermsPusher: what shoppers searched before they chose each item.

SearchTerms (after ShopExampleGen). Input: ShopExampleGen's examples. From the train and
rank splits (never eval: the blessing and any tuning on eval searches stay honest), every
engaged unit (clicked, added to cart or purchased) whose session searched before it pairs
the search text (``query``: the latest search earlier in the session) with the item. The
API adds an item's terms to the text its BM25 word index reads (docs/DESIGN.md, "Search
terms from the search log"): a product described as "Hampton Bay 52 in. Ceiling Fan" is
found for "fan with light" once shoppers who searched that chose it.

Privacy (docs/privacy.md): a search text counts only when at least ``min_users`` distinct
(pseudonymous) users searched it before engaging with any item, so one shopper's query
never changes what another is shown; the output names no user. Each item keeps its
``max_per_item`` terms most users chose it after. Output ``search_terms`` (artifact type
``SearchTerms``): ``search_terms.json`` with the settings, counts, and ``items``: item id ->
its terms (normalised: lower case, single spaces), most users first.

SearchTermsPusher (after the retrieval Pusher). Copies the file to
``<serving_dir>/search_terms/<version>/`` when the retrieval Pusher pushed ``<version>``
(pipeline/components/bundle_push.py), so the API reads the terms of the retrieval version
it serves.
"""
import json
import os

import pandas as pd

from absl import logging
from tfx import v1 as tfx
from tfx.types import artifact as tfx_artifact
from tfx.types import standard_artifact_utils as artifact_utils

from pipeline.components.bundle_push import push_beside_retrieval
from pipeline.components.user_segments import read_units
from serving.api.autocomplete import normalise
from serving.api.search_terms import TERMS_FILE   # the name the API reads
from trainer import features as F

SERVING_SUBDIR = "search_terms"      # <serving_dir>/search_terms/<retrieval version>/
SPLITS = (F.TRAIN_SPLIT, F.RANK_SPLIT)


class SearchTermsArtifact(tfx_artifact.Artifact):
    """The folder SearchTerms writes (module docstring)."""

    TYPE_NAME = "shoprec.SearchTerms"


def collect_terms(units: pd.DataFrame, min_users: int, max_per_item: int) -> dict:
    """The report ``search_terms.json`` holds, from units with ``user_id``, ``item_id``,
    ``query`` and ``engaged`` (module docstring)."""
    if min_users < 1 or max_per_item < 1:
        raise ValueError(f"min_users and max_per_item must be >= 1, got {min_users}, "
                         f"{max_per_item}")
    searched = units[(units[F.USER_ID] != "") & (units[F.QUERY].str.strip() != "")]
    searched = searched.assign(term=searched[F.QUERY].map(normalise))
    engaged = searched[searched["engaged"]]
    users = engaged.groupby("term")[F.USER_ID].nunique()
    kept = users[users >= min_users]
    pairs = (engaged[engaged["term"].isin(kept.index)]
             .groupby([F.ITEM_ID, "term"])[F.USER_ID].nunique()
             .rename("users").reset_index()
             .sort_values([F.ITEM_ID, "users", "term"], ascending=[True, False, True]))
    pairs = pairs.groupby(F.ITEM_ID).head(max_per_item)
    items = {item: list(group["term"]) for item, group in pairs.groupby(F.ITEM_ID, sort=True)}
    return {"min_users": min_users, "max_per_item": max_per_item,
            "engaged_units_after_a_search": int(len(engaged)),
            "terms": int(len(kept)), "terms_below_min_users": int(len(users) - len(kept)),
            "items_with_terms": len(items), "pairs": int(len(pairs)), "items": items}


@tfx.dsl.components.component
def SearchTerms(  # pylint: disable=invalid-name
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    search_terms: tfx.dsl.components.OutputArtifact[SearchTermsArtifact],
    min_users: tfx.dsl.components.Parameter[int] = 2,
    max_per_item: tfx.dsl.components.Parameter[int] = 32,
):
    """Search terms of the train (and rank) split (module docstring)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    present = artifact_utils.decode_split_names(examples.split_names)
    units = pd.concat([read_units(artifact_utils.get_split_uri([examples], split))
                       for split in SPLITS if split in present], ignore_index=True)
    report = collect_terms(units, min_users, max_per_item)
    with tf.io.gfile.GFile(os.path.join(search_terms.uri, TERMS_FILE), "w") as f:
        f.write(json.dumps(report, ensure_ascii=False))
    for key in ("terms", "items_with_terms", "pairs"):
        search_terms.set_int_custom_property(key, report[key])
    logging.info("SearchTerms: %d search texts of at least %d users on %d items (%d pairs; "
                 "%d texts below the user threshold left out)", report["terms"], min_users,
                 report["items_with_terms"], report["pairs"], report["terms_below_min_users"])


@tfx.dsl.components.component
def SearchTermsPusher(  # pylint: disable=invalid-name
    search_terms: tfx.dsl.components.InputArtifact[SearchTermsArtifact],
    pushed_model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.PushedModel],
    pushed_search_terms: tfx.dsl.components.OutputArtifact[SearchTermsArtifact],
    serving_dir: tfx.dsl.components.Parameter[str],
):
    """Copy the search terms next to the retrieval version (module docstring)."""
    push_beside_retrieval("SearchTermsPusher", search_terms.uri, (TERMS_FILE,),
                          pushed_model, pushed_search_terms, serving_dir, SERVING_SUBDIR)
